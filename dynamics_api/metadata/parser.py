"""The streaming CSDL (OData v4 ``$metadata``) reader.

The CSDL of a real environment is 4-10 MB and grows with every solution installed. It is read
here as a stream (``xml.etree.ElementTree.XMLPullParser``, each top-level element cleared once
read), so memory stays flat whatever the document's size, and with ``wanted`` only the named
entity types (and their base types) are turned into objects; everything else is skipped after
reading its name. Inheritance is resolved afterwards (`dynamics_api.metadata.resolve`).

Every byte passes the prolog guard (`dynamics_api.metadata.xmlguard`) before the XML parser sees
it: a DOCTYPE/ENTITY declaration is refused, and a document whose root is not ``edmx:Edmx`` is
refused as "not a Dataverse environment".
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from typing import IO, cast

from dynamics_api.metadata.model import (
    EntityModel,
    MetadataError,
    Property,
    PropertyKind,
    wanted_names,
)
from dynamics_api.metadata.resolve import Declarations, MissingBaseTypesError, RawType, build_model
from dynamics_api.metadata.xmlguard import NOT_DATAVERSE, PrologGuard

logger = logging.getLogger(__name__)

__all__ = ["CHUNK", "Source", "parse_chunks", "parse_metadata"]

CHUNK = 64 * 1024

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


class _CsdlParser:
    """Incremental CSDL reader: ``feed`` chunks, then ``close`` for the model."""

    def __init__(self, wanted: Iterable[str] | None, origin: str) -> None:
        self._origin = origin
        self._guard = PrologGuard(origin)
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self._root_seen = False
        self._wanted: set[str] | None = None if wanted is None else set(wanted)
        self._needed: set[str] | None = None if wanted is None else set(self._wanted or ())
        self._decl = Declarations()
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
        model = build_model(self._decl, self._wanted, self._origin, self._bytes)
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
            self._decl.complex.add(self._namespace + "." + (elem.get("Name") or ""))

        def enum_type(elem: ET.Element) -> None:
            self._decl.enums.add(self._namespace + "." + (elem.get("Name") or ""))

        def type_definition(elem: ET.Element) -> None:
            name = self._namespace + "." + (elem.get("Name") or "")
            self._decl.typedefs[name] = self._qualify(elem.get("UnderlyingType") or "Edm.String")

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
                f"({tag.partition('}')[0][1:]}), not OData v4; {NOT_DATAVERSE}."
            )
        raise MetadataError(
            f"The $metadata document from {self._origin} is not OData CSDL (root element "
            f"<{tag}>, expected edmx:Edmx); {NOT_DATAVERSE}."
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
        self._decl.base_of[name] = base
        if abstract:
            self._decl.abstract.add(name)
        needed = self._needed
        if needed is not None and name not in needed and not abstract:
            return  # skipped: only its name and base were read
        if needed is not None and base is not None:
            needed.add(base)
        self._decl.raw[name] = self._read_entity_type(elem, name, base, abstract)

    def _read_entity_type(
        self, elem: ET.Element, name: str, base: str | None, abstract: bool
    ) -> RawType:
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
        return RawType(
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
        if type_name not in self._decl.sets:
            self._decl.sets[type_name] = (elem.get("Name") or "", change_tracking)


Source = bytes | bytearray | memoryview | IO[bytes] | str | os.PathLike[str]
_REREADABLE = (bytes, bytearray, memoryview, str, os.PathLike)


def _iter_source(source: Source) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]
    elif isinstance(source, str | os.PathLike):
        if isinstance(source, str) and source.lstrip().startswith("<"):
            raise TypeError("parse_metadata: pass the XML document as bytes (a str is a path)")
        with open(source, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
    else:
        while chunk := source.read(CHUNK):
            yield chunk


def parse_chunks(chunks: Iterable[bytes], wanted: Iterable[str] | None, origin: str) -> EntityModel:
    """Parses a document given as chunks of bytes (a streamed HTTP body, a file read in pieces).

    Raises:
        MetadataError: as `parse_metadata`.
        MissingBaseTypesError: a base type of a wanted type was skipped; parse again with the
            error's ``wanted``.
    """
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
    names = wanted_names(wanted)
    origin = str(source) if isinstance(source, str | os.PathLike) else "<document>"
    start: int | None = None
    if not isinstance(source, _REREADABLE):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            start = source.tell() if source.seekable() else None
    try:
        return parse_chunks(_iter_source(source), names, origin)
    except MissingBaseTypesError as missing:
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
        return parse_chunks(_iter_source(source), missing.wanted, origin)
