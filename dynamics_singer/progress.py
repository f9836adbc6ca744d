"""Progress lines on long runs, for the tap (per stream) and the target (the whole run).

One INFO line at most every ``progress_interval`` seconds while work goes on, and one at the
end: rows and pages (tap) or records written and failed (target), rows per second, and the
requests, retries and seconds throttled that the client counted; for a tap stream whose total
is known, how far it is and an estimate of the time left. Every line also carries its numbers
as a ``progress`` object in the log record's extra fields, so that with structured logging
(singer-sdk's ``StructuredFormatter``, which Meltano turns on for plugins that declare
``structured-logging``) each line is an event with data, not only text.

Lines are written when work arrives (a page, a finished ``$batch``): a wait for the service
(throttling, retries) is logged by the client itself.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import orjson
from singer_sdk import typing as th

from dynamics_api.http import DataverseClient
from dynamics_api.odata import build_query

__all__ = [
    "DEFAULT_INTERVAL",
    "PROGRESS_SETTINGS",
    "Progress",
    "RequestCounts",
    "StreamProgress",
    "WriteProgress",
    "total_record_count",
    "tracked",
]

T = t.TypeVar("T")

DEFAULT_INTERVAL = 30.0

PROGRESS_SETTINGS = th.PropertiesList(
    th.Property(
        "progress_interval",
        th.NumberType(minimum=0),
        default=30,
        title="Progress interval",
        description="Seconds between progress lines (INFO: rows, rows/s, requests, retries, "
        "seconds throttled, time left when known) on long runs; 0 logs only the line at the end.",
    ),
)

log = logging.getLogger(__name__)


def interval_of(config: Mapping[str, t.Any]) -> float:
    """The ``progress_interval`` setting (30 s by default)."""
    value = config.get("progress_interval")
    return DEFAULT_INTERVAL if value is None else max(0.0, float(value))


@dataclass(frozen=True)
class RequestCounts:
    """What a client has sent so far: HTTP attempts, retries (of requests and of ``$batch``
    parts), and seconds waited because the service throttled."""

    requests: int = 0
    retries: int = 0
    throttled_seconds: float = 0.0

    @classmethod
    def of(cls, client: DataverseClient | None) -> RequestCounts:
        """The client's counters now (zeros before there is a client)."""
        if client is None:
            return cls()
        return cls(client.stats.requests, client.retry.waits, client.retry.throttled_seconds)

    def __sub__(self, other: RequestCounts) -> RequestCounts:
        return RequestCounts(
            self.requests - other.requests,
            self.retries - other.retries,
            self.throttled_seconds - other.throttled_seconds,
        )


def total_record_count(client: DataverseClient, table: str) -> int | None:
    """The table's row count from ``RetrieveTotalRecordCount`` (a snapshot the service keeps,
    up to a day old), or None when it cannot be had.

    Sent once, never retried: any failure (an older service or the emulator without the
    function, a missing privilege, throttling, a network error, an unexpected body) only means
    that there is no total; it is logged at DEBUG.
    """
    try:
        response = client.request(
            "GET",
            "RetrieveTotalRecordCount(EntityNames=@p)",
            params=build_query(extra={"@p": orjson.dumps([table]).decode()}),
            entity=table,
            max_retries=0,
        )
        found = orjson.loads(response.content)["EntityRecordCountCollection"]
        value = dict(zip(found["Keys"], found["Values"], strict=True)).get(table)
    except Exception as exc:  # noqa: BLE001 - a count is a nicety: no failure of it stops a run
        log.debug("No total row count for '%s': %s", table, exc)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        log.debug("No total row count for '%s': the service answered %r", table, value)
        return None
    return value


def _number(value: float) -> str:
    return f"{value:,.0f}"


