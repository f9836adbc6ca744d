"""How a stream's pages are read: one ``@odata.nextLink`` chain, or windows side by side.

A stream reads side by side when it has an ordered column to split on (``modifiedon`` for an
incremental stream, ``createdon`` for a full-table one), the service recommends more than one
request at a time (``x-ms-dop-hint``, capped by ``max_parallel_requests``) and the rows to read
are more than a page. The first ``$count`` answers the last two questions in one small request
(when the whole table is read and its row count is already known to be more than a page, the
table's first and last rows, which the windows need anyway, are asked for instead, side by
side); otherwise the stream reads one chain, exactly as it always did. Change tracking always
reads one chain (the delta link belongs to it).

The windows (:mod:`tap_dynamics.windows`) are cut between the first and the last row (two
``$top=1`` probes, side by side when there is no bookmark) at the table's average pace, and a
window whose first page shows more rows is split again there, at the pace that page showed; the
reader (:mod:`tap_dynamics.parallel`) reads them side by side and hands the pages over in window
order.
"""

from __future__ import annotations

import threading
import typing as t
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import orjson

from dynamics_api.http import DataverseClient
from dynamics_api.odata import build_query
from tap_dynamics.pages import Body, Column, first_rows, rows_of
from tap_dynamics.parallel import Fetch, Gate, Job, Reader
from tap_dynamics.windows import (
    COUNT_CAP,
    SECOND_COLUMN,
    Window,
    after_page,
    epoch,
    halved,
    literal,
    opened,
    reaches_past,
    spread,
)

A = t.TypeVar("A")
B = t.TypeVar("B")

__all__ = [
    "DEFAULT_CEILING",
    "HttpProbes",
    "ReadPlan",
    "choose",
    "side_by_side",
    "split_column",
    "summary",
]

#: Requests in flight when ``max_parallel_requests`` is not set and the service's hint is
#: higher: every request in flight holds a page (up to tens of MB) in memory.
DEFAULT_CEILING = 16
DOP_HINT = "x-ms-dop-hint"
#: The cookie naming the web server that answered (the client does not send it back, so requests
#: spread over the servers; its values say how many there are).
AFFINITY = "ARRAffinity="


def split_column(replication_key: str | None, properties: Mapping[str, t.Any]) -> str | None:
    """The column to split a read on: the replication key (``modifiedon``), or for a
    full-table stream ``createdon`` when the table has it; None: read one chain."""
    if replication_key:
        return replication_key if replication_key in ("modifiedon", SECOND_COLUMN) else None
    return SECOND_COLUMN if SECOND_COLUMN in properties else None


def server_of(headers: Mapping[str, str]) -> str | None:
    """The web server that answered, from its ``ARRAffinity`` cookie (None without one)."""
    cookie = headers.get("Set-Cookie") or ""
    start = cookie.find(AFFINITY)
    if start < 0:
        return None
    return cookie[start + len(AFFINITY) :].split(";", 1)[0].strip() or None


def dop_hint(headers: Mapping[str, str]) -> int | None:
    """The service's recommended degree of parallelism, when it sent a usable one."""
    value = headers.get(DOP_HINT)
    try:
        hint = int(str(value).strip()) if value is not None else None
    except ValueError:
        return None
    return hint if hint is not None and hint >= 1 else None


class HttpProbes:
    """The planner's questions as Web API requests (no ``Prefer`` page size, so ``$top``
    holds), each taking a request slot from ``slot``.

    Attributes:
        hint: the last ``x-ms-dop-hint`` the service sent (None before any answer).
        servers: the web servers seen answering (``ARRAffinity`` values).
        requests: probes sent.
    """

    def __init__(self, client: DataverseClient, entity_set: str, key: str, entity: str) -> None:
        self.client = client
        self.entity_set = entity_set
        self.key = key
        self.entity = entity
        self.hint: int | None = None
        self.servers: set[str] = set()
        self.requests = 0
        self._lock = threading.Lock()
        self.slot: Callable[[], AbstractContextManager[None]] = nullcontext

    def _get(self, query: str) -> dict[str, t.Any]:
        with self.slot():
            response = self.client.request("GET", self.entity_set, params=query, entity=self.entity)
        with self._lock:
            self.requests += 1
            self.hint = dop_hint(response.headers) or self.hint
            server = server_of(response.headers)
            if server is not None:
                self.servers.add(server)
        body: dict[str, t.Any] = orjson.loads(response.content)
        return body

    def ceiling(self, max_parallel: int | None) -> int:
        """Requests in flight: the service's hint per web server seen (its limits are per
        server), capped by ``max_parallel_requests`` (default :data:`DEFAULT_CEILING`)."""
        cap = max_parallel or DEFAULT_CEILING
        if self.hint is None:
            return cap
        return max(1, min(self.hint * max(1, len(self.servers)), cap))

    def count(self, flt: str) -> int:
        body = self._get(build_query(select=[self.key], filter=flt or None, top=1, count=True))
        return min(int(body.get("@odata.count", 0)), COUNT_CAP)

    def edge(self, column: str, flt: str | None, *, last: bool) -> str | None:
        where = " and ".join(p for p in (flt, f"{column} ne null") if p)
        order = f"{column} {'desc' if last else 'asc'}"
        rows = self._get(build_query(select=[column], filter=where, orderby=order, top=1))
        values = rows.get("value") or []
        return str(values[0][column]) if values and values[0].get(column) else None

    def crowd(self, flt: str) -> tuple[int, str | None]:
        return side_by_side(
            lambda: self.count(flt), lambda: self.edge(SECOND_COLUMN, flt, last=True)
        )


