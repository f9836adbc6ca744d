"""Deterministic, realistic seed data for the emulator's tables.

Rows are produced on demand, one table at a time, in the storage format of ``STORAGE.md`` and in
the column order of ``Entity.storage_columns()``. Nothing is held in memory per row: a row is a
pure function of (seed, table, index, counts, now), so any slice of a table can be generated on
its own and equals the same slice of the whole table.

* ``row_id(table, j)`` is the GUID of row ``j`` of a table. Lookups point at ``row_id(target, j)``
  with ``j < counts[target]``, so references always hit rows that exist once every table is
  seeded with the same counts.
* ``default_counts(scale)`` is a realistic organisation size.
* ``generate_rows(model, entity, counts)`` yields the rows. It handles any ``Entity`` (the standard
  model's or one read from a real CSDL): column names drive realism heuristics (names, e-mails,
  phones, addresses, money, state/status pairs), everything else gets a value appropriate to its
  type and length.

Word lists live in the package's data files, read once at import: ``data/people.json`` (given and
family names by culture), ``data/places.json`` (countries, cities, streets, phone plans,
currencies) and ``data/vocabulary.json`` (companies, products, titles, subjects, sentences).

The package: ``streams`` (ids, hashing, per-row random streams, time formatting), ``pools`` (the
word lists made into pools), ``rules`` (the per-row context and the heuristics' parameters),
``values`` (a column's value from its name and type) and ``plan`` (the steps and the row loop).

Time: ``createdon`` grows with the row index over the two years before ``now``; about 30 % of the
rows have their ``modifiedon`` in one of five "bulk import" seconds per table (half of them in the
most recent one), so many rows share a ``modifiedon`` second, as after a real data migration.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping

from ..model import Entity, Model
from .plan import _Plan
from .rules import state_rules
from .streams import DEFAULT_NOW, row_id

__all__ = [
    "DEFAULT_NOW",
    "default_counts",
    "generate_rows",
    "generic_rows",
    "row_id",
    "state_rules",
]

_DEFAULT_COUNTS = {
    "account": 500,
    "contact": 1200,
    "incident": 800,
    "email": 1500,
    "phonecall": 800,
    "task": 1000,
    "opportunity": 300,
    "lead": 400,
    "new_project": 60,
    "contoso_sensordata": 200,
}


def default_counts(scale: int = 1) -> dict[str, int]:
    """Row counts of a realistic organisation; business tables grow linearly with ``scale``,
    users and teams with its square root, currencies not at all."""
    scale = max(1, int(scale))
    counts = {name: n * scale for name, n in _DEFAULT_COUNTS.items()}
    counts["systemuser"] = round(25 * scale**0.5)
    counts["team"] = round(6 * scale**0.5)
    counts["transactioncurrency"] = 4
    return counts


def generate_rows(
    model: Model,
    entity: Entity,
    counts: Mapping[str, int],
    *,
    seed: int = 42,
    start: int = 0,
    stop: int | None = None,
    now: _dt.datetime | None = None,
) -> Iterator[tuple[object, ...]]:
    """Rows ``start..stop-1`` of ``entity`` as tuples in ``entity.storage_columns()`` order.

    ``stop`` defaults to ``counts[entity]``. A row depends only on (seed, table, index, counts,
    now), never on ``start``/``stop``: generating in chunks gives the same rows. Lookups point at
    ``row_id(target, j)`` with ``j < counts[target]`` (NULL when the target has no rows).
    """
    if stop is None:
        stop = int(counts.get(entity.logical_name, 0))
    start = max(0, start)
    if stop <= start:
        return iter(())
    return _Plan(model, entity, counts, seed, now).rows(start, stop)


def generic_rows(
    model: Model,
    entity: Entity,
    counts: Mapping[str, int],
    *,
    seed: int = 42,
    start: int = 0,
    stop: int | None = None,
    now: _dt.datetime | None = None,
) -> Iterator[tuple[object, ...]]:
    """Rows of any table, e.g. one read from a real CSDL: the same as ``generate_rows``, which
    relies on column names and types only (no table is special-cased beyond name heuristics)."""
    return generate_rows(model, entity, counts, seed=seed, start=start, stop=stop, now=now)
