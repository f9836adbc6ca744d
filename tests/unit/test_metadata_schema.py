"""dynamics_api.metadata.schema: JSON Schema of the real and synthetic entity types."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dynamics_api.metadata import (
    EntityModel,
    MetadataError,
    Property,
    json_schema,
    parse_metadata,
    property_schema,
    schema_properties,
)
from tests.fixtures import CRM_SCHEMA, DYNAMICS_CRM, needs_fixtures
from tests.unit.csdl_docs import STANDARD


@pytest.fixture(scope="module")
def crm() -> EntityModel:
    return parse_metadata(CRM_SCHEMA)


@pytest.fixture(scope="module")
def dyn() -> EntityModel:
    return parse_metadata(DYNAMICS_CRM)


SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"


# ---------------------------------------------------------------------------------------------
# Type mapping
# ---------------------------------------------------------------------------------------------

TYPE_ROWS = [
    pytest.param(
        "Edm.Guid", "primitive", {"type": ["string", "null"], "format": "uuid"}, id="guid"
    ),
    pytest.param("Edm.String", "primitive", {"type": ["string", "null"]}, id="string"),
    pytest.param("Edm.Int16", "primitive", {"type": ["integer", "null"]}, id="int16"),
    pytest.param("Edm.Int32", "primitive", {"type": ["integer", "null"]}, id="int32"),
    pytest.param("Edm.Int64", "primitive", {"type": ["integer", "null"]}, id="int64"),
    pytest.param(
        "Edm.DateTimeOffset",
        "primitive",
        {"type": ["string", "null"], "format": "date-time"},
        id="datetimeoffset",
    ),
    pytest.param(
        "Edm.Date", "primitive", {"type": ["string", "null"], "format": "date"}, id="date"
    ),
    pytest.param("Edm.Boolean", "primitive", {"type": ["boolean", "null"]}, id="boolean"),
    pytest.param("Edm.Decimal", "primitive", {"type": ["number", "null"]}, id="decimal"),
    pytest.param("Edm.Double", "primitive", {"type": ["number", "null"]}, id="double"),
    pytest.param(
        "Edm.Binary",
        "primitive",
        {"type": ["string", "null"], "contentEncoding": "base64"},
        id="binary",
    ),
    pytest.param(
        "Microsoft.Dynamics.CRM.Label", "complex", {"type": ["object", "null"]}, id="complex"
    ),
    pytest.param(
        "Microsoft.Dynamics.CRM.AttributeTypeCode", "enum", {"type": ["string", "null"]}, id="enum"
    ),
    pytest.param(
        "Collection(Edm.String)",
        "primitive",
        {"type": ["array", "null"], "items": {"type": "string"}},
        id="collection-string",
    ),
    pytest.param(
        "Collection(Edm.Guid)",
        "primitive",
        {"type": ["array", "null"], "items": {"type": "string", "format": "uuid"}},
        id="collection-guid",
    ),
    pytest.param(
        "Collection(Microsoft.Dynamics.CRM.LocalizedLabel)",
        "complex",
        {"type": ["array", "null"], "items": {"type": "object"}},
        id="collection-complex",
    ),
    pytest.param("Microsoft.Dynamics.CRM.Unknown", "unknown", {}, id="unknown-anything"),
]


@needs_fixtures
def test_type_histogram_is_covered(crm: EntityModel) -> None:
    """Every Edm type in crm_schema.xml has a row in the mapping table above."""
    used = {
        p.element_type
        for e in crm.entities.values()
        for p in e.properties.values()
        if p.kind == "primitive"
    }
    assert {
        "Edm.Guid",
        "Edm.String",
        "Edm.Int32",
        "Edm.DateTimeOffset",
        "Edm.Boolean",
        "Edm.Decimal",
        "Edm.Int64",
        "Edm.Double",
        "Edm.Binary",
        "Edm.Date",
        "Edm.Int16",
    } <= used
    assert used <= {row.values[0] for row in TYPE_ROWS}
    kinds = {p.kind for e in crm.entities.values() for p in e.properties.values()}
    assert kinds == {"primitive", "complex", "enum"}


@pytest.mark.parametrize(("edm_type", "kind", "expected"), TYPE_ROWS)
def test_property_schema(edm_type: str, kind: Any, expected: dict[str, Any]) -> None:
    assert property_schema(Property("p", edm_type, kind=kind)) == expected


def test_key_and_string_facets() -> None:
    assert property_schema(Property("id", "Edm.Guid"), nullable=False) == {
        "type": "string",
        "format": "uuid",
    }
    assert property_schema(Property("s", "Edm.String", max_length=160)) == {
        "type": ["string", "null"],
        "maxLength": 160,
    }


@needs_fixtures
def test_real_columns_map_as_documented(crm: EntityModel) -> None:
    contact = json_schema(crm.entities["contact"])["properties"]
    assert contact["birthdate"] == {"type": ["string", "null"], "format": "date"}
    assert contact["createdon"] == {"type": ["string", "null"], "format": "date-time"}
    account = json_schema(crm.entities["account"])["properties"]
    assert account["revenue"] == {"type": ["number", "null"]}
    assert account["address1_latitude"] == {"type": ["number", "null"]}
    assert account["versionnumber"] == {"type": ["integer", "null"]}
    assert account["_parentaccountid_value"] == {"type": ["string", "null"], "format": "uuid"}
    metadata = json_schema(crm.entities["EntityMetadata"])["properties"]
    assert metadata["DisplayName"] == {"type": ["object", "null"]}  # complex Label
    assert metadata["OwnershipType"] == {"type": ["string", "null"]}  # enum OwnershipTypes


@needs_fixtures
def test_json_schema_of_account(crm: EntityModel) -> None:
    account = crm.entities["account"]
    schema = json_schema(account)
    assert schema["type"] == "object"
    assert "additionalProperties" not in schema  # open on purpose (see json_schema docstring)
    assert schema["required"] == ["accountid"]
    assert schema["properties"]["accountid"] == {"type": "string", "format": "uuid"}
    nullable = [n for n, s in schema["properties"].items() if "null" not in s["type"]]
    assert nullable == ["accountid"]
    assert set(schema["properties"]) == set(account.properties)


@needs_fixtures
def test_schema_property_order_is_key_then_alphabetical(crm: EntityModel) -> None:
    account = crm.entities["account"]
    names = schema_properties(account)
    assert names[0] == "accountid" and names[1:] == sorted(names[1:])
    assert list(json_schema(account)["properties"]) == names


@needs_fixtures
def test_schema_subset_keeps_the_key(crm: EntityModel) -> None:
    account = crm.entities["account"]
    schema = json_schema(account, properties=["name", "_parentaccountid_value"])
    assert list(schema["properties"]) == ["accountid", "_parentaccountid_value", "name"]
    with pytest.raises(MetadataError, match="parentaccountid"):
        json_schema(account, properties=["name", "parentaccountid"])


@needs_fixtures
def test_catalog_is_stable_across_parses(crm: EntityModel) -> None:
    again = parse_metadata(CRM_SCHEMA.read_bytes(), STANDARD)
    for name in STANDARD:
        first = json.dumps(json_schema(crm.entities[name]))
        second = json.dumps(json_schema(again.entities[name]))
        assert first == second


@needs_fixtures
def test_integer_key_of_the_synthetic_example_entity(dyn: EntityModel) -> None:
    example = dyn.entities["ExampleEntity"]
    assert example.key == ["ID"] and example.base_type is None
    assert json_schema(example)["properties"]["ID"] == {"type": "integer"}


@needs_fixtures
def test_account_schema_snapshot(crm: EntityModel) -> None:
    path = SNAPSHOTS / "crm_schema_account.schema.json"
    actual = json.dumps(json_schema(crm.entities["account"]), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.is_file(), f"{path} is missing; run with UPDATE_SNAPSHOTS=1 to create it"
    assert path.read_text(encoding="utf-8") == actual, (
        f"the account schema differs from {path}; if the change is intended, review it and "
        "regenerate with UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/unit/test_metadata_schema.py"
    )
