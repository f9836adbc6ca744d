"""The CSDL renderer (``csdl.py``) and loader (``csdl_load.py``)."""

from __future__ import annotations

import io
import re
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from dynamics_emulator.csdl import render_csdl
from dynamics_emulator.csdl_load import load_model
from dynamics_emulator.model import Attribute, Entity, Model, standard_model
from tests.fixtures import CRM_SCHEMA, DYNAMICS_CRM, needs_fixtures

EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
CORE = "Org.OData.Core.V1"


@pytest.fixture(scope="module")
def doc() -> ET.Element:
    return _xml(render_csdl(standard_model()))


def _xml(raw: bytes) -> ET.Element:
    """Parse a document we rendered ourselves (trusted input)."""
    return ET.fromstring(raw)  # noqa: S314


def _schema(root: ET.Element) -> ET.Element:
    schema = root.find(f"{EDMX}DataServices/{EDM}Schema")
    assert schema is not None
    return schema


def _type(root: ET.Element, name: str) -> ET.Element:
    found = _schema(root).find(f"{EDM}EntityType[@Name='{name}']")
    assert found is not None, name
    return found


def _set(root: ET.Element, name: str) -> ET.Element:
    found = _schema(root).find(f"{EDM}EntityContainer/{EDM}EntitySet[@Name='{name}']")
    assert found is not None, name
    return found


def _props(entity_type: ET.Element) -> dict[str, ET.Element]:
    return {p.get("Name", ""): p for p in entity_type.findall(f"{EDM}Property")}


def _navs(entity_type: ET.Element) -> dict[str, ET.Element]:
    return {p.get("Name", ""): p for p in entity_type.findall(f"{EDM}NavigationProperty")}


def _key(entity_type: ET.Element) -> list[str]:
    return [r.get("Name", "") for r in entity_type.findall(f"{EDM}Key/{EDM}PropertyRef")]


def _terms(elem: ET.Element) -> set[str]:
    return {a.get("Term", "") for a in elem.findall(f"{EDM}Annotation")}


def _is_read_only(prop: ET.Element) -> bool:
    terms = _terms(prop)
    return f"{CORE}.Computed" in terms and f"{CORE}.Permissions" in terms


def _alternate_keys(entity_type: ET.Element) -> list[list[str]]:
    annotation = entity_type.find(f"{EDM}Annotation[@Term='OData.Community.Keys.V1.AlternateKeys']")
    if annotation is None:
        return []
    keys = []
    for record in annotation.findall(f"{EDM}Collection/{EDM}Record"):
        keys.append(
            [
                v.get("PropertyPath", "")
                for v in record.iter(f"{EDM}PropertyValue")
                if v.get("Property") == "Name"
            ]
        )
    return keys


def _change_tracking(entity_set: ET.Element) -> bool | None:
    for annotation in entity_set.findall(f"{EDM}Annotation"):
        if annotation.get("Term") == "Org.OData.Capabilities.V1.ChangeTracking":
            value = annotation.find(f"{EDM}Record/{EDM}PropertyValue[@Property='Supported']")
            assert value is not None
            return value.get("Bool") == "true"
    return None


# ---------------------------------------------------------------------------------------------
# Rendering the standard model.
# ---------------------------------------------------------------------------------------------


def test_document_skeleton(doc: ET.Element) -> None:
    assert doc.tag == f"{EDMX}Edmx"
    assert doc.get("Version") == "4.0"
    refs = [r.get("Uri") for r in doc.findall(f"{EDMX}Reference")]
    assert refs == [
        "http://vocabularies.odata.org/OData.Community.Keys.V1.xml",
        "http://vocabularies.odata.org/OData.Community.Display.V1.xml",
    ]
    include = doc.find(f"{EDMX}Reference/{EDMX}Include")
    assert include is not None
    assert (include.get("Namespace"), include.get("Alias")) == ("OData.Community.Keys.V1", "Keys")
    schema = _schema(doc)
    assert schema.get("Namespace") == "Microsoft.Dynamics.CRM"
    assert schema.get("Alias") == "mscrm"
    container = schema.find(f"{EDM}EntityContainer")
    assert container is not None
    assert container.get("Name") == "System"
    terms = {t.get("Name"): t for t in schema.findall(f"{EDM}Term")}
    assert set(terms) >= {"associatednavigationproperty", "lookuplogicalname"}
    assert terms["lookuplogicalname"].get("AppliesTo") == "PropertyValue"
    assert schema.find(f"{EDM}ComplexType[@Name='WhoAmIResponse']") is not None
    assert schema.find(f"{EDM}EnumType[@Name='AttributeTypeCode']") is not None
    container_terms = _terms(container)
    assert "Org.OData.Capabilities.V1.BatchSupported" in container_terms
    assert "Org.OData.Capabilities.V1.FilterFunctions" in container_terms


