"""dynamics_api.metadata over the two real CSDL documents and small synthetic ones (no network)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamics_api.metadata import (
    EntityModel,
    MetadataCache,
    MetadataError,
    Property,
    fetch_metadata,
    json_schema,
    metadata_url,
    parse_metadata,
    property_schema,
    schema_properties,
)
from tests.fixtures import CRM_SCHEMA, DYNAMICS_CRM

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
ENV = "https://contoso.crm4.dynamics.com"
STANDARD = [
    "account",
    "contact",
    "incident",
    "activitypointer",
    "email",
    "phonecall",
    "task",
    "opportunity",
    "lead",
    "systemuser",
    "team",
    "annotation",
]

EDMX_OPEN = '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">'
SCHEMA_OPEN = (
    '<Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" '
    'xmlns="http://docs.oasis-open.org/odata/ns/edm">'
)


def csdl(types: str, container: str = "", *, references: str = "", prolog: str = "") -> bytes:
    """A minimal CSDL document around entity type declarations and entity sets."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{prolog}{EDMX_OPEN}{references}'
        f"<edmx:DataServices>{SCHEMA_OPEN}{types}"
        f'<EntityContainer Name="System">{container}</EntityContainer>'
        "</Schema></edmx:DataServices></edmx:Edmx>"
    ).encode()


def entity(name: str, body: str, *, base: str | None = None, abstract: bool = False) -> str:
    attrs = f' Name="{name}"'
    if base:
        attrs += f' BaseType="mscrm.{base}"'
    if abstract:
        attrs += ' Abstract="true"'
    return f"<EntityType{attrs}>{body}</EntityType>"


def key(name: str) -> str:
    return f'<Key><PropertyRef Name="{name}" /></Key>'


def prop(name: str, edm_type: str = "Edm.String", extra: str = "", body: str = "") -> str:
    return f'<Property Name="{name}" Type="{edm_type}"{extra}>{body}</Property>'


@pytest.fixture(scope="module")
def crm() -> EntityModel:
    return parse_metadata(CRM_SCHEMA)


@pytest.fixture(scope="module")
def dyn() -> EntityModel:
    return parse_metadata(DYNAMICS_CRM)


@pytest.fixture(scope="module", params=["crm_schema", "DynamicsCRM"])
def real(request: pytest.FixtureRequest, crm: EntityModel, dyn: EntityModel) -> EntityModel:
    return crm if request.param == "crm_schema" else dyn


# ---------------------------------------------------------------------------------------------
# The real documents
# ---------------------------------------------------------------------------------------------


def test_whole_document_is_read(crm: EntityModel, dyn: EntityModel) -> None:
    assert len(crm.entities) == len(re.findall(rb"<EntityType ", CRM_SCHEMA.read_bytes())) == 280
    assert len(dyn.entities) == len(re.findall(rb"<EntityType ", DYNAMICS_CRM.read_bytes()))
    assert crm.complete and dyn.complete
    assert crm.source_bytes == CRM_SCHEMA.stat().st_size
    assert crm.parse_seconds > 0


def test_account(real: EntityModel) -> None:
    account = real.entities["account"]
    assert account.key == ["accountid"]
    assert account.primary_id == "accountid"
    assert account.entity_set == "accounts"
    assert real.by_set("accounts") is account
    assert account.base_type == "crmbaseentity"
    assert not account.abstract and not account.is_custom
    assert account.change_tracking is True
    assert account.description
    assert account.navigation["primarycontactid"] == "contact"
    assert "Account_Tasks" not in account.navigation  # collections are not single-valued


def test_by_set_unknown(crm: EntityModel) -> None:
    with pytest.raises(KeyError, match="nosuchset"):
        crm.by_set("nosuchset")


def test_parentaccountid_lookup(real: EntityModel) -> None:
    lookup = real.entities["account"].lookups["_parentaccountid_value"]
    assert lookup.attribute == "parentaccountid"
    assert lookup.navigations == {"parentaccountid": "account"}
    assert not lookup.read_only
    assert real.entities["account"].properties["_parentaccountid_value"].read_only


def test_ownerid_is_polymorphic_over_principal(real: EntityModel) -> None:
    lookup = real.entities["account"].lookups["_ownerid_value"]
    assert lookup.navigations == {"ownerid": "principal"}
    assert real.entities["principal"].abstract
    assert real.entities["systemuser"].base_type == "principal"
    assert real.entities["team"].base_type == "principal"
    assert real.lookup_targets(lookup) == ["systemuser", "team"]


