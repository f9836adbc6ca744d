"""Read a Dataverse CSDL ``$metadata`` document into the emulator's model.

Works on the real annotated documents (``crm_schema.xml``, ``DynamicsCRM.xml``) and on our own
render (``csdl.render_csdl``). The document is parsed as a stream (``iterparse``); every
top-level declaration is turned into a small record and dropped from the tree at its end tag,
so the whole document is never held in memory.

Hostile input: a CSDL has no business carrying a DTD, so any ``<!DOCTYPE`` (and with it any
``<!ENTITY`` declaration, internal or external) is refused with ``ValueError``. The parser is
``defusedxml``'s (``forbid_dtd``): the refusal happens inside expat, after decoding, so no
encoding trick can hide a DOCTYPE and nothing is expanded or fetched.

Mapping rules (a CSDL carries less than EntityDefinitions, so several are heuristics):

* Tables: entity types that derive, directly or through other types, from ``crmbaseentity`` and
  have an entity set; plus the base types such tables derive from (``activitypointer``,
  ``principal``). A base type without a set (``principal``) becomes ``abstract`` with the entity
  set name ``<logical name>s``; ``Abstract="true"`` alone (Dataverse's ``activitypointer``, which
  has a set) does not make a table abstract.
* Attributes: the base's (recursively) followed by the type's own. Key: the type's ``Key``, else
  the base's. When the key is an inherited one that is not ``<name>id`` (``systemuser``/``team``
  are keyed on ``principal``'s ``ownerid``) and ``<name>id`` exists, that is the primary id and the
  inherited key column is read-only (it mirrors the primary id).
* Types: ``Edm.Guid`` -> uniqueidentifier; ``_x_value`` -> a lookup ``x`` (below); ``Edm.String``
  -> string (memo cannot be told apart); ``Edm.Int32`` -> state/status for
  ``statecode``/``statuscode``, picklist (``options=None``) when the name ends in ``code`` (but
  not ``timezonecode``), else
  integer; ``Edm.Int64`` -> bigint; ``Edm.Decimal`` -> money when a ``<name>_base`` sibling exists
  (or it is that ``_base`` sibling), else decimal with precision 4; ``Edm.Double``,
  ``Edm.Boolean``, ``Edm.DateTimeOffset`` -> datetime, ``Edm.Date`` -> dateonly, ``Edm.Binary``.
  Other types (complex ``mscrm.*`` types, collections, ``Edm.Int16``, ...) are skipped.
* Lookups: the targets are the types of the single-valued navigation properties whose
  ``ReferentialConstraint`` uses ``_x_value``, in document order; nav names are those
  properties' names. A nav property typed to a base type without a set (``mscrm.principal``)
  stands for every table deriving from it (systemuser, team). Real documents leave the
  constraint out on many nav properties (notably those a derived activity re-declares for
  inherited lookups: ``regardingobjectid_account_email``, ``createdby_email``); such a nav
  property is attributed to lookup ``x`` when it is named ``x``, ``x_<target>``, or
  ``<inherited nav name>_<this type>``. A derived type's nav properties for an inherited lookup
  override the inherited nav names target by target. A system lookup still without targets
  (``owninguser``, ``ownerid``, ... on tables where Dataverse omits the nav property) gets its
  well-known targets (``WELL_KNOWN_LOOKUPS``) with the lookup's name as nav name.
  ``ownerid`` -> owner; exactly the targets account and contact -> customer; else lookup
  (possibly with no targets when nothing matched).
* Read-only: ``Org.OData.Core.V1.Computed`` true or ``Core.V1.Permissions`` Read only. For
  lookups, Dataverse marks nearly every ``_x_value`` read-only because the GUID itself is not
  writable (the lookup is written through its nav property), so for lookups: read-only when one
  of its nav properties carries ``Permissions`` Read (our render does that), else, when
  ``_x_value`` is marked read-only, only for the system-managed lookups ``SYSTEM_LOOKUPS``.
* Change tracking: the entity set's ``Org.OData.Capabilities.V1.ChangeTracking`` ``Supported``;
  absent -> False (so a plain, unannotated document yields no change-tracked table).
* Alternate keys: from ``OData.Community.Keys.V1.AlternateKeys``; ``_x_value`` paths map back to
  ``x``; the name (not in CSDL) is ``<columns joined by _>_key``.
* ``primary_name``: the first of ``name``, ``fullname``, ``title``, ``subject``,
  ``<prefix>_name`` that is a string column, else the first string column ending in ``name``
  (not ``yomi*``/``address*``), else None.
* ``is_custom``: the logical name has a publisher prefix (``xx_``: 2-8 letters/digits, then ``_``).
* ``is_intersect``: a collection nav property named ``<name>_association`` exists whose
  ``Partner`` is itself (Dataverse's many-to-many shape), or the table is not abstract and all
  its columns but ``versionnumber`` are plain ``Edm.Guid`` (no lookups), at least three of them.
* ``activity_type``: the logical name, for tables deriving from ``activitypointer``.
* Choice labels, max lengths and precisions are not in CSDL and are not recovered.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from dynamics_emulator.model import Attribute, Entity, Model

BASE_ENTITY = "crmbaseentity"

# Lookups whose value Dataverse sets itself; never writable through the Web API.
SYSTEM_LOOKUPS = frozenset(
    {
        "createdby",
        "modifiedby",
        "createdonbehalfby",
        "modifiedonbehalfby",
        "owninguser",
        "owningteam",
        "owningbusinessunit",
        "organizationid",
    }
)

# Targets of system lookups, for the (many) cases where a real document has no nav property.
WELL_KNOWN_LOOKUPS: dict[str, tuple[str, ...]] = {
    "ownerid": ("systemuser", "team"),
    "owninguser": ("systemuser",),
    "owningteam": ("team",),
    "owningbusinessunit": ("businessunit",),
    "createdby": ("systemuser",),
    "modifiedby": ("systemuser",),
    "createdonbehalfby": ("systemuser",),
    "modifiedonbehalfby": ("systemuser",),
    "transactioncurrencyid": ("transactioncurrency",),
    "organizationid": ("organization",),
}

_EDM_SIMPLE: dict[str, str] = {
    "Edm.String": "string",
    "Edm.Int64": "bigint",
    "Edm.Double": "double",
    "Edm.Boolean": "boolean",
    "Edm.DateTimeOffset": "datetime",
    "Edm.Date": "dateonly",
    "Edm.Guid": "uniqueidentifier",
    "Edm.Binary": "binary",
}

_LOOKUP_PROPERTY = re.compile(r"^_(.+)_value$")
_PUBLISHER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,7}_[A-Za-z0-9_]+$")

Source = str | os.PathLike[str] | bytes | IO[bytes]


# ---------------------------------------------------------------------------------------------
# Streaming parse into raw records.
# ---------------------------------------------------------------------------------------------


@dataclass
class _RawProperty:
    name: str
    type: str
    read_only: bool
    description: str
    max_length: int | None


@dataclass
class _RawNav:
    name: str
    type: str  # unqualified type name
    collection: bool
    partner: str
    constraint: str | None  # the dependent property of the ReferentialConstraint
    read_only: bool


@dataclass
class _RawType:
    name: str
    base: str | None
    abstract: bool
    key: list[str]
    properties: list[_RawProperty] = field(default_factory=list)
    navs: list[_RawNav] = field(default_factory=list)
    alternate_keys: list[tuple[str, ...]] = field(default_factory=list)
    description: str = ""


@dataclass
class _RawSet:
    name: str
    type: str
    change_tracking: bool


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _term(annotation: Element) -> str:
    """``Org.OData.Core.V1.Computed`` -> ``Computed`` (vocabulary aliases work the same way)."""
    return annotation.get("Term", "").rsplit(".", 1)[-1]


def _children(elem: Element, name: str) -> Iterator[Element]:
    return (child for child in elem if _local(child.tag) == name)


def _annotations_read_only(elem: Element) -> bool:
    read_only = False
    for annotation in _children(elem, "Annotation"):
        term = _term(annotation)
        if term == "Computed" and annotation.get("Bool", "true") == "true":
            read_only = True
        elif term == "Permissions":
            members = " ".join(
                m.text or "" for m in annotation.iter() if _local(m.tag) == "EnumMember"
            )
            values = {v.rsplit("/", 1)[-1] for v in members.split()}
            if values == {"Read"}:
                read_only = True
    return read_only


def _description(elem: Element) -> str:
    for annotation in _children(elem, "Annotation"):
        if _term(annotation) == "Description":
            return annotation.get("String", "")
    return ""


class _Names:
    """Strips the schema namespace or alias from qualified type names."""

    def __init__(self) -> None:
        self.prefixes: list[str] = []

    def add_schema(self, elem: Element) -> None:
        for attr in ("Namespace", "Alias"):
            value = elem.get(attr)
            if value:
                self.prefixes.append(value + ".")

    def strip(self, qualified: str) -> str:
        for prefix in self.prefixes:
            if qualified.startswith(prefix):
                return qualified[len(prefix) :]
        return qualified


def _alternate_keys(annotation: Element, names: dict[str, str]) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = []
    collection = next(_children(annotation, "Collection"), None)
    if collection is None:
        return keys
    for record in _children(collection, "Record"):
        columns: list[str] = []
        for value in _children(record, "PropertyValue"):
            if value.get("Property") != "Key":
                continue
            for ref in value.iter():
                if _local(ref.tag) == "PropertyValue" and ref.get("Property") == "Name":
                    path = ref.get("PropertyPath") or ref.get("String") or ""
                    columns.append(names.get(path, path))
        if columns:
            keys.append(tuple(columns))
    return keys


def _entity_type(elem: Element, names: _Names) -> _RawType:
    base = elem.get("BaseType")
    raw = _RawType(
        name=elem.get("Name", ""),
        base=names.strip(base) if base else None,
        abstract=elem.get("Abstract") == "true",
        key=[],
    )
    key_paths: dict[str, str] = {}
    for child in elem:
        tag = _local(child.tag)
        if tag == "Key":
            raw.key = [
                ref.get("Name", "") for ref in child.iter() if _local(ref.tag) == "PropertyRef"
            ]
        elif tag == "Property":
            max_length = child.get("MaxLength")
            prop = _RawProperty(
                name=child.get("Name", ""),
                type=child.get("Type", ""),
                read_only=_annotations_read_only(child),
                description=_description(child),
                max_length=int(max_length) if max_length and max_length.isdigit() else None,
            )
            raw.properties.append(prop)
            match = _LOOKUP_PROPERTY.match(prop.name)
            key_paths[prop.name] = match.group(1) if match else prop.name
        elif tag == "NavigationProperty":
            type_ = child.get("Type", "")
            collection = type_.startswith("Collection(") and type_.endswith(")")
            if collection:
                type_ = type_[len("Collection(") : -1]
            constraint = next(_children(child, "ReferentialConstraint"), None)
            raw.navs.append(
                _RawNav(
                    name=child.get("Name", ""),
                    type=names.strip(type_),
                    collection=collection,
                    partner=child.get("Partner", ""),
                    constraint=constraint.get("Property") if constraint is not None else None,
                    read_only=_annotations_read_only(child),
                )
            )
        elif tag == "Annotation":
            term = _term(child)
            if term == "Description":
                raw.description = child.get("String", "")
            elif term == "AlternateKeys":
                raw.alternate_keys.extend(_alternate_keys(child, key_paths))
    # Lookup columns in keys are named by their _x_value property; inherited ones too.
    raw.alternate_keys = [
        tuple(_LOOKUP_PROPERTY.sub(r"\1", c) for c in cols) for cols in raw.alternate_keys
    ]
    return raw


def _entity_set(elem: Element, names: _Names) -> _RawSet:
    change_tracking = False
    for annotation in _children(elem, "Annotation"):
        if _term(annotation) != "ChangeTracking":
            continue
        for value in annotation.iter():
            if _local(value.tag) == "PropertyValue" and value.get("Property") == "Supported":
                change_tracking = value.get("Bool", "false") == "true"
    return _RawSet(
        name=elem.get("Name", ""),
        type=names.strip(elem.get("EntityType", "")),
        change_tracking=change_tracking,
    )


def _parse(stream: IO[bytes]) -> tuple[dict[str, _RawType], list[_RawSet]]:
    types: dict[str, _RawType] = {}
    sets: list[_RawSet] = []
    names = _Names()
    stack: list[Element] = []
    # forbid_dtd: a DOCTYPE raises DTDForbidden, so no entity can be declared, let alone expanded.
    for event, elem in iterparse(stream, events=("start", "end"), forbid_dtd=True):
        if event == "start":
            stack.append(elem)
            if _local(elem.tag) == "Schema":
                names.add_schema(elem)
            continue
        stack.pop()
        if not stack:
            break
        parent = _local(stack[-1].tag)
        if parent not in ("Schema", "EntityContainer"):
            continue  # handled (and dropped) with its top-level declaration
        tag = _local(elem.tag)
        if parent == "Schema" and tag == "EntityType":
            raw = _entity_type(elem, names)
            types[raw.name] = raw
        elif parent == "EntityContainer" and tag == "EntitySet":
            sets.append(_entity_set(elem, names))
        elem.clear()
        stack[-1].remove(elem)
    return types, sets


# ---------------------------------------------------------------------------------------------
# Building the model.
# ---------------------------------------------------------------------------------------------


def _chain(types: dict[str, _RawType], name: str) -> list[str]:
    """``name`` and its base types, nearest first, up to (not including) ``crmbaseentity``.

    Empty when the type does not derive from ``crmbaseentity``.
    """
    chain: list[str] = []
    current: str | None = name
    while current is not None and current != BASE_ENTITY:
        if current in chain or current not in types:
            return []
        chain.append(current)
        current = types[current].base
    return chain if current == BASE_ENTITY else []


def _attribute_type(prop: _RawProperty, siblings: set[str]) -> str | None:
    if prop.type in _EDM_SIMPLE:
        return _EDM_SIMPLE[prop.type]
    if prop.type == "Edm.Int32":
        if prop.name == "statecode":
            return "state"
        if prop.name == "statuscode":
            return "status"
        if prop.name.endswith("code") and not prop.name.endswith("timezonecode"):
            return "picklist"
        return "integer"
    if prop.type == "Edm.Decimal":
        is_base = prop.name.endswith("_base") and prop.name[: -len("_base")] in siblings
        return "money" if is_base or f"{prop.name}_base" in siblings else "decimal"
    return None


def _primary_name(logical_name: str, attributes: dict[str, Attribute]) -> str | None:
    strings = [n for n, a in attributes.items() if a.type in ("string", "memo")]
    candidates = ["name", "fullname", "title", "subject"]
    if "_" in logical_name:
        candidates.append(logical_name.split("_", 1)[0] + "_name")
    for candidate in candidates:
        if candidate in strings:
            return candidate
    for name in strings:
        if name.endswith("name") and "yomi" not in name and not name.startswith("address"):
            return name
    return None


@dataclass
class _Lookup:
    targets: list[str] = field(default_factory=list)
    nav_names: dict[str, str] = field(default_factory=dict)
    nav_read_only: bool = False

    def add(self, target: str, nav: str) -> None:
        if target not in self.targets:
            self.targets.append(target)
        self.nav_names[target] = nav


class _Builder:
    def __init__(self, types: dict[str, _RawType], sets: list[_RawSet]) -> None:
        self.types = types
        self.sets: dict[str, _RawSet] = {}
        for entity_set in sets:
            self.sets.setdefault(entity_set.type, entity_set)
        # Tables with a set that derive from crmbaseentity, and their bases: in document
        # order, each base before the types deriving from it.
        self.order: list[str] = []
        for name in types:
            if name in self.sets:
                for each in reversed(_chain(types, name)):
                    if each not in self.order:
                        self.order.append(each)
        self.lookups: dict[str, dict[str, _Lookup]] = {}
        self.entities: dict[str, Entity] = {}
        self.m2m = {
            nav.name
            for raw in types.values()
            for nav in raw.navs
            if nav.collection and nav.name == nav.partner
        }

    def concrete(self, name: str) -> list[str]:
        """Tables a nav property typed ``name`` may point at."""
        if name in self.sets:
            return [name]
        return [n for n in self.order if n in self.sets and name in _chain(self.types, n)[1:]]

    def resolve_lookups(self, name: str, base: dict[str, _Lookup]) -> dict[str, _Lookup]:
        raw = self.types[name]
        own_lookups = {
            m.group(1)
            for p in raw.properties
            if p.type == "Edm.Guid" and (m := _LOOKUP_PROPERTY.match(p.name))
        }
        # Inherited lookups start from the base's targets and nav names; nav properties this
        # type declares for them override those target by target.
        lookups: dict[str, _Lookup] = {
            k: _Lookup(list(v.targets), dict(v.nav_names), v.nav_read_only) for k, v in base.items()
        }
        for lookup_name in own_lookups:
            lookups.setdefault(lookup_name, _Lookup())

        def attach(lookup_name: str, nav: _RawNav) -> None:
            lookup = lookups[lookup_name]
            for target in self.concrete(nav.type):
                lookup.add(target, nav.name)
            lookup.nav_read_only = lookup.nav_read_only or nav.read_only

        unmatched: list[_RawNav] = []
        for nav in raw.navs:
            if nav.collection:
                continue
            match = _LOOKUP_PROPERTY.match(nav.constraint or "")
            if match and match.group(1) in lookups:
                attach(match.group(1), nav)
            else:
                unmatched.append(nav)
        for nav in unmatched:
            found = self._guess_lookup(name, nav, lookups, base)
            if found is not None:
                attach(found, nav)
        for lookup_name, lookup in lookups.items():
            if not lookup.targets:
                for target in self.fallback_targets(lookup_name):
                    lookup.add(target, lookup_name)
        return lookups

    def _guess_lookup(
        self, name: str, nav: _RawNav, lookups: dict[str, _Lookup], base: dict[str, _Lookup]
    ) -> str | None:
        """The lookup a nav property without ``ReferentialConstraint`` belongs to, by its name."""
        suffix = f"_{name}"
        stems = [nav.name]
        if nav.name.endswith(suffix):
            stems.append(nav.name[: -len(suffix)])
        for stem in stems:
            if stem in lookups:
                return stem  # x, x_<this type>
            if stem.endswith(f"_{nav.type}") and stem[: -len(nav.type) - 1] in lookups:
                return stem[: -len(nav.type) - 1]  # x_<target>, x_<target>_<this type>
        if len(stems) > 1:  # <inherited nav name>_<this type>
            targets = self.concrete(nav.type)
            for lookup_name, lookup in base.items():
                if any(lookup.nav_names.get(t) == stems[1] for t in targets):
                    return lookup_name
        return None

    def fallback_targets(self, lookup_name: str) -> list[str]:
        """Targets of a well-known system lookup that has no nav property in the document."""
        return [t for t in WELL_KNOWN_LOOKUPS.get(lookup_name, ()) if t in self.order]

    def build(self) -> Model:
        for name in self.order:
            self.entities[name] = self.build_entity(name)
        return Model(self.entities)

    def build_entity(self, name: str) -> Entity:
        raw = self.types[name]
        base_name = raw.base if raw.base in self.entities else None
        base_entity = self.entities.get(base_name) if base_name else None
        base_lookups = self.lookups.get(base_name, {}) if base_name else {}
        lookups = self.resolve_lookups(name, base_lookups)
        self.lookups[name] = lookups

        attributes: dict[str, Attribute] = {}
        if base_entity is not None:
            for attr_name, attr in base_entity.attributes.items():
                attributes[attr_name] = attr
        siblings = {p.name for p in raw.properties} | (
            {a.property_name for a in attributes.values()}
        )
        for prop in raw.properties:
            match = _LOOKUP_PROPERTY.match(prop.name)
            if match and prop.type == "Edm.Guid":
                attributes[match.group(1)] = self._lookup_attribute(
                    match.group(1), prop, lookups[match.group(1)]
                )
                continue
            type_ = _attribute_type(prop, siblings)
            if type_ is None:
                continue
            attributes[prop.name] = Attribute(
                prop.name,
                type_,
                max_length=prop.max_length,
                read_only=prop.read_only,
                precision=4 if type_ == "decimal" else None,
                description=prop.description,
            )
        # Inherited lookups whose nav names this type overrides.
        for lookup_name, lookup in lookups.items():
            inherited = attributes.get(lookup_name)
            if inherited is None or not inherited.is_lookup:
                continue
            if list(inherited.targets) != lookup.targets or inherited.nav_names != lookup.nav_names:
                attributes[lookup_name] = Attribute(
                    lookup_name,
                    _lookup_type(lookup_name, lookup.targets),
                    read_only=inherited.read_only,
                    targets=tuple(lookup.targets),
                    nav_names=dict(lookup.nav_names),
                    description=inherited.description,
                )

        key = raw.key or (self.types[base_name].key if base_name else [])
        chain = _chain(self.types, name)
        inherited_key = not raw.key or (
            base_name is not None and raw.key == self.types[base_name].key
        )
        primary_id = key[0] if key else f"{name}id"
        if inherited_key and primary_id != f"{name}id" and f"{name}id" in attributes:
            mirrored = attributes.get(primary_id)
            if mirrored is not None:
                attributes[primary_id] = Attribute(
                    mirrored.name,
                    mirrored.type,
                    read_only=True,
                    description=mirrored.description,
                )
            primary_id = f"{name}id"
        if not raw.key and base_name:
            self.types[name].key = list(key)

        entity_set = self.sets.get(name)
        abstract = entity_set is None
        alternate_keys = [("_".join(cols) + "_key", cols) for cols in raw.alternate_keys]
        return Entity(
            logical_name=name,
            entity_set=entity_set.name if entity_set else f"{name}s",
            primary_id=primary_id,
            primary_name=_primary_name(name, attributes),
            attributes=attributes,
            base_type=base_name or BASE_ENTITY,
            abstract=abstract,
            alternate_keys=alternate_keys,
            change_tracking=entity_set.change_tracking if entity_set else False,
            is_custom=bool(_PUBLISHER_PREFIX.match(name)),
            is_intersect=self._is_intersect(name, raw, attributes, abstract),
            activity_type=name if "activitypointer" in chain[1:] else None,
            description=raw.description,
        )

    def _lookup_attribute(self, name: str, prop: _RawProperty, lookup: _Lookup) -> Attribute:
        if lookup.nav_read_only:
            read_only = True
        elif prop.read_only:
            read_only = name in SYSTEM_LOOKUPS
        else:
            read_only = False
        return Attribute(
            name,
            _lookup_type(name, lookup.targets),
            read_only=read_only,
            targets=tuple(lookup.targets),
            nav_names=dict(lookup.nav_names),
            description=prop.description,
        )

    def _is_intersect(
        self, name: str, raw: _RawType, attributes: dict[str, Attribute], abstract: bool
    ) -> bool:
        if f"{name}_association" in self.m2m or name in self.m2m:
            return True
        if abstract:
            return False
        columns = [a for n, a in attributes.items() if n != "versionnumber"]
        return len(columns) >= 3 and all(a.type == "uniqueidentifier" for a in columns)


def _lookup_type(name: str, targets: list[str]) -> str:
    if name == "ownerid":
        return "owner"
    if set(targets) == {"account", "contact"}:
        return "customer"
    return "lookup"


def _open(source: Source) -> tuple[IO[bytes], bool]:
    if isinstance(source, bytes):
        return io.BytesIO(source), True
    if isinstance(source, (str, os.PathLike)):
        return Path(source).open("rb"), True
    return source, False


def load_model(source: Source) -> Model:
    """Read a CSDL document (a path, the document's bytes, or a binary stream) into a Model.

    Raises ``ValueError`` for documents with a DTD and for malformed XML.
    """
    stream, owned = _open(source)
    try:
        types, sets = _parse(stream)
    except DefusedXmlException as exc:  # DTDForbidden (entities cannot come without a DTD)
        raise ValueError(
            "refusing XML with a DTD (<!DOCTYPE/<!ENTITY): entity expansion is not allowed"
        ) from exc
    except (SyntaxError, ValueError) as exc:  # ParseError; expat's "multi-byte encodings ..."
        raise ValueError(f"malformed CSDL: {exc}") from exc
    finally:
        if owned:
            stream.close()
    return _Builder(types, sets).build()
