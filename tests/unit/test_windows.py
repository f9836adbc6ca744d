"""The window planner against tables held in memory: windows partition the rows, in order, with
the probes the walk needs."""

from __future__ import annotations

import bisect
import random
import re
from dataclasses import dataclass

import pytest

from tap_dynamics.windows import COUNT_CAP, Window, epoch, literal, plan, plan_parts

DAY = 86_400
T0 = epoch("2024-01-01T00:00:00Z")


@dataclass(frozen=True)
class Row:
    key: int
    modifiedon: int | None
    createdon: int | None


def _mod(row: Row) -> int:
    assert row.modifiedon is not None
    return row.modifiedon


_COMPARE = re.compile(r"^(\w+) (ge|lt|eq) (\S+)$")


def _test(row: Row, cond: str) -> bool:
    if cond.startswith("("):
        inner = cond[1:-1]
        first, _, rest = inner.partition(" or ")
        return _test(row, first) or all(_test(row, c) for c in rest.split(" and "))
    match = _COMPARE.match(cond)
    assert match, cond
    column, op, text = match.groups()
    value = getattr(row, column)
    if text == "null":
        assert op == "eq"
        return value is None
    if value is None:
        return False
    bound = epoch(text)
    return value >= bound if op == "ge" else value < bound if op == "lt" else value == bound


def _split(flt: str) -> list[str]:
    """``a and (b or c and d) and e`` -> [a, (b or c and d), e]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(flt):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and flt.startswith(" and ", i):
            parts.append(flt[start:i])
            start = i + len(" and ")
    parts.append(flt[start:])
    return [p for p in parts if p]


class Table:
    """A table and the planner's probes over it, counting them."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.counts = 0
        self.edges = 0
        self.value_reads = 0
        self._sorted_for = -1
        self._timed: list[Row] = []
        self._times: list[int] = []

    def match(self, flt: str | None) -> list[Row]:
        conds = _split(flt) if flt else []
        # Narrow with the modifiedon bounds first (the rows sorted once), then test each row.
        if self._sorted_for != len(self.rows):
            self._timed = sorted((r for r in self.rows if r.modifiedon is not None), key=_mod)
            self._times = [_mod(r) for r in self._timed]
            self._sorted_for = len(self.rows)
        timed, times = self._timed, self._times
        lo, hi = 0, len(timed)
        for c in conds:
            m = _COMPARE.match(c)
            if m and m.group(1) == "modifiedon" and m.group(2) in ("ge", "lt"):
                i = bisect.bisect_left(times, epoch(m.group(3)))
                lo, hi = (max(lo, i), hi) if m.group(2) == "ge" else (lo, min(hi, i))
        pool = timed[lo:hi] if lo or hi < len(timed) else self.rows
        return [r for r in pool if all(_test(r, c) for c in conds)]

    def count(self, flt: str) -> int:
        self.counts += 1
        return min(len(self.match(flt)), COUNT_CAP)

    def edge(self, column: str, flt: str | None, *, last: bool) -> str | None:
        self.edges += 1
        values = [getattr(r, column) for r in self.match(flt) if getattr(r, column) is not None]
        return literal(max(values) if last else min(values)) if values else None

    def values(self, column: str, flt: str, k: int) -> list[str]:
        self.value_reads += 1
        rows = sorted(self.match(flt), key=lambda r: (getattr(r, column), r.key))[:k]
        return [literal(getattr(r, column)) for r in rows]

    @property
    def probes(self) -> int:
        return self.counts + self.edges + self.value_reads


def _plan(table: Table, page: int = 500, **kw: object) -> list[Window]:
    times = [r.modifiedon for r in table.rows if r.modifiedon is not None]
    lo = kw.pop("lo", min(times))
    return list(
        plan(table, "modifiedon", base=None, lo=lo, hi=max(times) + 1, page=page, **kw)  # type: ignore[arg-type]
    )