def test_customer_lookup_has_several_navigations(crm: EntityModel) -> None:
    lookup = crm.entities["incident"].lookups["_customerid_value"]
    assert lookup.navigations == {"customerid_account": "account", "customerid_contact": "contact"}
    assert crm.lookup_targets(lookup) == ["account", "contact"]


def test_platform_and_navless_lookups_are_read_only(crm: EntityModel) -> None:
    account = crm.entities["account"]
    assert account.lookups["_createdby_value"].navigations == {"createdby": "systemuser"}
    assert account.lookups["_createdby_value"].read_only
    assert account.lookups["_owninguser_value"].read_only
    # declared as a _x_value property without any navigation property in this document
    navless = account.lookups["_createdbyexternalparty_value"]
    assert navless.navigations == {} and navless.read_only


@pytest.mark.parametrize("activity", ["email", "phonecall", "task", "appointment"])
def test_activities_inherit_activitypointer(real: EntityModel, activity: str) -> None:
    pointer = real.entities["activitypointer"]
    typ = real.entities[activity]
    assert pointer.abstract and typ.base_type == "activitypointer"
    assert typ.key == ["activityid"] and typ.primary_id == "activityid"
    assert "subject" in typ.properties and "activityid" in typ.properties
    assert "_regardingobjectid_value" in typ.lookups
    # inherited properties first, in the base's order, then the type's own
    names = list(typ.properties)
    assert names[: len(pointer.properties)] == list(pointer.properties)
    assert set(pointer.lookups) <= set(typ.lookups)


def test_systemuser_and_team_keys(real: EntityModel) -> None:
    user, team = real.entities["systemuser"], real.entities["team"]
    # The CSDL re-declares principal's shared key; the table's own id column is also there.
    assert user.key == ["ownerid"] and team.key == ["ownerid"]
    assert user.primary_id == "systemuserid" and team.primary_id == "teamid"
    assert user.entity_set == "systemusers" and team.entity_set == "teams"
    assert "ownerid" in user.properties and "systemuserid" in user.properties


def _change_tracking_sets(path: Path, supported: str) -> set[str]:
    """Entity sets whose ChangeTracking annotation says Supported=<supported>, by regex."""
    text = path.read_text(encoding="utf-8-sig")
    entity_sets = re.findall(r'<EntitySet Name="(\w+)"[^>]*[^/]>(.*?)</EntitySet>', text, re.S)
    tracking = re.compile(
        r'Term="Org\.OData\.Capabilities\.V1\.ChangeTracking">\s*<Record>\s*'
        rf'<PropertyValue Property="Supported" Bool="{supported}"'
    )
    return {name for name, body in entity_sets if tracking.search(body)}


@pytest.mark.parametrize("path", [CRM_SCHEMA, DYNAMICS_CRM], ids=["crm_schema", "DynamicsCRM"])
def test_change_tracking_matches_independent_count(path: Path) -> None:
    model = parse_metadata(path)
    on = {e.entity_set for e in model.entities.values() if e.change_tracking is True}
    off = {e.entity_set for e in model.entities.values() if e.change_tracking is False}
    assert on == _change_tracking_sets(path, "true")
    assert off == _change_tracking_sets(path, "false")
    if path == CRM_SCHEMA:
        assert (len(on), len(off)) == (151, 97)
    # metadata entity sets carry no annotation: unknown, not false
    assert model.entities["EntityMetadata"].change_tracking is None
    assert model.entities["crmbaseentity"].change_tracking is None


@pytest.mark.parametrize(
    ("name", "read_only"),
    [
        pytest.param("createdon", True, id="createdon-permissions-read"),
        pytest.param("versionnumber", True, id="versionnumber"),
        pytest.param("openrevenue", True, id="openrevenue-computed"),
        pytest.param("_parentaccountid_value", True, id="lookup-value"),
        pytest.param("name", False, id="name"),
        pytest.param("accountnumber", False, id="accountnumber"),
        pytest.param("revenue", False, id="revenue"),
    ],
)
def test_read_only_detection(crm: EntityModel, name: str, read_only: bool) -> None:
    assert crm.entities["account"].properties[name].read_only is read_only


