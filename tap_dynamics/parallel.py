"""Reading windows side by side, and handing their pages over in order.

:class:`Reader` runs a fixed set of worker threads (the requests allowed in flight, and
:data:`SPARE` more, which send requests while others look at their pages). Each window is read
by its own ``@odata.nextLink`` chain (the links are followed as given, one request at a time per
chain); workers always take the earliest window that has a request to make, so pages arrive
roughly in the order they are handed over. :meth:`Reader.pages` yields every page of window 0,
then of window 1, and so on: records leave in the windows' order, whatever the order the answers
came in.

Bounds:

- at most ``limit`` requests are in flight (``refine``'s probes included), where ``limit``
  starts at the ceiling (``min(x-ms-dop-hint, max_parallel_requests)``), halves when the service
  throttles (the client counts the 429s it waited for; the wait itself is the client's, exactly
  the ``Retry-After`` given, and holds every request of the client) and grows back by one after
  as many answers as the limit without throttling. A request is in flight until the service
  has made its answer: when the answer gives its length (the body was made before it was
  sent), the next request leaves while the body is still on its way (an 11 MB page takes
  tens of milliseconds to cross), so that the service is kept as busy as allowed;
- at most ``2 * ceiling + PREFETCH`` pages are held at once (in flight, or waiting to be handed
  over as bytes, weighed by their size against the largest page seen: the small pages of small
  windows do not fill the cap); only the window being handed over may go past it, so the reader
  never stalls. While the consumer is the slower side (it found its last ``capacity`` pages
  ready), at most :data:`LEAN` are held, as one chain would;
- a page of a window after the one being handed over is written, as it comes, to an unnamed
  temporary file of its own (:class:`Spilled`: in the operating system's file cache, not in the
  process's memory) and read back when handed over: neither the requests in flight nor the pages
  waiting hold memory as they grow in number (pages wait behind the window being handed over
  whenever a later window's answers come first, which on a real organisation, seconds per page,
  is most of the time). The window being handed over reads its pages in memory. Where no file
  can be made or written, pages wait in memory, those of later windows while the pages in
  memory weigh less than :data:`IN_MEMORY` pages, and in files beyond it.

A window may turn out to hold more than a page: ``refine`` looks at its page when it comes with
a next link and may cut the page and put new windows right after it (in place of the rest of the
chain). It looks at one page at a time: a page written to its file is read back when its turn
comes, and waits, cut or not, in that file again. The probes ``refine`` makes take a slot
(:meth:`Reader.slot`) before any page request waiting for one, at most a quarter of the slots
(at least two) at a time.

When a slot is free and no job has a request to make (at the table's end, the last windows'
first pages in flight), ``split`` may cut the last job whose first page is awaited: it keeps the
first part (its page is then cut to it by ``refine``) and the rest is read at once, by a job that
is not split again. The last job with a request to make, when its first request is about to
leave while others are in flight, is halved first (``divide``; twice at most down one line):
the slots freeing one after the other at the table's end then share what is left, rather than
one of them reading a whole page after the others have finished.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
import typing as t
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from dynamics_api.retry import Gate
from dynamics_api.wire import NETWORK_ERRORS
from tap_dynamics.pages import Body, Cut, Spilled, size, waiting_size

__all__ = [
    "IN_MEMORY",
    "PREFETCH",
    "SPARE",
    "Fetch",
    "Gate",
    "Job",
    "Reader",
    "Stopped",
]

#: Pages held beyond one per request in flight.
PREFETCH = 2
#: Pages held while the consumer is the slower side (it found its last ``capacity`` pages
#: ready): reading further ahead would only hold more memory, and take the service's time
#: from other callers. As one chain holds: a page being read and ``PREFETCH`` waiting.
LEAN = PREFETCH + 1
#: Fetching threads beyond the requests allowed in flight: a thread looking at its page (finding
#: where to split the window, asking the service about a crowded second) has given its request
#: slot back, and a spare thread sends the next request in it meanwhile.
SPARE = 2
#: Pages waiting in memory, weighed by the largest page seen (the window being handed over keeps
#: its own pages in memory, and they count, as do pages being looked at by ``refine``): beyond
#: it, pages of later windows kept in memory (no file could be made as they came) wait in
#: temporary files.
IN_MEMORY = 1
#: Seconds the consumer of pages waits after taking one it waited for, so that the thread that
#: fetched it can send the next request before the page's decoding holds the interpreter lock (a
#: page that was waiting is taken at once: its thread has long sent its next request).
HANDOFF = 0.003
#: Halvings at most of the last job before its first request, down one line (a page's worth
#: is then read as a half, a quarter and a quarter).
HALVINGS = 2

#: ``fetch(url, params, into, answered) -> (body, next link)``: one page of a chain; when
#: ``into`` (a file) is given, the body is written to it as it comes and None is given instead
#: of it. ``answered()``, when the service has made the answer and only its transfer is left
#: (``DataverseClient.request``), gives the request's slot back early: the next request leaves
#: while the body is read.
Fetch = Callable[
    [str, str | None, t.BinaryIO | None, Callable[[], None]], tuple[bytes | None, str | None]
]
#: ``refine(job, body, more) -> (body to keep, jobs for the rest) | None``: a page with a next
#: link (``more``), or the first page of a narrowed job.
Refine = Callable[["Job", bytes, bool], "tuple[Body, list[Job]] | None"]
#: ``split(job) -> (its narrower label, a job for the rest of it) | None``: a job whose first
#: request is in flight, split while a request slot would otherwise stay idle.
Split = Callable[["Job"], "tuple[object, Job] | None"]
#: ``divide(job) -> (a job for its first part, one for the rest) | None``: the last job with a
#: request to make, not asked for yet, while the requests before it are in flight.
Divide = Callable[["Job"], "tuple[Job, Job] | None"]


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The reader was stopped (an error elsewhere, or the consumer went away)."""