def _read(table: Table, windows: list[Window]) -> list[Row]:
    """The rows the windows give, each window in its own order, window after window."""
    out: list[Row] = []
    for w in windows:
        rows = table.match(w.filter())
        cols = [w.within[0]] if w.within else []
        cols.append(w.column)
        rows.sort(
            key=lambda r: (*[(getattr(r, c) is not None, getattr(r, c) or 0) for c in cols], r.key)
        )
        out += rows
    return out


def _uniform(n: int, seed: int = 1) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        created = T0 + rng.randrange(300 * DAY)
        rows.append(Row(i, created + rng.randrange(30 * DAY), created))
    return rows


def _with_bulk(n: int, bulk: dict[int, int], seed: int = 2) -> list[Row]:
    """``n`` spread rows, plus ``bulk[second] `` rows modified in that one second."""
    rows = _uniform(n, seed)
    rng = random.Random(seed)
    for second, count in bulk.items():
        for _ in range(count):
            created = second - rng.randrange(1, 200 * DAY)
            rows.append(Row(len(rows), second, created))
    return rows


def test_windows_partition_the_rows_in_modifiedon_order() -> None:
    table = Table(_uniform(6000))
    windows = _plan(table, from_start=True)
    got = _read(table, windows)
    assert sorted(r.key for r in got) == list(range(6000))  # every row once
    times = [_mod(r) for r in got]
    assert times == sorted(times)  # window after window keeps the order
    assert windows[-1].hi is None  # the last window is open
    certified = [w for w in windows if w.rows is not None]
    assert all(len(table.match(w.filter())) == w.rows for w in certified)
    assert all(w.rows is not None and w.rows <= 500 for w in certified)
    assert len(windows) <= 2 * 6000 // 500
    assert table.probes <= 3 * len(windows)


def test_a_second_holding_more_than_a_page_is_split_on_createdon() -> None:
    bulk_second = T0 + 100 * DAY + 17
    table = Table(_with_bulk(3000, {bulk_second: 2600}))
    windows = _plan(table, from_start=True)
    got = _read(table, windows)
    assert sorted(r.key for r in got) == sorted(r.key for r in table.rows)
    inner = [w for w in windows if w.within == ("modifiedon", bulk_second)]
    assert len(inner) >= 5  # 2,600 rows in pages of 500
    assert all(w.column == "createdon" for w in inner)
    assert inner[0].lo is None and inner[0].with_nulls and inner[-1].hi is None
    # Inside the second, rows come in createdon order; the second's rows are contiguous.
    seconds = [_mod(r) for r in got]
    assert seconds == sorted(seconds)
    start = seconds.index(bulk_second)
    created = [r.createdon or 0 for r in got[start : start + 2600]]
    assert created == sorted(created)


def test_a_createdon_second_too_big_is_read_as_one_chain() -> None:
    second = T0 + 50 * DAY
    rows = _uniform(1000) + [Row(1000 + i, second, second - 5) for i in range(1200)]
    table = Table(rows)
    windows = _plan(table, from_start=True)
    assert sorted(r.key for r in _read(table, windows)) == list(range(2200))
    # All 1,200 rows share one createdon second as well: no column is left to split them on.
    assert Window("modifiedon", second, second + 1) in windows
    assert not [w for w in windows if w.within is not None]


def test_rows_without_modifiedon_come_first_when_there_is_no_bookmark() -> None:
    rows = [*_uniform(1200), Row(5000, None, T0), Row(5001, None, None)]
    table = Table(rows)
    windows = _plan(table, from_start=True)
    got = _read(table, windows)
    assert [r.key for r in got[:2]] == [5000, 5001]
    assert sorted(r.key for r in got) == sorted(r.key for r in rows)


def test_a_bookmark_reads_from_its_second_on() -> None:
    table = Table(_uniform(3000))
    bookmark = T0 + 200 * DAY
    windows = _plan(table, lo=bookmark)
    got = _read(table, windows)
    assert sorted(r.key for r in got) == sorted(
        r.key for r in table.rows if r.modifiedon is not None and r.modifiedon >= bookmark
    )
    assert not windows[0].with_nulls and windows[0].lo == bookmark