def test_alternate_keys_on_metadata_types(crm: EntityModel) -> None:
    assert crm.entities["EntityMetadata"].alternate_keys == [["LogicalName"]]
    assert crm.entities["BigIntAttributeMetadata"].alternate_keys == [["LogicalName"]]
    assert crm.entities["BigIntAttributeMetadata"].key == [
        "MetadataId"
    ]  # inherited, not re-declared
    assert crm.entities["account"].alternate_keys == []
    with_keys = [e for e in crm.entities.values() if e.alternate_keys]
    assert len(with_keys) == len(re.findall(rb"Keys\.V1\.AlternateKeys", CRM_SCHEMA.read_bytes()))


def test_type_histogram_is_covered(crm: EntityModel) -> None:
    """Every Edm type in crm_schema.xml has a row in the mapping table below."""
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


def test_schema_property_order_is_key_then_alphabetical(crm: EntityModel) -> None:
    account = crm.entities["account"]
    names = schema_properties(account)
    assert names[0] == "accountid" and names[1:] == sorted(names[1:])
    assert list(json_schema(account)["properties"]) == names


def test_schema_subset_keeps_the_key(crm: EntityModel) -> None:
    account = crm.entities["account"]
    schema = json_schema(account, properties=["name", "_parentaccountid_value"])
    assert list(schema["properties"]) == ["accountid", "_parentaccountid_value", "name"]
    with pytest.raises(MetadataError, match="parentaccountid"):
        json_schema(account, properties=["name", "parentaccountid"])


def test_catalog_is_stable_across_parses(crm: EntityModel) -> None:
    again = parse_metadata(CRM_SCHEMA.read_bytes(), STANDARD)
    for name in STANDARD:
        first = json.dumps(json_schema(crm.entities[name]))
        second = json.dumps(json_schema(again.entities[name]))
        assert first == second


def test_integer_key_of_the_synthetic_example_entity(dyn: EntityModel) -> None:
    example = dyn.entities["ExampleEntity"]
    assert example.key == ["ID"] and example.base_type is None
    assert json_schema(example)["properties"]["ID"] == {"type": "integer"}


def test_account_schema_snapshot(crm: EntityModel) -> None:
    path = SNAPSHOTS / "crm_schema_account.schema.json"
    actual = json.dumps(json_schema(crm.entities["account"]), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.is_file(), f"{path} is missing; run with UPDATE_SNAPSHOTS=1 to create it"
    assert path.read_text(encoding="utf-8") == actual, (
        f"the account schema differs from {path}; if the change is intended, review it and "
        "regenerate with UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/unit/test_metadata.py"
    )


# ---------------------------------------------------------------------------------------------
# Selection, speed, memory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        pytest.param(["account"], {"account", "crmbaseentity"}, id="account"),
        pytest.param(["email"], {"email", "activitypointer", "crmbaseentity"}, id="email"),
        pytest.param(
            ["systemuser", "team"],
            {"systemuser", "team", "principal", "crmbaseentity"},
            id="principals",
        ),
        pytest.param(
            ["BigIntAttributeMetadata"],
            {"BigIntAttributeMetadata", "AttributeMetadata", "MetadataBase", "crmmodelbaseentity"},
            id="non-abstract-base-declared-first",
        ),
    ],
)
def test_wanted_keeps_exactly_types_and_bases(
    crm: EntityModel, wanted: list[str], expected: set[str]
) -> None:
    model = parse_metadata(CRM_SCHEMA, wanted)
    assert set(model.entities) == expected
    assert not model.complete
    assert len(model.base_types) == 280  # inheritance of the whole document is still known
    for name in expected:
        assert model.entities[name] == crm.entities[name]


def test_wanted_subset_still_expands_abstract_targets() -> None:
    model = parse_metadata(CRM_SCHEMA, ["account"])
    assert model.lookup_targets(model.entities["account"].lookups["_ownerid_value"]) == [
        "systemuser",
        "team",
    ]


def test_wanted_unknown_name_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dynamics_api.metadata"):
        model = parse_metadata(CRM_SCHEMA, ["account", "new_nosuchtable"])
    assert "new_nosuchtable" not in model.entities
    assert "new_nosuchtable" in caplog.text


def _peak_mib(fn: Any) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_streaming_memory_bound() -> None:
    full = _peak_mib(lambda: parse_metadata(CRM_SCHEMA))
    subset = _peak_mib(lambda: parse_metadata(CRM_SCHEMA, ["account"]))
    print(f"crm_schema.xml peak: full {full:.1f} MiB, account only {subset:.1f} MiB")
    assert full < 20
    assert subset < full


