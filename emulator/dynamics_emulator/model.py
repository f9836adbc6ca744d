"""The emulator's entity model: the tables it serves, their columns, keys and relationships.

This is the emulator's own description of a Dataverse organisation. The `$metadata` document is
rendered from it (``csdl.py``), the SQLite store is created from it (``store.py``) and seeded from
it (``seed``). The default organisation's tables are data (``data/model.json``, read by
``standard_model``); a model can also be read from a real CSDL file (``csdl_load.py``).

Vocabulary follows Dataverse: an *entity* is a table, identified by its logical name (``account``)
and addressed through its entity set name (``accounts``); an *attribute* is a column. Lookup
columns are attributes too: their Web API property is ``_<name>_value`` and they are written
through navigation properties (``primarycontactid@odata.bind``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

# Attribute types (Dataverse AttributeTypeCode names, lower-cased) and their OData types.
EDM_TYPES: dict[str, str] = {
    "string": "Edm.String",
    "memo": "Edm.String",
    "integer": "Edm.Int32",
    "bigint": "Edm.Int64",
    "decimal": "Edm.Decimal",
    "money": "Edm.Decimal",
    "double": "Edm.Double",
    "boolean": "Edm.Boolean",
    "datetime": "Edm.DateTimeOffset",
    "dateonly": "Edm.Date",
    "uniqueidentifier": "Edm.Guid",
    "picklist": "Edm.Int32",
    "state": "Edm.Int32",
    "status": "Edm.Int32",
    "lookup": "Edm.Guid",
    "owner": "Edm.Guid",
    "customer": "Edm.Guid",
    "binary": "Edm.Binary",
}

LOOKUP_TYPES = frozenset({"lookup", "owner", "customer"})
CHOICE_TYPES = frozenset({"picklist", "state", "status"})


@dataclass
class Attribute:
    """One column of a table.

    Attributes:
        name: the logical name (``name``, ``revenue``, ``ownerid``).
        type: one of the keys of ``EDM_TYPES``.
        max_length: for strings, the maximum number of characters.
        read_only: computed or system-managed (``Org.OData.Core.V1.Computed``); writes are refused.
        options: for choices, value -> label.
        targets: for lookups, the logical names of the tables it may point at (several when
            polymorphic, like ``customerid`` -> account, contact).
        nav_names: for lookups, target table -> single-valued navigation property name; the
            names are case-sensitive and irregular, exactly as Dataverse has them.
        precision: for decimal and money, the number of decimal places the service returns.
        description: a short English description, rendered as ``Org.OData.Core.V1.Description``.
    """

    name: str
    type: str
    max_length: int | None = None
    read_only: bool = False
    options: dict[int, str] | None = None
    targets: tuple[str, ...] = ()
    nav_names: dict[str, str] = field(default_factory=dict)
    precision: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in EDM_TYPES:
            raise ValueError(f"unknown attribute type {self.type!r} for {self.name!r}")
        if self.type in LOOKUP_TYPES and not self.nav_names:
            self.nav_names = dict.fromkeys(self.targets, self.name)
        if self.type == "money" and self.precision is None:
            self.precision = 4

    @property
    def is_lookup(self) -> bool:
        return self.type in LOOKUP_TYPES

    @property
    def is_choice(self) -> bool:
        return self.type in CHOICE_TYPES

    @property
    def property_name(self) -> str:
        """The Web API property name: ``_x_value`` for lookups, the logical name otherwise."""
        return f"_{self.name}_value" if self.is_lookup else self.name

    @property
    def edm_type(self) -> str:
        return EDM_TYPES[self.type]


@dataclass
class Entity:
    """One table.

    Attributes:
        logical_name: ``account``.
        entity_set: ``accounts`` (not always a plain plural).
        primary_id: the primary key column (``accountid``).
        primary_name: the primary name column (``name``), used for lookup display names.
        attributes: the columns, in declaration order, keyed by logical name. For tables that
            inherit (``email`` from ``activitypointer``) this holds the full set, inherited too.
        base_type: the CSDL base type: ``crmbaseentity``, ``activitypointer`` or ``principal``.
        abstract: abstract types (``activitypointer`` is not, ``principal`` is) have no rows of
            their own.
        alternate_keys: alternate keys as (key name, column logical names) pairs.
        change_tracking: whether ``Prefer: odata.track-changes`` is allowed.
        is_custom: a custom table (``new_project``).
        is_intersect, is_virtual, is_private: metadata flags used to skip tables in discovery.
        activity_type: for activity tables, the ``activitytypecode`` value (``email``).
        description: a short English description.
        table_type: ``Standard`` or ``Elastic`` (EntityMetadata.TableType): a bulk message on an
            elastic table writes each row on its own (partial success), on a standard table the
            whole request is one transaction.
    """

    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None
    attributes: dict[str, Attribute]
    base_type: str = "crmbaseentity"
    abstract: bool = False
    alternate_keys: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    change_tracking: bool = True
    is_custom: bool = False
    is_intersect: bool = False
    is_virtual: bool = False
    is_private: bool = False
    activity_type: str | None = None
    description: str = ""
    table_type: str = "Standard"
    # by_property() and storage_columns(), kept until the attributes change (bulk writes ask for
    # them for every row).
    _derived: dict[str, tuple[tuple[int, ...], Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def elastic(self) -> bool:
        return self.table_type == "Elastic"

    def _memo(self, name: str, build: Callable[[], Any]) -> Any:
        key = tuple(map(id, self.attributes.values()))
        found = self._derived.get(name)
        if found is None or found[0] != key:
            found = (key, build())
            self._derived[name] = found
        return found[1]

    def attribute(self, name: str) -> Attribute | None:
        return self.attributes.get(name)

    def by_property(self) -> dict[str, Attribute]:
        """Attributes keyed by Web API property name (``_ownerid_value`` for ``ownerid``)."""
        built = self._memo(
            "by_property", lambda: {a.property_name: a for a in self.attributes.values()}
        )
        return dict(built)

    def lookups(self) -> Iterator[Attribute]:
        return (a for a in self.attributes.values() if a.is_lookup)

    def storage_columns(self) -> list[str]:
        """The SQLite columns of this table, in order (see STORAGE.md): every property, plus
        ``<property>@lookuplogicalname`` after each lookup with more than one target."""

        def build() -> list[str]:
            cols: list[str] = []
            for a in self.attributes.values():
                cols.append(a.property_name)
                if a.is_lookup and len(a.targets) > 1:
                    cols.append(f"{a.property_name}@lookuplogicalname")
            return cols

        return list(self._memo("storage_columns", build))


@dataclass
class Model:
    """All the tables of an organisation, and where each comes from."""

    entities: dict[str, Entity]

    def by_set(self, entity_set: str) -> Entity | None:
        for e in self.entities.values():
            if e.entity_set == entity_set:
                return e
        return None

    def __getitem__(self, logical_name: str) -> Entity:
        return self.entities[logical_name]

    def __contains__(self, logical_name: object) -> bool:
        return logical_name in self.entities

    def concrete(self) -> Iterator[Entity]:
        """Tables that hold rows of their own (not abstract, not the activitypointer union)."""
        return (
            e
            for e in self.entities.values()
            if not e.abstract and e.logical_name != "activitypointer"
        )

    def activity_tables(self) -> list[Entity]:
        return [e for e in self.entities.values() if e.base_type == "activitypointer"]


# ---------------------------------------------------------------------------------------------
# The standard Customer Service model: account, contact, incident, activities, opportunity, lead,
# systemuser, team, transactioncurrency and one custom table, defined in ``data/model.json``.
# ---------------------------------------------------------------------------------------------


@functools.cache
def _standard_spec() -> dict[str, Any]:
    text = resources.files("dynamics_emulator").joinpath("data", "model.json").read_text("utf-8")
    spec: dict[str, Any] = json.loads(text)
    return spec


def _columns(
    entries: list[dict[str, Any]], spec: dict[str, Any], params: dict[str, str]
) -> Iterator[Attribute]:
    """The columns of a table's entries: ``{"include": fragment, ...}`` stands for the fragment's
    columns, its other keys filling the ``{placeholders}`` of their names and nav names."""
    for entry in entries:
        if "include" in entry:
            inner = params | {k: v for k, v in entry.items() if k != "include"}
            yield from _columns(spec["fragments"][entry["include"]], spec, inner)
        else:
            yield _attribute(entry, spec, params)


def _attribute(c: dict[str, Any], spec: dict[str, Any], params: dict[str, str]) -> Attribute:
    options = c.get("options")
    if isinstance(options, str):
        options = spec["choices"][options]  # a shared choice, by name
    navs = {t: nav.format(**params) for t, nav in c.get("targets", {}).items()}
    return Attribute(
        c["name"].format(**params),
        c["type"],
        max_length=c.get("length"),
        read_only=c.get("read_only", False),
        options=None if options is None else {int(k): v for k, v in options.items()},
        targets=tuple(navs),
        nav_names=navs,
        precision=c.get("precision"),
        description=c.get("description", ""),
    )


def _entity(t: dict[str, Any], spec: dict[str, Any]) -> Entity:
    attrs: dict[str, Attribute] = {}
    for col in _columns(t["columns"], spec, {}):
        if col.name in attrs:
            raise ValueError(f"{t['name']}.{col.name} declared twice")
        attrs[col.name] = col
    return Entity(
        t["name"],
        t["set"],
        t["id"],
        t["primary_name"],
        attrs,
        base_type=t.get("base_type", "crmbaseentity"),
        abstract=t.get("abstract", False),
        alternate_keys=[(name, tuple(cols)) for name, cols in t.get("alternate_keys", {}).items()],
        change_tracking=t.get("change_tracking", True),
        is_custom=t.get("is_custom", False),
        activity_type=t.get("activity_type"),
        description=t.get("description", ""),
        table_type=t.get("table_type", "Standard"),
    )


def standard_model() -> Model:
    """The Customer Service organisation the emulator serves by default (a new copy each call).

    Column names, types, choice values and navigation property names are those of a real
    Dataverse organisation.
    """
    spec = _standard_spec()
    entities = [_entity(t, spec) for t in spec["tables"]]
    return Model({e.logical_name: e for e in entities})
