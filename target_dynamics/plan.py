"""Per-stream write plans compiled once from ``$metadata``: validation and payload building.

A :class:`StreamPlan` knows the table, how a record addresses its row (primary id or a declared
alternate key), the mode's headers, a converter per writable column and how each lookup is bound.
:meth:`StreamPlan.operation` turns one record into one ``PATCH`` operation or an
:class:`InvalidRecord` reason, without any I/O; it is the target's only per-record validation (the
SDK's JSON Schema validation is off: it is slower and cannot know what the table accepts).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dynamics_api.batch import BatchOperation
from dynamics_api.errors import ConfigError
from dynamics_api.metadata import EntityModel, EntityType, Lookup
from dynamics_api.odata import is_guid, key_segment
from target_dynamics.convert import Converter, InvalidRecord, converter
from target_dynamics.options import (
    DELETE_MODES,
    DELETED_AT,
    LOOKUP_LOGICAL_NAME,
    LookupTarget,
    StreamOptions,
    parse_stream_options,
)

__all__ = [
    "BULK_MESSAGES",
    "DELETED_AT",
    "DELETE_MODES",
    "InvalidRecord",
    "LookupTarget",
    "StreamOptions",
    "StreamPlan",
    "build_plan",
    "parse_stream_options",
]

_MODE_HEADERS: dict[str, dict[str, str]] = {
    "upsert": {},
    "update": {"If-Match": "*"},
    "create": {"If-None-Match": "*"},
}
#: The bulk message that writes many rows of a mode in one request.
BULK_MESSAGES = {"upsert": "UpsertMultiple", "update": "UpdateMultiple", "create": "CreateMultiple"}
#: Columns every elastic table has (and standard tables do not): how a plan knows it writes to
#: one, since ``$metadata`` does not carry the table type.
ELASTIC_COLUMNS = frozenset({"partitionid", "ttlinseconds"})

_encoder = msgspec.json.Encoder(decimal_format="number")


# --------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BindTarget:
    nav: str
    entity_set: str
    key: tuple[str, ...] | None
    key_types: dict[str, str]


@dataclass(frozen=True)
class _LookupPlan:
    lookup: Lookup
    targets: dict[str, _BindTarget]  # concrete table -> how to bind it
    default: str | None  # the table used when the record does not say
    clear_nav: str


def _lookup_plan(
    entity: EntityType,
    lookup: Lookup,
    configured: LookupTarget | None,
    model: EntityModel,
    where: str,
) -> _LookupPlan:
    targets: dict[str, _BindTarget] = {}
    for nav, target in lookup.navigations.items():
        concrete = [target] if target not in model.abstract_types else []
        concrete += [t for t in model.derived_types(target) if t not in model.abstract_types]
        for table in concrete:
            te = model.entities.get(table)
            if te is None or not te.entity_set:
                continue
            targets.setdefault(table, _BindTarget(nav, te.entity_set, None, {}))
    default = next(iter(targets)) if len(targets) == 1 else None
    if configured is not None:
        if configured.table not in targets:
            choices = ", ".join(sorted(targets)) or "no table"
            raise ConfigError(
                f"The setting {where} names table '{configured.table}', but lookup "
                f"'{lookup.attribute}' of table '{entity.name}' can point at {choices}."
            )
        default = configured.table
        if configured.key is not None:
            te = model.entities[configured.table]
            key = _declared_key(te, configured.key, f"{where}.key")
            bind = targets[configured.table]
            targets[configured.table] = _BindTarget(
                bind.nav, bind.entity_set, key, {k: te.properties[k].edm_type for k in key}
            )
    return _LookupPlan(lookup, targets, default, next(iter(lookup.navigations)))


def _declared_key(entity: EntityType, columns: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The alternate key of ``entity`` made of ``columns`` (lookups as ``x`` or ``_x_value``)."""
    names = []
    for col in columns:
        if col not in entity.properties and f"_{col}_value" in entity.properties:
            col = f"_{col}_value"
        names.append(col)
    for declared in entity.alternate_keys:
        if set(declared) == set(names) and len(declared) == len(names):
            return tuple(declared)
    declared_txt = (
        "; ".join("[" + ", ".join(k) + "]" for k in entity.alternate_keys) or "none declared"
    )
    raise ConfigError(
        f"The setting {where} ({', '.join(columns)}) is not an alternate key of table "
        f"'{entity.name}' (its alternate keys: {declared_txt}); declare the key in Dataverse "
        'or use "primary".'
    )


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass
class StreamPlan:
    """Everything needed to turn a record of one stream into one write operation."""

    stream: str
    entity: EntityType
    entity_set: str
    mode: str
    key: tuple[str, ...]
    key_types: dict[str, str]
    primary: bool
    columns: dict[str, Converter]
    read_only: frozenset[str]
    lookups: dict[str, _LookupPlan]
    headers: dict[str, str]
    delete_mode: str = "skip"
    #: (statecode, statuscode) that deactivate a row, for ``delete_mode: deactivate``.
    inactive: tuple[int, int] | None = None
    #: Headers every write request of the stream carries (the business-logic bypass).
    request_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def table(self) -> str:
        """The table's logical name."""
        return self.entity.name

    @property
    def bulk_message(self) -> str:
        """The bulk message of the stream's mode (``UpsertMultiple``...)."""
        return BULK_MESSAGES[self.mode]

    @property
    def elastic(self) -> bool:
        """Whether the table is an elastic table (it has their system columns)."""
        return ELASTIC_COLUMNS.issubset(self.entity.properties)

    def key_of(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record's key values (``None`` where a column is missing)."""
        out: dict[str, Any] = {}
        for col in self.key:
            value = record.get(col)
            if value is None and col.startswith("_") and col.endswith("_value"):
                value = record.get(col[1:-6])
            out[col] = value
        return out

    def identities(self, record: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """What names the record's row, normalised as the service compares keys (GUIDs and
        strings without case): records sharing one of these must be applied in input order."""
        out: list[tuple[str, Any]] = []
        values = tuple(_normal(v) for v in self.key_of(record).values())
        if None not in values:
            out.append(("key", values))
        pid = self.entity.primary_id
        if not self.primary and pid is not None and record.get(pid) is not None:
            out.append(("id", _normal(record.get(pid))))
        return tuple(out)

    def delete_operation(self, record: Mapping[str, Any]) -> tuple[BatchOperation, dict[str, Any]]:
        """What a record deleted at source (``_sdc_deleted_at`` set) does to its row, by the
        stream's ``delete_mode``: ``DELETE`` (hard) or an update to the inactive state
        (deactivate, ``If-Match: *`` so that a missing row is not created).

        Raises:
            InvalidRecord: the record does not name a row.
        """
        segment, key = self._delete_address(record)
        url = self.entity_set + segment
        if self.delete_mode == "hard":
            return BatchOperation("DELETE", url, self.request_headers), key
        if self.delete_mode == "deactivate" and self.inactive is not None:
            state, status = self.inactive
            body = _encoder.encode({"statecode": state, "statuscode": status})
            headers = {**self.request_headers, "If-Match": "*"}
            return BatchOperation("PATCH", url, headers, body), key
        raise ValueError(f"no delete operation in delete_mode {self.delete_mode}")

    def _delete_address(self, record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """By the stream's key; or by the table's primary id when the record carries only that
        (change-tracking taps emit a deletion as the id alone)."""
        key = self.key_of(record)
        types = self.key_types
        if any(v is None for v in key.values()):
            pid = self.entity.primary_id
            if self.primary or pid is None or record.get(pid) is None:
                missing = [c for c, v in key.items() if v is None]
                raise InvalidRecord(f"key column(s) {', '.join(missing)} missing or null")
            key = {pid: record.get(pid)}
            types = {pid: "Edm.Guid"}
        if len(key) == 1 and types.get(next(iter(key))) == "Edm.Guid":
            ((col, value),) = key.items()
            if not is_guid(value):
                raise InvalidRecord(f"key column '{col}' is not a GUID")
        try:
            return key_segment(key, types), key
        except (ValueError, TypeError) as exc:
            raise InvalidRecord(f"the key cannot be written: {exc}") from None

    def operation(self, record: Mapping[str, Any]) -> tuple[BatchOperation, dict[str, Any]]:
        """The PATCH operation that writes ``record`` (in a ``$batch``), and its key.

        Raises:
            InvalidRecord: the record cannot be written (why, in a few words).
        """
        payload, key, segment = self._payload(record)
        op = BatchOperation(
            "PATCH", self.entity_set + segment, self.headers, _encoder.encode(payload)
        )
        return op, key

    def bulk_target(self, record: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """``record`` as one item of a bulk message's ``Targets`` (JSON), and its key: the
        columns and binds of :meth:`operation`, the item's ``@odata.type``, and its row by
        ``@odata.id`` (upsert; update by an alternate key) or by the primary id in the item
        (update by primary id; create).

        Raises:
            InvalidRecord: the record cannot be written (why, in a few words).
        """
        payload, key, segment = self._payload(record)
        target: dict[str, Any] = {"@odata.type": f"Microsoft.Dynamics.CRM.{self.table}"}
        if self.mode == "create" or (self.mode == "update" and self.primary):
            if self.primary:
                target[self.key[0]] = str(key[self.key[0]]).lower()
        else:
            target["@odata.id"] = self.entity_set + segment
        target.update(payload)
        return _encoder.encode(target), key

    def _payload(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
        """The record's columns and binds as the service takes them, its key, and the key's
        URL segment: the one validation of a record to write.

        Raises:
            InvalidRecord: the record cannot be written (why, in a few words).
        """
        key = self.key_of(record)
        missing = [c for c, v in key.items() if v is None]
        if missing:
            raise InvalidRecord(f"key column(s) {', '.join(missing)} missing or null")
        payload: dict[str, Any] = {}
        columns = self.columns
        lookups = self.lookups
        for name, value in record.items():
            conv = columns.get(name)
            if conv is not None:
                payload[name] = conv(value)
                continue
            lp = lookups.get(name)
            if lp is not None:
                self._bind(lp, name, value, record, payload)
                continue
            if "@" in name or name.startswith("_sdc_"):
                continue  # annotations (lookuplogicalname is read by _bind) and Singer metadata
            if name in self.read_only:
                raise InvalidRecord(f"column '{name}' is read-only")
            raise InvalidRecord(f"column '{name}' does not exist on table '{self.table}'")
        if self.primary:
            pid = self.key[0]
            if not is_guid(key[pid]):
                raise InvalidRecord(f"key column '{pid}' is not a GUID")
            payload.pop(pid, None)
        try:
            segment = key_segment(key, self.key_types)
        except (ValueError, TypeError) as exc:
            raise InvalidRecord(f"the key cannot be written: {exc}") from None
        return payload, key, segment

    def _bind(
        self,
        lp: _LookupPlan,
        name: str,
        value: Any,
        record: Mapping[str, Any],
        payload: dict[str, Any],
    ) -> None:
        attr = lp.lookup.attribute
        if value is None:
            payload[f"{lp.clear_nav}@odata.bind"] = None
            return
        table = record.get(name + LOOKUP_LOGICAL_NAME) or lp.default
        if table is None:
            other = lp.lookup.property if name == attr else attr
            table = record.get(other + LOOKUP_LOGICAL_NAME)
        if table is None:
            raise InvalidRecord(
                f"lookup '{attr}' can point at {', '.join(sorted(lp.targets))}: give "
                f"'{name}{LOOKUP_LOGICAL_NAME}' or configure the table in stream_options"
            )
        target = lp.targets.get(table)
        if target is None:
            raise InvalidRecord(
                f"lookup '{attr}' cannot point at table '{table}' (it points at "
                f"{', '.join(sorted(lp.targets)) or 'no table'})"
            )
        if target.key is not None:
            if len(target.key) == 1 and not isinstance(value, Mapping):
                key_values = {target.key[0]: value}
            elif isinstance(value, Mapping):
                key_values = {k: value.get(k) for k in target.key}
            else:
                raise InvalidRecord(
                    f"lookup '{attr}' binds by the key ({', '.join(target.key)}): give an object"
                )
            if any(v is None for v in key_values.values()):
                raise InvalidRecord(f"lookup '{attr}' misses a value of its key")
            try:
                ref = key_segment(key_values, target.key_types)
            except (ValueError, TypeError) as exc:
                raise InvalidRecord(f"lookup '{attr}' cannot be written: {exc}") from None
        else:
            if not is_guid(value):
                raise InvalidRecord(f"lookup '{attr}' expects a GUID")
            ref = "(" + str(value).lower() + ")"
        payload[f"{target.nav}@odata.bind"] = f"/{target.entity_set}{ref}"


def _normal(value: Any) -> Any:
    """A key value as the service compares it: strings (GUIDs too) without case."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return value.casefold()
    return value


def build_plan(
    stream: str,
    options: StreamOptions,
    model: EntityModel,
    *,
    delete_mode: str = "skip",
    inactive: tuple[int, int] | None = None,
    request_headers: Mapping[str, str] | None = None,
) -> StreamPlan:
    """Compile a stream's plan from the metadata.

    Args:
        stream: the stream's name.
        options: its ``stream_options`` entry.
        model: the environment's tables.
        delete_mode: the target's ``delete_mode`` (the stream's own option wins).
        inactive: (statecode, statuscode) of the table's Inactive state, when it has one;
            required for ``delete_mode: deactivate``.
        request_headers: headers every write carries (the business-logic bypass).

    Raises:
        ConfigError: the table is unknown, the key is not declared, a lookup is misconfigured,
            or the table cannot be deactivated.
    """
    where = f"stream_options.{stream}"
    table = options.entity or stream.strip().lower()
    entity = model.entities.get(table)
    if entity is None or not entity.entity_set or entity.abstract:
        raise ConfigError(
            f"Stream '{stream}' maps to table '{table}', which the environment does not have "
            f"as a writable table; set {where}.entity to a table logical name."
        )
    primary_id = entity.primary_id
    if options.key is None:
        if primary_id is None:
            raise ConfigError(
                f"Table '{table}' has no single primary id column; set {where}.key to an "
                "alternate key."
            )
        key: tuple[str, ...] = (primary_id,)
        primary = True
    else:
        key = _declared_key(entity, options.key, f"{where}.key")
        primary = False
    lookups_by_prop = entity.lookups
    configured: dict[str, LookupTarget] = {}
    for fld, target in options.lookups.items():
        lookup = lookups_by_prop.get(fld) or lookups_by_prop.get(f"_{fld}_value")
        if lookup is None:
            raise ConfigError(
                f"The setting {where}.lookups names '{fld}', which is not a lookup column of "
                f"table '{table}'."
            )
        if target.table not in model.entities:
            raise ConfigError(
                f"The setting {where}.lookups.{fld} names table '{target.table}', which the "
                "environment does not have."
            )
        configured[lookup.property] = target
    lookups: dict[str, _LookupPlan] = {}
    for prop_name, lookup in lookups_by_prop.items():
        if lookup.read_only:
            continue
        lp = _lookup_plan(
            entity, lookup, configured.get(prop_name), model, f"{where}.lookups.{lookup.attribute}"
        )
        lookups[prop_name] = lp
        lookups[lookup.attribute] = lp
    columns: dict[str, Converter] = {}
    read_only: set[str] = set()
    for name, prop in entity.properties.items():
        if name in lookups_by_prop:
            if lookups_by_prop[name].read_only:
                read_only.add(name)
            continue
        if prop.read_only and not (primary and name == primary_id):
            read_only.add(name)
            continue
        if prop.kind != "primitive" or prop.is_collection:
            continue
        columns[name] = converter(prop)
    key_types = {}
    for col in key:
        prop = entity.properties[col]
        key_types[col] = prop.edm_type
        if col not in columns and col not in lookups:
            columns[col] = converter(prop)
    mode_for_deletes = options.delete_mode or delete_mode
    if mode_for_deletes == "deactivate" and inactive is None:
        raise ConfigError(
            f"delete_mode is deactivate, but table '{table}' (stream '{stream}') has no Inactive "
            f"state to set; use delete_mode hard or skip for it ({where}.delete_mode)."
        )
    return StreamPlan(
        stream=stream,
        entity=entity,
        entity_set=entity.entity_set,
        mode=options.mode,
        key=key,
        key_types=key_types,
        primary=primary,
        columns=columns,
        read_only=frozenset(read_only),
        lookups=lookups,
        headers={**(request_headers or {}), **_MODE_HEADERS[options.mode]},
        delete_mode=mode_for_deletes,
        inactive=inactive if mode_for_deletes == "deactivate" else None,
        request_headers=dict(request_headers or {}),
    )
