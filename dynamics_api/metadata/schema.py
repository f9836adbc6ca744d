"""JSON Schema of entity types, for Singer catalogs (OData JSON format 4.01, section 7.1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dynamics_api.metadata.model import EntityType, MetadataError, Property, PropertyKind

__all__ = ["json_schema", "property_schema", "schema_properties"]

# Non-null JSON Schema of each primitive type (OData JSON format 4.01, section 7.1).
_EDM_SCHEMAS: dict[str, dict[str, Any]] = {
    "Edm.Binary": {"type": "string", "contentEncoding": "base64"},
    "Edm.Boolean": {"type": "boolean"},
    "Edm.Byte": {"type": "integer"},
    "Edm.Date": {"type": "string", "format": "date"},
    "Edm.DateTimeOffset": {"type": "string", "format": "date-time"},
    "Edm.Decimal": {"type": "number"},
    "Edm.Double": {"type": "number"},
    "Edm.Duration": {"type": "string", "format": "duration"},
    "Edm.Guid": {"type": "string", "format": "uuid"},
    "Edm.Int16": {"type": "integer"},
    "Edm.Int32": {"type": "integer"},
    "Edm.Int64": {"type": "integer"},
    "Edm.SByte": {"type": "integer"},
    "Edm.Single": {"type": "number"},
    "Edm.Stream": {"type": "string"},
    "Edm.String": {"type": "string"},
    "Edm.TimeOfDay": {"type": "string", "format": "time"},
}


def _base_schema(edm_type: str, kind: PropertyKind) -> dict[str, Any]:
    if kind == "complex" or edm_type.startswith(("Edm.Geography", "Edm.Geometry")):
        return {"type": "object"}
    if kind == "enum":
        return {"type": "string"}
    known = _EDM_SCHEMAS.get(edm_type)
    return dict(known) if known is not None else {}


def property_schema(prop: Property, *, nullable: bool = True) -> dict[str, Any]:
    """The JSON Schema of one property.

    Types: ``Edm.Guid`` -> string/uuid; ``Edm.DateTimeOffset`` -> string/date-time; ``Edm.Date``
    -> string/date (date-only columns such as ``contact.birthdate``, never date-time);
    ``Edm.Int16/32/64`` -> integer; ``Edm.Decimal`` and ``Edm.Double`` -> number; ``Edm.Boolean``
    -> boolean; ``Edm.Binary`` -> base64 string; ``Edm.String`` -> string with ``maxLength`` when
    declared; complex types -> object; enum types -> string (OData JSON writes member names);
    collections -> array of the element schema; unknown types -> ``{}`` (anything).

    Decimals (money included) stay exact although typed ``number``: the service writes them as
    JSON numbers with every digit, the tap parses response bodies with JSON numbers read into
    ``decimal.Decimal``, and singer-sdk serializes ``Decimal`` values without going through float.

    Args:
        prop: the property.
        nullable: add ``"null"`` to the type (all columns except the primary key).
    """
    if prop.is_collection:
        schema: dict[str, Any] = {
            "type": "array",
            "items": _base_schema(prop.element_type, prop.kind),
        }
    else:
        schema = _base_schema(prop.edm_type, prop.kind)
        if (
            prop.edm_type == "Edm.String"
            and prop.max_length is not None
            and prop.kind == "primitive"
        ):
            schema["maxLength"] = prop.max_length
    if nullable and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def schema_properties(entity: EntityType, properties: Iterable[str] | None = None) -> list[str]:
    """The property names of a stream schema, in catalog order: key columns first, then A-Z.

    Args:
        entity: the entity type.
        properties: restrict to these (the key columns are always included); None keeps all.

    Raises:
        MetadataError: a name in ``properties`` is not a property of the entity type.
    """
    if properties is None:
        names = set(entity.properties)
    else:
        names = set([properties] if isinstance(properties, str) else properties)
        unknown = sorted(names - entity.properties.keys())
        if unknown:
            raise MetadataError(
                f"Table {entity.name!r} has no column(s) {', '.join(unknown)} (lookups are "
                "named _<column>_value)."
            )
    keys = [k for k in entity.key if k in entity.properties]
    return keys + sorted(names - set(keys))


def json_schema(entity: EntityType, *, properties: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12 vocabulary, as Singer catalogs use it) of an entity type.

    Every column is nullable except the primary key (``$select`` answers carry ``null`` for
    empty columns, required ones included). Lookups appear as their ``_x_value`` uuid columns.
    The order of ``properties`` is deterministic (`schema_properties`), so catalogs are stable.

    ``additionalProperties`` is deliberately left out (open schema): new columns appear in
    Dataverse before a catalog is refreshed, and the tap adds formatted-value columns; Singer
    targets tolerate extra fields, whereas a closed schema would make validating targets fail.

    Args:
        entity: the entity type.
        properties: restrict to these columns (key columns always included).
    """
    keys = set(entity.key)
    props = {
        name: property_schema(entity.properties[name], nullable=name not in keys)
        for name in schema_properties(entity, properties)
    }
    schema: dict[str, Any] = {"type": "object", "properties": props}
    required = [k for k in entity.key if k in props]
    if required:
        schema["required"] = required
    return schema