@dataclass
class Job:
    """One window's chain: the first request, then the next links, and its pages so far
    (``scout``: its first page may split it, so it is worth reading before the jobs around it)."""

    url: str | None
    params: str | None
    label: object = None
    in_flight: bool = False
    pages: deque[Body | Spilled] = field(default_factory=deque)
    requests: int = 0
    scout: bool = False
    #: An answer came (the label is no longer narrowed: only a first request's job is split).
    answered: bool = False
    #: The label was narrowed while the first request was in flight (``Reader``'s ``split``):
    #: its first page is looked at (``refine``) whether a next link came with it or not.
    narrowed: bool = False
    #: Split off a job whose first page was awaited (not split again while its own is).
    split_off: bool = False
    #: Halvings before its first request down its line (``Reader``'s ``divide``).
    halvings: int = 0

    @property
    def finished(self) -> bool:
        return self.url is None and not self.in_flight


@dataclass
class _Ticket:
    """A page request's slot among those in flight: ``started`` is what :meth:`Gate.done` needs,
    ``holds`` whether the slot is still taken."""

    started: int
    holds: bool = True


class Reader:
    """Read jobs side by side; hand their pages over in the jobs' order.

    Args:
        jobs: the windows' first requests, in order.
        fetch: one page of a chain.
        gate: the concurrency limit.
        name: for thread names.
        refine: called with a page that came with a next link (outside the lock, its request
            done); when it returns a page and jobs, the page replaces the one fetched, the chain
            ends there and the jobs are read right after it.
    """

    def __init__(
        self,
        jobs: Iterable[Job],
        fetch: Fetch,
        gate: Gate,
        *,
        name: str,
        refine: Refine | None = None,
        split: Split | None = None,
        divide: Divide | None = None,
    ) -> None:
        self._jobs = list(jobs)
        self._fetch = fetch
        self._refine = refine
        self._split = split
        self._divide = divide
        self.gate = gate
        self._name = name
        self._cond = threading.Condition()
        self._head = 0  # the job being handed over
        self._in_flight = 0
        self._held = 0  # pages in flight or waiting
        self._waiting = 0  # of them, pages waiting to be handed over
        self._waiting_bytes = 0
        self._memory_bytes = 0  # of them, bytes in memory (not in temporary files)
        self._refining_bytes = 0  # pages being looked at by refine
        self._looking = threading.Lock()  # refine looks at one page at a time
        self._page_bytes = 0  # the largest page seen
        self._probes_waiting = 0
        self._probes_in_flight = 0
        self._stop = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self.peak_in_flight = 0
        self.peak_waiting_bytes = 0  # pages fetched, not yet handed over
        self.peak_memory_bytes = 0  # of them, in memory
        self.spilled = 0  # pages that waited in a temporary file
        self.page_requests = 0
        self.splits = 0
        self.early_splits = 0  # jobs split while their first request was in flight
        self.divided = 0  # last jobs halved before their first request
        self.capacity = 2 * gate.ceiling + PREFETCH
        self._ready = 0  # pages in a row the consumer found ready
        self.lean_pages = 0  # pages handed over while the reader held at most LEAN

    @property
    def jobs_seen(self) -> int:
        """Windows read or planned so far (those ``refine`` added included)."""
        return len(self._jobs)

    # -- refine's requests ------------------------------------------------------------------

    def _probe_cap(self) -> int:
        """Probes in flight at most: a quarter of the limit (at least two: a crowded second's
        two questions go together), so that they do not take every slot from the pages."""
        return max(2, self.gate.limit // 4)

    def _probe_may_start(self) -> bool:
        return self._in_flight < self.gate.limit and self._probes_in_flight < self._probe_cap()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """A request slot for a probe (before any page request waiting for one)."""
        with self._cond:
            self._probes_waiting += 1
            try:
                while not self._stop and not self._probe_may_start():
                    self._cond.wait()
            finally:
                self._probes_waiting -= 1
            if self._stop:
                raise Stopped
            self._in_flight += 1
            self._probes_in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            started = self.gate.start()
            self._cond.notify_all()  # page requests held back for this probe may go now
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._probes_in_flight -= 1
                self.gate.done(started)
                self._cond.notify_all()

    # -- threads ----------------------------------------------------------------------------

    def _pages_held(self) -> float:
        """Pages held (lock held): those in flight, and those waiting counted by their bytes in
        full pages (the largest seen), so that small windows' pages do not fill the cap."""
        waiting = self._waiting_bytes / self._page_bytes if self._page_bytes else self._waiting
        return self._held - self._waiting + waiting

    def _cap(self) -> int:
        """Pages held at most now (lock held): :data:`LEAN` while the consumer is the slower
        side, else ``capacity``."""
        return LEAN if self._ready >= self.capacity else self.capacity

    def _pick(self) -> Job | None:
        """The earliest job with a request to make, if a request may start now (lock held)."""
        if self._in_flight >= self.gate.limit or (self._probes_waiting and self._probe_may_start()):
            return None
        # The job being handed over first; then, among the next few with a request to make, one
        # that has not been read yet and may turn out big (``scout``: its first page decides
        # more windows, which are best known early), else the earliest.
        earliest: Job | None = None
        seen = at = 0
        for i in range(self._head, len(self._jobs)):
            job = self._jobs[i]
            if job.url is None or job.in_flight:
                continue
            if i == self._head:
                return self._last_divided(i)
            if self._pages_held() >= self._cap():
                return None  # later jobs would only hold more pages
            if job.scout and job.requests == 0:
                return job if earliest is not None else self._last_divided(i)
            if earliest is None:
                earliest, at = job, i
            seen += 1
            if seen > self.capacity:
                return earliest
        return self._split_early() if earliest is None else self._last_divided(at)

    def _last_divided(self, i: int) -> Job:
        """Job ``i``, the first with a request to make, about to be asked for (lock held); its
        first part when it is also the last and this is its first (``divide``; see the module's
        text)."""
        job = self._jobs[i]
        if self._divide is None or job.requests or job.halvings >= HALVINGS or self.gate.limit < 2:
            return job
        if any(
            o.url is not None and not o.in_flight for o in itertools.islice(self._jobs, i + 1, None)
        ):
            return job
        parts = self._divide(job)
        if parts is None:
            return job
        low, high = parts
        low.halvings = high.halvings = job.halvings + 1
        low.split_off = high.split_off = job.split_off
        self._jobs[i : i + 1] = [low, high]
        self.divided += 1
        return low

    def _split_early(self) -> Job | None:
        """No job has a request to make, and a slot is free (lock held): the last job whose first
        page is still awaited is split (``split``, once per job), and the rest of it is read now
        rather than once that page shows how big it is (at the table's end, the last windows'
        first pages would otherwise keep the other slots idle)."""
        if self._split is None or self._pages_held() >= self._cap():
            return None
        for i in range(len(self._jobs) - 1, self._head - 1, -1):
            job = self._jobs[i]
            if not job.in_flight or job.answered or job.narrowed or job.split_off:
                continue
            parts = self._split(job)
            if parts is None:
                continue
            job.label, rest = parts
            job.narrowed = True
            rest.split_off = True
            self._jobs.insert(i + 1, rest)
            self.early_splits += 1
            return rest
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                job = self._pick()
                while job is None and not self._stop:
                    self._cond.wait()
                    job = self._pick()
                if self._stop:
                    return
                assert job is not None and job.url is not None
                job.in_flight = True
                self._in_flight += 1
                self._held += 1
                self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
                url, params = job.url, job.params
                # A page of a later window is written to a temporary file as it comes, so that
                # the requests in flight hold no page in memory but the window's being handed
                # over (the service's hint may allow 16 at once, of pages of tens of MB).
                to_file = self._jobs[self._head] is not job
                ticket = _Ticket(self.gate.start())
            answered = partial(self._answered, ticket)
            try:
                body, nxt, into = self._fetch_page(url, params, to_file, answered)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                answered()
                with self._cond:
                    self._held -= 1
                    job.in_flight = False
                self._fail(exc)
                return
            answered()
            with self._cond:
                self.page_requests += 1
                job.answered = True
                narrowed = job.narrowed and job.requests == 0
                self._cond.notify_all()
            more: list[Job] = []
            page: Body | Spilled
            if (nxt is not None or narrowed) and self._refine is not None:
                try:
                    page, refined = self._look(job, body, into, nxt is not None)
                except Stopped:
                    return
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                    with self._cond:
                        self._held -= 1
                        job.in_flight = False
                    self._fail(exc)
                    return
                if refined is not None:
                    more, nxt = refined, None
                del refined
            elif into is not None:
                page = Spilled(into, into.seek(0, io.SEEK_END))
            else:
                assert body is not None
                page = self._spill(job, body)
            del body
            with self._cond:
                job.pages.append(page)
                self._waiting += 1
                self._waiting_bytes += waiting_size(page)
                self.peak_waiting_bytes = max(self.peak_waiting_bytes, self._waiting_bytes)
                if isinstance(page, Spilled):
                    self.spilled += 1
                else:
                    self._memory_bytes += size(page)
                    self.peak_memory_bytes = max(self.peak_memory_bytes, self._memory_bytes)
                self._page_bytes = max(self._page_bytes, waiting_size(page))
                job.requests += 1
                job.url, job.params = nxt, None  # the next link is used as given
                job.in_flight = False
                if more:
                    self.splits += 1
                    at = next(i for i in range(self._head, len(self._jobs)) if self._jobs[i] is job)
                    self._jobs[at + 1 : at + 1] = more
                self._cond.notify_all()
            # The page is the consumer's now: a worker waiting for its next request must not
            # keep it alive after the consumer is done with it.
            del more, page

    def _answered(self, ticket: _Ticket) -> None:
        """A page request's slot given back (once): when the service has made the answer (its
        body may still be on its way), or when the request ends."""
        with self._cond:
            if ticket.holds:
                ticket.holds = False
                self._in_flight -= 1
                self.gate.done(ticket.started)
                self._cond.notify_all()

    def _look(
        self, job: Job, body: bytes | None, into: t.BinaryIO | None, more: bool
    ) -> tuple[Body | Spilled, list[Job] | None]:
        """``refine``, one page at a time (a page written to its file as it came is read back
        only when its turn comes, so that pages waiting to be looked at hold no memory):
        the page as it waits, and the jobs for the rest of its window (None: not refined)."""
        assert self._refine is not None
        try:
            with self._looking:
                if into is not None:
                    into.seek(0)
                    body = into.read()
                assert body is not None
                with self._cond:
                    self._refining_bytes += len(body)
                try:
                    refined = self._refine(job, body, more)
                finally:
                    with self._cond:
                        self._refining_bytes -= len(body)
        except BaseException:
            if into is not None:
                into.close()
            raise
        kept, jobs = (body, None) if refined is None else refined
        del refined
        if into is not None:
            # Kept whole or cut: it waits in the file it was written to as it came.
            if kept is body:
                return Spilled(into, len(body)), jobs
            if isinstance(kept, Cut) and kept.page is body:
                return Spilled(into, len(body), kept.rows), jobs
            into.close()
        del body  # cut to no rows, the page is let go now
        return self._spill(job, kept), jobs

    def _fetch_page(
        self, url: str, params: str | None, to_file: bool, answered: Callable[[], None]
    ) -> tuple[bytes | None, str | None, t.BinaryIO | None]:
        """``fetch``, into a new temporary file when ``to_file`` (then the body is None and the
        file is given back); in memory when no file can be made or written (a full disk costs
        memory and, when the body was on its way, its request again, not the read)."""
        into = None
        if to_file:
            try:
                into = Spilled.new_file()
            except OSError:
                into = None
        try:
            body, nxt = self._fetch(url, params, into, answered)
        except OSError as exc:
            if into is None:
                raise
            into.close()
            if isinstance(exc, NETWORK_ERRORS):
                raise
            return *self._fetch(url, params, None, answered), None
        except BaseException:
            if into is not None:
                into.close()
            raise
        if body is not None and into is not None:  # a fetch that kept the body in memory
            into.close()
            into = None
        return body, nxt, into

    def _spill(self, job: Job, body: Body) -> Body | Spilled:
        """The page as it waits: in memory if its window is being handed over or the pages of
        later windows in memory leave room for it, else in a temporary file (in memory when the
        file cannot be written: a full disk costs memory, not the read)."""
        with self._cond:
            room = (
                IN_MEMORY * max(self._page_bytes, size(body))
                - self._memory_bytes
                - self._refining_bytes
            )
            if self._jobs[self._head] is job or size(body) <= room:
                return body
        try:
            return Spilled.of(body)
        except OSError:
            return body

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._stop = True
            self._cond.notify_all()

    def start(self) -> None:
        for i in range(self.gate.ceiling + SPARE):
            self._threads.append(
                threading.Thread(target=self._work, name=f"fetch-{self._name}-{i}", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop the threads (requests in flight are let finish) and wait for them."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        for job in self._jobs:  # a read stopped early: its pages' files go now
            for page in job.pages:
                if isinstance(page, Spilled):
                    page.close()
            job.pages.clear()

    # -- the consumer -------------------------------------------------------------------------

    def pages(self) -> Iterator[tuple[object, Body]]:
        """``(job label, page body)`` in the jobs' order; raises what a request raised."""
        self.start()
        try:
            while True:
                with self._cond:
                    waited = False
                    while True:
                        if self._error is not None:
                            raise self._error
                        if self._head >= len(self._jobs):
                            return
                        job = self._jobs[self._head]
                        if job.pages:
                            page = job.pages.popleft()
                            self._held -= 1
                            self._waiting -= 1
                            self._waiting_bytes -= waiting_size(page)
                            if not isinstance(page, Spilled):
                                self._memory_bytes -= size(page)
                            self.lean_pages += self._cap() == LEAN
                            self._ready = 0 if waited else self._ready + 1
                            self._cond.notify_all()
                            break
                        if job.finished:
                            self._jobs[self._head] = Job(None, None, job.label)  # let it go
                            self._head += 1
                            self._cond.notify_all()
                            continue
                        waited = True
                        self._cond.wait()
                if waited:  # the worker that brought the page sends its next request first
                    time.sleep(HANDOFF)
                body = page.read() if isinstance(page, Spilled) else page
                del page
                yield job.label, body
                del body  # not kept while waiting for the next page
        finally:
            self.close()
