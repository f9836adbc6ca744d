"""Dataverse ``$metadata`` (OData v4 CSDL): streaming parse, entity model, JSON Schema, disk cache.

The CSDL of a real environment is 4-10 MB and grows with every solution installed. It is parsed here
as a stream (``xml.etree.ElementTree.XMLPullParser``, each top-level element cleared once read), so
memory stays flat whatever the document's size, and with ``wanted`` only the named entity types (and
their base types) are turned into objects; everything else is skipped after reading its name.

Before a byte reaches the XML parser the document's prolog is checked: any ``DOCTYPE`` (and so any
``ENTITY`` declaration: billion laughs, external entities) is refused, whatever the encoding (UTF-8
with or without a BOM, UTF-16); a document whose root is not ``edmx:Edmx`` is refused as "not a
Dataverse environment".

Public API:
    Property, Lookup, EntityType, EntityModel: the parsed model.
    parse_metadata(source, wanted): bytes, a binary file or a path -> EntityModel.
    fetch_metadata(get, environment_url, wanted, cache): GET ``$metadata?annotations=true`` streamed
        through the parser, with an optional MetadataCache.
    json_schema(entity, properties=...), schema_properties(entity, ...), property_schema(prop):
        JSON Schema for Singer catalogs.
    MetadataCache: the parsed model as JSON on disk, one file per environment, with a TTL.
    MetadataError: the document is hostile, malformed or not CSDL.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import orjson

logger = logging.getLogger(__name__)

__all__ = [
    "EntityModel",
    "EntityType",
    "Lookup",
    "MetadataCache",
    "MetadataError",
    "Property",
    "fetch_metadata",
    "json_schema",
    "metadata_url",
    "parse_metadata",
    "property_schema",
    "schema_properties",
]

PropertyKind = Literal["primitive", "complex", "enum", "unknown"]

_EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
_T_EDMX = _EDMX + "Edmx"
_T_INCLUDE = _EDMX + "Include"
_T_REFERENCE = _EDMX + "Reference"
_T_SCHEMA = _EDM + "Schema"
_T_ENTITY_TYPE = _EDM + "EntityType"
_T_COMPLEX_TYPE = _EDM + "ComplexType"
_T_ENUM_TYPE = _EDM + "EnumType"
_T_TYPE_DEFINITION = _EDM + "TypeDefinition"
_T_ENTITY_CONTAINER = _EDM + "EntityContainer"
_T_ENTITY_SET = _EDM + "EntitySet"
_T_KEY = _EDM + "Key"
_T_PROPERTY_REF = _EDM + "PropertyRef"
_T_PROPERTY = _EDM + "Property"
_T_NAV = _EDM + "NavigationProperty"
_T_REF_CONSTRAINT = _EDM + "ReferentialConstraint"
_T_ANNOTATION = _EDM + "Annotation"
_T_RECORD = _EDM + "Record"
_T_COLLECTION = _EDM + "Collection"
_T_PROPERTY_VALUE = _EDM + "PropertyValue"
_T_BOOL = _EDM + "Bool"
_T_ENUM_MEMBER = _EDM + "EnumMember"
_T_PROPERTY_PATH = _EDM + "PropertyPath"
# Direct children of a Schema or an EntityContainer that are read (or skipped) whole, then cleared.
_T_OTHER_TOP = frozenset(
    _EDM + name
    for name in (
        "Action",
        "Function",
        "Term",
        "Annotations",
        "Singleton",
        "ActionImport",
        "FunctionImport",
    )
)

_TERM_DESCRIPTION = "Org.OData.Core.V1.Description"
_TERM_COMPUTED = "Org.OData.Core.V1.Computed"
_TERM_PERMISSIONS = "Org.OData.Core.V1.Permissions"
_TERM_CHANGE_TRACKING = "Org.OData.Capabilities.V1.ChangeTracking"
_TERM_ALTERNATE_KEYS = "OData.Community.Keys.V1.AlternateKeys"

_CHUNK = 64 * 1024
_PROLOG_LIMIT = 1024 * 1024
_NOT_DATAVERSE = (
    "the URL probably isn't a Dataverse environment (expected "
    "https://<org>.crm<N>.dynamics.com, the service answering /api/data/v9.2/$metadata)"
)

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


class MetadataError(ValueError):
    """The ``$metadata`` document is hostile, malformed or not an OData v4 CSDL document."""


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Hostile-XML guard
# --------------------------------------------------------------------------------------------

_XML_DECL_ENCODING = re.compile(r"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ASCII_COMPATIBLE = frozenset(
    {
        "utf-8",
        "utf8",
        "us-ascii",
        "ascii",
        "iso-8859-1",
        "latin-1",
        "latin1",
        "windows-1252",
        "cp1252",
    }
)
_UTF16 = frozenset({"utf-16", "utf16", "utf-16le", "utf-16be"})


class _PrologGuard:
    """Holds back the first bytes until the prolog is known to be free of DTD declarations.

    The prolog is everything before the root element: an XML declaration, comments, processing
    instructions and, in a hostile document, a ``DOCTYPE`` with ``ENTITY`` declarations. Once
    the root element's ``<`` is seen the document can no longer declare entities (a DOCTYPE
    after it is a well-formedness error for the parser), so the rest passes straight through.
    """

    __slots__ = ("_buf", "done", "origin")

    def __init__(self, origin: str) -> None:
        self._buf = b""
        self.done = False
        self.origin = origin

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """Returns the bytes that may go to the parser now (empty while still undecided)."""
        if self.done:
            return chunk
        self._buf += chunk
        if self._check(self._buf, final):
            self.done = True
            out, self._buf = self._buf, b""
            return out
        if final:
            raise MetadataError(
                f"The $metadata document from {self.origin} is empty or has no root element; "
                f"{_NOT_DATAVERSE}."
            )
        if len(self._buf) > _PROLOG_LIMIT:
            raise MetadataError(
                f"The $metadata document from {self.origin} has no root element in its first "
                f"{_PROLOG_LIMIT} bytes; {_NOT_DATAVERSE}."
            )
        return b""

    def _check(self, buf: bytes, final: bool) -> bool:
        if len(buf) < 4 and not final:
            return False
        family: str
        if buf.startswith(
            (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00")
        ):
            self._refuse_encoding("UTF-32")
        if buf.startswith(b"\x4c\x6f\xa7\x94"):
            self._refuse_encoding("EBCDIC")
        if buf.startswith(b"\xef\xbb\xbf"):
            family, text = "utf-8", buf[3:].decode("latin-1")
        elif buf.startswith((b"\xff\xfe", b"<\x00")):
            body = buf[2:] if buf.startswith(b"\xff\xfe") else buf
            family, text = "utf-16", body[: len(body) // 2 * 2].decode("utf-16-le", "replace")
        elif buf.startswith((b"\xfe\xff", b"\x00<")):
            body = buf[2:] if buf.startswith(b"\xfe\xff") else buf
            family, text = "utf-16", body[: len(body) // 2 * 2].decode("utf-16-be", "replace")
        else:
            # Any ASCII-compatible encoding: markup bytes are the same whatever the declaration
            # says, as long as the declared encoding is ASCII-compatible (checked below).
            family, text = "ascii", buf.decode("latin-1")
        return self._scan(text, family, final)

    def _refuse_encoding(self, name: str) -> None:
        raise MetadataError(
            f"The $metadata document from {self.origin} is encoded in {name}, which is refused "
            f"(Dataverse sends UTF-8); {_NOT_DATAVERSE}."
        )

    def _scan(self, text: str, family: str, final: bool) -> bool:
        pos, n = 0, len(text)
        while True:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos >= n:
                return False
            if text[pos] != "<":
                raise MetadataError(
                    f"The $metadata document from {self.origin} is not XML (it starts with "
                    f"{text[pos : pos + 20]!r}); {_NOT_DATAVERSE}."
                )
            if n - pos < 4 and not final:
                return False
            if text.startswith("<?", pos):
                end = text.find("?>", pos + 2)
                if end < 0:
                    return False
                if text.startswith("<?xml", pos):
                    self._check_declared_encoding(text[pos:end], family)
                pos = end + 2
            elif text.startswith("<!--", pos):
                end = text.find("-->", pos + 4)
                if end < 0:
                    return False
                pos = end + 3
            elif text.startswith("<!", pos):
                if text[pos : pos + 14].upper().startswith("<!DOCTYPE HTML"):
                    raise MetadataError(
                        f"The $metadata request to {self.origin} returned an HTML page, not "
                        f"OData CSDL; {_NOT_DATAVERSE}."
                    )
                raise MetadataError(
                    f"The $metadata document from {self.origin} contains a DOCTYPE/ENTITY "
                    "declaration; it is refused before parsing (entity expansion or external "
                    "entities could exhaust memory or read local files). Dataverse never sends one."
                )
            else:
                return True

    def _check_declared_encoding(self, decl: str, family: str) -> None:
        match = _XML_DECL_ENCODING.search(decl)
        if match is None:
            return
        declared = match.group(1).lower()
        allowed = _UTF16 if family == "utf-16" else _ASCII_COMPATIBLE
        if declared not in allowed:
            self._refuse_encoding(declared)


# --------------------------------------------------------------------------------------------
# Streaming CSDL parser
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _RawType:
    """An entity type as declared (own members only), before inheritance is resolved."""

    name: str
    base: str | None
    abstract: bool
    key: list[str] | None
    props: dict[str, Property]
    # single-valued navigation -> (target logical name, ``_x_value`` constraint property or None)
    navs: dict[str, tuple[str, str | None]]
    alternate_keys: list[list[str]]
    description: str | None


class _MissingBaseTypesError(Exception):
    """A base type of a wanted type was skipped before it was known to be needed."""

    def __init__(self, wanted: set[str]) -> None:
        super().__init__(sorted(wanted))
        self.wanted = wanted


def _local(name: str) -> str:
    """``mscrm.account`` / ``Microsoft.Dynamics.CRM.account`` -> ``account``."""
    return name.rpartition(".")[2]


def _bool_value(elem: ET.Element, default: bool = True) -> bool:
    """The boolean of an ``Annotation``/``PropertyValue``: ``Bool`` attribute or ``<Bool>``."""
    raw = elem.get("Bool")
    if raw is None:
        child = elem.find(_T_BOOL)
        raw = child.text if child is not None else None
    if raw is None:
        return default
    return raw.strip().lower() == "true"


def _int_facet(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None  # "max", "variable", "floating"


def _is_custom(name: str) -> bool:
    match = _PREFIXED_NAME.match(name)
    if match is None:
        return False
    prefix = match.group(1)
    return not (prefix in _MICROSOFT_PREFIXES or prefix.startswith("msdyn"))


class _CsdlParser:
    """Incremental CSDL reader: ``feed`` chunks, then ``close`` for the model."""

    def __init__(self, wanted: Iterable[str] | None, origin: str) -> None:
        self._origin = origin
        self._guard = _PrologGuard(origin)
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self._root_seen = False
        self._wanted: set[str] | None = None if wanted is None else set(wanted)
        self._needed: set[str] | None = None if wanted is None else set(self._wanted or ())
        self._raw: dict[str, _RawType] = {}
        self._base_of: dict[str, str | None] = {}
        self._abstract: set[str] = set()
        self._sets: dict[str, tuple[str, bool | None]] = {}
        self._complex: set[str] = set()
        self._enums: set[str] = set()
        self._typedefs: dict[str, str] = {}
        self._aliases: dict[str, str] = {}
        self._namespace = ""
        self._holders: list[ET.Element] = []
        self._type_cache: dict[str, str] = {}
        self._term_cache: dict[str, str] = {}
        self._bytes = 0
        self._seconds = 0.0
        self._on_end = self._end_handlers()

    # ---- feeding ------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        started = time.perf_counter()
        self._bytes += len(chunk)
        data = self._guard.feed(chunk)
        if data:
            self._push(data)
        self._seconds += time.perf_counter() - started

    def close(self) -> EntityModel:
        started = time.perf_counter()
        data = self._guard.feed(b"", final=True)
        if data:
            self._push(data)
        try:
            self._parser.close()
            self._drain()
        except ET.ParseError as exc:
            raise self._malformed(exc) from None
        if not self._root_seen:
            raise MetadataError(f"The $metadata document from {self._origin} has no root element.")
        model = self._build()
        self._seconds += time.perf_counter() - started
        model.parse_seconds = self._seconds
        return model

    def _push(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
            self._drain()
        except ET.ParseError as exc:
            raise self._malformed(exc) from None

    def _malformed(self, exc: ET.ParseError) -> MetadataError:
        line, column = getattr(exc, "position", (0, 0))
        return MetadataError(
            f"The $metadata document from {self._origin} is not well-formed XML "
            f"(line {line}, column {column}): {exc}."
        )

    # ---- events -------------------------------------------------------------------------

    def _drain(self) -> None:
        # Hot loop: two events per element of the document; only the few tags in the table
        # cost more than a dictionary miss.
        on_end = self._on_end
        events = cast("Iterator[tuple[str, ET.Element]]", self._parser.read_events())
        for event, elem in events:
            if event == "end":
                handler = on_end.get(elem.tag)
                if handler is not None:
                    handler(elem)
                    # A top-level element was read: free it and the emptied shells its holder
                    # (the Schema or the EntityContainer) keeps.
                    elem.clear()
                    if self._holders:
                        self._holders[-1].clear()
            elif self._root_seen:
                tag = elem.tag
                if tag == _T_SCHEMA:
                    self._namespace = elem.get("Namespace") or ""
                    self._add_alias(self._namespace, elem.get("Alias"))
                    self._holders = [elem]
                elif tag == _T_ENTITY_CONTAINER:
                    self._holders.append(elem)
            else:
                self._on_root(elem)

    def _end_handlers(self) -> dict[str, Callable[[ET.Element], None]]:
        def complex_type(elem: ET.Element) -> None:
            self._complex.add(self._namespace + "." + (elem.get("Name") or ""))

        def enum_type(elem: ET.Element) -> None:
            self._enums.add(self._namespace + "." + (elem.get("Name") or ""))

        def type_definition(elem: ET.Element) -> None:
            name = self._namespace + "." + (elem.get("Name") or "")
            self._typedefs[name] = self._qualify(elem.get("UnderlyingType") or "Edm.String")

        def include(elem: ET.Element) -> None:
            self._add_alias(elem.get("Namespace"), elem.get("Alias"))

        def entity_container(elem: ET.Element) -> None:
            if len(self._holders) > 1:
                self._holders.pop()

        def skip(elem: ET.Element) -> None:
            pass

        handlers: dict[str, Callable[[ET.Element], None]] = dict.fromkeys(
            (*_T_OTHER_TOP, _T_REFERENCE), skip
        )
        handlers.update(
            {
                _T_ENTITY_TYPE: self._on_entity_type,
                _T_ENTITY_SET: self._on_entity_set,
                _T_COMPLEX_TYPE: complex_type,
                _T_ENUM_TYPE: enum_type,
                _T_TYPE_DEFINITION: type_definition,
                _T_INCLUDE: include,
                _T_ENTITY_CONTAINER: entity_container,
            }
        )
        return handlers

    def _on_root(self, elem: ET.Element) -> None:
        self._root_seen = True
        if elem.tag == _T_EDMX:
            return
        tag = elem.tag
        if tag.endswith("}Edmx"):
            raise MetadataError(
                f"The $metadata document from {self._origin} is CSDL of an older OData version "
                f"({tag.partition('}')[0][1:]}), not OData v4; {_NOT_DATAVERSE}."
            )
        raise MetadataError(
            f"The $metadata document from {self._origin} is not OData CSDL (root element "
            f"<{tag}>, expected edmx:Edmx); {_NOT_DATAVERSE}."
        )

    def _add_alias(self, namespace: str | None, alias: str | None) -> None:
        if namespace and alias:
            self._aliases[alias] = namespace

    def _qualify(self, name: str) -> str:
        """Alias-qualified type names become namespace-qualified (``mscrm.X`` -> full)."""
        cached = self._type_cache.get(name)
        if cached is not None:
            return cached
        if name.startswith("Collection(") and name.endswith(")"):
            out = "Collection(" + self._qualify(name[11:-1]) + ")"
        else:
            prefix, _, local = name.rpartition(".")
            out = self._aliases.get(prefix, prefix) + "." + local if prefix else name
        out = sys.intern(out)
        self._type_cache[name] = out
        return out

    def _term(self, term: str) -> str:
        """Alias-qualified annotation terms become namespace-qualified (``Core.Computed``)."""
        cached = self._term_cache.get(term)
        if cached is None:
            prefix, _, local = term.rpartition(".")
            cached = self._aliases.get(prefix, prefix) + "." + local
            self._term_cache[term] = cached
        return cached

    # ---- entity types ---------------------------------------------------------------------

    def _on_entity_type(self, elem: ET.Element) -> None:
        name = elem.get("Name") or ""
        base_attr = elem.get("BaseType")
        base = _local(base_attr) if base_attr else None
        abstract = (elem.get("Abstract") or "").lower() == "true"
        self._base_of[name] = base
        if abstract:
            self._abstract.add(name)
        needed = self._needed
        if needed is not None and name not in needed and not abstract:
            return  # skipped: only its name and base were read
        if needed is not None and base is not None:
            needed.add(base)
        self._raw[name] = self._read_entity_type(elem, name, base, abstract)

    def _read_entity_type(
        self, elem: ET.Element, name: str, base: str | None, abstract: bool
    ) -> _RawType:
        key: list[str] | None = None
        props: dict[str, Property] = {}
        navs: dict[str, tuple[str, str | None]] = {}
        alternate_keys: list[list[str]] = []
        description: str | None = None
        intern = sys.intern
        for child in elem:
            tag = child.tag
            if tag == _T_PROPERTY:
                prop = self._read_property(child)
                props[prop.name] = prop
            elif tag == _T_NAV:
                nav_type = child.get("Type") or ""
                if nav_type.startswith("Collection("):
                    continue
                constraint = None
                for ref in child.iter(_T_REF_CONSTRAINT):
                    prop_name = ref.get("Property") or ""
                    if prop_name.startswith("_") and prop_name.endswith("_value"):
                        constraint = intern(prop_name)
                        break
                navs[intern(child.get("Name") or "")] = (intern(_local(nav_type)), constraint)
            elif tag == _T_KEY:
                key = [intern(ref.get("Name") or "") for ref in child.iter(_T_PROPERTY_REF)]
            elif tag == _T_ANNOTATION:
                term = self._term(child.get("Term") or "")
                if term == _TERM_DESCRIPTION:
                    description = child.get("String") or None
                elif term == _TERM_ALTERNATE_KEYS:
                    alternate_keys.extend(self._read_alternate_keys(child))
        return _RawType(
            name=name,
            base=base,
            abstract=abstract,
            key=key,
            props=props,
            navs=navs,
            alternate_keys=alternate_keys,
            description=description,
        )

    def _read_property(self, elem: ET.Element) -> Property:
        read_only = False
        term_of = self._term
        for ann in elem:
            if ann.tag != _T_ANNOTATION:
                continue
            term = term_of(ann.get("Term") or "")
            if term == _TERM_COMPUTED:
                read_only = read_only or _bool_value(ann)
            elif term == _TERM_PERMISSIONS:
                members = ann.get("EnumMember") or " ".join(
                    m.text or "" for m in ann.iter(_T_ENUM_MEMBER)
                )
                flags = {m.rpartition("/")[2] for m in members.split()}
                if not flags & {"Write", "ReadWrite"}:
                    read_only = True
        get = elem.get
        edm_type = self._qualify(get("Type") or "Edm.String")
        inner = edm_type[11:-1] if edm_type.startswith("Collection(") else edm_type
        kind: PropertyKind = "primitive" if inner.startswith("Edm.") else "unknown"
        max_length = get("MaxLength")
        precision = get("Precision")
        scale = get("Scale")
        return Property(
            sys.intern(get("Name") or ""),
            edm_type,
            (get("Nullable") or "true").lower() != "false",
            read_only,
            None if max_length is None else _int_facet(max_length),
            None if precision is None else _int_facet(precision),
            None if scale is None else _int_facet(scale),
            kind,
        )

    @staticmethod
    def _read_alternate_keys(ann: ET.Element) -> list[list[str]]:
        keys: list[list[str]] = []
        for collection in ann.findall(_T_COLLECTION):
            for record in collection.findall(_T_RECORD):
                names: list[str] = []
                for value in record.iter(_T_PROPERTY_VALUE):
                    if value.get("Property") != "Name":
                        continue
                    path = value.get("PropertyPath")
                    if path is None:
                        child = value.find(_T_PROPERTY_PATH)
                        path = child.text if child is not None else None
                    if path:
                        names.append(path.strip())
                if names and names not in keys:
                    keys.append(names)
        return keys

    def _on_entity_set(self, elem: ET.Element) -> None:
        type_name = _local(elem.get("EntityType") or "")
        change_tracking: bool | None = None
        for ann in elem.iterfind(_T_ANNOTATION):
            if self._term(ann.get("Term") or "") != _TERM_CHANGE_TRACKING:
                continue
            change_tracking = True  # Capabilities vocabulary: Supported defaults to true
            for value in ann.iter(_T_PROPERTY_VALUE):
                if value.get("Property") == "Supported":
                    change_tracking = _bool_value(value)
        if type_name not in self._sets:
            self._sets[type_name] = (elem.get("Name") or "", change_tracking)

    # ---- model ------------------------------------------------------------------------------

    def _wanted_closure(self) -> set[str] | None:
        if self._wanted is None:
            return None
        closure: set[str] = set()
        for name in self._wanted:
            current: str | None = name
            while current is not None and current not in closure:
                closure.add(current)
                current = self._base_of.get(current)
        return closure

    def _build(self) -> EntityModel:
        closure = self._wanted_closure()
        if closure is not None:
            skipped = {n for n in closure if n in self._base_of and n not in self._raw}
            if skipped:
                raise _MissingBaseTypesError(closure)
            unknown = sorted(n for n in closure if n not in self._base_of)
            if unknown:
                logger.warning(
                    "Entity types not found in the $metadata of %s: %s",
                    self._origin,
                    ", ".join(unknown),
                )
        names = [n for n in self._raw if closure is None or n in closure]
        self._resolve_kinds(names)
        resolved: dict[str, tuple[EntityType, dict[str, tuple[str, str | None]]]] = {}
        for name in names:
            self._resolve(name, resolved, ())
        entities = {name: resolved[name][0] for name in names}
        return EntityModel(
            entities=entities,
            source_bytes=self._bytes,
            complete=closure is None,
            base_types=dict(self._base_of),
            abstract_types=frozenset(self._abstract),
        )

    def _resolve_kinds(self, names: Iterable[str]) -> None:
        for name in names:
            raw = self._raw[name]
            for prop_name, prop in raw.props.items():
                if prop.kind != "unknown":
                    continue
                inner = prop.element_type
                if inner in self._complex:
                    raw.props[prop_name] = replace(prop, kind="complex")
                elif inner in self._enums:
                    raw.props[prop_name] = replace(prop, kind="enum")
                elif inner in self._typedefs:
                    underlying = self._typedefs[inner]
                    edm = f"Collection({underlying})" if prop.is_collection else underlying
                    raw.props[prop_name] = replace(prop, edm_type=edm, kind="primitive")

    def _resolve(
        self,
        name: str,
        done: dict[str, tuple[EntityType, dict[str, tuple[str, str | None]]]],
        chain: tuple[str, ...],
    ) -> tuple[EntityType, dict[str, tuple[str, str | None]]]:
        if name in done:
            return done[name]
        raw = self._raw[name]
        parent: EntityType | None = None
        navs: dict[str, tuple[str, str | None]] = {}
        props: dict[str, Property] = {}
        if raw.base is not None and raw.base in self._raw:
            if raw.base in chain:
                raise MetadataError(
                    f"The $metadata document from {self._origin} has a BaseType cycle: "
                    + " -> ".join((*chain, name, raw.base))
                )
            parent, parent_navs = self._resolve(raw.base, done, (*chain, name))
            props.update(parent.properties)
            navs.update(parent_navs)
        props.update(raw.props)
        navs.update(raw.navs)
        key = raw.key if raw.key is not None else (list(parent.key) if parent else [])

        lookups: dict[str, Lookup] = {}
        attached: dict[str, dict[str, str]] = {}
        for prop_name in props:
            if prop_name.startswith("_") and prop_name.endswith("_value") and len(prop_name) > 7:
                attached[prop_name] = {}
        for nav_name, (target, constraint) in navs.items():
            if constraint is not None:
                attached.setdefault(constraint, {})[nav_name] = target
        for prop_name, nav_map in attached.items():
            attribute = prop_name[1:-6]
            lookups[prop_name] = Lookup(
                property=prop_name,
                attribute=attribute,
                navigations=nav_map,
                read_only=not nav_map or attribute in _PLATFORM_LOOKUPS,
            )
        entity_set, change_tracking = self._sets.get(name, (None, None))
        entity = EntityType(
            name=name,
            entity_set=entity_set,
            key=key,
            base_type=raw.base,
            abstract=raw.abstract,
            properties=props,
            lookups=lookups,
            navigation={nav: target for nav, (target, _) in navs.items()},
            alternate_keys=raw.alternate_keys,
            change_tracking=change_tracking,
            is_custom=_is_custom(name),
            description=raw.description,
        )
        done[name] = (entity, navs)
        return done[name]


Source = bytes | bytearray | memoryview | IO[bytes] | str | os.PathLike[str]
_REREADABLE = (bytes, bytearray, memoryview, str, os.PathLike)


def _iter_source(source: Source) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for start in range(0, len(data), _CHUNK):
            yield data[start : start + _CHUNK]
    elif isinstance(source, str | os.PathLike):
        if isinstance(source, str) and source.lstrip().startswith("<"):
            raise TypeError("parse_metadata: pass the XML document as bytes (a str is a path)")
        with open(source, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
    else:
        while chunk := source.read(_CHUNK):
            yield chunk


def _parse_chunks(
    chunks: Iterable[bytes], wanted: Iterable[str] | None, origin: str
) -> EntityModel:
    parser = _CsdlParser(wanted, origin)
    for chunk in chunks:
        if chunk:
            parser.feed(bytes(chunk))
    model = parser.close()
    logger.info(
        "Parsed %d entity types from %d bytes of $metadata (%s) in %.3f s",
        len(model.entities),
        model.source_bytes,
        origin,
        model.parse_seconds,
    )
    return model


def _normalize_wanted(wanted: Iterable[str] | None) -> set[str] | None:
    if wanted is None:
        return None
    if isinstance(wanted, str):
        return {wanted}
    return set(wanted)


def parse_metadata(
    source: Source,
    wanted: Iterable[str] | None = None,
) -> EntityModel:
    """Parses a CSDL document as a stream.

    Args:
        source: the document as bytes, a binary file object, or a path (``str`` or ``Path``).
        wanted: entity type logical names to keep (their base types come along); None keeps
            every entity type. Names not in the document are logged and left out.

    Returns:
        The entity model.

    Raises:
        MetadataError: the document declares a DOCTYPE/ENTITY, is not well-formed, uses a refused
            encoding, or is not OData v4 CSDL.
    """
    names = _normalize_wanted(wanted)
    origin = str(source) if isinstance(source, str | os.PathLike) else "<document>"
    start: int | None = None
    if not isinstance(source, _REREADABLE):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            start = source.tell() if source.seekable() else None
    try:
        return _parse_chunks(_iter_source(source), names, origin)
    except _MissingBaseTypesError as missing:
        # A non-abstract base type was declared before the wanted type that derives from it,
        # so it was skipped; read again with the full set of names, known now, which cannot miss.
        logger.info("Re-reading the $metadata for base types %s", sorted(missing.wanted))
        if not isinstance(source, _REREADABLE):
            if start is None:
                raise MetadataError(
                    "The base types of the wanted entity types are declared before them and the "
                    f"stream cannot be re-read; add them to wanted: {sorted(missing.wanted)}."
                ) from None
            source.seek(start)
        return _parse_chunks(_iter_source(source), missing.wanted, origin)


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


class _SessionLike(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any:  # a requests.Session, for example
        """Starts a GET."""


OpenStream = Callable[[str], Iterable[bytes]]


def metadata_url(environment_url: str, api_version: str = "9.2") -> str:
    """``{environment}/api/data/v{version}/$metadata?annotations=true``."""
    base = _normalize_environment(environment_url)
    return f"{base}/api/data/v{api_version}/$metadata?annotations=true"


def _session_stream(session: _SessionLike, url: str) -> Iterator[bytes]:
    response = session.get(url, stream=True, headers={"Accept": "application/xml"})
    try:
        response.raise_for_status()
        yield from response.iter_content(chunk_size=_CHUNK)
    finally:
        response.close()


def fetch_metadata(
    get: OpenStream | _SessionLike,
    environment_url: str,
    wanted: Iterable[str] | None = None,
    cache: MetadataCache | None = None,
    *,
    api_version: str = "9.2",
) -> EntityModel:
    """The environment's entity model, from the cache or streamed from ``$metadata``.

    Args:
        get: ``open_stream(url) -> Iterable[bytes]`` (the HTTP layer's streaming GET), or a
            session-like object with ``get(url, stream=True, headers=...)`` returning a
            ``requests``-style response.
        environment_url: ``https://<org>.crm<N>.dynamics.com``.
        wanted: entity type logical names to keep (plus their base types); None keeps all.
        cache: where a parsed model is looked up first and saved after a fetch.
        api_version: Web API version of the URL.

    Returns:
        The entity model. A cached model may hold more entity types than ``wanted``; a fetched
        one is saved to the cache as parsed (so a later, wider ``wanted`` fetches again).

    Raises:
        MetadataError: the document is hostile, malformed or not CSDL. HTTP errors raised by
            ``get`` propagate unchanged.
    """
    names = _normalize_wanted(wanted)
    if cache is not None:
        cached = cache.load(environment_url, names)
        if cached is not None:
            return cached
    url = metadata_url(environment_url, api_version)
    opener: OpenStream
    if callable(get):
        opener = get
    else:
        session = get

        def opener(target: str) -> Iterable[bytes]:
            return _session_stream(session, target)

    logger.info("Fetching %s", url)
    try:
        model = _parse_chunks(opener(url), names, url)
    except _MissingBaseTypesError as missing:
        logger.info("Fetching the $metadata again for base types %s", sorted(missing.wanted))
        model = _parse_chunks(opener(url), missing.wanted, url)
    if cache is not None:
        cache.save(environment_url, model)
    return model


# --------------------------------------------------------------------------------------------
# JSON Schema
# --------------------------------------------------------------------------------------------

# Non-null JSON Schema of each primitive type (OData JSON format 4.01, section 7.1).
_EDM_SCHEMAS: dict[str, dict[str, Any]] = {
    "Edm.Binary": {"type": "string", "contentEncoding": "base64"},
    "Edm.Boolean": {"type": "boolean"},
    "Edm.Byte": {"type": "integer"},
    "Edm.Date": {"type": "string", "format": "date"},
    "Edm.DateTimeOffset": {"type": "string", "format": "date-time"},
    "Edm.Decimal": {"type": "number"},
    "Edm.Double": {"type": "number"},
    "Edm.Duration": {"type": "string", "format": "duration"},
    "Edm.Guid": {"type": "string", "format": "uuid"},
    "Edm.Int16": {"type": "integer"},
    "Edm.Int32": {"type": "integer"},
    "Edm.Int64": {"type": "integer"},
    "Edm.SByte": {"type": "integer"},
    "Edm.Single": {"type": "number"},
    "Edm.Stream": {"type": "string"},
    "Edm.String": {"type": "string"},
    "Edm.TimeOfDay": {"type": "string", "format": "time"},
}


def _base_schema(edm_type: str, kind: PropertyKind) -> dict[str, Any]:
    if kind == "complex" or edm_type.startswith(("Edm.Geography", "Edm.Geometry")):
        return {"type": "object"}
    if kind == "enum":
        return {"type": "string"}
    known = _EDM_SCHEMAS.get(edm_type)
    return dict(known) if known is not None else {}


def property_schema(prop: Property, *, nullable: bool = True) -> dict[str, Any]:
    """The JSON Schema of one property.

    Types: ``Edm.Guid`` -> string/uuid; ``Edm.DateTimeOffset`` -> string/date-time; ``Edm.Date``
    -> string/date (date-only columns such as ``contact.birthdate``, never date-time);
    ``Edm.Int16/32/64`` -> integer; ``Edm.Decimal`` and ``Edm.Double`` -> number; ``Edm.Boolean``
    -> boolean; ``Edm.Binary`` -> base64 string; ``Edm.String`` -> string with ``maxLength`` when
    declared; complex types -> object; enum types -> string (OData JSON writes member names);
    collections -> array of the element schema; unknown types -> ``{}`` (anything).

    Decimals (money included) stay exact although typed ``number``: the service writes them as
    JSON numbers with every digit, the tap parses response bodies with JSON numbers read into
    ``decimal.Decimal``, and singer-sdk serializes ``Decimal`` values without going through float.

    Args:
        prop: the property.
        nullable: add ``"null"`` to the type (all columns except the primary key).
    """
    if prop.is_collection:
        schema: dict[str, Any] = {
            "type": "array",
            "items": _base_schema(prop.element_type, prop.kind),
        }
    else:
        schema = _base_schema(prop.edm_type, prop.kind)
        if (
            prop.edm_type == "Edm.String"
            and prop.max_length is not None
            and prop.kind == "primitive"
        ):
            schema["maxLength"] = prop.max_length
    if nullable and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def schema_properties(entity: EntityType, properties: Iterable[str] | None = None) -> list[str]:
    """The property names of a stream schema, in catalog order: key columns first, then A-Z.

    Args:
        entity: the entity type.
        properties: restrict to these (the key columns are always included); None keeps all.

    Raises:
        MetadataError: a name in ``properties`` is not a property of the entity type.
    """
    if properties is None:
        names = set(entity.properties)
    else:
        names = set([properties] if isinstance(properties, str) else properties)
        unknown = sorted(names - entity.properties.keys())
        if unknown:
            raise MetadataError(
                f"Table {entity.name!r} has no column(s) {', '.join(unknown)} (lookups are "
                "named _<column>_value)."
            )
    keys = [k for k in entity.key if k in entity.properties]
    return keys + sorted(names - set(keys))


def json_schema(entity: EntityType, *, properties: Iterable[str] | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12 vocabulary, as Singer catalogs use it) of an entity type.

    Every column is nullable except the primary key (``$select`` answers carry ``null`` for
    empty columns, required ones included). Lookups appear as their ``_x_value`` uuid columns.
    The order of ``properties`` is deterministic (`schema_properties`), so catalogs are stable.

    ``additionalProperties`` is deliberately left out (open schema): new columns appear in
    Dataverse before a catalog is refreshed, and the tap adds formatted-value columns; Singer
    targets tolerate extra fields, whereas a closed schema would make validating targets fail.

    Args:
        entity: the entity type.
        properties: restrict to these columns (key columns always included).
    """
    keys = set(entity.key)
    props = {
        name: property_schema(entity.properties[name], nullable=name not in keys)
        for name in schema_properties(entity, properties)
    }
    schema: dict[str, Any] = {"type": "object", "properties": props}
    required = [k for k in entity.key if k in props]
    if required:
        schema["required"] = required
    return schema


# --------------------------------------------------------------------------------------------
# Disk cache
# --------------------------------------------------------------------------------------------

_CACHE_FORMAT = 1


def _normalize_environment(url: str) -> str:
    """``HTTPS://Org.crm.dynamics.com:443/`` -> ``https://org.crm.dynamics.com``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = (
        host
        if port is None or (scheme, port) in {("https", 443), ("http", 80)}
        else f"{host}:{port}"
    )
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def _model_to_json(environment_url: str, model: EntityModel, saved_at: float) -> bytes:
    entities = []
    for e in model.entities.values():
        entities.append(
            {
                "name": e.name,
                "entity_set": e.entity_set,
                "key": e.key,
                "base_type": e.base_type,
                "abstract": e.abstract,
                "properties": [
                    [
                        p.name,
                        p.edm_type,
                        p.nullable,
                        p.read_only,
                        p.max_length,
                        p.precision,
                        p.scale,
                        p.kind,
                    ]
                    for p in e.properties.values()
                ],
                "lookups": [
                    [lk.property, lk.attribute, lk.navigations, lk.read_only]
                    for lk in e.lookups.values()
                ],
                "navigation": e.navigation,
                "alternate_keys": e.alternate_keys,
                "change_tracking": e.change_tracking,
                "is_custom": e.is_custom,
                "description": e.description,
            }
        )
    return orjson.dumps(
        {
            "format": _CACHE_FORMAT,
            "environment": _normalize_environment(environment_url),
            "saved_at": saved_at,
            "source_bytes": model.source_bytes,
            "parse_seconds": model.parse_seconds,
            "complete": model.complete,
            "base_types": model.base_types,
            "abstract_types": sorted(model.abstract_types),
            "entities": entities,
        }
    )


def _model_from_json(doc: dict[str, Any]) -> EntityModel:
    entities: dict[str, EntityType] = {}
    for e in doc["entities"]:
        properties = {}
        for name, edm_type, nullable, read_only, max_length, precision, scale, kind in e[
            "properties"
        ]:
            if kind not in ("primitive", "complex", "enum", "unknown"):
                raise ValueError(f"bad property kind {kind!r}")
            properties[name] = Property(
                str(name),
                str(edm_type),
                bool(nullable),
                bool(read_only),
                max_length,
                precision,
                scale,
                kind,
            )
        lookups = {
            prop: Lookup(str(prop), str(attr), {str(k): str(v) for k, v in navs.items()}, bool(ro))
            for prop, attr, navs, ro in e["lookups"]
        }
        entity = EntityType(
            name=str(e["name"]),
            entity_set=e["entity_set"],
            key=[str(k) for k in e["key"]],
            base_type=e["base_type"],
            abstract=bool(e["abstract"]),
            properties=properties,
            lookups=lookups,
            navigation={str(k): str(v) for k, v in e["navigation"].items()},
            alternate_keys=[[str(c) for c in key] for key in e["alternate_keys"]],
            change_tracking=e["change_tracking"],
            is_custom=bool(e["is_custom"]),
            description=e["description"],
        )
        entities[entity.name] = entity
    return EntityModel(
        entities=entities,
        source_bytes=int(doc["source_bytes"]),
        parse_seconds=float(doc["parse_seconds"]),
        complete=bool(doc["complete"]),
        base_types={str(k): v for k, v in doc["base_types"].items()},
        abstract_types=frozenset(doc["abstract_types"]),
    )


class MetadataCache:
    """The parsed entity model of each environment as a JSON file (never the XML).

    One file per environment, named by the SHA-256 of the normalized environment URL, written
    atomically (temporary file + ``os.replace``) with mode 0600 in a 0700 directory. A file
    older than the TTL, unreadable, corrupt, or lacking a wanted entity type is ignored (a
    corrupt one with a warning), and the caller fetches ``$metadata`` again.

    Args:
        directory: where the files live (created when saving).
        ttl_seconds: how long a saved model is used.
        clock: the time source (seconds since the epoch), for tests.
    """

    def __init__(
        self, directory: Path, ttl_seconds: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def path_for(self, environment_url: str) -> Path:
        """The cache file of an environment."""
        digest = hashlib.sha256(_normalize_environment(environment_url).encode("utf-8")).hexdigest()
        return self.directory / f"metadata-{digest}.json"

    def load(self, environment_url: str, wanted: Iterable[str] | None = None) -> EntityModel | None:
        """The cached model, or None when it is missing, expired, corrupt or lacks a wanted type.

        Args:
            environment_url: the environment.
            wanted: the entity types the caller needs; None needs a complete model.
        """
        path = self.path_for(environment_url)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            logger.debug("No metadata cache at %s", path)
            return None
        except OSError as exc:
            logger.warning("Ignoring unreadable metadata cache %s: %s", path, exc)
            return None
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != _CACHE_FORMAT:
                raise ValueError("unknown cache format")
            if doc.get("environment") != _normalize_environment(environment_url):
                raise ValueError("the file belongs to another environment")
            age = self._clock() - float(doc["saved_at"])
            model = _model_from_json(doc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            logger.warning(
                "Ignoring corrupt metadata cache %s (%s); fetching $metadata again", path, exc
            )
            return None
        if age > self.ttl_seconds or age < -60:
            logger.info(
                "Metadata cache %s is %.0f s old (TTL %.0f s); refreshing",
                path,
                age,
                self.ttl_seconds,
            )
            return None
        names = _normalize_wanted(wanted)
        if names is None:
            if not model.complete:
                logger.info("Metadata cache %s holds only some tables; refreshing", path)
                return None
        else:
            missing = sorted(names - model.entities.keys())
            if missing:
                logger.info("Metadata cache %s lacks %s; refreshing", path, ", ".join(missing))
                return None
        logger.info("Using the metadata cache %s (%.0f s old)", path, age)
        return model

    def save(self, environment_url: str, model: EntityModel) -> None:
        """Writes the model atomically; a failure is logged, never raised."""
        path = self.path_for(environment_url)
        tmp_name: str | None = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            data = _model_to_json(environment_url, model, self._clock())
            fd, tmp_name = tempfile.mkstemp(prefix=".metadata-", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
            logger.debug("Saved the metadata cache %s (%d bytes)", path, len(data))
        except OSError as exc:
            logger.warning("Could not save the metadata cache %s: %s", path, exc)
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
