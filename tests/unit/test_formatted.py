"""tap_dynamics.formatted: naming scheme, schema extension, selection and the per-row transform."""

from __future__ import annotations

import json
import re
import timeit
from decimal import Decimal
from typing import Any

import pytest

from dynamics_api.metadata import (
    EntityModel,
    EntityType,
    Lookup,
    Property,
    json_schema,
    parse_metadata,
)
from tap_dynamics.formatted import (
    FORMATTED_VALUE,
    LOOKUP_LOGICAL_NAME,
    FormattedColumnError,
    extend_schema,
    formatted_columns,
    make_row_transform,
    prefer_annotations,
    source_columns,
    wants_label,
)
from tests.fixtures import CRM_SCHEMA, doc_json, needs_fixtures

NULLABLE_STRING = {"type": ["string", "null"]}


@pytest.fixture(scope="module")
def crm() -> EntityModel:
    return parse_metadata(CRM_SCHEMA)


def lookup(prop: str, navigations: dict[str, str]) -> Lookup:
    return Lookup(prop, prop[1:-6], navigations, read_only=False)


def make_entity(
    name: str,
    props: dict[str, str],
    lookups: list[Lookup] | None = None,
    *,
    key: str | None = None,
) -> EntityType:
    lks = {lk.property: lk for lk in lookups or []}
    return EntityType(
        name=name,
        entity_set=f"{name}s",
        key=[key or f"{name}id"],
        base_type="crmbaseentity",
        abstract=False,
        properties={n: Property(n, t) for n, t in props.items()},
        lookups=lks,
        navigation={nav: tgt for lk in lks.values() for nav, tgt in lk.navigations.items()},
        alternate_keys=[],
        change_tracking=True,
        is_custom=name.startswith("new_"),
    )


def make_model(*entities: EntityType) -> EntityModel:
    ents = {e.name: e for e in entities}
    base_types: dict[str, str | None] = {
        "crmbaseentity": None,
        "principal": None,
        "systemuser": "principal",
        "team": "principal",
        "account": "crmbaseentity",
        "contact": "crmbaseentity",
        "activitypointer": "crmbaseentity",  # concrete here, with a derived type
        "email": "activitypointer",
    }
    base_types.update({e.name: e.base_type for e in entities})
    return EntityModel(
        entities=ents,
        source_bytes=0,
        base_types=base_types,
        abstract_types=frozenset({"crmbaseentity", "principal"}),
    )


# -- every column kind -----------------------------------------------------------------------

KINDS: dict[str, str] = {
    "new_thingid": "Edm.Guid",
    "new_name": "Edm.String",
    "prioritycode": "Edm.Int32",  # standard choice: ...code
    "statecode": "Edm.Int32",
    "statuscode": "Edm.Int32",
    "new_stage": "Edm.Int32",  # custom choice without "code"
    "new_tiny": "Edm.Int16",  # custom integer: a label too (JSON says integer)
    "numberofemployees": "Edm.Int32",  # plain whole number
    "msdyn_score": "Edm.Int32",  # Microsoft prefix: not custom
    "address1_utcoffset": "Edm.Int32",  # standard address prefix: not custom
    "versionnumber": "Edm.Int64",
    "donotemail": "Edm.Boolean",  # two-option choice
    "revenue": "Edm.Decimal",
    "exchangerate": "Edm.Decimal",
    "new_ratio": "Edm.Double",
    "modifiedon": "Edm.DateTimeOffset",
    "birthdate": "Edm.Date",
    "new_tags": "Edm.String",  # multi-select choices are strings in CSDL: no label
    "address1_name": "Edm.String",  # a real column ending in _name
    "_parentaccountid_value": "Edm.Guid",
    "_customerid_value": "Edm.Guid",
    "_ownerid_value": "Edm.Guid",
    "_createdbyexternalparty_value": "Edm.Guid",
    "_new_activityid_value": "Edm.Guid",
}
KIND_LOOKUPS = [
    lookup("_parentaccountid_value", {"parentaccountid": "account"}),
    lookup(
        "_customerid_value",
        {"new_customerid_account": "account", "new_customerid_contact": "contact"},
    ),
    lookup("_ownerid_value", {"ownerid": "principal"}),
    lookup("_createdbyexternalparty_value", {}),  # no navigation: target unknown
    lookup("_new_activityid_value", {"new_activityid": "activitypointer"}),  # + derived email
]


def kinds_entity() -> EntityType:
    return make_entity("new_thing", KINDS, KIND_LOOKUPS)


