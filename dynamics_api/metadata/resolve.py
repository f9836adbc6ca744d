"""From the declarations read out of a CSDL document to the `EntityModel`: inheritance resolved.

The streaming reader (`dynamics_api.metadata.parser`) collects each entity type as declared (its
own members only), the entity sets, and the names of complex types, enum types and type
definitions. `build_model` then gives every kept type its base types' properties, navigation
properties and key, turns ``_x_value`` properties and the navigation properties constrained on
them into `Lookup`\\ s, and settles what a property's type is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from dynamics_api.metadata.model import EntityModel, EntityType, Lookup, MetadataError, Property

logger = logging.getLogger(__name__)

__all__ = ["Declarations", "MissingBaseTypesError", "RawType", "build_model"]

# Lookups the platform maintains itself: their navigation properties exist, but binding them is
# refused (ownership is set through ``ownerid``, auditing columns by the service).
_PLATFORM_LOOKUPS = frozenset(
    {
        "createdby",
        "modifiedby",
        "createdonbehalfby",
        "modifiedonbehalfby",
        "createdbyexternalparty",
        "modifiedbyexternalparty",
        "owninguser",
        "owningteam",
    }
)
# Solution publisher prefixes that belong to Microsoft's own (first-party) solutions.
_MICROSOFT_PREFIXES = frozenset({"adx", "mspp", "msfp", "msevtmgt", "mspcat", "msa", "mserp"})
_PREFIXED_NAME = re.compile(r"^([a-z][a-z0-9]{1,7})_[a-z0-9_]+$")

# single-valued navigation -> (target logical name, ``_x_value`` constraint property or None)
Navs = dict[str, tuple[str, str | None]]


@dataclass(slots=True)
class RawType:
    """An entity type as declared (own members only), before inheritance is resolved."""

    name: str
    base: str | None
    abstract: bool
    key: list[str] | None
    props: dict[str, Property]
    navs: Navs
    alternate_keys: list[list[str]]
    description: str | None


@dataclass(slots=True)
class Declarations:
    """What the reader collected from one document.

    Attributes:
        raw: the entity types read in full (the wanted ones, their bases, abstract ones).
        base_of: logical name -> base type's logical name, for every entity type of the document.
        abstract: names of every abstract entity type.
        sets: entity type logical name -> (entity set name, change tracking supported).
        complex: namespace-qualified names of the complex types.
        enums: namespace-qualified names of the enum types.
        typedefs: namespace-qualified type definition -> its underlying type.
    """

    raw: dict[str, RawType] = field(default_factory=dict)
    base_of: dict[str, str | None] = field(default_factory=dict)
    abstract: set[str] = field(default_factory=set)
    sets: dict[str, tuple[str, bool | None]] = field(default_factory=dict)
    complex: set[str] = field(default_factory=set)
    enums: set[str] = field(default_factory=set)
    typedefs: dict[str, str] = field(default_factory=dict)


class MissingBaseTypesError(Exception):
    """A base type of a wanted type was skipped before it was known to be needed.

    Attributes:
        wanted: the wanted names with every base type: reading the document again with these
            cannot miss.
    """

    def __init__(self, wanted: set[str]) -> None:
        super().__init__(sorted(wanted))
        self.wanted = wanted


def is_custom(name: str) -> bool:
    """The name carries a solution publisher prefix that is not one of Microsoft's."""
    match = _PREFIXED_NAME.match(name)
    if match is None:
        return False
    prefix = match.group(1)
    return not (prefix in _MICROSOFT_PREFIXES or prefix.startswith("msdyn"))


