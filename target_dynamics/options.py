"""The ``stream_options`` setting, checked once: each problem is one sentence naming the setting."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dynamics_api.errors import ConfigError

__all__ = [
    "DELETED_AT",
    "DELETE_MODES",
    "LOOKUP_LOGICAL_NAME",
    "MODES",
    "LookupTarget",
    "StreamOptions",
    "parse_stream_options",
]

MODES = ("upsert", "update", "create")
#: What a record deleted at source (``_sdc_deleted_at`` set) does to its row.
DELETE_MODES = ("skip", "hard", "deactivate")
DELETED_AT = "_sdc_deleted_at"
LOOKUP_LOGICAL_NAME = "@Microsoft.Dynamics.CRM.lookuplogicalname"


@dataclass(frozen=True)
class LookupTarget:
    """Where a lookup field points: a table, and optionally the alternate key to bind by."""

    table: str
    key: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StreamOptions:
    """``stream_options.<stream>`` as configured."""

    entity: str | None = None
    key: tuple[str, ...] | None = None  # None: the primary id
    mode: str = "upsert"
    lookups: Mapping[str, LookupTarget] = field(default_factory=dict)
    delete_mode: str | None = None  # None: the target's delete_mode setting


def parse_stream_options(raw: Mapping[str, Any]) -> dict[str, StreamOptions]:
    """Check and convert the ``stream_options`` setting.

    Raises:
        ConfigError: a malformed entry, as one sentence naming it.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("The setting stream_options must be an object keyed by stream name.")
    out: dict[str, StreamOptions] = {}
    allowed = {"entity", "key", "mode", "lookups", "delete_mode"}
    for stream, opts in raw.items():
        where = f"stream_options.{stream}"
        if not isinstance(opts, Mapping):
            raise ConfigError(f"The setting {where} must be an object.")
        extra = sorted(set(opts) - allowed)
        if extra:
            raise ConfigError(
                f"The setting {where} has unknown option(s) {', '.join(extra)}; use entity, "
                "key, mode, lookups and delete_mode."
            )
        entity = opts.get("entity")
        if entity is not None and (not isinstance(entity, str) or not entity.strip()):
            raise ConfigError(f"The setting {where}.entity must be a table logical name.")
        key_raw = opts.get("key", "primary")
        key: tuple[str, ...] | None
        if key_raw == "primary":
            key = None
        elif (
            isinstance(key_raw, list) and key_raw and all(isinstance(k, str) and k for k in key_raw)
        ):
            key = tuple(key_raw)
        else:
            raise ConfigError(
                f'The setting {where}.key must be "primary" or a list of the columns of a '
                "declared alternate key."
            )
        mode = opts.get("mode", "upsert")
        if mode not in MODES:
            raise ConfigError(f"The setting {where}.mode must be one of upsert, update, create.")
        delete_mode = opts.get("delete_mode")
        if delete_mode is not None and delete_mode not in DELETE_MODES:
            raise ConfigError(
                f"The setting {where}.delete_mode must be one of skip, hard, deactivate."
            )
        lookups: dict[str, LookupTarget] = {}
        raw_lookups = opts.get("lookups") or {}
        if not isinstance(raw_lookups, Mapping):
            raise ConfigError(f"The setting {where}.lookups must be an object.")
        for fld, target in raw_lookups.items():
            if isinstance(target, str) and target:
                lookups[fld] = LookupTarget(target.strip().lower())
            elif isinstance(target, Mapping) and isinstance(target.get("table"), str):
                tkey = target.get("key")
                if tkey is not None and not (
                    isinstance(tkey, list) and tkey and all(isinstance(k, str) for k in tkey)
                ):
                    raise ConfigError(
                        f"The setting {where}.lookups.{fld}.key must be a list of columns."
                    )
                lookups[fld] = LookupTarget(
                    target["table"].strip().lower(), tuple(tkey) if tkey else None
                )
            else:
                raise ConfigError(
                    f"The setting {where}.lookups.{fld} must be a table name or {{table, key}}."
                )
        out[stream] = StreamOptions(
            entity.strip().lower() if entity else None, key, mode, lookups, delete_mode
        )
    return out
