"""tap_dynamics.selection over the real crm_schema.xml and small hand-made models."""

from __future__ import annotations

import logging
import re
import time

import pytest

from dynamics_api.metadata import (
    EntityModel,
    EntityType,
    Lookup,
    Property,
    json_schema,
    parse_metadata,
)
from tap_dynamics.formatted import extend_schema
from tap_dynamics.selection import is_wildcard, resolve_custom_entities, skip_reason
from tests.fixtures import CRM_SCHEMA, needs_fixtures

INTERSECT_IN_CRM_SCHEMA = {
    "accountleads",
    "competitorproduct",
    "competitorsalesliterature",
    "connectionroleassociation",
    "contactinvoices",
    "contactleads",
    "contactorders",
    "contactquotes",
    "entitlementcontacts",
    "entitlementproducts",
    "entitlementtemplateproducts",
    "incidentknowledgebaserecord",
    "knowledgearticlescategories",
    "leadcompetitors",
    "leadproduct",
    "opportunitycompetitors",
    "productsalesliterature",
    "queuemembership",
    "systemuserlicenses",
    "systemuserprofiles",
    "systemuserroles",
    "systemusersyncmappingprofiles",
    "teammembership",
    "teamprofiles",
    "teamroles",
    "teamsyncattributemappingprofiles",
}


@pytest.fixture(scope="module")
def crm() -> EntityModel:
    return parse_metadata(CRM_SCHEMA)


