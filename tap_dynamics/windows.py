"""Windows of a table, taken from the data, for reading it side by side.

A window is a range of one ordered column (``modifiedon`` for incremental streams, ``createdon``
for full-table ones), ``ge`` its lower and ``lt`` its upper bound, in whole seconds. Windows
partition the rows in the column's order, so reading them one after the other gives the rows in
that order; read side by side, each by its own ``@odata.nextLink`` chain, and emitted window after
window, they give the same sequence faster.

Where to split comes from the data, never from evenly spaced values (and never from GUIDs: the
service orders them by their last bytes). :func:`plan` walks the range with ``$count`` probes
(the service counts up to 5,000): a range with fewer rows than a page is certified (its count is
exact); adjacent certified ranges are merged up to a page. A range the count cannot certify is
halved; where the rows turn out to be packed into a few seconds, the first rows themselves are
read (``$select`` of the column only) to find the second where the count overflows. A second
holding more than a page of rows (a bulk import or update: thousands of rows share one
``modifiedon``) cannot be split by time: it is split the same way on ``createdon`` (the rows of
that second, ordered by ``createdon`` and the key), and a ``createdon`` second that is still too
big is read as one chain.

The planner only decides; the probes are a small interface (:class:`Probes`), so that the walk is
tested without I/O.
"""

from __future__ import annotations

import calendar
import typing as t
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dynamics_api.odata import literal as odata_literal

__all__ = [
    "COUNT_CAP",
    "Probes",
    "Window",
    "epoch",
    "literal",
    "plan",
    "plan_parts",
]

#: ``$count`` (and ``@odata.count``) stop at this many rows.
COUNT_CAP = 5000
#: The second split column, for seconds of the first that hold more than a page.
SECOND_COLUMN = "createdon"
#: The walk's next range is at most this many times longer than the last one.
GROWTH = 4.0
#: Ranges are certified at about this share of a page (two neighbours rarely merge past it).
TARGET_SHARE = 0.85


def epoch(value: str) -> int:
    """Whole seconds since 1970 of an ISO timestamp (``2026-10-29T20:06:00Z``, fractions and
    offsets allowed); fractions are dropped (the window holding them starts at the second)."""
    text = value.strip().replace("Z", "+00:00")
    date, _, clock = text.partition("T")
    year, month, day = (int(p) for p in date.split("-"))
    if not clock:
        return calendar.timegm((year, month, day, 0, 0, 0))
    offset = 0
    for sign in ("+", "-"):
        if sign in clock:
            clock, _, zone = clock.partition(sign)
            hours, _, minutes = zone.partition(":")
            offset = (int(hours) * 3600 + int(minutes or 0) * 60) * (1 if sign == "+" else -1)
            break
    parts = clock.split(":")
    hh, mm = int(parts[0]), int(parts[1])
    ss = int(float(parts[2])) if len(parts) > 2 else 0
    return calendar.timegm((year, month, day, hh, mm, ss)) - offset


def literal(seconds: int) -> str:
    """The OData DateTimeOffset literal of whole seconds since 1970 (UTC)."""
    return odata_literal(datetime.fromtimestamp(seconds, UTC))


@dataclass(frozen=True)
class Window:
    """Rows with ``lo <= column < hi`` (seconds; None: unbounded), optionally only those of one
    second of another column (``within``), or only those where ``column`` is null.

    Attributes:
        column: the ordered column of the range.
        lo: inclusive lower bound in seconds since 1970, or None.
        hi: exclusive upper bound, or None (the last window is open: rows modified while the run
            goes on still come, as they would in one chain).
        within: ``(column, second)``: the window holds rows of that one second only (a second
            too big for one page, split on ``column``).
        rows: the exact number of rows when the planner counted fewer than the count cap;
            None when unknown (read as one chain of pages, however long).
        with_nulls: the window also holds the rows whose ``column`` is null (the first window
            of a walk: the service sorts nulls first).
    """

    column: str
    lo: int | None = None
    hi: int | None = None
    within: tuple[str, int] | None = None
    rows: int | None = None
    with_nulls: bool = False

    def filter(self) -> str:
        """The window's part of ``$filter``."""
        parts: list[str] = []
        if self.within is not None:
            outer, second = self.within
            parts += [f"{outer} ge {literal(second)}", f"{outer} lt {literal(second + 1)}"]
        own: list[str] = []
        if self.lo is not None:
            own.append(f"{self.column} ge {literal(self.lo)}")
        if self.hi is not None:
            own.append(f"{self.column} lt {literal(self.hi)}")
        if self.with_nulls and own:
            parts.append(f"({self.column} eq null or {' and '.join(own)})")
        elif not self.with_nulls:
            parts += own
        return " and ".join(parts)

    def orderby(self, keys: t.Sequence[str]) -> str:
        """``$orderby``: the outer column (constant inside ``within``), the window's, the key."""
        cols = [self.within[0]] if self.within is not None else []
        cols.append(self.column)
        cols += [k for k in keys if k not in cols]
        return ",".join(f"{c} asc" for c in cols)


