"""Formatted values: choice labels, lookup display names and lookup target tables as plain columns.

With ``Prefer: odata.include-annotations="..."`` (`prefer_annotations`) Dataverse writes, next to a
column ``x``, instance annotations such as ``x@OData.Community.Display.V1.FormattedValue`` (the
choice label, the referenced row's primary name, a localized number or date) and, next to a lookup
``_x_value``, ``_x_value@Microsoft.Dynamics.CRM.lookuplogicalname`` (the referenced table). Keys
holding ``@`` and ``.`` are not usable as SQL column names, so this module turns the useful ones
into extra columns under one naming scheme, declares them in the stream schema and moves the
values there row by row.

Naming scheme (every extra column is a nullable string; its name is ``[a-z0-9_]+``):

=============================  ===========================================  ====================
extra column                   value (annotation of the base column)        added for
=============================  ===========================================  ====================
``<column>_label``             ``<column>@…FormattedValue``                 label columns, below
``<_x_value>_name``            ``_x_value@…FormattedValue``                 every lookup
``<_x_value>_table``           ``_x_value@…lookuplogicalname``              polymorphic lookups
=============================  ===========================================  ====================

e.g. ``statuscode_label``, ``isescalated_label``, ``_ownerid_value_name``,
``_customerid_value_table``, ``_ownerid_value_table``.

Label columns. Choices are ``Edm.Int32`` in CSDL, exactly like whole numbers, and the choice
labels themselves are not in ``$metadata``; so which columns get a ``_label`` is a heuristic on
the column's name and type, decided from the JSON schema alone (`wants_label`) so that a run from a
saved catalog (no ``$metadata``) recognizes the same columns:

* integer columns whose name ends in ``code`` -- the naming convention of every standard choice
  (``statecode``, ``statuscode``, ``industrycode``, ``prioritycode``, ``address1_addresstypecode``);
  a few standard whole numbers end in ``code`` too (``utcconversiontimezonecode``): their label
  is the service's formatted number (``"85"``);
* integer columns with a non-Microsoft publisher prefix (``new_stage``, ``cr8a3_category``):
  custom choices rarely end in ``code``; a custom whole number gets its formatted number
  (``"1,234"``), and so do the few standard integers whose name merely looks prefixed
  (``rating_count``; ``address1_``/``shipto_``-style stems are recognized as standard);
* boolean columns (two-option choices: ``"Yes"``/``"No"`` or the column's own labels).

Not covered: multi-select choices (``Edm.String`` in CSDL), and money, date and decimal columns,
whose formatted values (``"$20,000.00"``, ``"4/7/2023 2:59 PM"``) are localized renderings of
values the record already carries exactly; their annotations are dropped.

Lookup columns. ``_name`` is added for every lookup (``_x_value``); ``_table`` when the lookup
can reference more than one table (`EntityModel.lookup_targets`: ``ownerid`` -> systemuser or team,
``customerid`` -> account or contact, ``regardingobjectid``), or when the metadata declares no
target at all (then the table is only known from the row).

Collisions. Base columns must be ``[a-z0-9_]+`` (every Dataverse logical name is; a column that
is not gets no extra column). ``_name``/``_table`` columns cannot collide with a real column:
real columns starting with ``_`` are lookups and end in ``_value``. A ``_label`` column could
(a custom column named ``new_stagecode_label``): `extend_schema` raises `FormattedColumnError`
naming both. Generated names never collide with each other (only ``_label`` bases lack the
leading ``_``). With the longest logical names (50 characters) a ``_x_value_table`` column has 63
characters, PostgreSQL's identifier limit.

Public API:
    prefer_annotations(): the ``Prefer`` value to send (with ``odata.maxpagesize``, comma-joined).
    extend_schema(entity, schema, model): a stream schema with the extra columns declared.
    formatted_columns(schema_properties, selected): the extra columns among the selected ones.
    source_columns(schema_properties, selected): what to ``$select`` for a selection.
    make_row_transform(selected_columns, extra_columns): the per-record transform.
    wants_label(name, schema): the label heuristic; FormattedColumnError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from dynamics_api.metadata import EntityModel, EntityType, Lookup

__all__ = [
    "FORMATTED_VALUE",
    "LABEL_SUFFIX",
    "LOOKUP_LOGICAL_NAME",
    "NAME_SUFFIX",
    "TABLE_SUFFIX",
    "FormattedColumnError",
    "extend_schema",
    "formatted_columns",
    "make_row_transform",
    "prefer_annotations",
    "source_columns",
    "wants_label",
]

FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"

LABEL_SUFFIX = "_label"
NAME_SUFFIX = "_name"
TABLE_SUFFIX = "_table"

_SAFE = re.compile(r"[a-z0-9_]+")
# Publisher prefix of a custom column: 2-8 letters/digits starting with a letter, then "_".
_PREFIXED = re.compile(r"([a-z][a-z0-9]{1,7})_[a-z0-9_]+")
_MICROSOFT_PREFIXES = frozenset({"adx", "mspp", "msfp", "msevtmgt", "mspcat", "msa", "mserp"})
# Stems of standard columns that look like a publisher prefix (address1_utcoffset, shipto_...).
_STANDARD_PREFIXES = frozenset({"address1", "address2", "address3", "shipto", "billto"})

_EXTRA_SCHEMA: dict[str, Any] = {"type": ["string", "null"]}


class FormattedColumnError(ValueError):
    """A generated formatted-value column has the name of a real column of the table."""


def prefer_annotations() -> str:
    """The ``Prefer`` preference that asks for exactly the annotations used here.

    Join it to the page size with a comma: ``odata.maxpagesize=5000,`` + this value (one
    ``Prefer`` header; the quotes keep the inner comma part of this preference).
    """
    return f'odata.include-annotations="{FORMATTED_VALUE},{LOOKUP_LOGICAL_NAME}"'


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {str(t) for t in declared}
    return set()


def _is_lookup_name(name: str) -> bool:
    return name.startswith("_") and name.endswith("_value") and len(name) > 7


def _is_custom_column(name: str) -> bool:
    match = _PREFIXED.fullmatch(name)
    if match is None:
        return False
    prefix = match.group(1)
    return not (
        prefix in _MICROSOFT_PREFIXES or prefix in _STANDARD_PREFIXES or prefix.startswith("msdyn")
    )


def wants_label(name: str, schema: Mapping[str, Any]) -> bool:
    """Whether column ``name`` with JSON schema ``schema`` gets a ``<name>_label`` column.

    Integer columns named ``...code`` or with a custom publisher prefix, and boolean columns;
    never a lookup, never a name outside ``[a-z0-9_]``.
    """
    if _SAFE.fullmatch(name) is None or _is_lookup_name(name):
        return False
    types = _types(schema)
    if "boolean" in types:
        return True
    return "integer" in types and (name.endswith("code") or _is_custom_column(name))


def _annotation_of(column: str, schema_properties: Mapping[str, Any]) -> str | None:
    """The annotation key (``base@term``) an extra column is filled from, or None for a column
    that is not an extra column of this schema."""
    if column.endswith(LABEL_SUFFIX):
        base = column[: -len(LABEL_SUFFIX)]
        base_schema = schema_properties.get(base)
        if base_schema is not None and wants_label(base, base_schema):
            return f"{base}@{FORMATTED_VALUE}"
    elif column.endswith(NAME_SUFFIX):
        base = column[: -len(NAME_SUFFIX)]
        if _is_lookup_name(base) and base in schema_properties:
            return f"{base}@{FORMATTED_VALUE}"
    elif column.endswith(TABLE_SUFFIX):
        base = column[: -len(TABLE_SUFFIX)]
        if _is_lookup_name(base) and base in schema_properties:
            return f"{base}@{LOOKUP_LOGICAL_NAME}"
    return None


class _Targets:
    """Whether a lookup references exactly one table: the answer of `EntityModel.lookup_targets`
    (abstract targets expanded to their concrete descendants), from a children map built once
    instead of that method's walk over every type of the document for each lookup."""

    def __init__(self, model: EntityModel) -> None:
        self.abstract = model.abstract_types
        self.children: dict[str, list[str]] = {}
        for name, base in model.base_types.items():
            if base is not None:
                self.children.setdefault(base, []).append(name)

    def _concrete(self, target: str, found: set[str]) -> None:
        stack, seen = [target], {target}
        while stack:
            name = stack.pop()
            if name not in self.abstract:
                found.add(name)
            for child in self.children.get(name, ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)

    def single(self, lookup: Lookup | None) -> bool:
        if lookup is None:
            return False
        found: set[str] = set()
        for target in set(lookup.navigations.values()):
            self._concrete(target, found)
            if len(found) > 1:
                return False
        return len(found) == 1


