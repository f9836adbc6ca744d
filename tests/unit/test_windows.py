"""Windows against tables held in memory: the first windows and the splits of a window found big
by its first page partition the rows, in order, with few probes and requests."""

from __future__ import annotations

import bisect
import itertools
import random
import re
import typing as t
from dataclasses import dataclass

import pytest

from tap_dynamics.reads import first_windows
from tap_dynamics.windows import (
    COUNT_CAP,
    NEAR,
    Window,
    after_page,
    epoch,
    halved,
    literal,
    reaches_past,
    spread,
)

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
        self.served = 0
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

    def crowd(self, flt: str) -> tuple[int, str | None]:
        return self.count(flt), self.edge("createdon", flt, last=True)

    @property
    def probes(self) -> int:
        return self.counts + self.edges


def _ordered(table: Table, w: Window, by_created: bool = False) -> list[Row]:
    """The rows of a window in its order (as its chain of pages gives them; ``by_created``:
    ordered by createdon within a second, as the tap asks when createdon is selected)."""
    rows = table.match(w.filter())
    cols = [w.within[0]] if w.within else []
    cols.append(w.column)
    if by_created and "createdon" not in cols:
        cols.append("createdon")
    rows.sort(
        key=lambda r: (*[(getattr(r, c) is not None, getattr(r, c) or 0) for c in cols], r.key)
    )
    return rows


def _read(
    table: Table,
    windows: list[Window],
    page: int = 500,
    pieces: int = 4,
    scout: int | None = None,
    by_created: bool = False,
    chains: list[int] | None = None,
    halve: bool = False,
) -> tuple[list[Row], int]:
    """Read the windows as the reader does, window after window: a window's first page (of
    ``scout`` rows for the windows given, when set), and when it holds more rows, what
    :func:`after_page` decides (the page cut, the rest of the window read as the windows it gives,
    in place), or the rest of the chain. Returns the rows and the page requests; ``table.served``
    counts the rows the pages held; ``chains`` gets the pages of each window read as a chain.
    ``halve``: every window :func:`halved` can cut is cut while its first page is awaited (the
    page asked for the whole window, then cut to the lower half as the tap's refine does)."""
    out: list[Row] = []
    requests = 0
    todo = list(windows)
    first_ones = {id(w) for w in windows}
    i = 0
    while i < len(todo):
        w = todo[i]
        i += 1
        rows = _ordered(table, w, by_created)
        requests += 1
        size = scout if scout and id(w) in first_ones else page
        first = rows[:size]
        table.served += len(first)
        halves = halved(w) if halve else None
        if halves is not None:
            w, later = halves
            todo.insert(i, later)
            below = reaches_past(w, [getattr(r, w.column) for r in first])
            if below is not None:  # the page reached past the new bound: cut there
                out += first[:below]
                continue
        if len(rows) > size:
            seconds = [getattr(r, w.column) for r in first]
            created = [r.createdon for r in first] if by_created and w.within is None else None
            cut = after_page(table, w, seconds, page=page, pieces=pieces, created=created)
            if cut is None and halves is not None:  # asked again, bounded
                todo.insert(i, w)
                continue
            if cut is not None:
                keep, rest = cut
                assert keep < len(first) or rest
                out += first[:keep]
                todo[i:i] = rest
                continue
            more = (len(rows) - size - 1) // page + 1
            requests += more
            table.served += len(rows) - size
            if chains is not None:
                chains.append(1 + more)
        out += rows
    return out, requests


def _first(table: Table, page: int = 500, **kw: t.Any) -> list[Window]:
    kw.setdefault("start", None)
    kw.setdefault("rows", len(table.rows))
    return first_windows(table, "modifiedon", page=page, most=8, **kw)  # type: ignore[arg-type]


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


def _assert_all_once_in_order(table: Table, got: list[Row], *, nulls: int = 0) -> None:
    assert sorted(r.key for r in got) == sorted(r.key for r in table.rows)  # every row once
    times = [_mod(r) for r in got[nulls:]]
    assert times == sorted(times)  # window after window keeps the order


def test_windows_partition_the_rows_in_modifiedon_order() -> None:
    table = Table(_uniform(6000))
    windows = _first(table)
    assert windows[-1].hi is None and windows[0].with_nulls  # open at both ends
    assert table.edges == 2 and table.counts == 0
    got, requests = _read(table, windows)
    _assert_all_once_in_order(table, got)
    assert requests <= 6000 // 500 * 1.5