def test_rows_written_after_the_plan_come_with_the_open_last_window() -> None:
    table = Table(_uniform(2000))
    windows = _plan(table, from_start=True)
    late = Row(9999, max(r.modifiedon or 0 for r in table.rows) + 3600, T0)
    table.rows.append(late)
    assert late in _read(table, windows)


def test_nothing_to_plan_gives_one_open_window() -> None:
    table = Table([Row(1, T0, T0)])
    windows = list(plan(table, "modifiedon", base=None, lo=T0 + 10, hi=T0 + 10, page=100))
    assert windows == [Window("modifiedon", T0 + 10, None)]


@pytest.mark.parametrize("seed", range(5))
def test_random_tables_with_bulk_seconds(seed: int) -> None:
    rng = random.Random(seed)
    bulk = {T0 + rng.randrange(300 * DAY): rng.choice([50, 700, 1800]) for _ in range(3)}
    table = Table(_with_bulk(rng.randrange(500, 4000), bulk, seed))
    windows = _plan(table, page=rng.choice([250, 500, 1000]), from_start=True)
    got = _read(table, windows)
    assert sorted(r.key for r in got) == sorted(r.key for r in table.rows)
    times = [_mod(r) for r in got]
    assert times == sorted(times)


def test_the_walk_needs_few_probes_on_a_large_even_table() -> None:
    table = Table(_uniform(40_000, seed=7))
    windows = _plan(table, page=5000, from_start=True, expected_rows=40_000)
    assert len(_read(table, windows)) == 40_000
    assert len(windows) <= 14  # 8 pages' worth
    assert table.probes <= 30


@pytest.mark.parametrize("parts", [2, 5])
def test_parts_walked_on_their_own_still_partition_the_rows(parts: int) -> None:
    bulk_second = T0 + 150 * DAY
    table = Table([*_with_bulk(4000, {bulk_second: 1300}), Row(99_999, None, None)])
    times = [_mod(r) for r in table.rows if r.modifiedon is not None]
    walks = plan_parts(
        table,
        "modifiedon",
        base=None,
        lo=min(times),
        hi=max(times) + 1,
        page=500,
        from_start=True,
        parts=parts,
    )
    assert len(walks) == parts
    windows = [w for walk in walks for w in walk]
    got = _read(table, windows)
    assert got[0].key == 99_999  # the row without modifiedon first
    assert sorted(r.key for r in got) == sorted(r.key for r in table.rows)
    assert [_mod(r) for r in got[1:]] == sorted(_mod(r) for r in got[1:])
    assert windows[-1].hi is None and sum(w.hi is None and w.within is None for w in windows) == 1


def test_filters_and_order() -> None:
    w = Window("modifiedon", T0, T0 + 60, rows=3)
    assert w.filter() == "modifiedon ge 2024-01-01T00:00:00Z and modifiedon lt 2024-01-01T00:01:00Z"
    assert w.orderby(["accountid"]) == "modifiedon asc,accountid asc"
    inner = Window("createdon", None, T0, within=("modifiedon", T0 + 5), with_nulls=True)
    assert inner.filter() == (
        "modifiedon ge 2024-01-01T00:00:05Z and modifiedon lt 2024-01-01T00:00:06Z and "
        "(createdon eq null or createdon lt 2024-01-01T00:00:00Z)"
    )
    assert inner.orderby(["accountid"]) == "modifiedon asc,createdon asc,accountid asc"
    assert Window("modifiedon", with_nulls=True).filter() == ""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2024-01-01T00:00:00Z", T0),
        ("2024-01-01T00:00:00.999Z", T0),
        ("2024-01-01T01:00:00+01:00", T0),
        ("2023-12-31T23:00:00-01:00", T0),
        ("2024-01-01", T0),
    ],
)
def test_epoch(text: str, seconds: int) -> None:
    assert epoch(text) == seconds
    assert epoch(literal(seconds)) == seconds