def test_every_column_kind() -> None:
    entity = kinds_entity()
    schema = extend_schema(entity, json_schema(entity), make_model(entity))
    extra = {n: s for n, s in schema["properties"].items() if n not in entity.properties}
    assert sorted(extra) == sorted(
        [
            "_createdbyexternalparty_value_name",
            "_createdbyexternalparty_value_table",
            "_customerid_value_name",
            "_customerid_value_table",
            "_new_activityid_value_name",
            "_new_activityid_value_table",
            "_ownerid_value_name",
            "_ownerid_value_table",
            "_parentaccountid_value_name",
            "donotemail_label",
            "new_stage_label",
            "new_tiny_label",
            "prioritycode_label",
            "statecode_label",
            "statuscode_label",
        ]
    )
    assert all(s == NULLABLE_STRING for s in extra.values())
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in schema["properties"])
    # Each extra column follows its base column.
    names = list(schema["properties"])
    assert names[names.index("_customerid_value") + 1 : names.index("_customerid_value") + 3] == [
        "_customerid_value_name",
        "_customerid_value_table",
    ]
    assert names[names.index("statuscode") + 1] == "statuscode_label"
    # The real columns and the rest of the schema are untouched.
    assert {n: s for n, s in schema["properties"].items() if n in entity.properties} == (
        json_schema(entity)["properties"]
    )
    assert schema["required"] == ["new_thingid"]


def test_extend_schema_is_pure_and_idempotent() -> None:
    entity = kinds_entity()
    model = make_model(entity)
    base = json_schema(entity)
    before = json.dumps(base)
    once = extend_schema(entity, base, model)
    assert json.dumps(base) == before
    assert extend_schema(entity, once, model) == once


def test_extend_schema_restricted_properties() -> None:
    entity = kinds_entity()
    schema = extend_schema(
        entity, json_schema(entity, properties=["statuscode", "_ownerid_value"]), make_model(entity)
    )
    assert list(schema["properties"]) == [
        "new_thingid",
        "_ownerid_value",
        "_ownerid_value_name",
        "_ownerid_value_table",
        "statuscode",
        "statuscode_label",
    ]


def test_wants_label() -> None:
    assert wants_label("statuscode", {"type": ["integer", "null"]})
    assert wants_label("industrycode", {"type": "integer"})
    assert wants_label("cr8a3_category", {"type": ["integer", "null"]})
    assert wants_label("isescalated", {"type": ["boolean", "null"]})
    assert not wants_label("numberofemployees", {"type": ["integer", "null"]})
    assert not wants_label("msdyn_priority", {"type": ["integer", "null"]})
    assert not wants_label("address2_utcoffset", {"type": ["integer", "null"]})
    assert not wants_label("postalcode", {"type": ["string", "null"]})
    assert not wants_label("StatusCode", {"type": ["integer", "null"]})  # not [a-z0-9_]
    assert not wants_label("_statuscode_value", {"type": ["integer", "null"]})
    assert not wants_label("statuscode", {})


@needs_fixtures
def test_table_columns_follow_lookup_targets(crm: EntityModel) -> None:
    """A _table column exactly for the lookups that can reference several tables (or whose
    target the metadata does not give), over every lookup of crm_schema.xml."""
    polymorphic = 0
    for entity in crm.entities.values():
        if not entity.entity_set or not entity.lookups:
            continue
        props = extend_schema(entity, json_schema(entity), crm)["properties"]
        for prop, lk in entity.lookups.items():
            several = len(crm.lookup_targets(lk)) != 1
            assert (f"{prop}_table" in props) == several, (entity.name, prop)
            assert f"{prop}_name" in props
            polymorphic += bool(lk.navigations) and several
    assert polymorphic > 100
    incident = extend_schema(crm.entities["incident"], json_schema(crm.entities["incident"]), crm)
    assert {"_customerid_value_table", "_ownerid_value_table"} <= set(incident["properties"])


# -- collisions ------------------------------------------------------------------------------


def test_collision_with_a_real_label_column() -> None:
    entity = make_entity(
        "new_thing",
        {
            "new_thingid": "Edm.Guid",
            "new_stagecode": "Edm.Int32",
            "new_stagecode_label": "Edm.String",
        },
    )
    with pytest.raises(FormattedColumnError, match=r"'new_stagecode_label'.*'new_stagecode'"):
        extend_schema(entity, json_schema(entity), make_model(entity))
    # Not selected together in the schema: no generated column, no collision.
    only_real = json_schema(entity, properties=["new_stagecode_label"])
    assert extend_schema(entity, only_real, make_model(entity)) == only_real