def skipped(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    out = {}
    for rec in caplog.records:
        if rec.levelno == logging.WARNING and rec.name == "tap_dynamics.selection":
            match = re.match(r"Skipping table (\S+) \(matched by '[^']*'\): (.*)", rec.getMessage())
            assert match, rec.getMessage()
            out[match.group(1)] = match.group(2)
    return out


# -- crm_schema.xml --------------------------------------------------------------------------


@needs_fixtures
def test_star_is_every_custom_table(crm: EntityModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert resolve_custom_entities(["*"], crm) == ["he_employee"]
    assert skipped(caplog) == {}


@needs_fixtures
def test_patterns(crm: EntityModel, caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_custom_entities(["he_*"], crm) == ["he_employee"]
    assert resolve_custom_entities(["HE_EMPLOYE?"], crm) == ["he_employee"]
    assert resolve_custom_entities(["new_*"], crm) == []
    # A pattern matches standard tables too; the intersect tables it matches are skipped.
    caplog.set_level(logging.WARNING)
    assert resolve_custom_entities(["contact*"], crm) == ["contact"]
    reasons = skipped(caplog)
    assert set(reasons) == {"contactinvoices", "contactleads", "contactorders", "contactquotes"}
    assert all("intersect" in r for r in reasons.values())


@needs_fixtures
def test_abstract_and_metadata_types_are_skipped(
    crm: EntityModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert resolve_custom_entities(["activity*", "princip*", "crm*"], crm) == [
        "activitymimeattachment",
        "activityparty",
        "principalentitymap",
        "principalobjectaccess",
    ]
    reasons = skipped(caplog)
    assert set(reasons) == {"activitypointer", "principal", "crmbaseentity", "crmmodelbaseentity"}
    assert "abstract" in reasons["activitypointer"]
    caplog.clear()
    assert resolve_custom_entities(["*metadata"], crm) == []
    reasons = skipped(caplog)
    assert "EntityMetadata" in reasons
    assert len(reasons) == 26
    assert all(r.startswith("not a table") for r in reasons.values())


@needs_fixtures
def test_explicit_names_are_kept_as_given(
    crm: EntityModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    names = [" SystemUserRoles ", "activitypointer", "new_missing", "he_employee"]
    assert resolve_custom_entities(names, crm, exclude=["*"]) == [
        "systemuserroles",
        "activitypointer",
        "new_missing",
        "he_employee",
    ]
    assert skipped(caplog) == {}


@needs_fixtures
def test_include_and_exclude(crm: EntityModel, caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_custom_entities(["*"], crm, exclude=["he_*"]) == []
    assert resolve_custom_entities(["*"], crm, include=["he_*"]) == ["he_employee"]
    assert resolve_custom_entities(["*"], crm, include=["new_*"]) == []
    assert resolve_custom_entities(["team*"], crm, include=["team", "teamr*"]) == ["team"]
    # include without a wildcard entry selects nothing more.
    assert resolve_custom_entities([], crm, include=["he_*"]) == []
    # Excluded tables are not warned about (the user asked for it).
    caplog.clear()
    assert resolve_custom_entities(["contact*"], crm, exclude=["contact?*"]) == ["contact"]
    assert skipped(caplog) == {}


@needs_fixtures
def test_order_and_duplicates(crm: EntityModel) -> None:
    assert resolve_custom_entities(["team", "*", "he_employee", "lead*", "lead"], crm) == [
        "team",
        "he_employee",
        "lead",
        "leadaddress",
        "leadtoopportunitysalesprocess",
    ]


@needs_fixtures
def test_intersect_heuristic_over_crm_schema(crm: EntityModel) -> None:
    flagged = {
        e.name for e in crm.entities.values() if (skip_reason(e) or "").startswith("looks like")
    }
    assert flagged == INTERSECT_IN_CRM_SCHEMA


@needs_fixtures
def test_wildcard_needs_the_complete_model() -> None:
    partial = parse_metadata(CRM_SCHEMA, wanted=["account"])
    assert not partial.complete
    with pytest.raises(ValueError, match="parsed whole"):
        resolve_custom_entities(["*"], partial)
    assert resolve_custom_entities(["account", "new_x"], partial) == ["account", "new_x"]


def test_is_wildcard() -> None:
    assert is_wildcard("*")
    assert is_wildcard("new_*")
    assert is_wildcard("new_?")
    assert is_wildcard("new_[ab]")
    assert not is_wildcard("new_project")


@needs_fixtures
def test_discovery_of_every_table_of_crm_schema() -> None:
    """Parse + a schema (with formatted-value columns) for every extractable table; the time is
    printed, not asserted."""
    start = time.perf_counter()
    model = parse_metadata(CRM_SCHEMA)
    parsed = time.perf_counter()
    schemas = {}
    for entity in model.entities.values():
        if skip_reason(entity) is None:
            schemas[entity.name] = json_schema(entity)
    plain = time.perf_counter()
    extended = {
        name: extend_schema(model.entities[name], schema, model) for name, schema in schemas.items()
    }
    done = time.perf_counter()
    star = resolve_custom_entities(["*"], model)
    print(
        f"\ndiscovery of crm_schema.xml: {len(schemas)} tables, parse {parsed - start:.3f} s, "
        f"schemas {plain - parsed:.3f} s, formatted columns {done - plain:.3f} s, "
        f"total {done - start:.3f} s"
    )
    assert star == ["he_employee"]
    assert len(model.entities) == 280
    reasons: dict[str, int] = {}
    for entity in model.entities.values():
        reason = skip_reason(entity)
        if reason is not None:
            kind = re.split(r" \(|:", reason)[0]
            reasons[kind] = reasons.get(kind, 0) + 1
    assert reasons == {"not a table": 29, "abstract type": 4, "looks like an intersect": 26}
    assert len(schemas) == 280 - 29 - 4 - 26
    for name, schema in extended.items():
        entity = model.entities[name]
        assert schema["required"] == [k for k in entity.key if k in entity.properties], name
        assert set(entity.properties) <= set(schema["properties"])


# -- hand-made models ------------------------------------------------------------------------


def make(
    name: str,
    props: dict[str, str],
    *,
    entity_set: str | None = "default",
    abstract: bool = False,
    lookups: list[str] | None = None,
    custom: bool | None = None,
) -> EntityType:
    return EntityType(
        name=name,
        entity_set=f"{name}s" if entity_set == "default" else entity_set,
        key=[next(iter(props))] if props else [],
        base_type="crmbaseentity",
        abstract=abstract,
        properties={n: Property(n, t) for n, t in props.items()},
        lookups={lk: Lookup(lk, lk[1:-6], {lk[1:-6]: "account"}, False) for lk in lookups or []},
        navigation={},
        alternate_keys=[],
        change_tracking=None,
        is_custom=name.startswith(("new_", "cr8a3_")) if custom is None else custom,
    )


def test_hand_made_model(caplog: pytest.LogCaptureFixture) -> None:
    guid = "Edm.Guid"
    entities = [
        make("new_project", {"new_projectid": guid, "new_name": "Edm.String"}),
        make("cr8a3_task", {"cr8a3_taskid": guid, "cr8a3_subject": "Edm.String"}),
        make(
            "new_project_member",  # many-to-many: own id + two ids (+ versionnumber)
            {
                "new_project_memberid": guid,
                "new_projectid": guid,
                "systemuserid": guid,
                "versionnumber": "Edm.Int64",
            },
        ),
        make(  # only Guid columns, but a lookup: a real table
            "new_link",
            {"new_linkid": guid, "_new_accountid_value": guid, "new_externalid": guid},
            lookups=["_new_accountid_value"],
        ),
        make("new_pair", {"new_pairid": guid, "new_otherid": guid}),  # only two Guids: a table
        make("new_hidden", {"new_hiddenid": guid}, entity_set=None),
        make("new_base", {"new_baseid": guid}, abstract=True),
        make("account", {"accountid": guid, "name": "Edm.String"}),
        make("msdyn_thing", {"msdyn_thingid": guid}),
    ]
    index = {e.name: e for e in entities}
    caplog.set_level(logging.WARNING)
    assert resolve_custom_entities(["*"], index) == [
        "cr8a3_task",
        "new_link",
        "new_pair",
        "new_project",
    ]
    reasons = skipped(caplog)
    assert set(reasons) == {"new_project_member", "new_hidden", "new_base"}
    assert "intersect" in reasons["new_project_member"]
    assert "no entity set" in reasons["new_hidden"]
    assert "abstract" in reasons["new_base"]
    assert resolve_custom_entities(["*"], index, exclude=["cr8a3_*", "new_p*"]) == ["new_link"]
    assert resolve_custom_entities(["*", "msdyn_*"], index, include=["new_pro*", "msdyn_*"]) == [
        "new_project",
        "msdyn_thing",
    ]
    model = EntityModel(entities=index, source_bytes=0)
    assert resolve_custom_entities(["new_project_member", "*"], model) == [
        "new_project_member",
        "cr8a3_task",
        "new_link",
        "new_pair",
        "new_project",
    ]