def test_document_is_utf8_with_declaration() -> None:
    raw = render_csdl(standard_model())
    assert raw.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<edmx:Edmx ')


def test_base_types(doc: ET.Element) -> None:
    base = _type(doc, "crmbaseentity")
    assert base.get("Abstract") == "true"
    assert len(base) == 0
    pointer = _type(doc, "activitypointer")
    assert pointer.get("BaseType") == "mscrm.crmbaseentity"
    assert pointer.get("Abstract") == "true"
    assert _key(pointer) == ["activityid"]
    assert "subject" in _props(pointer)
    principal = _type(doc, "principal")
    assert principal.get("Abstract") == "true"
    assert _key(principal) == ["ownerid"]
    assert list(_props(principal)) == ["ownerid"]
    # No entity set for the abstract principal, one for activitypointer.
    sets = {s.get("Name") for s in _schema(doc).iter(f"{EDM}EntitySet")}
    assert "activitypointers" in sets
    assert "principals" not in sets


@pytest.mark.parametrize(
    ("name", "base", "own", "not_redeclared"),
    [
        pytest.param("email", "activitypointer", "sender", "subject", id="email"),
        pytest.param(
            "phonecall", "activitypointer", "phonenumber", "scheduledstart", id="phonecall"
        ),
        pytest.param(
            "task", "activitypointer", "percentcomplete", "_regardingobjectid_value", id="task"
        ),
        pytest.param("systemuser", "principal", "systemuserid", "ownerid", id="systemuser"),
        pytest.param("team", "principal", "teamid", "ownerid", id="team"),
    ],
)
def test_derived_types_redeclare_key_and_own_properties_only(
    doc: ET.Element, name: str, base: str, own: str, not_redeclared: str
) -> None:
    derived = _type(doc, name)
    assert derived.get("BaseType") == f"mscrm.{base}"
    assert _key(derived) == _key(_type(doc, base))
    props = _props(derived)
    assert own in props
    assert not_redeclared not in props
    assert not set(props) & set(_props(_type(doc, base)))


def test_account_key_properties_and_facets(doc: ET.Element) -> None:
    account = _type(doc, "account")
    assert account.get("BaseType") == "mscrm.crmbaseentity"
    assert account.get("Abstract") is None
    assert _key(account) == ["accountid"]
    props = _props(account)
    assert props["accountid"].get("Type") == "Edm.Guid"
    assert props["name"].get("Type") == "Edm.String"
    assert props["name"].get("Unicode") == "false"
    assert props["revenue"].get("Type") == "Edm.Decimal"
    assert props["revenue"].get("Scale") == "Variable"
    assert props["versionnumber"].get("Type") == "Edm.Int64"
    assert props["versionnumber"].get("ConcurrencyMode") == "Fixed"
    assert props["statecode"].get("Type") == "Edm.Int32"
    assert props["entityimage"].get("Type") == "Edm.Binary"
    assert "ownerid" not in props
    assert props["_ownerid_value"].get("Type") == "Edm.Guid"
    # Like the real documents: no MaxLength on table columns.
    assert not [p for p in _schema(doc).iter(f"{EDM}Property") if p.get("MaxLength")]