def test_a_window_with_more_than_a_page_is_split_at_its_first_pages_last_second() -> None:
    table = Table(_uniform(3000))
    w = Window("modifiedon", T0, T0 + 400 * DAY)
    page = _ordered(table, w)[:500]
    seconds = [_mod(r) for r in page]
    cut = after_page(table, w, seconds, page=500, pieces=4)
    assert cut is not None
    keep, rest = cut
    assert keep == seconds.index(seconds[-1])  # the rows before the page's last second
    assert rest[0].lo == seconds[-1] and rest[-1].hi == w.hi
    assert all(a.hi == b.lo for a, b in itertools.pairwise(rest))
    # at the page's pace: the 2,500 rows left in about 0.85 pages each
    assert 5 <= len(rest) <= 8


def test_an_open_window_follows_its_chain() -> None:
    w = Window("modifiedon", T0, None)
    assert after_page(Table([]), w, [T0, T0 + 1], page=2, pieces=4) is None


def test_a_second_holding_more_than_a_page_is_split_on_createdon() -> None:
    bulk_second = T0 + 100 * DAY + 17
    table = Table(_with_bulk(3000, {bulk_second: 2600}))
    got, _ = _read(table, _first(table))
    _assert_all_once_in_order(table, got)
    # Inside the second, rows come in createdon order; the second's rows are contiguous.
    seconds = [_mod(r) for r in got]
    start = seconds.index(bulk_second)
    assert seconds.count(bulk_second) == 2600
    created = [r.createdon or 0 for r in got[start : start + 2600]]
    assert created == sorted(created)


def test_the_split_of_a_crowded_second_reaches_its_edges() -> None:
    second = T0 + 100 * DAY
    table = Table([*_with_bulk(100, {second: 2000}), Row(77777, second, None)])
    w = Window("modifiedon", second - 10, second + 10)
    rows = _ordered(table, w)[:500]
    cut = after_page(table, w, [_mod(r) for r in rows], page=500, pieces=4)
    assert cut is not None
    keep, rest = cut
    assert keep == 0  # the page is all that second: it is read again, split on createdon
    inner = [x for x in rest if x.within == ("modifiedon", second)]
    assert len(inner) == 4 and all(x.column == "createdon" for x in inner)
    assert inner[0].lo is None and inner[0].with_nulls and inner[-1].hi is None
    after = rest[len(inner) :]
    assert after[0].lo == second + 1 and after[-1].hi == w.hi
    assert not [x for x in after if x.within is not None]


def test_a_page_ordered_by_createdon_keeps_its_rows_of_a_crowded_second() -> None:
    second = T0 + 100 * DAY
    table = Table(_with_bulk(400, {second: 3000}))
    w = Window("modifiedon", second - 5 * DAY, second + 5 * DAY)
    page = _ordered(table, w, by_created=True)[:500]
    seconds = [_mod(r) for r in page]
    created = [r.createdon for r in page]
    before = seconds.index(second)
    cut = after_page(table, w, seconds, page=500, pieces=4, created=created)
    assert cut is not None
    keep, rest = cut
    reached = created[-1]
    assert reached is not None
    # The page's rows of the second are kept up to its last createdon second...
    assert keep == before + created[before:].index(reached)
    # ...and the rest of the second is read from that createdon second on (one edge probe).
    inner = [x for x in rest if x.within == ("modifiedon", second)]
    assert inner[0].column == "createdon" and inner[0].lo == reached
    assert not inner[0].with_nulls and inner[-1].hi is None
    assert rest[len(inner)].lo == second + 1 and rest[-1].hi == w.hi
    assert (table.counts, table.edges) == (0, 1)  # no count: the rows of it are kept anyway
    # The days after the second are cut at the pace of the page's rows before it (the rows of
    # the bulk update say nothing about them).
    first, hi = min(s for s in seconds if s is not None), second + 5 * DAY
    pace = sum(1 for s in seconds[:before] if s is not None and s > first) / (second - first)
    after = spread(
        "modifiedon",
        second + 1,
        hi,
        rows=pace * (hi - second - 1),
        page=500,
        most=4,
        near=NEAR * 4,
    )
    assert rest[len(inner) :] == after
    # Read through, every row comes once, in order, and the second's rows are not read twice.
    again = Table(_with_bulk(400, {second: 3000}))
    got, _ = _read(again, _first(again), by_created=True)
    _assert_all_once_in_order(again, got)
    plain = Table(_with_bulk(400, {second: 3000}))
    _read(plain, _first(plain))
    assert again.served < plain.served - 250