@dataclass
class ReadPlan:
    """What :func:`choose` decided for one stream read (``edges``: the table's first and last
    values of ``column``, when they were asked for to decide)."""

    parallel: bool
    reason: str
    ceiling: int = 1
    column: str | None = None
    rows_at_least: int | None = None
    max_parallel: int | None = None
    edges: tuple[str | None, str | None] | None = None


def choose(
    probes: HttpProbes,
    *,
    column: str | None,
    start: str | None,
    page: int,
    max_parallel: int | None,
    total: int | None = None,
) -> ReadPlan:
    """Read one chain or windows side by side (one ``$count`` probe decides, unless settings or
    the table already do).

    ``total``: the table's row count, when the whole table is read and the count is known
    (``RetrieveTotalRecordCount``): when it is more than a page, no ``$count`` is asked; the
    table's first and last rows, which the windows need, are asked for at once instead, and
    tell the service's hint as well."""
    if column is None:
        return ReadPlan(False, "the table has no column to split on")
    if max_parallel == 1:
        return ReadPlan(False, "max_parallel_requests is 1")
    edges = None
    if start is None and total is not None and total >= page:
        edges = table_edges(probes, column)
        rows = total
    else:
        flt = f"{column} ge {literal(epoch(start))}" if start else ""
        rows = probes.count(flt)
    hint = probes.hint
    if hint is None and max_parallel is None:
        return ReadPlan(False, "the service sent no x-ms-dop-hint", rows_at_least=rows)
    ceiling = probes.ceiling(max_parallel)
    if ceiling <= 1 or hint == 1:
        return ReadPlan(False, "the service recommends one request at a time", rows_at_least=rows)
    if rows < page:
        return ReadPlan(False, "the rows to read fit in one page", ceiling, column, rows)
    reason = f"up to {ceiling} requests at a time"
    return ReadPlan(True, reason, ceiling, column, rows, max_parallel, edges)


def window_job(window: Window, entity_set: str, *, select: str, keys: t.Sequence[str]) -> Job:
    """A reader job for a window: its first request, ``$select`` and order included."""
    query = build_query(select=select, filter=window.filter() or None, orderby=window.orderby(keys))
    # A window of time (not one second split on createdon) may hide a crowded second; the last
    # piece of a crowded second holds what is left of it, which may be more than a page.
    scout = (window.within is None and window.hi is not None and not window.whole) or (
        window.within is not None and window.hi is None
    )
    return Job(entity_set, query, label=window, scout=scout)