def _big_document(types: int) -> bytes:
    columns = "".join(
        prop(
            f"col{i}",
            "Edm.String",
            body='<Annotation Term="Org.OData.Core.V1.Description" '
            'String="A column with a description long enough to weigh something." />',
        )
        for i in range(60)
    )
    body = "".join(entity(f"t{n}", key("col0") + columns) for n in range(types))
    sets = "".join(
        f'<EntitySet Name="t{n}s" EntityType="Microsoft.Dynamics.CRM.t{n}" />' for n in range(types)
    )
    return csdl(body, sets)


def test_memory_does_not_grow_with_the_document(tmp_path: Path) -> None:
    small, big = tmp_path / "small.xml", tmp_path / "big.xml"
    small.write_bytes(_big_document(50))
    big.write_bytes(_big_document(400))
    assert big.stat().st_size > 7 * small.stat().st_size
    peak_small = _peak_mib(lambda: parse_metadata(small, ["t1"]))
    peak_big = _peak_mib(lambda: parse_metadata(big, ["t1"]))
    print(
        f"peak {small.stat().st_size >> 10} KiB -> {peak_small:.2f} MiB, "
        f"{big.stat().st_size >> 10} KiB -> {peak_big:.2f} MiB"
    )
    assert peak_big < peak_small * 1.5 + 0.5


# ---------------------------------------------------------------------------------------------
# Synthetic documents: inheritance, annotations, encodings
# ---------------------------------------------------------------------------------------------

KEYS_REFERENCE = (
    '<edmx:Reference Uri="http://vocabularies.odata.org/OData.Community.Keys.V1.xml">'
    '<edmx:Include Namespace="OData.Community.Keys.V1" Alias="Keys" /></edmx:Reference>'
    '<edmx:Reference Uri="https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.xml">'
    '<edmx:Include Namespace="Org.OData.Core.V1" Alias="Core" /></edmx:Reference>'
)


def test_aliases_facets_and_alternate_keys() -> None:
    alternate = (
        '<Annotation Term="Keys.AlternateKeys"><Collection>'
        '<Record Type="Keys.AlternateKey"><PropertyValue Property="Key"><Collection>'
        '<Record Type="Keys.PropertyRef"><PropertyValue Property="Alias" String="a" />'
        '<PropertyValue Property="Name" PropertyPath="new_code" /></Record>'
        '<Record Type="Keys.PropertyRef"><PropertyValue Property="Alias" String="b" />'
        '<PropertyValue Property="Name"><PropertyPath>new_region</PropertyPath></PropertyValue>'
        "</Record></Collection></PropertyValue></Record>"
        "</Collection></Annotation>"
    )
    body = (
        key("new_projectid")
        + prop("new_projectid", "Edm.Guid", ' Nullable="false"')
        + prop("new_code", "Edm.String", ' MaxLength="40"')
        + prop("new_region", "Edm.String", ' MaxLength="max"')
        + prop("new_budget", "Edm.Decimal", ' Precision="19" Scale="4"')
        + prop("new_score", "Edm.Decimal", ' Scale="Variable"')
        + prop("new_calc", "Edm.Int32", body='<Annotation Term="Core.Computed" />')
        + prop(
            "new_rw",
            "Edm.Int32",
            body='<Annotation Term="Core.Permissions" EnumMember="Core.PermissionType/ReadWrite" />',
        )
        + prop(
            "new_ro",
            "Edm.Int32",
            body='<Annotation Term="Core.Permissions"><EnumMember>Core.PermissionType/Read'
            "</EnumMember></Annotation>",
        )
        + alternate
        + '<Annotation Term="Core.Description" String="Projects" />'
    )
    doc = csdl(
        entity("crmbaseentity", "", abstract=True)
        + entity("new_project", body, base="crmbaseentity"),
        '<EntitySet Name="new_projects" EntityType="mscrm.new_project">'
        '<Annotation Term="Org.OData.Capabilities.V1.ChangeTracking"><Record>'
        '<PropertyValue Property="Supported"><Bool>false</Bool></PropertyValue>'
        "</Record></Annotation></EntitySet>",
        references=KEYS_REFERENCE,
    )
    project = parse_metadata(doc).entities["new_project"]
    assert project.is_custom and project.description == "Projects"
    assert project.entity_set == "new_projects" and project.change_tracking is False
    assert project.alternate_keys == [["new_code", "new_region"]]
    p = project.properties
    assert not p["new_projectid"].nullable and p["new_code"].nullable
    assert p["new_code"].max_length == 40 and p["new_region"].max_length is None
    assert (p["new_budget"].precision, p["new_budget"].scale) == (19, 4)
    assert p["new_score"].scale is None
    assert p["new_calc"].read_only and p["new_ro"].read_only and not p["new_rw"].read_only
    assert json_schema(project)["properties"]["new_code"]["maxLength"] == 40