def build_model(
    decl: Declarations, wanted: set[str] | None, origin: str, source_bytes: int
) -> EntityModel:
    """The entity model of the wanted types (and their base types), or of every type.

    Raises:
        MissingBaseTypesError: a base type of a wanted type was not read in full.
        MetadataError: the base types form a cycle.
    """
    closure = _wanted_closure(decl, wanted)
    if closure is not None:
        skipped = {n for n in closure if n in decl.base_of and n not in decl.raw}
        if skipped:
            raise MissingBaseTypesError(closure)
        unknown = sorted(n for n in closure if n not in decl.base_of)
        if unknown:
            logger.warning(
                "Entity types not found in the $metadata of %s: %s", origin, ", ".join(unknown)
            )
    names = [n for n in decl.raw if closure is None or n in closure]
    _resolve_kinds(decl, names)
    resolved: dict[str, tuple[EntityType, Navs]] = {}
    for name in names:
        _resolve(decl, name, resolved, (), origin)
    return EntityModel(
        entities={name: resolved[name][0] for name in names},
        source_bytes=source_bytes,
        complete=closure is None,
        base_types=dict(decl.base_of),
        abstract_types=frozenset(decl.abstract),
    )


def _wanted_closure(decl: Declarations, wanted: set[str] | None) -> set[str] | None:
    if wanted is None:
        return None
    closure: set[str] = set()
    for name in wanted:
        current: str | None = name
        while current is not None and current not in closure:
            closure.add(current)
            current = decl.base_of.get(current)
    return closure


def _resolve_kinds(decl: Declarations, names: Iterable[str]) -> None:
    for name in names:
        raw = decl.raw[name]
        for prop_name, prop in raw.props.items():
            if prop.kind != "unknown":
                continue
            inner = prop.element_type
            if inner in decl.complex:
                raw.props[prop_name] = replace(prop, kind="complex")
            elif inner in decl.enums:
                raw.props[prop_name] = replace(prop, kind="enum")
            elif inner in decl.typedefs:
                underlying = decl.typedefs[inner]
                edm = f"Collection({underlying})" if prop.is_collection else underlying
                raw.props[prop_name] = replace(prop, edm_type=edm, kind="primitive")


def _resolve(
    decl: Declarations,
    name: str,
    done: dict[str, tuple[EntityType, Navs]],
    chain: tuple[str, ...],
    origin: str,
) -> tuple[EntityType, Navs]:
    if name in done:
        return done[name]
    raw = decl.raw[name]
    parent: EntityType | None = None
    navs: Navs = {}
    props: dict[str, Property] = {}
    if raw.base is not None and raw.base in decl.raw:
        if raw.base in chain:
            raise MetadataError(
                f"The $metadata document from {origin} has a BaseType cycle: "
                + " -> ".join((*chain, name, raw.base))
            )
        parent, parent_navs = _resolve(decl, raw.base, done, (*chain, name), origin)
        props.update(parent.properties)
        navs.update(parent_navs)
    props.update(raw.props)
    navs.update(raw.navs)
    key = raw.key if raw.key is not None else (list(parent.key) if parent else [])
    entity_set, change_tracking = decl.sets.get(name, (None, None))
    entity = EntityType(
        name=name,
        entity_set=entity_set,
        key=key,
        base_type=raw.base,
        abstract=raw.abstract,
        properties=props,
        lookups=_lookups(props, navs),
        navigation={nav: target for nav, (target, _) in navs.items()},
        alternate_keys=raw.alternate_keys,
        change_tracking=change_tracking,
        is_custom=is_custom(name),
        description=raw.description,
    )
    done[name] = (entity, navs)
    return done[name]


def _lookups(props: dict[str, Property], navs: Navs) -> dict[str, Lookup]:
    attached: dict[str, dict[str, str]] = {}
    for prop_name in props:
        if prop_name.startswith("_") and prop_name.endswith("_value") and len(prop_name) > 7:
            attached[prop_name] = {}
    for nav_name, (target, constraint) in navs.items():
        if constraint is not None:
            attached.setdefault(constraint, {})[nav_name] = target
    lookups: dict[str, Lookup] = {}
    for prop_name, nav_map in attached.items():
        attribute = prop_name[1:-6]
        lookups[prop_name] = Lookup(
            property=prop_name,
            attribute=attribute,
            navigations=nav_map,
            read_only=not nav_map or attribute in _PLATFORM_LOOKUPS,
        )
    return lookups