def test_lookup_nav_property_with_constraint_and_partner(doc: ET.Element) -> None:
    account = _type(doc, "account")
    assert _props(account)["_primarycontactid_value"].get("Type") == "Edm.Guid"
    nav = _navs(account)["primarycontactid"]
    assert nav.get("Type") == "mscrm.contact"
    assert nav.get("Nullable") == "false"
    constraint = nav.find(f"{EDM}ReferentialConstraint")
    assert constraint is not None
    assert constraint.get("Property") == "_primarycontactid_value"
    assert constraint.get("ReferencedProperty") == "contactid"
    partner = _navs(_type(doc, "contact"))[nav.get("Partner", "")]
    assert partner.get("Type") == "Collection(mscrm.account)"
    assert partner.get("Partner") == "primarycontactid"
    assert partner.find(f"{EDM}ReferentialConstraint") is None


@pytest.mark.parametrize(
    ("nav_name", "target", "referenced"),
    [
        pytest.param("parentcustomerid_account", "account", "accountid", id="account"),
        pytest.param("parentcustomerid_contact", "contact", "contactid", id="contact"),
    ],
)
def test_polymorphic_customer_lookup(
    doc: ET.Element, nav_name: str, target: str, referenced: str
) -> None:
    contact = _type(doc, "contact")
    nav = _navs(contact)[nav_name]
    assert nav.get("Type") == f"mscrm.{target}"
    constraint = nav.find(f"{EDM}ReferentialConstraint")
    assert constraint is not None
    assert constraint.get("Property") == "_parentcustomerid_value"
    assert constraint.get("ReferencedProperty") == referenced
    assert "parentcustomerid" not in _navs(contact)
    assert list(_props(contact)).count("_parentcustomerid_value") == 1


def test_owner_lookup_is_one_nav_typed_principal(doc: ET.Element) -> None:
    navs = _navs(_type(doc, "account"))
    owner = navs["ownerid"]
    assert owner.get("Type") == "mscrm.principal"
    constraint = owner.find(f"{EDM}ReferentialConstraint")
    assert constraint is not None
    assert constraint.get("ReferencedProperty") == "ownerid"
    assert not [n for n in navs if n.startswith("ownerid_")]
    partner = _navs(_type(doc, "principal"))[owner.get("Partner", "")]
    assert partner.get("Type") == "Collection(mscrm.account)"
    created = navs["createdby"]
    assert created.get("Partner") == "lk_account_createdby"
    constraint = created.find(f"{EDM}ReferentialConstraint")
    assert constraint is not None
    assert constraint.get("ReferencedProperty") == "systemuserid"


def test_case_sensitive_custom_nav_name(doc: ET.Element) -> None:
    navs = _navs(_type(doc, "new_project"))
    assert "new_AccountId" in navs
    assert "new_accountid" not in navs
    assert navs["new_AccountId"].get("Type") == "mscrm.account"
    bindings = {
        b.get("Path"): b.get("Target")
        for b in _set(doc, "new_projects").findall(f"{EDM}NavigationPropertyBinding")
    }
    assert bindings["new_AccountId"] == "accounts"


def test_derived_activity_declares_its_own_regarding_navs(doc: ET.Element) -> None:
    email = _navs(_type(doc, "email"))
    pointer = _navs(_type(doc, "activitypointer"))
    assert "regardingobjectid_account" in pointer
    assert "regardingobjectid_account_email" in email
    assert "regardingobjectid_account" not in email
    # Inherited unchanged: not re-declared.
    assert "createdby" in pointer
    assert "createdby" not in email
    assert email["emailsender_systemuser"].get("Type") == "mscrm.systemuser"


@pytest.mark.parametrize(
    ("entity", "prop", "read_only"),
    [
        pytest.param("account", "createdon", True, id="createdon"),
        pytest.param("account", "versionnumber", True, id="versionnumber"),
        pytest.param("account", "revenue_base", True, id="money-base"),
        pytest.param("account", "_createdby_value", True, id="createdby-lookup"),
        pytest.param("account", "name", False, id="name"),
        pytest.param("account", "_primarycontactid_value", False, id="writable-lookup"),
        pytest.param("contact", "fullname", True, id="fullname"),
    ],
)
def test_read_only_annotations(doc: ET.Element, entity: str, prop: str, read_only: bool) -> None:
    element = _props(_type(doc, entity))[prop]
    assert _is_read_only(element) is read_only
    assert f"{CORE}.Description" in _terms(element)