@pytest.mark.parametrize(
    ("name", "custom"),
    [
        pytest.param("new_project", True, id="default-publisher"),
        pytest.param("cr8a3_invoice", True, id="generated-prefix"),
        pytest.param("msdyn_workorder", False, id="microsoft-msdyn"),
        pytest.param("adx_webpage", False, id="microsoft-portals"),
        pytest.param("account", False, id="standard"),
        pytest.param("BigIntAttributeMetadata", False, id="metadata-type"),
    ],
)
def test_is_custom_heuristic(name: str, custom: bool) -> None:
    model = parse_metadata(csdl(entity(name, key("id") + prop("id", "Edm.Guid"))))
    assert model.entities[name].is_custom is custom


def _base_declared_first() -> bytes:
    return csdl(
        entity("base", key("baseid") + prop("baseid", "Edm.Guid") + prop("shared"))
        + entity("derived", key("baseid") + prop("own"), base="base")
        + entity("other", key("otherid") + prop("otherid", "Edm.Guid"))
    )


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "seekable-file"])
def test_non_abstract_base_before_derived_is_reread(as_file: bool) -> None:
    doc = _base_declared_first()
    model = parse_metadata(io.BytesIO(doc) if as_file else doc, ["derived"])
    assert set(model.entities) == {"derived", "base"}
    assert list(model.entities["derived"].properties) == ["baseid", "shared", "own"]
    assert model.entities["derived"].key == ["baseid"]


def test_non_abstract_base_before_derived_unreadable_stream() -> None:
    class OneShot(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self._data.read(size)

    with pytest.raises(MetadataError, match="base"):
        parse_metadata(OneShot(_base_declared_first()), ["derived"])  # type: ignore[arg-type]


def test_chunk_boundaries_do_not_matter(crm: EntityModel) -> None:
    data = CRM_SCHEMA.read_bytes()

    def ragged(url: str) -> Iterator[bytes]:
        yield data[:3]  # inside the prolog
        yield from (data[i : i + 1] for i in range(3, 30000))  # one byte at a time
        yield from (data[i : i + 7919] for i in range(30000, len(data), 7919))

    model = fetch_metadata(ragged, ENV, ["account"])
    assert model.entities["account"] == crm.entities["account"]


def test_utf16_document_with_bom_parses() -> None:
    text = _base_declared_first().decode().replace('encoding="utf-8"', 'encoding="UTF-16"')
    for codec in ("utf-16-le", "utf-16-be"):
        bom = "\ufeff".encode(codec)
        model = parse_metadata(bom + text.encode(codec))
        assert set(model.entities) == {"base", "derived", "other"}


def test_bom_and_comment_before_root_parse() -> None:
    doc = b"\xef\xbb\xbf" + csdl(
        entity("x", key("id") + prop("id", "Edm.Guid")), prolog="<!-- hi --><?pi x?>"
    )
    assert set(parse_metadata(doc).entities) == {"x"}


# ---------------------------------------------------------------------------------------------
# Hostile and foreign documents
# ---------------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n"
    + EDMX_OPEN.encode()
    + b"&lol9;</edmx:Edmx>"
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    + EDMX_OPEN.encode()
    + b"&xxe;</edmx:Edmx>"
)
DOCTYPE_ONLY = (
    b'<!DOCTYPE edmx:Edmx SYSTEM "http://attacker.example/x.dtd">' + csdl("").split(b"?>", 1)[1]
)