def _extras_for(
    name: str, prop_schema: Mapping[str, Any], entity: EntityType, targets: _Targets
) -> list[str]:
    if _SAFE.fullmatch(name) is None:
        return []
    if _is_lookup_name(name):
        out = [name + NAME_SUFFIX]
        if not targets.single(entity.lookups.get(name)):
            out.append(name + TABLE_SUFFIX)
        return out
    if wants_label(name, prop_schema):
        return [name + LABEL_SUFFIX]
    return []


def extend_schema(entity: EntityType, schema: dict[str, Any], model: EntityModel) -> dict[str, Any]:
    """A copy of a stream schema with the formatted-value columns declared (nullable strings).

    Each extra column follows its base column; the input is not modified; extending an
    already-extended schema gives the same schema.

    Args:
        entity: the table the schema was made for (``json_schema(entity, ...)``).
        schema: the stream schema (``{"type": "object", "properties": {...}, ...}``).
        model: the parsed model, for polymorphic lookups' targets.

    Raises:
        FormattedColumnError: a generated column has the name of a real column of the table.
    """
    props: Mapping[str, Any] = schema.get("properties", {})
    real = entity.properties.keys()
    targets = _Targets(model)
    out: dict[str, Any] = {}
    for name, prop_schema in props.items():
        if name not in real and _annotation_of(name, props) is not None:
            continue  # an extra column of an extended schema: regenerated after its base
        out[name] = prop_schema
        for extra in _extras_for(name, prop_schema, entity, targets):
            if extra in real:
                raise FormattedColumnError(
                    f"Table {entity.name!r}: the formatted-value column {extra!r} generated for "
                    f"column {name!r} has the name of the real column {extra!r}; exclude one of "
                    f"them from the catalog or turn off include_formatted_values."
                )
            out[extra] = dict(_EXTRA_SCHEMA)
    return {**schema, "properties": out}