def test_collision_of_a_boolean_label() -> None:
    entity = make_entity(
        "new_thing",
        {"new_thingid": "Edm.Guid", "isactive": "Edm.Boolean", "isactive_label": "Edm.String"},
    )
    with pytest.raises(FormattedColumnError) as err:
        extend_schema(entity, json_schema(entity), make_model(entity))
    assert "isactive_label" in str(err.value)
    assert "'isactive'" in str(err.value)
    assert "new_thing" in str(err.value)


@needs_fixtures
def test_no_collision_possible_for_lookup_columns(crm: EntityModel) -> None:
    """Real columns starting with "_" are lookups ending in "_value": never "_name"/"_table"; the
    real "..._name" columns (address1_name) are not taken for extra columns."""
    for entity in crm.entities.values():
        if not entity.entity_set or not re.fullmatch(r"[a-z0-9_]+", entity.name):
            continue
        real = [p for p in entity.properties if p.startswith("_")]
        assert all(p.endswith("_value") for p in real), entity.name
        schema = extend_schema(entity, json_schema(entity), crm)  # no FormattedColumnError
        assert formatted_columns(schema["properties"], entity.properties) == []


# -- selection -------------------------------------------------------------------------------


def test_formatted_columns_and_source_columns() -> None:
    entity = kinds_entity()
    props = extend_schema(entity, json_schema(entity), make_model(entity))["properties"]
    selected = ["new_thingid", "statuscode_label", "_ownerid_value_table", "new_name", "new_stage"]
    assert formatted_columns(props, selected) == ["_ownerid_value_table", "statuscode_label"]
    # Each selected extra column brings its base column into $select.
    assert source_columns(props, selected) == [
        "new_thingid",
        "_ownerid_value",
        "new_name",
        "new_stage",
        "statuscode",
    ]
    # From a saved catalog (JSON round trip), the same answer.
    saved = json.loads(json.dumps(props))
    assert formatted_columns(saved, selected) == ["_ownerid_value_table", "statuscode_label"]
    # Real columns that look like extras are not taken for them.
    assert formatted_columns(props, ["address1_name", "new_name", "revenue"]) == []


def test_prefer_annotations() -> None:
    assert prefer_annotations() == (
        'odata.include-annotations="OData.Community.Display.V1.FormattedValue,'
        'Microsoft.Dynamics.CRM.lookuplogicalname"'
    )


# -- the transform over the documentation's responses ----------------------------------------


