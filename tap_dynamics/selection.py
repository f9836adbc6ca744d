"""Which custom tables to extract: ``custom_entities`` with ``"*"``, patterns and include/exclude.

`resolve_custom_entities` expands the configured entries against the parsed ``$metadata``:

* ``"*"`` -- every custom table (`EntityType.is_custom`: the logical name carries a non-Microsoft
  solution publisher prefix such as ``new_`` or ``cr8a3_``; Microsoft's own ``msdyn_``, ``adx_``,
  ... are not custom);
* a pattern with ``*``, ``?`` or ``[...]`` (`fnmatch` syntax, case-insensitive) -- every table
  whose logical name matches, standard tables included (``new_*``, ``msdyn_*``);
* any other entry -- an explicit logical name, passed through as given (lower-cased). Explicit
  names are never filtered or skipped here: discovery reports a name the environment lacks.

``include`` (when given) keeps only the wildcard matches that match one of its patterns;
``exclude`` then drops the wildcard matches that match one of its patterns. Both apply to wildcard
matches only (an explicitly named table is always extracted), so ``include`` without a wildcard
entry selects nothing.

Wildcard matches that cannot or should not be extracted are skipped with a warning naming the
table and the reason (`skip_reason`). What the CSDL lets us tell, and how:

* not a table: the type's name is not a Dataverse logical name (lower-case ``[a-z0-9_]``); the
  metadata definition types (``EntityMetadata``, ``AttributeMetadata``, ...) are such types;
* abstract type: ``Abstract="true"`` (``crmbaseentity``, ``principal``; ``activitypointer``, whose
  rows are those of ``email``, ``task``, ... -- name it explicitly to get it);
* no entity set: the type cannot be queried through the Web API (base types such as
  ``crmbaseentity``, and types the service does not expose as a collection);
* intersect (many-to-many) table: CSDL has no ``IsIntersect`` flag. Heuristic: a non-abstract type
  without lookups whose columns, ``versionnumber`` aside, are all ``Edm.Guid``, at least three
  (its own id and the two related ids). The 26 types of that shape in the sample
  ``crm_schema.xml`` (``systemuserroles``, ``teammembership``, ``contactleads``, ...) are all
  intersect tables. Name an intersect table explicitly to extract it anyway.

Not told by CSDL, so not skipped here: virtual tables (they have an entity set and look like any
other) and private tables that have an entity set. Reading them fails at extract time (as does a
table the user has no read privilege for); the stream has to skip such a table with a warning.

Public API:
    resolve_custom_entities(patterns, model, include=..., exclude=...) -> list of logical names.
    skip_reason(entity) -> why a wildcard match is skipped, or None.
    is_wildcard(entry) -> whether an entry is a pattern.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable, Mapping

from dynamics_api.metadata import EntityModel, EntityType

__all__ = ["is_wildcard", "resolve_custom_entities", "skip_reason"]

logger = logging.getLogger(__name__)

ALL_CUSTOM = "*"
_LOGICAL_NAME = re.compile(r"[a-z][a-z0-9_]*")
_WILDCARD = re.compile(r"[*?\[]")


def is_wildcard(entry: str) -> bool:
    """Whether a ``custom_entities`` entry is ``"*"`` or an fnmatch pattern."""
    return _WILDCARD.search(entry) is not None


def _looks_intersect(entity: EntityType) -> bool:
    if entity.abstract or entity.lookups:
        return False
    columns = [p for name, p in entity.properties.items() if name != "versionnumber"]
    return len(columns) >= 3 and all(p.edm_type == "Edm.Guid" for p in columns)


def skip_reason(entity: EntityType) -> str | None:
    """Why a table matched by a wildcard is not extracted, or None to extract it."""
    if _LOGICAL_NAME.fullmatch(entity.name) is None:
        return "not a table (a metadata definition type: its name is not a logical name)"
    if entity.abstract:
        return (
            "abstract type (its rows are those of the tables deriving from it; name it "
            "explicitly to extract it anyway)"
        )
    if not entity.entity_set:
        return "no entity set (it cannot be queried through the Web API)"
    if _looks_intersect(entity):
        return (
            "looks like an intersect (many-to-many) table: only Guid columns and no lookups; "
            "name it explicitly to extract it"
        )
    return None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _normalize(entries: Iterable[str] | None) -> list[str]:
    return [e.strip().lower() for e in entries or () if e and e.strip()]


def resolve_custom_entities(
    patterns: list[str],
    model: EntityModel | Mapping[str, EntityType],
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
) -> list[str]:
    """The logical names of the tables the ``custom_entities`` entries designate.

    Args:
        patterns: the entries: ``"*"``, fnmatch patterns, explicit logical names.
        model: the parsed model (complete, i.e. parsed without ``wanted``, when an entry is a
            wildcard) or its ``entities`` mapping.
        include: patterns a wildcard match must match (None: no restriction).
        exclude: patterns a wildcard match must not match.

    Returns:
        Explicit names and wildcard matches, in the order of ``patterns`` (the matches of one
        wildcard A-Z), each once.

    Raises:
        ValueError: an entry is a wildcard and ``model`` is not the complete model.
    """
    entries = _normalize(patterns)
    includes = _normalize(include) if include is not None else None
    excludes = _normalize(exclude)
    entities: Mapping[str, EntityType]
    if isinstance(model, EntityModel):
        entities = model.entities
        if not model.complete and any(is_wildcard(e) for e in entries):
            raise ValueError(
                "custom_entities holds a wildcard: the $metadata must be parsed whole "
                "(without `wanted`) to expand it"
            )
    else:
        entities = model
    by_lower = {name.lower(): name for name in entities}
    out: dict[str, None] = {}
    warned: set[str] = set()
    for entry in entries:
        if not is_wildcard(entry):
            out[entry] = None
            continue
        for lower in sorted(by_lower):
            entity = entities[by_lower[lower]]
            if entry == ALL_CUSTOM:
                if not entity.is_custom:
                    continue
            elif not fnmatch.fnmatchcase(lower, entry):
                continue
            if includes is not None and not _matches(lower, includes):
                logger.info("Table %s (matched by %r) is not in the include list", lower, entry)
                continue
            if _matches(lower, excludes):
                logger.info("Table %s (matched by %r) is excluded", lower, entry)
                continue
            reason = skip_reason(entity)
            if reason is not None:
                if entity.name not in warned:
                    warned.add(entity.name)
                    logger.warning(
                        "Skipping table %s (matched by %r): %s", entity.name, entry, reason
                    )
                continue
            out[entity.name] = None
    return list(out)