def test_a_page_ordered_by_createdon_keeps_its_rows_of_a_busy_second_under_a_page() -> None:
    # 300 rows share one second, less than a page: a page ending in 200 of them keeps them,
    # and one window reads the other 100 (they are not read again with the windows after).
    second = T0 + 100 * DAY
    table = Table(_with_bulk(3000, {second: 300}))
    everything = _ordered(table, Window("modifiedon", T0, second + 5 * DAY), by_created=True)
    lo = _mod(everything[[_mod(r) for r in everything].index(second) - 300])
    w = Window("modifiedon", lo, second + 5 * DAY)
    rows = _ordered(table, w, by_created=True)
    at = [_mod(r) for r in rows].index(second)
    page = rows[:500]  # a full page, its last 200 or so rows of that second
    assert at >= 300 and _mod(page[-1]) == second
    seconds = [_mod(r) for r in page]
    created = [r.createdon for r in page]
    cut = after_page(table, w, seconds, page=500, pieces=4, created=created)
    assert cut is not None
    keep, rest = cut
    assert keep > 490  # the page's rows of the second, but its last createdon second's
    inner = [x for x in rest if x.within == ("modifiedon", second)]
    assert len(inner) == 1 and inner[0].hi is None  # the rest of the second: one window
    assert rest[1].lo == second + 1
    assert (table.counts, table.edges) == (0, 1)
    read = sum(len(_ordered(table, x, by_created=True)) for x in inner)
    assert read == 300 - keep + at  # only the rows of the second the page did not keep


def test_a_busy_second_without_createdon_asks_its_last_createdon_once() -> None:
    # 300 rows share one second and have no createdon: the page's rows of it cannot be kept by
    # createdon, so the second is counted; its last createdon, asked first, is not asked again.
    second = T0 + 100 * DAY
    before = [Row(i, second - 300 + i, second - DAY) for i in range(300)]
    after = [Row(1000 + i, second + 1 + i, second - DAY) for i in range(500)]
    table = Table([*before, *(Row(50_000 + i, second, None) for i in range(300)), *after])
    w = Window("modifiedon", second - 300, second + DAY)
    page = _ordered(table, w, by_created=True)[:500]
    assert _mod(page[-1]) == second and page[-1].createdon is None
    seconds = [_mod(r) for r in page]
    created = [r.createdon for r in page]
    cut = after_page(table, w, seconds, page=500, pieces=4, created=created)
    assert cut is not None
    keep, rest = cut
    assert keep == seconds.index(second)  # the second is read again, after the page
    assert rest[0].lo == second
    assert (table.counts, table.edges) == (1, 1)


def _late_crowd(second: int) -> list[Row]:
    """Rows spread over 300 days, and 4,000 rows of one ``second``: 300 created over 200
    days, 3,700 in the last two (a page's pace over the first underestimates the rest)."""
    rows = _uniform(2000, seed=5)
    for i in range(300):
        rows.append(Row(10_000 + i, second, second - 200 * DAY + i * 57_600))
    for i in range(3700):
        rows.append(Row(20_000 + i, second, second - 2 * DAY + i * 46))
    return rows


def test_the_open_last_piece_of_a_crowded_second_is_split_up_to_its_edge() -> None:
    second = T0 + 250 * DAY
    table = Table(_late_crowd(second))
    inner = ("modifiedon", second)
    last = second - 2 * DAY + 3699 * 46
    w = Window("createdon", second - 3 * DAY, None, within=inner, edge=last + 1)
    page = _ordered(table, w)[:500]
    created = [r.createdon for r in page]
    cut = after_page(table, w, created, page=500, pieces=4)
    assert cut is not None
    keep, rest = cut
    assert keep == created.index(created[-1])
    assert rest[0].lo == created[-1] and all(x.within == inner for x in rest)
    assert all(a.hi == b.lo for a, b in itertools.pairwise(rest))
    # Bounded up to the edge, the last part open again (rows created since), its edge kept.
    assert rest[-1].hi is None and rest[-1].edge == last + 1
    assert all(x.hi is not None and x.hi <= last + 1 for x in rest[:-1])
    # Without a known edge, an open window follows its chain.
    assert (
        after_page(
            table, Window("createdon", w.lo, None, within=inner), created, page=500, pieces=4
        )
        is None
    )


