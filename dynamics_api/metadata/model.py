"""The entity model of one environment, as parsed from ``$metadata`` (or loaded from the cache).

Everything here is plain data: which tables exist, their columns (`Property`), lookups (`Lookup`)
and keys, with inheritance already resolved by the parser. Nothing in this module reads XML, talks
HTTP or touches the disk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "EntityModel",
    "EntityType",
    "Lookup",
    "MetadataError",
    "Property",
    "PropertyKind",
    "wanted_names",
]

PropertyKind = Literal["primitive", "complex", "enum", "unknown"]


class MetadataError(ValueError):
    """The ``$metadata`` document is hostile, malformed or not an OData v4 CSDL document."""


@dataclass(frozen=True, slots=True)
class Property:
    """A structural property (column) of an entity type.

    Attributes:
        name: the property name (the column's logical name, or ``_x_value`` for a lookup).
        edm_type: the declared type, namespace-qualified (``Edm.String``,
            ``Microsoft.Dynamics.CRM.Label``, ``Collection(Edm.Guid)``).
        nullable: the CSDL ``Nullable`` facet (default true).
        read_only: ``Core.Computed`` is true or ``Core.Permissions`` grants no write.
        max_length: ``MaxLength`` when numeric.
        precision: ``Precision`` when given.
        scale: ``Scale`` when numeric (``Variable`` gives None).
        kind: what ``edm_type`` (or its element type for a collection) is: a primitive ``Edm``
            type, a complex type, an enum type, or unknown (not declared in the document).
    """

    name: str
    edm_type: str
    nullable: bool = True
    read_only: bool = False
    max_length: int | None = None
    precision: int | None = None
    scale: int | None = None
    kind: PropertyKind = "primitive"

    @property
    def is_collection(self) -> bool:
        """True for ``Collection(...)`` properties."""
        return self.edm_type.startswith("Collection(")

    @property
    def element_type(self) -> str:
        """The type without ``Collection(...)``."""
        return self.edm_type[11:-1] if self.is_collection else self.edm_type


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup column: the read-only ``_x_value`` GUID and the navigation properties that set it.

    Attributes:
        property: the ``_x_value`` property that carries the referenced row's id.
        attribute: the lookup's logical name ``x``.
        navigations: single-valued navigation property name -> target entity logical name; several
            for a polymorphic lookup (``customerid_account``, ``customerid_contact``), one whose
            target is abstract for owner lookups (``ownerid`` -> ``principal``; see
            `EntityModel.lookup_targets`), none when the document declares no navigation.
        read_only: the lookup cannot be written through ``<nav>@odata.bind``: it has no
            navigation property, or it is one the platform maintains (``createdby``,
            ``modifiedby``, ``owninguser``, ... -- set ownership through ``ownerid``).
    """

    property: str
    attribute: str
    navigations: dict[str, str]
    read_only: bool


@dataclass(slots=True)
class EntityType:
    """An entity type (table) with everything inherited from its base types resolved.

    Attributes:
        name: the logical name (``account``).
        entity_set: the entity set name (``accounts``); None when the type has no set.
        key: the primary key property names (``["accountid"]``).
        base_type: the base type's logical name (``crmbaseentity``, ``activitypointer``).
        abstract: the type is abstract (``activitypointer``, ``principal``).
        properties: every structural property, inherited ones first, in document order.
        lookups: ``_x_value`` -> Lookup, inherited ones included.
        navigation: single-valued navigation property -> target entity logical name.
        alternate_keys: each alternate key as its property names.
        change_tracking: the entity set's ``Capabilities.ChangeTracking`` Supported value; None
            when the document does not say (no annotation, or no entity set).
        is_custom: the name carries a non-Microsoft solution publisher prefix (``new_``,
            ``cr8a3_``); a heuristic, the CSDL does not say.
        description: the ``Core.Description`` annotation (in the org's language), if any.
    """

    name: str
    entity_set: str | None
    key: list[str]
    base_type: str | None
    abstract: bool
    properties: dict[str, Property]
    lookups: dict[str, Lookup]
    navigation: dict[str, str]
    alternate_keys: list[list[str]]
    change_tracking: bool | None
    is_custom: bool
    description: str | None = None

    @property
    def primary_id(self) -> str | None:
        """The table's own primary id column.

        Usually the CSDL key, but types deriving from ``principal`` declare the shared key
        ``ownerid`` while their own id column is ``systemuserid`` / ``teamid`` (same value). The
        activities' own id is the shared ``activityid``.
        """
        own = f"{self.name}id"
        if own in self.properties and own not in self.key:
            return own
        return self.key[0] if len(self.key) == 1 else None


@dataclass(slots=True)
class EntityModel:
    """The parsed entity types of one environment.

    Attributes:
        entities: logical name -> EntityType (the wanted ones and their base types, or all).
        source_bytes: size of the CSDL document parsed.
        parse_seconds: time spent parsing (not downloading); not part of equality.
        complete: every entity type of the document is in ``entities`` (parsed without
            ``wanted``).
        base_types: logical name -> base type for EVERY entity type of the document, even those
            not kept, so inheritance questions (`lookup_targets`) can be answered.
        abstract_types: names of every abstract entity type of the document.
    """

    entities: dict[str, EntityType]
    source_bytes: int
    parse_seconds: float = field(default=0.0, compare=False)
    complete: bool = True
    base_types: dict[str, str | None] = field(default_factory=dict)
    abstract_types: frozenset[str] = frozenset()
    _sets: dict[str, EntityType] | None = field(default=None, init=False, repr=False, compare=False)

    def by_set(self, name: str) -> EntityType:
        """The entity type whose entity set is ``name``.

        Raises:
            KeyError: no parsed entity type has that set.
        """
        if self._sets is None:
            self._sets = {e.entity_set: e for e in self.entities.values() if e.entity_set}
        try:
            return self._sets[name]
        except KeyError:
            raise KeyError(f"no entity type with entity set {name!r} in the metadata") from None

    def derived_types(self, name: str) -> list[str]:
        """Every entity type of the document that derives (directly or not) from ``name``."""
        out = []
        for candidate in self.base_types:
            base = self.base_types.get(candidate)
            seen = {candidate}
            while base is not None and base not in seen:
                if base == name:
                    out.append(candidate)
                    break
                seen.add(base)
                base = self.base_types.get(base)
        return sorted(out)

    def lookup_targets(self, lookup: Lookup) -> list[str]:
        """The concrete entity types a lookup can reference, abstract targets expanded.

        ``_ownerid_value`` (navigation ``ownerid`` -> abstract ``principal``) gives
        ``["systemuser", "team"]``; ``_customerid_value`` gives ``["account", "contact"]``.
        """
        targets: set[str] = set()
        for target in lookup.navigations.values():
            if target not in self.abstract_types:
                targets.add(target)
            targets.update(t for t in self.derived_types(target) if t not in self.abstract_types)
        return sorted(targets)


def wanted_names(wanted: Iterable[str] | None) -> set[str] | None:
    """The entity type names a caller asked for as a set; None (every type) stays None."""
    if wanted is None:
        return None
    if isinstance(wanted, str):
        return {wanted}
    return set(wanted)