def _utf16(doc: bytes, codec: str) -> bytes:
    text = doc.decode().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>')
    return "\ufeff".encode(codec) + text.encode(codec)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(DOCTYPE_ONLY, id="external-dtd"),
        pytest.param(b"\xef\xbb\xbf" + BILLION_LAUGHS, id="utf8-bom"),
        pytest.param(
            BILLION_LAUGHS.replace(b"?>\n", b"?>\n<!-- comment -->\n<?pi data?>\n", 1),
            id="after-comment-and-pi",
        ),
        pytest.param(_utf16(BILLION_LAUGHS, "utf-16-le"), id="utf16le-bom"),
        pytest.param(_utf16(BILLION_LAUGHS, "utf-16-be"), id="utf16be-bom"),
        pytest.param(_utf16(EXTERNAL_ENTITY, "utf-16-le")[2:], id="utf16le-no-bom"),
    ],
)
def test_dtd_is_refused_before_parsing(doc: bytes) -> None:
    with pytest.raises(MetadataError, match="DOCTYPE/ENTITY"):
        parse_metadata(doc)
    # also when it arrives one byte at a time
    with pytest.raises(MetadataError, match="DOCTYPE/ENTITY"):
        fetch_metadata(lambda url: (doc[i : i + 1] for i in range(len(doc))), ENV, None)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            b'<?xml version="1.0" encoding="cp037"?>' + EDMX_OPEN.encode(),
            "cp037",
            id="ebcdic-declared",
        ),
        pytest.param(b"\x00\x00\xfe\xff\x00\x00\x00<", "UTF-32", id="utf32"),
        pytest.param(b"\x4c\x6f\xa7\x94\x93\x40", "EBCDIC", id="ebcdic"),
    ],
)
def test_refused_encodings(doc: bytes, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_metadata(doc)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(b"<!DOCTYPE html><html><body>Sign in</body></html>", id="html-doctype"),
        pytest.param(b"<html><head><title>Sign in</title></head></html>", id="html"),
        pytest.param(b'{"error": {"code": "0x80060888"}}', id="json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"   \n  ", id="blank"),
        pytest.param(
            b'<edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx">'
            b"</edmx:Edmx>",
            id="odata-v3-csdl",
        ),
        pytest.param(b'<feed xmlns="http://www.w3.org/2005/Atom"></feed>', id="atom"),
    ],
)
def test_not_csdl_is_refused(doc: bytes) -> None:
    with pytest.raises(MetadataError, match="isn't a Dataverse environment"):
        parse_metadata(doc)


def test_malformed_csdl_is_refused() -> None:
    with pytest.raises(MetadataError, match="not well-formed"):
        parse_metadata(csdl(entity("x", key("id")))[:-40])


def test_metadata_error_is_a_value_error() -> None:
    assert issubclass(MetadataError, ValueError)


def test_str_source_is_a_path() -> None:
    with pytest.raises(TypeError, match="bytes"):
        parse_metadata("<edmx:Edmx/>")
    assert set(parse_metadata(str(CRM_SCHEMA), ["account"]).entities) == {
        "account",
        "crmbaseentity",
    }


# ---------------------------------------------------------------------------------------------
# Fetching and caching
# ---------------------------------------------------------------------------------------------


class Opener:
    """An ``open_stream`` that serves a document in chunks and records the URLs."""

    def __init__(self, doc: bytes, chunk: int = 8192) -> None:
        self.doc, self.chunk = doc, chunk
        self.urls: list[str] = []

    def __call__(self, url: str) -> Iterator[bytes]:
        self.urls.append(url)
        for i in range(0, len(self.doc), self.chunk):
            yield self.doc[i : i + self.chunk]


def test_metadata_url() -> None:
    assert metadata_url("https://Contoso.crm4.dynamics.com/") == (
        "https://contoso.crm4.dynamics.com/api/data/v9.2/$metadata?annotations=true"
    )


def test_fetch_streams_through_the_parser() -> None:
    opener = Opener(CRM_SCHEMA.read_bytes())
    model = fetch_metadata(opener, ENV + "/", ["account"])
    assert opener.urls == [f"{ENV}/api/data/v9.2/$metadata?annotations=true"]
    assert set(model.entities) == {"account", "crmbaseentity"}


def test_fetch_refetches_when_a_base_was_skipped() -> None:
    opener = Opener(_base_declared_first(), chunk=64)
    model = fetch_metadata(opener, ENV, ["derived"])
    assert len(opener.urls) == 2
    assert set(model.entities) == {"derived", "base"}