def test_a_crowded_second_denser_at_its_end_is_not_read_as_one_long_chain() -> None:
    second = T0 + 250 * DAY
    table = Table(_late_crowd(second))
    chains: list[int] = []
    got, requests = _read(table, _first(table), by_created=True, chains=chains)
    _assert_all_once_in_order(table, got)
    # 3,700 rows in the second's last two days, 7.4 pages: cut at the pace of the first page
    # (300 rows over 200 days), its last piece held nearly all of them, read as one chain.
    assert max(chains, default=1) <= 2
    # Split, it costs about the requests of the chain (25 then), and no row is read twice.
    assert requests <= 30 and table.served <= len(table.rows) + 10


def test_halved_cuts_a_window_of_time_in_the_middle() -> None:
    w = Window("modifiedon", T0, T0 + 11)
    assert halved(w) == (Window("modifiedon", T0, T0 + 5), Window("modifiedon", T0 + 5, T0 + 11))
    assert halved(Window("modifiedon", T0, T0 + 1)) is None  # one second
    assert halved(Window("modifiedon", None, T0 + 9, with_nulls=True)) is None
    assert halved(Window("modifiedon", T0, None)) is None
    assert halved(Window("modifiedon", T0, T0 + 9, whole=True)) is None
    assert halved(Window("createdon", T0, T0 + 9, within=("modifiedon", T0))) is None
    # A piece of a crowded second not asked for yet: halved only when asked for, its second
    # and its rows without a createdon kept.
    piece = Window("createdon", T0, T0 + 9, within=("modifiedon", T0), with_nulls=True)
    assert halved(piece, pieces=True) == (
        Window("createdon", T0, T0 + 4, within=("modifiedon", T0), with_nulls=True),
        Window("createdon", T0 + 4, T0 + 9, within=("modifiedon", T0)),
    )
    assert halved(Window("createdon", T0, None, within=("modifiedon", T0)), pieces=True) is None


def test_reaches_past_gives_the_rows_before_the_bound() -> None:
    w = Window("modifiedon", T0, T0 + 5)
    assert reaches_past(w, [None, T0, T0 + 4, T0 + 5, T0 + 9]) == 3
    assert reaches_past(w, [T0, T0 + 4]) is None  # the page stops before it
    assert reaches_past(Window("modifiedon", T0, None), [T0 + 99]) is None


@pytest.mark.parametrize("seed", range(6))
def test_windows_halved_while_their_page_is_awaited_keep_every_row_once(seed: int) -> None:
    rng = random.Random(seed)
    bulk = {T0 + rng.randrange(300 * DAY): rng.choice([50, 700, 1800]) for _ in range(3)}
    table = Table(_with_bulk(rng.randrange(500, 4000), bulk, seed))
    by_created = seed % 2 == 0
    got, _ = _read(table, _first(table), by_created=by_created, halve=True)
    _assert_all_once_in_order(table, got)


def test_a_createdon_second_too_big_is_read_as_one_chain() -> None:
    second = T0 + 50 * DAY
    rows = _uniform(1000) + [Row(1000 + i, second, second - 5) for i in range(1200)]
    table = Table(rows)
    got, _ = _read(table, _first(table))
    _assert_all_once_in_order(table, got)
    w = Window("modifiedon", second - 10, second + 10)
    cut = after_page(table, w, [second] * 500, page=500, pieces=4)
    assert cut is not None and cut[0] == 0
    assert cut[1][0] == Window("modifiedon", second, second + 1, whole=True)
    assert after_page(table, cut[1][0], [second] * 500, page=500, pieces=4) is None


def test_rows_without_modifiedon_come_first_when_there_is_no_bookmark() -> None:
    rows = [*_uniform(1200), Row(5000, None, T0), Row(5001, None, None)]
    table = Table(rows)
    got, _ = _read(table, _first(table))
    assert [r.key for r in got[:2]] == [5000, 5001]
    _assert_all_once_in_order(table, got, nulls=2)