def run_fixture(
    crm: EntityModel, fixture: str, columns: list[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    account = crm.entities["account"]
    schema = extend_schema(account, json_schema(account, properties=columns), crm)
    props = schema["properties"]
    selected = list(props)  # everything selected
    extras = formatted_columns(props, selected)
    real = [c for c in selected if c not in extras]
    assert source_columns(props, selected) == real
    transform = make_row_transform(real, extras)
    return extras, [transform(row) for row in doc_json(fixture)["value"]]


@needs_fixtures
def test_fixture_formatted_values(crm: EntityModel) -> None:
    extras, rows = run_fixture(
        crm,
        "query/03-accounts-formatted-values.json",
        [
            "name",
            "revenue",
            "_primarycontactid_value",
            "customertypecode",
            "modifiedon",
            "_transactioncurrencyid_value",
        ],
    )
    assert extras == [
        "_primarycontactid_value_name",
        "_transactioncurrencyid_value_name",
        "customertypecode_label",
    ]
    assert rows == [
        {
            "accountid": "78914942-34cb-ed11-b596-0022481d68cd",
            "_primarycontactid_value": "70bf4d48-34cb-ed11-b596-0022481d68cd",
            "_transactioncurrencyid_value": "228f42f8-e646-e111-8eb7-78e7d162ced1",
            "customertypecode": 1,
            "modifiedon": "2023-04-07T21:59:01Z",
            "name": "Litware, Inc. (sample)",
            "revenue": 20000.0,
            "_primarycontactid_value_name": "Susanna Stubberod (sample)",
            "_transactioncurrencyid_value_name": "US Dollar",
            "customertypecode_label": "Competitor",
        }
    ]
    # Deterministic key order: the selected real columns, then the extra columns.
    assert list(rows[0])[-3:] == extras


@needs_fixtures
def test_fixture_lookup_annotations(crm: EntityModel) -> None:
    extras, rows = run_fixture(
        crm, "query/04-accounts-lookup-annotations.json", ["name", "_ownerid_value"]
    )
    assert extras == ["_ownerid_value_name", "_ownerid_value_table"]
    assert rows == [
        {
            "accountid": "1adef0b8-54d3-ed11-a7c7-000d3a993550",
            "_ownerid_value": "39e0dbe4-131b-e111-ba7e-78e7d1620f5e",
            "name": "Adventure Works (sample)",
            "_ownerid_value_name": None,  # FormattedValue was not asked for in that request
            "_ownerid_value_table": "team",
        },
        {
            "accountid": "78914942-34cb-ed11-b596-0022481d68cd",
            "_ownerid_value": "4026be43-6b69-e111-8f65-78e7d1620f5e",
            "name": "Litware, Inc. (sample)",
            "_ownerid_value_name": None,
            "_ownerid_value_table": "systemuser",
        },
    ]


def test_transform_rules() -> None:
    transform = make_row_transform(
        ["id", "statuscode", "_ownerid_value", "statuscode_label"],  # extras here are moved
        ["statuscode_label", "_ownerid_value_name", "_ownerid_value_table"],
    )
    row = {
        "@odata.etag": 'W/"1"',
        "id": "a",
        f"statuscode@{FORMATTED_VALUE}": "Active",
        "statuscode": 1,
        f"_ownerid_value@{FORMATTED_VALUE}": "Nancy",
        f"_ownerid_value@{LOOKUP_LOGICAL_NAME}": "systemuser",
        "_ownerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty": "ownerid",
        "_ownerid_value": "b",
        f"revenue@{FORMATTED_VALUE}": "$1.00",
        "revenue": Decimal("1.0000"),
        "_transactioncurrencyid_value": "c",
    }
    assert transform(row) == {
        "id": "a",
        "statuscode": 1,
        "_ownerid_value": "b",
        "statuscode_label": "Active",
        "_ownerid_value_name": "Nancy",
        "_ownerid_value_table": "systemuser",
    }
    # Nulls carry no annotation: every extra column is still there, as None; a selected real
    # column the row lacks stays absent.
    assert transform({"id": "a", "statuscode": None, "_ownerid_value": None}) == {
        "id": "a",
        "statuscode": None,
        "_ownerid_value": None,
        "statuscode_label": None,
        "_ownerid_value_name": None,
        "_ownerid_value_table": None,
    }
    assert transform({"id": "z"}) == {
        "id": "z",
        "statuscode_label": None,
        "_ownerid_value_name": None,
        "_ownerid_value_table": None,
    }
    assert make_row_transform(["id"], [])({"id": 1, "x": 2, "x@a.b": 3}) == {"id": 1}


def test_transform_refuses_unknown_extra_names() -> None:
    with pytest.raises(ValueError, match="revenue_formatted"):
        make_row_transform(["id"], ["revenue_formatted"])
    with pytest.raises(ValueError, match="address1_name"):
        make_row_transform(["id"], ["address1_name"])


# -- speed -----------------------------------------------------------------------------------


@needs_fixtures
def test_transform_speed_on_a_70_column_account_row(crm: EntityModel) -> None:
    """Prints the cost per row; asserts only the output's shape."""
    account = crm.entities["account"]
    full = extend_schema(account, json_schema(account), crm)["properties"]
    lookups = [c for c in account.properties if c in account.lookups][:20]
    labelled = [c for c in account.properties if f"{c}_label" in full][:25]
    others = [c for c in account.properties if c not in lookups and c not in labelled]
    real = list(dict.fromkeys(["accountid", *lookups, *labelled, *others]))[:70]
    props = {c: full[c] for c in full if c in real or c.rsplit("_", 1)[0] in real}
    extras = formatted_columns(props, props)
    assert len(real) == 70
    row: dict[str, Any] = {"@odata.etag": 'W/"123"'}
    for c in real:
        p = account.properties[c]
        if c in account.lookups:
            row[f"{c}@{FORMATTED_VALUE}"] = "Some Name"
            row[f"{c}@Microsoft.Dynamics.CRM.associatednavigationproperty"] = c[1:-6]
            row[f"{c}@{LOOKUP_LOGICAL_NAME}"] = "systemuser"
            row[c] = "4026be43-6b69-e111-8f65-78e7d1620f5e"
        elif p.edm_type in ("Edm.Int32", "Edm.Boolean", "Edm.Decimal", "Edm.DateTimeOffset"):
            row[f"{c}@{FORMATTED_VALUE}"] = "formatted"
            row[c] = 1
        else:
            row[c] = "value"
    transform = make_row_transform(real, extras)
    out = transform(row)
    assert list(out) == [*real, *extras]
    n = 2000
    best = min(timeit.repeat(lambda: transform(row), number=n, repeat=7)) / n
    print(
        f"\nformatted transform: {best * 1e6:.2f} µs/row ({len(real)} columns, {len(extras)} "
        f"extra columns, {len(row)} keys in)"
    )