def test_fetch_with_a_session_like_object() -> None:
    doc = CRM_SCHEMA.read_bytes()

    class Response:
        closed = False

        def raise_for_status(self) -> None:
            pass

        def iter_content(self, chunk_size: int) -> Iterable[bytes]:
            return (doc[i : i + chunk_size] for i in range(0, len(doc), chunk_size))

        def close(self) -> None:
            self.closed = True

    class Session:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []
            self.response = Response()

        def get(self, url: str, **kwargs: Any) -> Response:
            self.calls.append((url, kwargs))
            return self.response

    session = Session()
    model = fetch_metadata(session, ENV, ["contact"])
    assert "contact" in model.entities
    assert session.calls[0][1]["stream"] is True
    assert session.response.closed


def test_cache_round_trip(tmp_path: Path, crm: EntityModel) -> None:
    cache = MetadataCache(tmp_path / "cache", ttl_seconds=3600)
    cache.save(ENV, crm)
    loaded = cache.load(ENV, None)
    assert loaded == crm
    assert loaded is not None and loaded.entities["account"] == crm.entities["account"]
    assert loaded.lookup_targets(loaded.entities["account"].lookups["_ownerid_value"]) == [
        "systemuser",
        "team",
    ]
    assert cache.load(ENV, ["account", "email"]) == crm
    # same environment, differently spelled
    assert cache.load("HTTPS://contoso.CRM4.dynamics.com:443/", ["account"]) == crm
    assert cache.load("https://fabrikam.crm.dynamics.com", ["account"]) is None
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert b"<edmx" not in files[0].read_bytes()  # the parsed model, not the XML


def test_cache_loading_does_not_need_the_xml(tmp_path: Path) -> None:
    model = parse_metadata(CRM_SCHEMA, ["account"])
    MetadataCache(tmp_path, 3600).save(ENV, model)

    def no_network(url: str) -> Iterator[bytes]:
        raise AssertionError("fetched although cached")

    assert fetch_metadata(no_network, ENV, ["account"], MetadataCache(tmp_path, 3600)) == model


def test_cache_ttl(tmp_path: Path) -> None:
    now = [1_000_000.0]
    cache = MetadataCache(tmp_path, ttl_seconds=600, clock=lambda: now[0])
    model = parse_metadata(CRM_SCHEMA, ["account"])
    cache.save(ENV, model)
    now[0] += 599
    assert cache.load(ENV, ["account"]) == model
    now[0] += 2
    assert cache.load(ENV, ["account"]) is None


def test_cache_must_hold_every_wanted_type(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path, 3600)
    cache.save(ENV, parse_metadata(CRM_SCHEMA, ["account"]))
    assert cache.load(ENV, ["account"]) is not None
    assert cache.load(ENV, ["account", "contact"]) is None
    assert cache.load(ENV, None) is None  # a partial model never answers "everything"
    opener = Opener(CRM_SCHEMA.read_bytes())
    model = fetch_metadata(opener, ENV, ["account", "contact"], cache)
    assert len(opener.urls) == 1 and "contact" in model.entities
    assert cache.load(ENV, ["contact"]) is not None  # saved after the fetch


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x00\xff garbage", id="garbage"),
        pytest.param(
            b'{"format": 1, "environment": "https://contoso.crm4.dynamics.com"', id="truncated"
        ),
        pytest.param(b"[]", id="wrong-shape"),
        pytest.param(
            b'{"format": 1, "environment": "https://contoso.crm4.dynamics.com", "saved_at": 1e12,'
            b' "entities": [{"name": "x"}]}',
            id="missing-fields",
        ),
        pytest.param(b'{"format": 99}', id="future-format"),
    ],
)
def test_corrupt_cache_is_tolerated(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MetadataCache(tmp_path, 3600)
    cache.path_for(ENV).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="dynamics_api.metadata"):
        assert cache.load(ENV, ["account"]) is None
    assert "corrupt" in caplog.text
    model = fetch_metadata(Opener(CRM_SCHEMA.read_bytes()), ENV, ["account"], cache)
    assert cache.load(ENV, ["account"]) == model  # replaced by a good one


def test_cache_save_failure_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = MetadataCache(blocker / "cache", 3600)
    with caplog.at_level(logging.WARNING, logger="dynamics_api.metadata"):
        cache.save(ENV, parse_metadata(CRM_SCHEMA, ["account"]))
    assert "Could not save" in caplog.text