def test_a_bookmark_reads_from_its_second_on() -> None:
    table = Table(_uniform(3000))
    bookmark = T0 + 200 * DAY
    windows = _first(table, start=literal(bookmark), rows=None)
    got, _ = _read(table, windows)
    assert sorted(r.key for r in got) == sorted(
        r.key for r in table.rows if r.modifiedon is not None and r.modifiedon >= bookmark
    )
    assert not windows[0].with_nulls and windows[0].lo == bookmark
    assert table.edges == 1  # the last row only: the bookmark is the first edge


def test_rows_written_after_the_plan_come_with_the_open_last_window() -> None:
    table = Table(_uniform(2000))
    windows = _first(table)
    late = Row(9999, max(r.modifiedon or 0 for r in table.rows) + 3600, T0)
    table.rows.append(late)
    assert late in _read(table, windows)[0]


def test_nothing_to_cut_gives_one_open_window() -> None:
    table = Table([Row(1, T0, T0)])
    windows = _first(table, start=literal(T0 + 10))
    assert windows == [Window("modifiedon", T0 + 10, None)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scout", [False, True])
@pytest.mark.parametrize("by_created", [False, True])
def test_random_tables_with_bulk_seconds(seed: int, scout: bool, by_created: bool) -> None:
    rng = random.Random(seed)
    bulk = {T0 + rng.randrange(300 * DAY): rng.choice([50, 700, 1800]) for _ in range(3)}
    table = Table(_with_bulk(rng.randrange(500, 4000), bulk, seed))
    page = rng.choice([250, 500, 1000])
    rows = rng.choice([None, len(table.rows), len(table.rows) // 10])
    windows = _first(table, page=page, rows=rows)
    scout_rows = page // 4 if scout else None
    got, _ = _read(table, windows, page=page, scout=scout_rows, by_created=by_created)
    _assert_all_once_in_order(table, got)


def test_a_small_first_page_of_one_second_is_not_taken_for_a_crowded_second() -> None:
    second = T0 + 10 * DAY
    table = Table([*_uniform(300), *(Row(1000 + i, second, second - 9) for i in range(200))])
    w = Window("modifiedon", second - 5, second + 3600)
    cut = after_page(table, w, [second] * 125, page=500, pieces=4)
    assert cut is not None
    keep, rest = cut
    # 200 rows share the second: fewer than a page, so they are one window, read again.
    assert keep == 0 and rest[0] == Window("modifiedon", second, second + 1, whole=True)
    assert rest[1].lo == second + 1 and rest[-1].hi == w.hi
    assert table.counts == 1


def test_few_requests_on_a_large_even_table() -> None:
    table = Table(_uniform(40_000, seed=7))
    got, requests = _read(table, _first(table, page=5000), page=5000)
    assert len(got) == 40_000
    # 8 pages' worth: windows cut at the average pace, those found big split once at their own
    assert requests <= 16
    assert table.probes <= 4


def test_a_burst_of_a_few_seconds_does_not_cut_the_days_after_it_at_its_pace() -> None:
    # 6,000 rows in three seconds, then 100 rows over ten days: the first page's pace (2,000
    # rows a second) would cut the rest of the window into 20,000 windows, nearly all empty.
    burst = [Row(i, T0 + i // 2000, T0 - i) for i in range(6000)]
    table = Table(burst + [Row(10_000 + i, T0 + 10 * DAY + i * 600, T0) for i in range(100)])
    w = Window("modifiedon", T0, T0 + 15 * DAY)
    page = _ordered(table, w)[:5000]
    cut = after_page(table, w, [_mod(r) for r in page], page=5000, pieces=8)
    assert cut is not None
    keep, rest = cut
    assert keep == 4000 and len(rest) <= 16  # the requests allowed, twice, at most
    assert rest[0].lo == T0 + 2 and rest[-1].hi == w.hi
    got, requests = _read(table, [w], page=5000, pieces=8)
    _assert_all_once_in_order(table, got)
    assert requests <= 20


def test_an_unknown_row_count_splits_by_the_pages_pace() -> None:
    table = Table(_uniform(40_000, seed=8))
    got, requests = _read(table, _first(table, page=5000, rows=None), page=5000)
    assert len(got) == 40_000
    assert requests <= 20


def test_filters_and_order() -> None:
    w = Window("modifiedon", T0, T0 + 60)
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
