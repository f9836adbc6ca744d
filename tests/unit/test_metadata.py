"""dynamics_api.metadata.parser and .resolve over the two real CSDL documents and small synthetic
ones (no network)."""

from __future__ import annotations

import io
import logging
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dynamics_api.metadata import (
    EntityModel,
    MetadataError,
    fetch_metadata,
    json_schema,
    parse_metadata,
)
from tests.fixtures import CRM_SCHEMA, DYNAMICS_CRM, needs_fixtures
from tests.unit.csdl_docs import ENV, VERSION, base_declared_first, csdl, entity, key, prop


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


@needs_fixtures
def test_whole_document_is_read(crm: EntityModel, dyn: EntityModel) -> None:
    assert len(crm.entities) == len(re.findall(rb"<EntityType ", CRM_SCHEMA.read_bytes())) == 280
    assert len(dyn.entities) == len(re.findall(rb"<EntityType ", DYNAMICS_CRM.read_bytes()))
    assert crm.complete and dyn.complete
    assert crm.source_bytes == CRM_SCHEMA.stat().st_size
    assert crm.parse_seconds > 0


@needs_fixtures
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


@needs_fixtures
def test_by_set_unknown(crm: EntityModel) -> None:
    with pytest.raises(KeyError, match="nosuchset"):
        crm.by_set("nosuchset")


@needs_fixtures
def test_parentaccountid_lookup(real: EntityModel) -> None:
    lookup = real.entities["account"].lookups["_parentaccountid_value"]
    assert lookup.attribute == "parentaccountid"
    assert lookup.navigations == {"parentaccountid": "account"}
    assert not lookup.read_only
    assert real.entities["account"].properties["_parentaccountid_value"].read_only


@needs_fixtures
def test_ownerid_is_polymorphic_over_principal(real: EntityModel) -> None:
    lookup = real.entities["account"].lookups["_ownerid_value"]
    assert lookup.navigations == {"ownerid": "principal"}
    assert real.entities["principal"].abstract
    assert real.entities["systemuser"].base_type == "principal"
    assert real.entities["team"].base_type == "principal"
    assert real.lookup_targets(lookup) == ["systemuser", "team"]


@needs_fixtures
def test_customer_lookup_has_several_navigations(crm: EntityModel) -> None:
    lookup = crm.entities["incident"].lookups["_customerid_value"]
    assert lookup.navigations == {"customerid_account": "account", "customerid_contact": "contact"}
    assert crm.lookup_targets(lookup) == ["account", "contact"]


@needs_fixtures
def test_platform_and_navless_lookups_are_read_only(crm: EntityModel) -> None:
    account = crm.entities["account"]
    assert account.lookups["_createdby_value"].navigations == {"createdby": "systemuser"}
    assert account.lookups["_createdby_value"].read_only
    assert account.lookups["_owninguser_value"].read_only
    # declared as a _x_value property without any navigation property in this document
    navless = account.lookups["_createdbyexternalparty_value"]
    assert navless.navigations == {} and navless.read_only


@needs_fixtures
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


@needs_fixtures
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


@needs_fixtures
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


@needs_fixtures
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


@needs_fixtures
def test_alternate_keys_on_metadata_types(crm: EntityModel) -> None:
    assert crm.entities["EntityMetadata"].alternate_keys == [["LogicalName"]]
    assert crm.entities["BigIntAttributeMetadata"].alternate_keys == [["LogicalName"]]
    assert crm.entities["BigIntAttributeMetadata"].key == [
        "MetadataId"
    ]  # inherited, not re-declared
    assert crm.entities["account"].alternate_keys == []
    with_keys = [e for e in crm.entities.values() if e.alternate_keys]
    assert len(with_keys) == len(re.findall(rb"Keys\.V1\.AlternateKeys", CRM_SCHEMA.read_bytes()))


# ---------------------------------------------------------------------------------------------
# Selection, speed, memory
# ---------------------------------------------------------------------------------------------


@needs_fixtures
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


@needs_fixtures
def test_wanted_subset_still_expands_abstract_targets() -> None:
    model = parse_metadata(CRM_SCHEMA, ["account"])
    assert model.lookup_targets(model.entities["account"].lookups["_ownerid_value"]) == [
        "systemuser",
        "team",
    ]


@needs_fixtures
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


@needs_fixtures
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


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "seekable-file"])
def test_non_abstract_base_before_derived_is_reread(as_file: bool) -> None:
    doc = base_declared_first()
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
        parse_metadata(OneShot(base_declared_first()), ["derived"])  # type: ignore[arg-type]


@needs_fixtures
def test_chunk_boundaries_do_not_matter(crm: EntityModel) -> None:
    data = CRM_SCHEMA.read_bytes()

    def ragged(url: str) -> Iterator[bytes]:
        yield data[:3]  # inside the prolog
        yield from (data[i : i + 1] for i in range(3, 30000))  # one byte at a time
        yield from (data[i : i + 7919] for i in range(30000, len(data), 7919))

    model = fetch_metadata(ragged, ENV, ["account"], api_version=VERSION)
    assert model.entities["account"] == crm.entities["account"]


def test_utf16_document_with_bom_parses() -> None:
    text = base_declared_first().decode().replace('encoding="utf-8"', 'encoding="UTF-16"')
    for codec in ("utf-16-le", "utf-16-be"):
        bom = "\ufeff".encode(codec)
        model = parse_metadata(bom + text.encode(codec))
        assert set(model.entities) == {"base", "derived", "other"}


def test_bom_and_comment_before_root_parse() -> None:
    doc = b"\xef\xbb\xbf" + csdl(
        entity("x", key("id") + prop("id", "Edm.Guid")), prolog="<!-- hi --><?pi x?>"
    )
    assert set(parse_metadata(doc).entities) == {"x"}