def test_read_only_lookup_marks_its_nav_property(doc: ET.Element) -> None:
    navs = _navs(_type(doc, "account"))
    assert f"{CORE}.Permissions" in _terms(navs["createdby"])
    assert f"{CORE}.Permissions" not in _terms(navs["primarycontactid"])


@pytest.mark.parametrize(
    ("entity", "keys"),
    [
        pytest.param("account", [["accountnumber"]], id="single"),
        pytest.param("new_project", [["new_code", "_new_accountid_value"]], id="composite-lookup"),
        pytest.param("incident", [], id="none"),
    ],
)
def test_alternate_keys(doc: ET.Element, entity: str, keys: list[list[str]]) -> None:
    assert _alternate_keys(_type(doc, entity)) == keys


@pytest.mark.parametrize(
    ("entity_set", "supported"),
    [
        pytest.param("accounts", True, id="accounts"),
        pytest.param("emails", True, id="emails"),
        pytest.param("new_projects", False, id="new_projects"),
    ],
)
def test_change_tracking_annotation(doc: ET.Element, entity_set: str, supported: bool) -> None:
    assert _change_tracking(_set(doc, entity_set)) is supported


def test_names_unique_and_partners_consistent(doc: ET.Element) -> None:
    schema = _schema(doc)
    types = {t.get("Name", ""): t for t in schema.findall(f"{EDM}EntityType")}
    for name, entity_type in types.items():
        names = [
            p.get("Name")
            for p in entity_type
            if p.tag in (f"{EDM}Property", f"{EDM}NavigationProperty")
        ]
        assert len(names) == len(set(names)), name
        for nav in _navs(entity_type).values():
            type_ = nav.get("Type", "")
            collection = type_.startswith("Collection(")
            target = type_.removeprefix("Collection(").removesuffix(")").removeprefix("mscrm.")
            assert target in types, (name, nav.get("Name"))
            partner = _navs(types[target]).get(nav.get("Partner", ""))
            if collection:
                # the single-valued partner may be declared on the target or inherited by it
                continue
            assert partner is not None, (name, nav.get("Name"))
            assert partner.get("Partner") == nav.get("Name")
            assert partner.get("Type") == f"Collection(mscrm.{name})"
    sets = {s.get("Name") for s in schema.iter(f"{EDM}EntitySet")}
    for binding in schema.iter(f"{EDM}NavigationPropertyBinding"):
        assert binding.get("Target") in sets


def test_plain_metadata_keeps_only_alternate_keys() -> None:
    root = _xml(render_csdl(standard_model(), annotations=False))
    terms = {a.get("Term") for a in root.iter(f"{EDM}Annotation")}
    assert terms == {"OData.Community.Keys.V1.AlternateKeys"}
    assert _alternate_keys(_type(root, "account")) == [["accountnumber"]]
    assert _change_tracking(_set(root, "accounts")) is None


def test_text_is_escaped() -> None:
    model = standard_model()
    nasty = "a < b & c > \"d\" 'e'\n]]> <!DOCTYPE x>"
    model["account"].attributes["name"].description = nasty
    model["account"].description = nasty
    root = _xml(render_csdl(model))
    name = _props(_type(root, "account"))["name"]
    description = name.find(f"{EDM}Annotation[@Term='{CORE}.Description']")
    assert description is not None
    assert description.get("String") == nasty
    assert load_model(render_csdl(model))["account"].description == nasty


def test_independent_odata_client_reads_the_document() -> None:
    import odata.metadata as metadata  # python-odata, a dev dependency
    import rich.console as console

    reader = object.__new__(metadata.MetaData)
    reader.console = console.Console(quiet=True)
    reader.quiet = True
    reader.service = SimpleNamespace(Action=object, Function=object, actions={}, functions={})
    raw = render_csdl(standard_model())
    reader.load_document = lambda: _xml(raw)
    _base, sets, _types = reader.get_entity_sets()
    assert {"accounts", "contacts", "emails", "systemusers", "new_projects"} <= set(sets)
    accounts = sets["accounts"]
    navs = {n["name"]: n for n in accounts.__odata_schema__["navigation_properties"]}
    assert navs["primarycontactid"]["foreign_key"] == "_primarycontactid_value"
    assert accounts.accountid.primary_key
    assert "activitypointer" in [c.__name__ for c in sets["emails"].__mro__]
    assert "WhoAmI" in reader.service.functions