def side_by_side(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """``(first(), second())``, the first in a thread while the second runs here (two small
    requests in the time of one); an exception of either is raised here."""
    with ThreadPoolExecutor(1, thread_name_prefix="probe") as pool:
        early = pool.submit(first)
        other = second()
        return early.result(), other


def table_edges(probes: HttpProbes, column: str) -> tuple[str | None, str | None]:
    """The table's first and last values of ``column``, asked side by side."""
    return side_by_side(
        lambda: probes.edge(column, None, last=False),
        lambda: probes.edge(column, None, last=True),
    )


def first_windows(
    probes: HttpProbes,
    column: str,
    *,
    start: str | None,
    page: int,
    rows: int | None,
    most: int,
    edges: tuple[str | None, str | None] | None = None,
) -> list[Window]:
    """The windows a read starts with: between the first row (or the bookmark) and the last, at
    the pace of ``rows`` rows (``most`` windows when unknown), then one open window for the rows
    written since; the first also holds the rows without a value when there is no bookmark.
    ``edges``: the table's first and last values, when already known."""
    lo: int | None
    if start:
        lo = epoch(start)
        last = probes.edge(column, f"{column} ge {literal(lo)}", last=True)
    else:
        first, last = edges or table_edges(probes, column)
        lo = epoch(first) if first else None
    if lo is None or last is None:  # nothing (left) to cut: one open window
        return [Window(column, lo if start else None, None, with_nulls=not start)]
    hi = max(lo, epoch(last)) + 1
    windows = spread(column, lo, hi, rows=rows, page=page, most=most)
    windows = opened(windows, nulls_first=start is None, open_end=False)
    return [*windows, Window(column, hi, None)]


def parallel_bodies(
    probes: HttpProbes,
    decided: ReadPlan,
    *,
    start: str | None,
    page: int,
    expected_rows: int | None,
    select: str,
    keys: t.Sequence[str],
    fetch: Fetch,
    name: str,
    stats: Callable[[], int],
    report: Callable[[Reader, HttpProbes], None],
) -> Iterator[Body]:
    """The bodies of the pages of every window, in window order."""
    assert decided.column is not None
    column = decided.column
    known = decided.rows_at_least if (decided.rows_at_least or 0) < COUNT_CAP else None
    rows = expected_rows or known
    windows = first_windows(
        probes,
        column,
        start=start,
        page=page,
        rows=rows,
        most=2 * decided.ceiling,
        edges=decided.edges,
    )
    # The edge probes may have met more web servers than the first one did.
    ceiling = max(decided.ceiling, probes.ceiling(decided.max_parallel))

    # Within a second, rows come in createdon order when it is selected: the page that finds a
    # crowded second keeps its rows of it, and only the rest of the second is read.
    by_created = column != SECOND_COLUMN and SECOND_COLUMN in select.split(",")
    order = [SECOND_COLUMN, *keys] if by_created else list(keys)

    def job(window: Window) -> Job:
        return window_job(window, probes.entity_set, select=select, keys=order)

    def refine(done: Job, body: bytes, more: bool) -> tuple[Body, list[Job]] | None:
        window = t.cast(Window, done.label)
        if window.hi is None and window.edge is None:
            return None
        # The page is looked at by bisection: a row's values are decoded when asked for.
        rows = rows_of(body)
        seconds = Column(rows, window.column, epoch)
        created = (
            Column(rows, SECOND_COLUMN, epoch) if by_created and window.within is None else None
        )
        if done.narrowed:
            # Split while this page was awaited: the rows from the new bound on are read by the
            # window split off; the rest of this one only when the page stops before them.
            below = reaches_past(window, seconds)
            if below is not None:
                return first_rows(body, below), []
            if not more:
                return None
        cut = after_page(probes, window, seconds, page=page, pieces=2 * ceiling, created=created)
        if cut is None and done.narrowed:
            # Its next link would go past the narrowed bound: the window is asked again instead.
            return first_rows(body, 0), [job(window)]
        if cut is None:
            return None
        keep, rest = cut
        return first_rows(body, keep), [job(w) for w in rest]

    def split(running: Job) -> tuple[Window, Job] | None:
        # A window of time whose first page is awaited, halved: the later half is read now (the
        # pieces of a crowded second are cut to about a page each already).
        window = t.cast(Window, running.label)
        halves = halved(window)
        return None if halves is None else (halves[0], job(halves[1]))

    def divide(last: Job) -> tuple[Job, Job] | None:
        # The last window with a request to make, not asked for yet: halved, its later half
        # read by the next slot that frees.
        halves = halved(t.cast(Window, last.label), pieces=True)
        return None if halves is None else (job(halves[0]), job(halves[1]))

    reader = Reader(
        [job(w) for w in windows],
        fetch,
        Gate(ceiling, stats),
        name=name,
        refine=refine,
        split=split,
        divide=divide,
    )
    probes.slot = reader.slot
    try:
        for _, body in reader.pages():
            yield body
            del body  # a page (tens of MB) is not kept while the next one is awaited
    finally:
        probes.slot = nullcontext
        report(reader, probes)


def summary(reader: Reader, probes: HttpProbes) -> str:
    """What a read in windows did, for the log line at its end."""
    return (
        f"in {reader.jobs_seen} windows ({reader.splits} split after their first page, "
        f"{reader.early_splits} while it was awaited, {reader.divided} halved before it was "
        "asked for): "
        f"{reader.page_requests} page requests and {probes.requests} probes, at most "
        f"{reader.peak_in_flight} in flight and {reader.peak_waiting_bytes / 1e6:.0f} MB of "
        f"pages waiting, {reader.peak_memory_bytes / 1e6:.0f} MB of them in memory "
        f"({reader.spilled} pages waited in a temporary file; {reader.lean_pages} pages read "
        f"lean, the writing being slower); the "
        f"limit was {reader.gate.ceiling} (lowest {reader.gate.lowest} after "
        f"{reader.gate.decreases} throttled periods)"
    )