class Probes(t.Protocol):
    """The questions the planner asks the service (each is one small request)."""

    def count(self, flt: str) -> int:
        """Rows matching ``flt``, capped at :data:`COUNT_CAP`."""
        ...

    def edge(self, column: str, flt: str | None, *, last: bool) -> str | None:
        """The smallest (or, ``last``, the largest) non-null value of ``column`` among the rows
        matching ``flt``; None when there is none."""
        ...

    def values(self, column: str, flt: str, k: int) -> list[str]:
        """The ``column`` values of the first ``k`` rows matching ``flt``, in ascending order."""
        ...


def _and(*parts: str | None) -> str:
    return " and ".join(p for p in parts if p)


class _Walk:
    """One walk over ``[lo, hi)`` seconds of ``column`` (inside ``within``), yielding windows."""

    def __init__(
        self,
        probes: Probes,
        column: str,
        *,
        base: str | None,
        within: tuple[str, int] | None,
        page: int,
        expected_rows: int | None,
    ) -> None:
        self.probes = probes
        self.column = column
        self.base = base
        self.within = within
        self.page = page
        #: certify ranges of about this many rows (a little under a page, so that two neighbours
        #: rarely merge into more than a page)
        self.target = max(1, int(page * TARGET_SHARE))
        self.expected_rows = expected_rows
        self.cap = min(COUNT_CAP, max(page, 1))

    def _window(self, lo: int, hi: int | None, rows: int | None) -> Window:
        return Window(self.column, lo, hi, within=self.within, rows=rows)

    def _count(self, lo: int, hi: int | None) -> int:
        return self.probes.count(_and(self.base, self._window(lo, hi, None).filter()))

    def run(self, lo: int, hi: int) -> Iterator[Window]:
        """Windows covering ``[lo, hi)`` exactly, in order (the caller opens the ends)."""
        pending: list[int] = []  # [lo, hi, rows] of certified neighbours not yet yielded

        def flush() -> Iterator[Window]:
            # A range counted empty is not read: a row written there since the count has a
            # newer modifiedon (or createdon) and comes with the last, open window.
            if pending and pending[2] > 0:
                yield self._window(pending[0], pending[1], pending[2])
            pending.clear()

        def certified(a: int, b: int, rows: int) -> Iterator[Window]:
            if pending and pending[2] + rows > self.page:
                yield from flush()
            if pending:
                pending[1] = b
                pending[2] += rows
            else:
                pending.extend([a, b, rows])

        span = max(1, hi - lo)
        if self.expected_rows:
            step = max(1, int(span * self.target / max(self.expected_rows, 1)))
        else:
            step = max(1, span // 4)
        usual = step  # the step of the last range that held about a page: the rows' own pace
        a = lo
        while a < hi:
            b = min(hi, a + step)
            n = self._count(a, b)
            if n < self.cap:
                yield from certified(a, b, n)
                a = b
                if n >= self.target // 2:
                    usual = step
                step = max(1, int(step * min(GROWTH, self.target / max(n, 1))))
                continue
            if b - a == 1:
                yield from flush()
                yield from self._crowded(a)
                a, step = b, usual
                continue
            mid = a + (b - a) // 2
            n1 = self._count(a, mid)
            if n1 >= self.cap:
                step = mid - a  # denser than expected: try the first half again
                continue
            if n1 >= self.target // 2:
                yield from certified(a, mid, n1)  # denser, but evenly enough
                step = usual = mid - a
                a = mid
                continue
            # The rows of [a, b) are packed into its second half: read the first of them (the
            # column only) to find the second in which the count overflows.
            need = self.cap - n1
            flt = _and(self.base, self._window(mid, b, None).filter())
            seen = self.probes.values(self.column, flt, need)
            if len(seen) < need:  # rows went away since the count: go on from the half
                yield from certified(a, mid, n1)
                a = mid
                continue
            s = max(mid, epoch(seen[-1]))
            yield from certified(a, s, n1 + sum(1 for v in seen if epoch(v) < s))
            if self._count(s, s + 1) >= self.cap:
                yield from flush()
                yield from self._crowded(s)
                a = s + 1
            else:
                a = s
            step = max(1, min(usual, b - a)) if b > a else usual
        yield from flush()

    def _crowded(self, second: int) -> Iterator[Window]:
        """A second of ``column`` holding at least a page of rows."""
        if self.within is not None or self.column == SECOND_COLUMN:
            # No third column: the rows of this second are read as one chain.
            yield Window(self.column, second, second + 1, within=self.within)
            return
        inner = (self.column, second)
        flt = _and(self.base, Window(self.column, second, second + 1).filter())
        first = self.probes.edge(SECOND_COLUMN, flt, last=False)
        last = self.probes.edge(SECOND_COLUMN, flt, last=True)
        if first is None or last is None or epoch(first) == epoch(last):
            yield Window(self.column, second, second + 1)
            return
        walk = _Walk(
            self.probes,
            SECOND_COLUMN,
            base=self.base,
            within=inner,
            page=self.page,
            expected_rows=None,
        )
        lo, hi = epoch(first), epoch(last) + 1
        windows = list(walk.run(lo, hi)) or [Window(SECOND_COLUMN, lo, hi, within=inner)]
        for i, w in enumerate(windows):
            # The first and last windows reach the edges (the first holds the rows without a
            # createdon too), so that no row of the second is left out of every window.
            first_one, last_one = i == 0, i == len(windows) - 1
            yield Window(
                SECOND_COLUMN,
                None if first_one else w.lo,
                None if last_one else w.hi,
                within=inner,
                rows=w.rows,
                with_nulls=first_one,
            )


def plan(
    probes: Probes,
    column: str,
    *,
    base: str | None,
    lo: int,
    hi: int,
    page: int,
    expected_rows: int | None = None,
    from_start: bool = False,
) -> Iterator[Window]:
    """Windows over ``column`` from ``lo`` (inclusive) on, in order; the last is open-ended.

    Args:
        probes: how to count and look at the rows.
        column: ``modifiedon`` or ``createdon``.
        base: the rest of ``$filter`` every window keeps, or None.
        lo: the first second (the bookmark, or the first row's second).
        hi: one past the last row's second at planning time.
        page: rows per page (windows hold at most this many rows when certified).
        expected_rows: rows expected in ``[lo, hi)`` (a recent total count), for the first step.
        from_start: there is no lower bound (no bookmark): the first window also holds the rows
            whose ``column`` is null, which a read without a filter includes.

    Yields:
        Windows, as soon as each is decided (the caller reads them while the walk goes on).
    """
    (only,) = plan_parts(
        probes,
        column,
        base=base,
        lo=lo,
        hi=hi,
        page=page,
        expected_rows=expected_rows,
        from_start=from_start,
        parts=1,
    )
    yield from only


def plan_parts(
    probes: Probes,
    column: str,
    *,
    base: str | None,
    lo: int,
    hi: int,
    page: int,
    expected_rows: int | None = None,
    from_start: bool = False,
    parts: int = 1,
) -> list[Iterator[Window]]:
    """:func:`plan`, with ``[lo, hi)`` cut into ``parts`` spans of equal time walked on their
    own: the windows of the first part, then of the second, and so on, are the plan. Walked side
    by side, the parts are planned in about ``1/parts`` of the time (the walk is a sequence of
    small requests, each waiting for the one before).
    """
    parts = max(1, min(parts, hi - lo))
    edges = [lo + (hi - lo) * i // parts for i in range(parts)] + [hi]
    share = expected_rows // parts if expected_rows else None
    return [
        _part(
            probes,
            column,
            base=base,
            lo=edges[i],
            hi=edges[i + 1],
            page=page,
            expected_rows=share,
            nulls_first=from_start and i == 0,
            open_end=i == parts - 1,
        )
        for i in range(parts)
    ]


def _part(
    probes: Probes,
    column: str,
    *,
    base: str | None,
    lo: int,
    hi: int,
    page: int,
    expected_rows: int | None,
    nulls_first: bool,
    open_end: bool,
) -> Iterator[Window]:
    walk = _Walk(probes, column, base=base, within=None, page=page, expected_rows=expected_rows)
    # Each window is handed over as soon as it is decided (the reader starts on it at once);
    # the rows past the walk's end (modified since the plan was made) come in one open window.
    first = nulls_first
    seen = False
    for window in walk.run(lo, hi):
        if first:
            first = False
            if window.within is None:
                window = replace(window, lo=None, with_nulls=True)
            else:
                yield Window(column, None, lo, with_nulls=True)
        seen = True
        yield window
    if not seen:
        if open_end:
            yield Window(column, None if nulls_first else lo, None, with_nulls=nulls_first)
        elif nulls_first:
            yield Window(column, None, lo, with_nulls=True)
        return
    if open_end:
        yield Window(column, hi, None)