def test_unknown_base_type_is_refused() -> None:
    broken = Entity("x_thing", "x_things", "x_thingid", None, {}, base_type="nosuchbase")
    with pytest.raises(ValueError, match="nosuchbase"):
        render_csdl(Model({"x_thing": broken}))


def test_shared_nav_name_without_common_base_is_split() -> None:
    model = standard_model()
    model["incident"].attributes["x_any"] = Attribute(
        "x_any", "lookup", targets=("account", "contact")
    )  # default nav_names: both "x_any"
    navs = _navs(_type(_xml(render_csdl(model)), "incident"))
    assert {"x_any_account", "x_any_contact"} <= set(navs)


# ---------------------------------------------------------------------------------------------
# Round trip.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round_trip() -> tuple[Model, Model]:
    model = standard_model()
    return model, load_model(render_csdl(model))


def test_round_trip_tables(round_trip: tuple[Model, Model]) -> None:
    model, loaded = round_trip
    assert set(loaded.entities) == set(model.entities)
    for name, entity in model.entities.items():
        again = loaded[name]
        assert again.entity_set == entity.entity_set, name
        assert again.primary_id == entity.primary_id, name
        assert again.base_type == entity.base_type, name
        assert again.abstract == entity.abstract, name
        assert again.is_custom == entity.is_custom, name
        assert again.is_intersect == entity.is_intersect, name
        assert again.activity_type == entity.activity_type, name
        assert again.description == entity.description, name
        assert [cols for _, cols in again.alternate_keys] == [
            cols for _, cols in entity.alternate_keys
        ], name
        if not entity.abstract:
            assert again.change_tracking == entity.change_tracking, name
    assert loaded["account"].alternate_keys == [("accountnumber_key", ("accountnumber",))]
    assert loaded["principal"].abstract
    assert not loaded["activitypointer"].abstract


def test_round_trip_columns(round_trip: tuple[Model, Model]) -> None:
    model, loaded = round_trip
    for name, entity in model.entities.items():
        again = loaded[name]
        assert set(again.attributes) == set(entity.attributes), name
        for attr in entity.attributes.values():
            other = again.attributes[attr.name]
            where = f"{name}.{attr.name}"
            assert other.property_name == attr.property_name, where
            assert other.edm_type == attr.edm_type, where
            assert other.read_only == attr.read_only, where
            assert other.is_lookup == attr.is_lookup, where
            assert other.targets == attr.targets, where
            assert other.nav_names == attr.nav_names, where
            if attr.type in ("owner", "customer", "state", "status", "uniqueidentifier"):
                assert other.type == attr.type, where


def test_round_trip_primary_names(round_trip: tuple[Model, Model]) -> None:
    model, loaded = round_trip
    for name, entity in model.entities.items():
        assert loaded[name].primary_name == entity.primary_name, name


def test_render_of_loaded_model_is_stable(round_trip: tuple[Model, Model]) -> None:
    _, loaded = round_trip
    once = render_csdl(loaded)
    assert render_csdl(load_model(once)) == once


@pytest.mark.parametrize(
    "as_source",
    [
        pytest.param(lambda raw, path: raw, id="bytes"),
        pytest.param(lambda raw, path: path, id="path"),
        pytest.param(lambda raw, path: str(path), id="str"),
        pytest.param(lambda raw, path: io.BytesIO(raw), id="stream"),
    ],
)
def test_load_model_sources(tmp_path: Path, as_source: object) -> None:
    raw = render_csdl(standard_model())
    path = tmp_path / "metadata.xml"
    path.write_bytes(raw)
    loaded = load_model(as_source(raw, path))  # type: ignore[operator]
    assert loaded["account"].entity_set == "accounts"


# ---------------------------------------------------------------------------------------------
# Real documents.
# ---------------------------------------------------------------------------------------------

