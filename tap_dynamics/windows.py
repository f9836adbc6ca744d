"""Windows of a table, taken from the data, for reading it side by side.

A window is a range of one ordered column (``modifiedon`` for incremental streams, ``createdon``
for full-table ones), ``ge`` its lower and ``lt`` its upper bound, in whole seconds. Windows
partition the rows in the column's order, so reading them one after the other gives the rows in
that order; read side by side, each by its own ``@odata.nextLink`` chain, and emitted window after
window, they give the same sequence faster.

Where to split comes from the data, never from evenly spaced key values (the service orders
GUIDs by their last bytes). :func:`spread` cuts the range between the first and the last row
(two ``$top=1`` probes) into windows of about a page at the table's average pace (its total row
count, when known). The rows are rarely that even, so a window is checked by its first page:
when the page comes with a next link the window holds more than a page, and :func:`after_page`
splits the rest of it at the page's last second, at the pace the page itself showed (a bisection
of the window that turned out big, in as many parts as its rows need). Rows past the cut are
dropped from the page and read again by the windows after it, so nothing is read twice into the
output.

A second holding more than a page of rows (a bulk import or update: thousands of rows share one
``modifiedon``) cannot be split by time: it is split the same way on ``createdon`` (the rows of
that second, ordered by ``createdon`` and the key); when the windows are ordered by ``createdon``
within a second (the column is selected), the page that finds such a second keeps its rows of it
and only the rest is read. The last piece of such a second is open (rows
created since); it knows the second's last ``createdon`` when it was cut (its ``edge``) and is
split up to there like any other when its first page shows it big. A ``createdon`` second that
is still too big, or the table's last window (open, for rows written while the run goes on), is
read as one chain.

A window whose first page is still awaited while a request slot is free may be
:func:`halved`: the later half is read at once, and the page, asked for the whole window, is cut
at the middle (:func:`reaches_past`) or, when it stops before it, decides the first half alone.

The decisions need a few small requests; they go through a small interface (:class:`Probes`),
so that they are tested without I/O.
"""

from __future__ import annotations

import calendar
import itertools
import typing as t
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dynamics_api.odata import literal as odata_literal

__all__ = [
    "COUNT_CAP",
    "SECOND_COLUMN",
    "Probes",
    "Window",
    "after_page",
    "crowded",
    "crowded_rest",
    "epoch",
    "halved",
    "literal",
    "reaches_past",
    "spread",
]