def _count(n: float, word: str, plural: str | None = None) -> str:
    """``1 retry``, ``3 retries``, ``1,200 requests``."""
    return f"{_number(n)} {word if n == 1 else plural or word + 's'}"


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s``, ``2 h 5 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{max(seconds, 0):.1f} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    """When a line is due, and the part of it every line shares.

    Args:
        logger: where the lines go.
        client: gives the run's client, or None while there is none yet.
        interval: seconds between lines while work goes on; 0: only the last line.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        logger: logging.Logger,
        client: Callable[[], DataverseClient | None],
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self._client = client
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self._last = self.started
        self._base = RequestCounts.of(client())
        self.finished = False

    def _due(self) -> bool:
        """Whether a line is due now (and, if so, the next one counts from now)."""
        if self.interval <= 0 or self.finished:
            return False
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True

    def _common(self, rows: int) -> tuple[dict[str, t.Any], str]:
        """The shared numbers (rows/s, requests, retries, throttled, elapsed) and their text."""
        elapsed = max(self._clock() - self.started, 0.0)
        sent = RequestCounts.of(self._client()) - self._base
        rate = rows / elapsed if elapsed > 0 else 0.0
        data = {
            "rows_per_second": round(rate, 1),
            "requests": sent.requests,
            "retries": sent.retries,
            "throttled_seconds": round(sent.throttled_seconds, 3),
            "elapsed_seconds": round(elapsed, 3),
        }
        text = (
            f"{_number(rate)} rows/s, {_count(sent.requests, 'request')}, "
            f"{_count(sent.retries, 'retry', 'retries')}, {sent.throttled_seconds:.1f} s throttled"
        )
        return data, text

    def _write(self, message: str, data: dict[str, t.Any], stream: str | None = None) -> None:
        extra: dict[str, t.Any] = {"progress": data}
        if stream is not None:
            extra["stream_name"] = stream  # the structured formatter's own field
        self.logger.info("%s", message, extra=extra)


class StreamProgress(Progress):
    """Rows and pages of one tap stream; ``total`` (the table's rows, when the whole table is
    read) gives the share done and the time left."""

    def __init__(
        self,
        logger: logging.Logger,
        client: Callable[[], DataverseClient | None],
        stream: str,
        *,
        interval: float,
        total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, client, interval=interval, clock=clock)
        self.stream = stream
        self.total = total
        self.rows = 0
        self.pages = 0

    def page(self, rows: int) -> None:
        """A page of ``rows`` rows was read: log a line if one is due."""
        with self._lock:
            self.rows += rows
            self.pages += 1
            if self._due():
                self._line(final=False)

    def finish(self, *, completed: bool = True) -> None:
        """Log the stream's last line (once): ``completed`` False when it stopped on an error."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self._line(final=True, completed=completed)

    def _line(self, *, final: bool, completed: bool = True) -> None:
        data, shared = self._common(self.rows)
        data = {
            "stream": self.stream,
            "final": final,
            "rows": self.rows,
            "pages": self.pages,
            "total": self.total,
            **data,
        }
        if self.total is not None and not final:
            share = min(self.rows / self.total, 1.0) if self.total else 1.0
            rows = f"{_number(self.rows)} of {_count(self.total, 'row')} ({share:.0%})"
        else:
            rows = _count(self.rows, "row")
        text = f"{rows}, {_count(self.pages, 'page')}, {shared}"
        if final:
            status = "done" if completed else "stopped"
            text += f", in {_duration(data['elapsed_seconds'])}"
            self._write(f"Stream '{self.stream}' {status}: {text}", data, self.stream)
            return
        rate = data["rows_per_second"]
        if self.total is not None and rate > 0 and self.rows < self.total:
            eta = (self.total - self.rows) / rate
            data["eta_seconds"] = round(eta, 1)
            text += f"; about {_duration(eta)} left"
        self._write(f"Stream '{self.stream}': {text}", data, self.stream)


def tracked(progress: StreamProgress, records: Iterable[T]) -> Iterator[T]:
    """``records`` as they come; the stream's last line once they end (or stop on an error)."""
    completed = False
    try:
        yield from records
        completed = True
    finally:
        progress.finish(completed=completed)


#: The target's counters in its lines, in order (from its run report, summed over streams).
WRITE_COUNTS = ("records", "written", "failed")


class WriteProgress(Progress):
    """Records of a target run: ``counts()`` gives the run report's totals (``records``,
    ``written``, ``failed`` and the other outcomes); rows/s counts every record accounted for
    (written, failed, deleted, skipped...)."""

    def __init__(
        self,
        logger: logging.Logger,
        client: Callable[[], DataverseClient | None],
        counts: Callable[[], Mapping[str, int]],
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logger, client, interval=interval, clock=clock)
        self._counts = counts

    def tick(self) -> None:
        """Work was done (a ``$batch`` answered): log a line if one is due."""
        with self._lock:
            if self._due():
                self._line(final=False)

    def finish(self) -> None:
        """Log the run's last line (once)."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            self._line(final=True)

    def _line(self, *, final: bool) -> None:
        counts = dict(self._counts())
        done = counts.pop("done", counts.get("written", 0) + counts.get("failed", 0))
        data, shared = self._common(done)
        data = {"final": final, **{k: counts.get(k, 0) for k in WRITE_COUNTS}, **data}
        parts = ", ".join(f"{_number(counts.get(k, 0))} {k}" for k in WRITE_COUNTS)
        if final:
            text = f"Writing done: {parts}, {shared}, in {_duration(data['elapsed_seconds'])}"
        else:
            text = f"Writing: {parts}, {shared}"
        self._write(text, data)