REAL = [
    pytest.param(CRM_SCHEMA, 151, id="crm_schema"),
    pytest.param(DYNAMICS_CRM, 138, id="DynamicsCRM"),
]


@pytest.fixture(scope="module")
def real_models() -> dict[Path, Model]:
    return {path: load_model(path) for path in (CRM_SCHEMA, DYNAMICS_CRM)}


@needs_fixtures
@pytest.mark.parametrize(("path", "tracked"), REAL)
def test_real_change_tracking_count(
    real_models: dict[Path, Model], path: Path, tracked: int
) -> None:
    text = path.read_text(encoding="utf-8-sig")
    # Independent count: ChangeTracking annotations with Supported true, entity sets only.
    pattern = re.compile(
        r'<EntitySet Name="[^"]+" EntityType="[^"]+">(?:(?!</EntitySet>).)*?'
        r'Capabilities\.V1\.ChangeTracking">\s*<Record>\s*'
        r'<PropertyValue Property="Supported" Bool="true"',
        re.S,
    )
    assert len(pattern.findall(text)) == tracked
    model = real_models[path]
    assert sum(e.change_tracking for e in model.entities.values()) == tracked
    assert model["account"].change_tracking


@needs_fixtures
@pytest.mark.parametrize(("path", "tracked"), REAL)
def test_real_account_and_email(real_models: dict[Path, Model], path: Path, tracked: int) -> None:
    model = real_models[path]
    account = model["account"]
    assert account.entity_set == "accounts"
    assert account.primary_id == "accountid"
    assert account.primary_name == "name"
    assert len(account.attributes) > 150
    parent = account.attributes["parentaccountid"]
    assert parent.type == "lookup"
    assert parent.targets == ("account",)
    assert parent.nav_names == {"account": "parentaccountid"}
    assert not parent.read_only
    assert account.attributes["createdby"].read_only
    assert account.attributes["createdon"].read_only
    assert account.attributes["revenue"].type == "money"
    assert account.attributes["address1_latitude"].type == "double"
    assert account.attributes["statecode"].type == "state"
    assert account.attributes["industrycode"].type == "picklist"
    assert account.attributes["numberofemployees"].type == "integer"
    owner = account.attributes["ownerid"]
    assert (owner.type, owner.targets) == ("owner", ("systemuser", "team"))
    email = model["email"]
    assert email.base_type == "activitypointer"
    assert email.activity_type == "email"
    assert email.primary_id == "activityid"
    assert email.attributes["subject"] == model["activitypointer"].attributes["subject"]
    assert email.entity_set == "emails"
    regarding = email.attributes["regardingobjectid"]
    assert regarding.nav_names["account"] == "regardingobjectid_account_email"
    assert model["activitypointer"].attributes["regardingobjectid"].nav_names["account"] == (
        "regardingobjectid_account"
    )
    customer = model["contact"].attributes["parentcustomerid"]
    assert customer.type == "customer"
    assert customer.nav_names == {
        "account": "parentcustomerid_account",
        "contact": "parentcustomerid_contact",
    }


@needs_fixtures
@pytest.mark.parametrize(("path", "tracked"), REAL)
def test_real_special_tables(real_models: dict[Path, Model], path: Path, tracked: int) -> None:
    model = real_models[path]
    assert model["principal"].abstract
    assert model["principal"].primary_id == "ownerid"
    assert not model["activitypointer"].abstract
    user = model["systemuser"]
    assert user.base_type == "principal"
    assert user.primary_id == "systemuserid"
    assert user.attributes["ownerid"].read_only
    assert model["teammembership"].is_intersect
    assert model["accountleads"].entity_set == "accountleadscollection"
    assert model["accountleads"].is_intersect
    assert not model["account"].is_intersect
    assert "crmbaseentity" not in model
    assert "EntityMetadata" not in model
    assert "ExampleEntity" not in model
    assert all(e.base_type != "crmmodelbaseentity" for e in model.entities.values())
    # Every kept table has a set, apart from abstract bases.
    sets = [e.entity_set for e in model.entities.values() if not e.abstract]
    assert len(sets) == len(set(sets))