#: ``$count`` (and ``@odata.count``) stop at this many rows.
COUNT_CAP = 5000
#: The second split column, for seconds of the first that hold more than a page.
SECOND_COLUMN = "createdon"
#: Windows are cut to hold about this share of a page at the pace expected, so that the usual
#: unevenness of the rows rarely pushes one past a page.
TARGET_SHARE = 0.85
#: The rows of the page's last second that make it worth asking whether that second holds more
#: than a page (a share of the page's rows).
CROWD_SHARE = 0.25
#: Windows made at most in one go (a table of ten million rows at 5,000 a page is 2,000).
MOST_WINDOWS = 20_000
#: A window split after its first page gives at most this many times the requests allowed
#: windows at the page's pace (the last one holds the rest).
NEAR = 2


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
        with_nulls: the window also holds the rows whose ``column`` is null (the first window
            of a read: the service sorts nulls first).
        whole: read as one chain, however long (rows no column left can tell apart).
        edge: of a window without an upper bound, the bound its rows were known to stay under
            when it was made (the last piece of a crowded second: the second's last
            ``createdon``); a first page that shows it big splits it up to there.
    """

    column: str
    lo: int | None = None
    hi: int | None = None
    within: tuple[str, int] | None = None
    with_nulls: bool = False
    whole: bool = False
    edge: int | None = None

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
    """The questions asked of the service besides pages (each is one small request)."""

    def count(self, flt: str) -> int:
        """Rows matching ``flt``, capped at :data:`COUNT_CAP`."""
        ...

    def edge(self, column: str, flt: str | None, *, last: bool) -> str | None:
        """The smallest (or, ``last``, the largest) non-null value of ``column`` among the rows
        matching ``flt``; None when there is none."""
        ...

    def crowd(self, flt: str) -> tuple[int, str | None]:
        """``count(flt)`` and the last ``createdon`` of those rows, asked at the same time (the
        second answer is of use when the first reaches a page: the second is then split on
        ``createdon``, up to its last value)."""
        ...


def spread(
    column: str,
    lo: int,
    hi: int,
    *,
    rows: float | None,
    page: int,
    most: int,
    within: tuple[str, int] | None = None,
    near: int | None = None,
) -> list[Window]:
    """Windows covering ``[lo, hi)`` in order, each about ``TARGET_SHARE`` of a page at the pace
    of ``rows`` rows over the range (``most`` windows when ``rows`` is unknown).

    ``near``: at most that many windows; when the pace asks for more, the first ``near - 1`` are
    cut at it and the last holds the rest (a pace seen over a few seconds says little about the
    days after them: the last window is split again by its own first page)."""
    span = hi - lo
    if span <= 0:
        return []
    target = max(1.0, page * TARGET_SHARE)
    wanted = most if rows is None else -(-rows // target)
    k = int(max(1, min(wanted, span, MOST_WINDOWS)))
    if near is not None and rows is not None and k > near > 1:
        step = max(1, int(span * target // rows))
        edges = [lo + step * i for i in range(near) if lo + step * i < hi] + [hi]
    else:
        edges = [lo + span * i // k for i in range(k)] + [hi]
    return [Window(column, a, b, within=within) for a, b in itertools.pairwise(edges)]


def opened(windows: list[Window], *, nulls_first: bool, open_end: bool) -> list[Window]:
    """``windows`` with their ends opened: the first also holds the rows without a value (and
    everything before it), the last everything after it (rows written while the run goes on)."""
    if not windows:
        return windows
    out = list(windows)
    if nulls_first:
        w = out[0]
        out[0] = Window(w.column, None, w.hi, within=w.within, with_nulls=True)
    if open_end:
        w = out[-1]
        out[-1] = Window(w.column, w.lo, None, w.within, w.with_nulls, edge=w.hi)
    return out


def crowded(
    probes: Probes, window: Window, second: int, last: str | None, *, page: int, pieces: int
) -> list[Window]:
    """Windows for the rows of ``second`` of ``window``'s column, which hold at least a page:
    ``pieces`` windows of ``createdon`` between the second's first and ``last`` ``createdon``
    (each split again by its first page when it turns out big); one window of that second when
    the rows have no ``createdon`` to tell them apart."""
    one = Window(window.column, second, second + 1, whole=True)
    first = probes.edge(SECOND_COLUMN, one.filter(), last=False)
    if first is None or last is None or epoch(first) == epoch(last):
        return [one]
    inner = (window.column, second)
    lo, hi = epoch(first), epoch(last) + 1
    parts = spread(SECOND_COLUMN, lo, hi, rows=None, page=page, most=pieces, within=inner)
    # The first and last reach the edges (the first holds the rows without a createdon), so
    # that no row of the second is left out of every window.
    return opened(parts, nulls_first=True, open_end=True)


def _key(second: int | None) -> int:
    """A second for a bisection of a page's seconds: no value sorts first, as the service sorts
    nulls (the seconds are looked at by bisection: a page's values are decoded when asked for)."""
    return -1 if second is None else second


def _known(seconds: Sequence[int | None], end: int) -> tuple[int, int | None]:
    """Of the first ``end`` seconds of a page (in order, nulls first): how many have no value,
    and the first value (None when none has)."""
    nulls = bisect_right(seconds, -1, hi=end, key=_key)
    return nulls, seconds[nulls] if nulls < end else None


def crowded_rest(
    window: Window,
    second: int,
    created: Sequence[int | None],
    last: str | None,
    *,
    page: int,
    pieces: int,
) -> tuple[int, list[Window]] | None:
    """The rest of a crowded ``second`` whose first rows a page holds, ordered by ``createdon``
    within the second (``created``: their ``createdon`` seconds, nulls first; ``last``: the
    second's last ``createdon``).

    Returns:
        ``(keep, windows)``: keep the first ``keep`` of those rows (before the last ``createdon``
        second they reach) and read the rest of the second as ``windows`` of ``createdon``; None
        when the rows reach no ``createdon``.
    """
    if not created or created[-1] is None:
        return None
    reached = created[-1]
    keep = bisect_left(created, reached, key=_key)
    hi = max(reached, epoch(last) if last else reached) + 1
    inner = (window.column, second)
    # At the pace of the rows the page holds (as many as the requests allowed when they all
    # share one createdon second).
    nulls, first = _known(created, keep)
    seen = keep - nulls
    rows = (
        seen * (hi - reached) / (reached - first) if first is not None and first < reached else None
    )
    parts = spread(
        SECOND_COLUMN, reached, hi, rows=rows, page=page, most=pieces, within=inner, near=pieces
    )
    # The last reaches past the edge found, for rows written since.
    return keep, opened(parts, nulls_first=False, open_end=True)


def halved(window: Window, *, pieces: bool = False) -> tuple[Window, Window] | None:
    """A window cut in two at the middle second; None for a window without both bounds, of
    one second, read whole, or (unless ``pieces``) a piece of a crowded second (those are cut
    to about a page each already: halving one whose first page is awaited reads the rows its
    page holds past the middle twice; one not asked for yet is halved for nothing but a
    request)."""
    if window.lo is None or window.hi is None or window.whole:
        return None
    if window.hi - window.lo < 2 or (window.within is not None and not pieces):
        return None
    mid = window.lo + (window.hi - window.lo) // 2
    low = Window(window.column, window.lo, mid, window.within, window.with_nulls)
    return low, Window(window.column, mid, window.hi, window.within)


def reaches_past(window: Window, seconds: Sequence[int | None]) -> int | None:
    """The page's rows before ``window.hi`` when the page reaches past it (a page asked for
    before the window was narrowed by :func:`halved`); None when it does not."""
    if window.hi is None:
        return None
    below = bisect_left(seconds, window.hi, key=_key)
    return below if below < len(seconds) else None


def _split_column_again(window: Window) -> bool:
    """A second of ``window``'s column can be split on ``createdon``."""
    return window.within is None and window.column != SECOND_COLUMN


def _crowded(
    probes: Probes,
    window: Window,
    second: int,
    created: Sequence[int | None] | None,
    keep: int,
    last: str | None,
    *,
    page: int,
    pieces: int,
) -> tuple[int, list[Window]]:
    """A crowded ``second`` from row ``keep`` of the page on (``last``: its last ``createdon``):
    its rest when the page's rows of it can be kept (``created``), else all of it again."""
    rest = None
    if created is not None:
        rest = crowded_rest(window, second, created[keep:], last, page=page, pieces=pieces)
    if rest is None:
        return keep, crowded(probes, window, second, last, page=page, pieces=pieces)
    kept, windows = rest
    return keep + kept, windows


def after_page(
    probes: Probes,
    window: Window,
    seconds: Sequence[int | None],
    *,
    page: int,
    pieces: int,
    created: Sequence[int | None] | None = None,
) -> tuple[int, list[Window]] | None:
    """A page of ``window`` came with a next link: the window holds more than a page.

    Args:
        probes: for the questions about a crowded second.
        window: the window whose page it is.
        seconds: the page's values of ``window.column``, in whole seconds (None: no value), in
            the page's order (looked at by bisection: a few are read, of thousands).
        page: rows per page.
        pieces: windows a crowded second is cut into at first (the requests allowed in flight).
        created: the page's ``createdon`` seconds, when the page is ordered by ``createdon``
            within a second of ``window.column``: the rows of a crowded second the page holds
            are then kept, and only the rest of that second is read (:func:`crowded_rest`).

    Returns:
        ``(keep, windows)``: keep the page's first ``keep`` rows (those before its last second,
        or before the last ``createdon`` second it reaches of a crowded one) and read the rest
        of the window as ``windows``, in order; or None: follow the next link
        (the window has no upper bound and no known edge, or its rows share one second of the
        last column).
    """
    if window.hi is None and window.edge is not None:
        # Open, with a known edge (the last piece of a crowded second, cut at a pace that
        # underestimated it): split up to the edge as if bounded there, the last part open again.
        bounded = Window(window.column, window.lo, window.edge, window.within, window.with_nulls)
        cut = after_page(probes, bounded, seconds, page=page, pieces=pieces, created=created)
        if cut is None or not cut[1]:
            return None
        return cut[0], opened(cut[1], nulls_first=False, open_end=True)
    if window.hi is None or window.whole or not seconds or seconds[-1] is None:
        return None
    last = seconds[-1]
    keep = before = bisect_left(seconds, last, key=_key)  # the rows before the last second
    out: list[Window] = []
    start = last
    full = min(page, COUNT_CAP)
    if keep == 0:
        # The whole page is one second: a second of more than a page of rows is split on
        # createdon (from where the page stops when it is ordered so), a smaller one is read
        # again as one window.
        if not _split_column_again(window):
            return None
        one = Window(window.column, last, last + 1, whole=True)
        if len(seconds) >= full:  # a full page: no need to count
            rows_of_last, latest = full, probes.edge(SECOND_COLUMN, one.filter(), last=True)
        else:
            rows_of_last, latest = probes.crowd(one.filter())
        if rows_of_last >= full:
            keep, out = _crowded(probes, window, last, created, 0, latest, page=page, pieces=pieces)
        else:
            out = [one]
        start = last + 1
        pace = None
    else:
        tail = len(seconds) - keep
        if _split_column_again(window) and tail >= len(seconds) * CROWD_SHARE:
            one = Window(window.column, last, last + 1)
            rest = None
            if created is not None:
                # Ordered by createdon within the second: whether the second holds more than a
                # page or not, the page's rows of it are kept and only the rest of it is read
                # (rather than all of it again by the windows after the page).
                latest = probes.edge(SECOND_COLUMN, one.filter(), last=True)
                rest = crowded_rest(window, last, created[keep:], latest, page=page, pieces=pieces)
            if rest is not None:
                keep, out = keep + rest[0], rest[1]
                start = last + 1
            else:
                if created is not None:  # its last createdon is known already
                    rows_of_last = probes.count(one.filter())
                else:
                    rows_of_last, latest = probes.crowd(one.filter())
                if rows_of_last >= full:
                    # The page's rows of it cannot be kept (``rest`` is None): all of it again.
                    keep, out = _crowded(
                        probes, window, last, None, keep, latest, page=page, pieces=pieces
                    )
                    start = last + 1
        # The pace of the rows after the page's first second (a crowded first second, rows of
        # a bulk update, says nothing about the seconds after it).
        nulls, known = _known(seconds, before)
        first = last if known is None else known
        later = before - bisect_right(seconds, first, lo=nulls, hi=before, key=_key)
        pace = max(later, 1) / max(1, last - first)
    rows = None if pace is None else pace * (window.hi - start)
    out += spread(
        window.column,
        start,
        window.hi,
        rows=rows,
        page=page,
        most=pieces,
        within=window.within,
        near=NEAR * pieces,
    )
    return keep, out
