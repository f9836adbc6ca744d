"""Render the emulator's model as a CSDL 4.0 ``$metadata`` document in Dataverse's real shape.

The shape follows the real annotated documents of a Dataverse organisation (see
``fixtures/dataverse/simple-odata-client/crm_schema.xml``):

* ``edmx:Edmx`` with the ``OData.Community.Keys.V1`` and ``OData.Community.Display.V1``
  references, one ``Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm"``.
* ``EntityType crmbaseentity`` (abstract) first; every table derives from it, or from a table
  that other tables derive from (``activitypointer``, ``principal``). Such base types are marked
  ``Abstract="true"`` (Dataverse marks ``activitypointer`` abstract although it has an entity set).
* Derived types re-declare the ``Key`` (the base's key: ``activityid`` for activities,
  ``ownerid`` for ``systemuser``/``team``, as Dataverse does) and only the properties the base
  does not have.
* Properties: ``Unicode="false"`` on strings, ``Scale="Variable"`` on decimals (decimal and
  money), ``ConcurrencyMode="Fixed"`` on ``versionnumber``; no ``MaxLength`` (the real documents
  have none on table columns). Lookups are ``_<name>_value`` ``Edm.Guid`` properties.
* One single-valued ``NavigationProperty`` per lookup target, named exactly as the model's
  ``nav_names`` (case-sensitive), with ``Partner`` and a ``ReferentialConstraint`` from
  ``_<name>_value`` to the target's primary id. When all targets of a lookup share one nav name
  (``ownerid`` -> systemuser, team) a single nav property typed to their common base
  (``mscrm.principal``) is emitted instead. On the target type, the matching collection
  navigation property (``Partner`` = the single-valued one); its name is invented:
  ``lk_<entity>_<lookup>`` for the audit lookups (``createdby``, ...), ``owner_<entity set>`` for
  owner lookups, otherwise
  ``<target>_<entity>_<lookup>``, made unique per type with a numeric suffix.
* A derived type inherits its base's nav properties; when a derived table names the nav
  property of an inherited lookup differently (``regardingobjectid_account_email`` on ``email``
  vs ``regardingobjectid_account`` on ``activitypointer``) the derived type declares the new one.
  Dataverse's own documents leave the ``ReferentialConstraint`` out on those; we keep it (it is
  valid CSDL: the dependent property may be inherited) so the document maps back unambiguously.
* ``EntityContainer Name="System"``: one ``EntitySet`` per non-abstract table, with a
  ``NavigationPropertyBinding`` for each nav property the type declares whose target has a set
  (Dataverse binds the ``principal``-typed ``ownerid`` to a non-existent ``owners`` set; we omit
  such dangling bindings).

Annotations: with ``annotations=True`` (``$metadata?annotations=true``) every property and type
carries ``Org.OData.Core.V1.Description``; read-only columns carry ``Core.V1.Computed`` and
``Core.V1.Permissions/Read`` (a read-only lookup also carries ``Permissions/Read`` on its nav
properties, so a reader can tell it from a writable one); entity sets carry the capability
annotations including ``Org.OData.Capabilities.V1.ChangeTracking``; the container carries
Dataverse's service-level capability annotations. With ``annotations=False`` (plain
``$metadata``) all of those are left out, but ``OData.Community.Keys.V1.AlternateKeys`` stays:
alternate keys are part of the addressing model (``accounts(accountnumber='A1')``) and the Keys
vocabulary is referenced with ``IncludeAnnotations`` by the document itself.

Alternate key columns that are lookups are named by their lookup property
(``_new_accountid_value``), as in key segments
(``new_projects(new_code='P1',_new_accountid_value=<guid>)``). CSDL has no place for the key's
own name.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import XMLGenerator
from xml.sax.xmlreader import AttributesImpl

from dynamics_emulator.model import Attribute, Entity, Model

EDMX_NS = "http://docs.oasis-open.org/odata/ns/edmx"
EDM_NS = "http://docs.oasis-open.org/odata/ns/edm"
NAMESPACE = "Microsoft.Dynamics.CRM"
ALIAS = "mscrm"
CONTAINER = "System"
BASE_ENTITY = "crmbaseentity"

CORE = "Org.OData.Core.V1"
CAPABILITIES = "Org.OData.Capabilities.V1"
ALTERNATE_KEYS_TERM = "OData.Community.Keys.V1.AlternateKeys"
CHANGE_TRACKING_TERM = f"{CAPABILITIES}.ChangeTracking"

# Lookups Dataverse names ``lk_<entity>_<lookup>`` on the referenced (systemuser) side.
AUDIT_LOOKUPS = frozenset({"createdby", "modifiedby", "createdonbehalfby", "modifiedonbehalfby"})

# AttributeTypeCode as declared by Dataverse (EntityDefinitions' AttributeType).
ATTRIBUTE_TYPE_CODES: tuple[tuple[str, int], ...] = (
    ("Boolean", 0),
    ("Customer", 1),
    ("DateTime", 2),
    ("Decimal", 3),
    ("Double", 4),
    ("Integer", 5),
    ("Lookup", 6),
    ("Memo", 7),
    ("Money", 8),
    ("Owner", 9),
    ("PartyList", 10),
    ("Picklist", 11),
    ("State", 12),
    ("Status", 13),
    ("String", 14),
    ("Uniqueidentifier", 15),
    ("CalendarRules", 16),
    ("Virtual", 17),
    ("BigInt", 18),
    ("ManagedProperty", 19),
    ("EntityName", 20),
)

SUPPORTED_FORMATS: tuple[str, ...] = (
    "application/json; odata.metadata=minimal; odata.streaming=true",
    "application/json; odata.metadata=minimal; odata.streaming=false",
    "application/json; odata.metadata=minimal",
    "application/json; odata.metadata=full; odata.streaming=true",
    "application/json; odata.metadata=full; odata.streaming=false",
    "application/json; odata.metadata=full",
    "application/json; odata.metadata=none; odata.streaming=true",
    "application/json; odata.metadata=none; odata.streaming=false",
    "application/json; odata.metadata=none",
    "application/json; odata.streaming=true",
    "application/json; odata.streaming=false",
    "application/json",
    "application/xml",
)


def qualified(logical_name: str) -> str:
    """``account`` -> ``mscrm.account`` (the alias-qualified type name used inside the schema)."""
    return f"{ALIAS}.{logical_name}"


# ---------------------------------------------------------------------------------------------
# Planning: which type declares which property and navigation property.
# ---------------------------------------------------------------------------------------------


@dataclass
class NavProperty:
    """One navigation property as rendered on an entity type."""

    name: str
    target: str  # logical name of the referenced (single) or referencing (collection) type
    collection: bool
    partner: str = ""
    constraint: tuple[str, str] | None = None  # (dependent property, referenced property)
    read_only: bool = False


@dataclass
class TypePlan:
    entity: Entity
    base: str  # logical name of the base type (``crmbaseentity`` for roots)
    abstract: bool
    key: str
    properties: list[Attribute] = field(default_factory=list)
    navs: list[NavProperty] = field(default_factory=list)

    def names(self) -> set[str]:
        return {a.property_name for a in self.properties} | {n.name for n in self.navs}


def _base_of(model: Model, entity: Entity) -> str:
    base = entity.base_type or BASE_ENTITY
    if base != BASE_ENTITY and base not in model:
        raise ValueError(f"{entity.logical_name}: base type {base!r} is not in the model")
    if base == entity.logical_name:
        raise ValueError(f"{entity.logical_name}: derives from itself")
    return base


def _ancestors(model: Model, name: str) -> list[str]:
    """Model base types of ``name``, nearest first (``crmbaseentity`` excluded)."""
    chain: list[str] = []
    current = _base_of(model, model[name])
    while current != BASE_ENTITY:
        if current in chain or current == name:
            raise ValueError(f"{name}: inheritance cycle through {current!r}")
        chain.append(current)
        current = _base_of(model, model[current])
    return chain


def _common_base(model: Model, targets: Iterable[str]) -> str | None:
    """The nearest model type every target is or derives from (``principal``), if any."""
    lines = [[t, *_ancestors(model, t)] for t in targets]
    if not lines:
        return None
    for candidate in lines[0]:
        if all(candidate in line for line in lines[1:]):
            return candidate
    return None


def _lookup_navs(model: Model, attr: Attribute) -> list[tuple[str, str]]:
    """(nav name, target type) pairs of one lookup, merging targets that share a nav name.

    Targets missing from the model are left out (no type to point at). Several targets sharing
    a nav name are typed to their common base; without one, each gets ``<nav>_<target>``.
    """
    groups: dict[str, list[str]] = {}
    for target in attr.targets:
        if target not in model:
            continue
        groups.setdefault(attr.nav_names.get(target, attr.name), []).append(target)
    pairs: list[tuple[str, str]] = []
    for nav, targets in groups.items():
        if len(targets) == 1:
            pairs.append((nav, targets[0]))
            continue
        common = _common_base(model, targets)
        if common is not None:
            pairs.append((nav, common))
        else:
            pairs.extend((f"{nav}_{t}", t) for t in targets)
    return pairs


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    return candidate


def _ordered(model: Model) -> list[str]:
    """Logical names with every base type before the types deriving from it."""
    order: list[str] = []
    seen: set[str] = set()
    for name in model.entities:
        for each in [*reversed(_ancestors(model, name)), name]:
            if each not in seen:
                seen.add(each)
                order.append(each)
    return order


def plan_types(model: Model) -> dict[str, TypePlan]:
    """Work out, per entity type, its key, declared properties and navigation properties."""
    order = _ordered(model)
    bases = {_base_of(model, e) for e in model.entities.values()}
    plans: dict[str, TypePlan] = {}
    for name in order:
        entity = model[name]
        base = _base_of(model, entity)
        chain = _ancestors(model, name)
        key = model[chain[-1]].primary_id if chain else entity.primary_id
        inherited = model[base].attributes if base != BASE_ENTITY else {}
        plans[name] = TypePlan(
            entity=entity,
            base=base,
            abstract=entity.abstract or name in bases,
            key=key,
            properties=[a for n, a in entity.attributes.items() if n not in inherited],
        )

    # Single-valued nav properties (with their constraint), then partners on the target side.
    pending: list[tuple[str, NavProperty, Attribute]] = []
    for name in order:
        plan = plans[name]
        base_entity = model[plan.base] if plan.base != BASE_ENTITY else None
        for attr in plan.entity.lookups():
            own = _lookup_navs(model, attr)
            if base_entity is not None and attr.name in base_entity.attributes:
                base_attr = base_entity.attributes[attr.name]
                if base_attr.is_lookup:
                    own = [p for p in own if p not in _lookup_navs(model, base_attr)]
            for nav_name, target in own:
                nav = NavProperty(
                    name=nav_name,
                    target=target,
                    collection=False,
                    constraint=(attr.property_name, model[target].primary_id),
                    read_only=attr.read_only,
                )
                plan.navs.append(nav)
                pending.append((name, nav, attr))

    taken = {name: plan.names() for name, plan in plans.items()}
    for name, nav, attr in pending:
        if attr.name in AUDIT_LOOKUPS:
            wanted = f"lk_{name}_{attr.name}"
        elif attr.type == "owner":
            wanted = f"owner_{model[name].entity_set}"
        else:
            wanted = f"{nav.target}_{name}_{attr.name}"
        target_names = taken[nav.target].union(*(taken[a] for a in _ancestors(model, nav.target)))
        partner = _unique(wanted, target_names)
        taken[nav.target].add(partner)
        nav.partner = partner
        plans[nav.target].navs.append(
            NavProperty(name=partner, target=name, collection=True, partner=nav.name)
        )
    return plans


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------


class _Writer:
    """A thin indenting wrapper around ``XMLGenerator`` (which does all the escaping)."""

    def __init__(self, out: io.BytesIO) -> None:
        self._gen = XMLGenerator(out, encoding="utf-8", short_empty_elements=True)
        self._depth = 0
        self._first = True

    def start_document(self) -> None:
        self._gen.startDocument()

    def end_document(self) -> None:
        self._gen.ignorableWhitespace("\n")
        self._gen.endDocument()

    def _indent(self) -> None:
        if self._first:  # startDocument already ended its line
            self._first = False
            return
        self._gen.ignorableWhitespace("\n" + "  " * self._depth)

    def open(self, tag: str, attrs: Mapping[str, str] | None = None) -> None:
        self._indent()
        self._gen.startElement(tag, AttributesImpl(dict(attrs or {})))
        self._depth += 1

    def close(self, tag: str) -> None:
        self._depth -= 1
        self._indent()
        self._gen.endElement(tag)

    def empty(self, tag: str, attrs: Mapping[str, str] | None = None) -> None:
        self._indent()
        self._gen.startElement(tag, AttributesImpl(dict(attrs or {})))
        self._gen.endElement(tag)

    def text(self, tag: str, text: str, attrs: Mapping[str, str] | None = None) -> None:
        self._indent()
        self._gen.startElement(tag, AttributesImpl(dict(attrs or {})))
        self._gen.characters(text)
        self._gen.endElement(tag)

    # Annotation helpers -------------------------------------------------------------------

    def bool_annotation(self, term: str, value: bool) -> None:
        self.empty("Annotation", {"Term": term, "Bool": "true" if value else "false"})

    def string_annotation(self, term: str, value: str) -> None:
        self.empty("Annotation", {"Term": term, "String": value})

    def read_permission(self) -> None:
        self.open("Annotation", {"Term": f"{CORE}.Permissions"})
        self.text("EnumMember", f"{CORE}.PermissionType/Read")
        self.close("Annotation")

    def record_annotation(self, term: str, prop: str, value: bool) -> None:
        self.open("Annotation", {"Term": term})
        self.open("Record")
        self.empty("PropertyValue", {"Property": prop, "Bool": "true" if value else "false"})
        self.close("Record")
        self.close("Annotation")


def _write_property(w: _Writer, attr: Attribute, annotations: bool) -> None:
    attrs = {"Name": attr.property_name, "Type": attr.edm_type}
    if attr.edm_type == "Edm.String":
        attrs["Unicode"] = "false"
    elif attr.edm_type == "Edm.Decimal":
        attrs["Scale"] = "Variable"
    if attr.name == "versionnumber":
        attrs["ConcurrencyMode"] = "Fixed"
    if not annotations:
        w.empty("Property", attrs)
        return
    w.open("Property", attrs)
    w.string_annotation(f"{CORE}.Description", attr.description)
    if attr.read_only:
        w.bool_annotation(f"{CORE}.Computed", True)
        w.read_permission()
    w.close("Property")


def _write_nav(w: _Writer, nav: NavProperty, annotations: bool) -> None:
    if nav.collection:
        w.empty(
            "NavigationProperty",
            {
                "Name": nav.name,
                "Type": f"Collection({qualified(nav.target)})",
                "Partner": nav.partner,
            },
        )
        return
    attrs = {
        "Name": nav.name,
        "Type": qualified(nav.target),
        "Nullable": "false",
        "Partner": nav.partner,
    }
    w.open("NavigationProperty", attrs)
    if nav.constraint is not None:
        w.empty(
            "ReferentialConstraint",
            {"Property": nav.constraint[0], "ReferencedProperty": nav.constraint[1]},
        )
    if annotations and nav.read_only:
        w.read_permission()
    w.close("NavigationProperty")


def _write_alternate_keys(w: _Writer, entity: Entity) -> None:
    if not entity.alternate_keys:
        return
    w.open("Annotation", {"Term": ALTERNATE_KEYS_TERM})
    w.open("Collection")
    for _key_name, columns in entity.alternate_keys:
        w.open("Record", {"Type": "OData.Community.Keys.V1.AlternateKey"})
        w.open("PropertyValue", {"Property": "Key"})
        w.open("Collection")
        for column in columns:
            attr = entity.attributes.get(column)
            path = attr.property_name if attr is not None else column
            w.open("Record", {"Type": "OData.Community.Keys.V1.PropertyRef"})
            w.empty("PropertyValue", {"Property": "Alias", "String": path})
            w.empty("PropertyValue", {"Property": "Name", "PropertyPath": path})
            w.close("Record")
        w.close("Collection")
        w.close("PropertyValue")
        w.close("Record")
    w.close("Collection")
    w.close("Annotation")


def _write_entity_type(w: _Writer, plan: TypePlan, annotations: bool) -> None:
    attrs = {"Name": plan.entity.logical_name, "BaseType": qualified(plan.base)}
    if plan.abstract:
        attrs["Abstract"] = "true"
    w.open("EntityType", attrs)
    w.open("Key")
    w.empty("PropertyRef", {"Name": plan.key})
    w.close("Key")
    for attr in plan.properties:
        _write_property(w, attr, annotations)
    for nav in plan.navs:
        _write_nav(w, nav, annotations)
    _write_alternate_keys(w, plan.entity)
    if annotations:
        w.string_annotation(f"{CORE}.Description", plan.entity.description)
    w.close("EntityType")


def _write_extras(w: _Writer, annotations: bool) -> None:
    """The few non-table declarations: WhoAmI, AttributeTypeCode, the lookup annotation terms."""
    w.open("ComplexType", {"Name": "WhoAmIResponse"})
    for prop in ("BusinessUnitId", "UserId", "OrganizationId"):
        w.empty("Property", {"Name": prop, "Type": "Edm.Guid", "Nullable": "false"})
    w.close("ComplexType")
    w.open("Function", {"Name": "WhoAmI"})
    w.empty("ReturnType", {"Type": qualified("WhoAmIResponse"), "Nullable": "false"})
    w.close("Function")
    w.open("EnumType", {"Name": "AttributeTypeCode"})
    for member, value in ATTRIBUTE_TYPE_CODES:
        w.empty("Member", {"Name": member, "Value": str(value)})
    w.close("EnumType")
    terms = (
        ("associatednavigationproperty", "Navigation property that the property references"),
        (
            "lookuplogicalname",
            "Logical entity name of the look up entity that the property references",
        ),
    )
    for term, description in terms:
        attrs = {"Name": term, "Type": "Edm.String", "AppliesTo": "PropertyValue"}
        if annotations:
            w.open("Term", attrs)
            w.string_annotation(f"{CORE}.Description", description)
            w.close("Term")
        else:
            w.empty("Term", attrs)


def _write_entity_set(
    w: _Writer, plan: TypePlan, plans: Mapping[str, TypePlan], annotations: bool
) -> None:
    entity = plan.entity
    w.open(
        "EntitySet", {"Name": entity.entity_set, "EntityType": f"{NAMESPACE}.{entity.logical_name}"}
    )
    for nav in plan.navs:
        target = plans[nav.target].entity
        if target.abstract:
            continue
        w.empty("NavigationPropertyBinding", {"Path": nav.name, "Target": target.entity_set})
    if annotations:
        w.bool_annotation(f"{CAPABILITIES}.IndexableByKey", True)
        w.bool_annotation(f"{CAPABILITIES}.SkipSupported", False)
        w.record_annotation(f"{CAPABILITIES}.SearchRestrictions", "Searchable", False)
        w.record_annotation(f"{CAPABILITIES}.CountRestrictions", "Countable", True)
        w.open("Annotation", {"Term": f"{CAPABILITIES}.NavigationRestrictions"})
        w.open("Record")
        w.open("PropertyValue", {"Property": "Navigability"})
        w.text("EnumMember", f"{CAPABILITIES}.NavigationType/Single")
        w.close("PropertyValue")
        w.close("Record")
        w.close("Annotation")
        w.record_annotation(CHANGE_TRACKING_TERM, "Supported", entity.change_tracking)
    w.close("EntitySet")


def _write_container_annotations(w: _Writer) -> None:
    w.open("Annotation", {"Term": f"{CAPABILITIES}.ConformanceLevel"})
    w.text("EnumMember", f"{CAPABILITIES}.ConformanceLevelType/Intermediate")
    w.close("Annotation")
    w.open("Annotation", {"Term": f"{CAPABILITIES}.FilterFunctions"})
    w.open("Collection")
    for function in ("contains", "endswith", "startswith"):
        w.text("String", function)
    w.close("Collection")
    w.close("Annotation")
    w.bool_annotation(f"{CORE}.DereferenceableIDs", True)
    w.bool_annotation(f"{CORE}.ConventionalIDs", True)
    w.bool_annotation(f"{CAPABILITIES}.BatchSupported", True)
    w.bool_annotation(f"{CAPABILITIES}.AsynchronousRequestsSupported", False)
    # v8-era documents say false; today's service honours Prefer: odata.continue-on-error.
    w.bool_annotation(f"{CAPABILITIES}.BatchContinueOnErrorSupported", True)
    w.bool_annotation(f"{CAPABILITIES}.CrossJoinSupported", False)
    w.open("Annotation", {"Term": f"{CAPABILITIES}.SupportedFormats"})
    w.open("Collection")
    for fmt in SUPPORTED_FORMATS:
        w.text("String", fmt)
    w.close("Collection")
    w.close("Annotation")


def render_csdl(model: Model, *, annotations: bool = True) -> bytes:
    """The ``$metadata`` document for ``model`` (UTF-8 bytes).

    ``annotations=True`` is ``$metadata?annotations=true``; ``False`` is the plain document
    (alternate keys kept, everything else annotation-like left out).
    """
    if BASE_ENTITY in model:
        raise ValueError(f"{BASE_ENTITY!r} is implicit and cannot be a table of the model")
    plans = plan_types(model)
    out = io.BytesIO()
    w = _Writer(out)
    w.start_document()
    w.open("edmx:Edmx", {"Version": "4.0", "xmlns:edmx": EDMX_NS})
    for vocabulary, alias in (
        ("OData.Community.Keys.V1", "Keys"),
        ("OData.Community.Display.V1", "Display"),
    ):
        w.open("edmx:Reference", {"Uri": f"http://vocabularies.odata.org/{vocabulary}.xml"})
        w.empty("edmx:Include", {"Namespace": vocabulary, "Alias": alias})
        w.empty("edmx:IncludeAnnotations", {"TermNamespace": vocabulary})
        w.close("edmx:Reference")
    w.open("edmx:DataServices")
    w.open("Schema", {"Namespace": NAMESPACE, "Alias": ALIAS, "xmlns": EDM_NS})
    w.empty("EntityType", {"Name": BASE_ENTITY, "Abstract": "true"})
    for plan in plans.values():
        _write_entity_type(w, plan, annotations)
    _write_extras(w, annotations)
    w.open("EntityContainer", {"Name": CONTAINER})
    for name in model.entities:
        plan = plans[name]
        if not plan.entity.abstract:
            _write_entity_set(w, plan, plans, annotations)
    w.empty("FunctionImport", {"Name": "WhoAmI", "Function": f"{NAMESPACE}.WhoAmI"})
    if annotations:
        _write_container_annotations(w)
    w.close("EntityContainer")
    w.close("Schema")
    w.close("edmx:DataServices")
    w.close("edmx:Edmx")
    w.end_document()
    return out.getvalue()