def formatted_columns(schema_properties: Mapping[str, Any], selected: Iterable[str]) -> list[str]:
    """The extra (formatted-value) columns among ``selected``, in schema order.

    Decided from the schema alone (names and JSON types), so it works for a run from a saved
    catalog as well as after `extend_schema`.

    Args:
        schema_properties: the stream schema's ``properties``.
        selected: the selected column names (real and extra ones mixed).
    """
    chosen = set(selected)
    return [
        name
        for name in schema_properties
        if name in chosen and _annotation_of(name, schema_properties) is not None
    ]


def source_columns(schema_properties: Mapping[str, Any], selected: Iterable[str]) -> list[str]:
    """The columns to ``$select`` for a selection: the selected real columns, plus the base
    column of each selected extra column (its annotation only comes with it), in schema order.
    """
    chosen = list(dict.fromkeys(selected))
    extras = set(formatted_columns(schema_properties, chosen))
    wanted = {c for c in chosen if c not in extras}
    for extra in extras:
        wanted.add(extra.rsplit("_", 1)[0])
    ordered = [name for name in schema_properties if name in wanted]
    return ordered + [c for c in chosen if c in wanted and c not in schema_properties]


def _source_key(extra: str) -> str:
    if extra.endswith(TABLE_SUFFIX):
        return f"{extra[: -len(TABLE_SUFFIX)]}@{LOOKUP_LOGICAL_NAME}"
    if extra.endswith(NAME_SUFFIX):
        base = extra[: -len(NAME_SUFFIX)]
        if _is_lookup_name(base):
            return f"{base}@{FORMATTED_VALUE}"
    if extra.endswith(LABEL_SUFFIX):
        return f"{extra[: -len(LABEL_SUFFIX)]}@{FORMATTED_VALUE}"
    raise ValueError(
        f"{extra!r} is not a formatted-value column name (<column>_label, <_x_value>_name or "
        "<_x_value>_table)"
    )


def make_row_transform(
    selected_columns: Iterable[str], extra_columns: Iterable[str]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The per-record transform of a stream with formatted values.

    The returned function takes a row as decoded from a page and returns a new dict with: each
    selected real column present in the row (a missing one stays missing), then every extra
    column, filled from its annotation or None when the row has no such annotation (a null
    lookup, a choice without a value). Every other key (``@odata.etag``, other annotations,
    columns the service adds unasked) is dropped. The mapping is computed once, here.

    Args:
        selected_columns: the selected real columns (extra columns found here are moved to
            ``extra_columns``, so passing every selected name is fine).
        extra_columns: the extra columns to fill (`formatted_columns`).

    Raises:
        ValueError: an extra column's name is not of the scheme.
    """
    extras = list(dict.fromkeys(extra_columns))
    extra_set = set(extras)
    keep = tuple(dict.fromkeys(c for c in selected_columns if c not in extra_set))
    moves = tuple((_source_key(extra), extra) for extra in extras)

    def fill(out: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        get = row.get
        for src, dst in moves:
            out[dst] = get(src)
        return out

    if len(keep) < 2:

        def transform(row: dict[str, Any]) -> dict[str, Any]:
            return fill({k: row[k] for k in keep if k in row}, row)

        return transform

    # The usual row has every selected column: one C-level itemgetter call picks them all.
    pick = itemgetter(*keep)

    def transform_all(row: dict[str, Any]) -> dict[str, Any]:
        try:
            out = dict(zip(keep, pick(row), strict=True))
        except KeyError:
            out = {k: row[k] for k in keep if k in row}
        return fill(out, row)

    return transform_all