@needs_fixtures
def test_real_custom_table(real_models: dict[Path, Model]) -> None:
    model = real_models[CRM_SCHEMA]
    assert [n for n, e in model.entities.items() if e.is_custom] == ["he_employee"]


@needs_fixtures
@pytest.mark.parametrize(("path", "tracked"), REAL)
def test_real_render_round_trip(real_models: dict[Path, Model], path: Path, tracked: int) -> None:
    model = real_models[path]
    again = load_model(render_csdl(model))
    assert set(again.entities) == set(model.entities)
    for name, entity in model.entities.items():
        other = again[name]
        assert other.entity_set == entity.entity_set, name
        assert other.primary_id == entity.primary_id, name
        assert other.change_tracking == entity.change_tracking, name
        assert {a.property_name for a in other.attributes.values()} == {
            a.property_name for a in entity.attributes.values()
        }, name
        for attr in entity.lookups():
            assert other.attributes[attr.name].targets == attr.targets, (name, attr.name)
            assert other.attributes[attr.name].nav_names == attr.nav_names, (name, attr.name)


@needs_fixtures
def test_real_load_streams() -> None:
    tracemalloc.start()
    try:
        load_model(CRM_SCHEMA)
        streamed_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A whole ElementTree of this document peaks around 6.5x its size; streaming stays at ~2x
    # (the parsed records and the model itself).
    assert streamed_peak < 3 * CRM_SCHEMA.stat().st_size


# ---------------------------------------------------------------------------------------------
# Hostile and broken XML.
# ---------------------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">&lol9;</edmx:Edmx>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE edmx [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">&xxe;</edmx:Edmx>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/evil.dtd"> %remote;]>
<x/>
"""

AFTER_COMMENT = b"""\xef\xbb\xbf<?xml version="1.0"?>
<!-- a comment with <!DOCTYPE inside is fine, but the real one follows -->
<!DOCTYPE x SYSTEM "http://127.0.0.1:1/x.dtd">
<x/>
"""

LONG_COMMENT_THEN_DTD = (
    b"<?xml version='1.0'?><!--" + b"x" * 20000 + b'--><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(BILLION_LAUGHS, id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, id="external-entity"),
        pytest.param(PARAMETER_ENTITY, id="parameter-entity"),
        pytest.param(AFTER_COMMENT, id="doctype-after-comment-and-bom"),
        pytest.param(LONG_COMMENT_THEN_DTD, id="doctype-after-long-comment"),
        pytest.param(BILLION_LAUGHS.decode().encode("utf-16"), id="utf16-bom"),
        pytest.param(BILLION_LAUGHS.decode().encode("utf-16-be"), id="utf16-no-bom"),
        pytest.param(b"<!DOCTYPE x><x/>", id="doctype-first"),
    ],
)
def test_dtd_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError, match="DTD"):
        load_model(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            b'<?xml version="1.0" encoding="utf-7"?><x/>',
            "malformed CSDL: multi-byte encodings",
            id="exotic-encoding",
        ),
        pytest.param(b"", "malformed CSDL: no element found", id="empty"),
        pytest.param(b"hello", "malformed CSDL: syntax error", id="not-xml"),
        pytest.param(b"<x><y></x>", "malformed CSDL: mismatched tag", id="malformed"),
        pytest.param(
            b"<?xml version='1.0'?><!-- never closed",
            "malformed CSDL: unclosed token",
            id="open-comment",
        ),
        pytest.param(b"<x>&a;</x>", "malformed CSDL: undefined entity", id="entity-without-dtd"),
    ],
)
def test_broken_input_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_model(raw)


def test_dtd_in_a_single_byte_encoding_is_refused() -> None:
    """expat decodes single-byte encodings itself; the DTD is still refused (or the document is
    not XML at all), never expanded."""
    doc = '<?xml version="1.0" encoding="iso-8859-15"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'
    with pytest.raises(ValueError, match="DTD"):
        load_model(doc.encode("iso-8859-15"))


def test_comment_and_processing_instruction_prolog_is_accepted() -> None:
    raw = render_csdl(standard_model())
    body = raw.split(b"\n", 1)[1]
    prolog = b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- saved --><?pi x?>\n'
    assert "account" in load_model(prolog + body)
