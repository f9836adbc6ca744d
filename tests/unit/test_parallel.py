"""The side-by-side reader with a fetch function in memory: order, bounds, throttling, errors."""

from __future__ import annotations

import io
import random
import tempfile
import threading
import time
import typing as t
import weakref
from collections.abc import Generator, Iterator

import pytest

from tap_dynamics.chain import chain
from tap_dynamics.pages import Body, Cut, Spilled
from tap_dynamics.parallel import LEAN, PREFETCH, Gate, Job, Reader


def _answer(
    body: bytes, nxt: str | None, into: t.BinaryIO | None
) -> tuple[bytes | None, str | None]:
    """As the tap's client answers: the body written to ``into`` when one is given."""
    if into is None:
        return body, nxt
    into.write(body)
    return None, nxt


class Service:
    """Chains of pages in memory: ``/w<i>`` has ``pages[i]`` pages; each answer takes a little
    random time to make, then a little to come (after ``answered``); records the most requests
    being answered at once."""

    def __init__(self, pages: list[int], *, seed: int = 0, fail_at: str | None = None) -> None:
        self.pages = pages
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.throttles = 0

    def fetch(
        self, url: str, params: str | None, into: t.BinaryIO | None = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.calls.append(url)
            delay = self.rng.uniform(0, 0.004)
        try:
            time.sleep(delay)
            if url == self.fail_at:
                raise RuntimeError(f"failed on {url}")
            window, _, page = url.partition("/p")
            n = int(page or 0)
            last = self.pages[int(window[2:])] - 1
            nxt = None if n >= last else f"{window}/p{n + 1}"
        finally:
            with self.lock:
                self.in_flight -= 1
        if answered is not None:  # the answer is made; its body takes a little time to come
            answered()
            with self.lock:
                transfer = self.rng.uniform(0, 0.002)
            time.sleep(transfer)
        return _answer(f"{window}:{n}".encode(), nxt, into)


def _text(body: Body) -> str:
    assert isinstance(body, bytes)
    return body.decode()


def _jobs(n: int) -> Iterator[Job]:
    for i in range(n):
        yield Job(f"/w{i}", "q", label=i)


def test_pages_come_in_window_order_with_at_most_the_limit_in_flight() -> None:
    rng = random.Random(3)
    pages = [rng.randint(1, 4) for _ in range(40)]
    service = Service(pages, seed=3)
    reader = Reader(_jobs(40), service.fetch, Gate(5, lambda: 0), name="t")
    got = [_text(body) for _, body in reader.pages()]
    assert got == [f"/w{i}:{p}" for i in range(40) for p in range(pages[i])]
    assert service.peak <= 5
    assert reader.peak_in_flight <= 5
    assert reader.page_requests == sum(pages)


def test_the_next_request_leaves_while_an_answer_is_still_on_its_way() -> None:
    # One request at a time: window 1's request waits for window 0's answer to be made, not for
    # its body to come (window 0's body comes only once window 1's request has left).
    events: list[str] = []
    left = threading.Event()

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        events.append(f"sent {url}")
        if url == "/w1":
            left.set()
        events.append(f"answered {url}")
        answered()
        if url == "/w0":
            assert left.wait(timeout=5), "window 1's request waited for window 0's body"
        return _answer(url.encode(), None, into)

    reader = Reader(_jobs(2), fetch, Gate(1, lambda: 0), name="t")
    assert [_text(body) for _, body in reader.pages()] == ["/w0", "/w1"]
    assert events == ["sent /w0", "answered /w0", "sent /w1", "answered /w1"]
    assert reader.peak_in_flight == 1


def _held_while_reading(reader: Reader, consumer_seconds: float) -> list[float]:
    """Pages held each time the consumer took a page, taking ``consumer_seconds`` for each."""
    held = []
    for _ in reader.pages():
        held.append(reader._pages_held())
        time.sleep(consumer_seconds)
    return held


def test_pages_held_stay_under_the_cap_while_the_consumer_is_slow() -> None:
    service = Service([3] * 20)
    reader = Reader(_jobs(20), service.fetch, Gate(3, lambda: 0), name="t")
    held = _held_while_reading(reader, 0.002)
    # The window being handed over may have one request beyond the cap (the reader never stalls).
    assert max(held) <= reader.capacity + 1
    assert reader.capacity == 2 * 3 + PREFETCH


def test_a_consumer_slower_than_the_reads_makes_the_reader_hold_few_pages() -> None:
    # The consumer takes 10 ms a page, the service answers in at most 4 ms: once the consumer
    # has found as many pages ready in a row as the cap, the reader holds no more than a chain.
    service = Service([3] * 30)
    reader = Reader(_jobs(30), service.fetch, Gate(4, lambda: 0), name="t")
    held = _held_while_reading(reader, 0.01)
    assert max(held) > LEAN + 1  # it read ahead at first
    assert max(held[2 * reader.capacity :]) <= LEAN + 1
    assert reader.lean_pages >= len(held) - 2 * reader.capacity


def test_small_pages_count_by_their_bytes_against_the_cap() -> None:
    # Window 0 is slow; the others are tiny: their pages wait, weighed against the largest page.
    big = b"x" * 10_000

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes, str | None]:
        if url == "/w0":
            time.sleep(0.3)
            return big, None
        return b"y" * 100, None

    reader = Reader(_jobs(40), fetch, Gate(2, lambda: 0), name="t")
    reader._page_bytes = len(big)  # as if a full page had been seen
    pages = reader.pages()
    next(pages)
    assert reader.page_requests == 40  # all 39 small pages were read while window 0 was
    assert len(list(pages)) == 39


def test_a_refined_page_is_cut_and_new_jobs_follow_it_in_order() -> None:
    service = Service([3, 1, 1])

    def refine(job: Job, body: bytes, more: bool) -> tuple[bytes, list[Job]] | None:
        if job.label == 0:
            return b"cut", [Job(f"/w{i}", None, label=f"0.{i}") for i in (1, 2)]
        return None

    reader = Reader(_jobs(3), service.fetch, Gate(1, lambda: 0), name="t", refine=refine)
    got = [(label, _text(body)) for label, body in reader.pages()]
    assert got == [(0, "cut"), ("0.1", "/w1:0"), ("0.2", "/w2:0"), (1, "/w1:0"), (2, "/w2:0")]
    assert reader.splits == 1
    assert "/w0/p1" not in service.calls  # the rest of the cut chain is not read


def test_requests_go_on_in_the_slot_of_a_thread_looking_at_its_page() -> None:
    # Window 0's first page is looked at (refine) while the other windows' requests hang: with
    # two requests allowed, two of them are in flight meanwhile, the second sent by a thread
    # beyond the two (the thread in refine gave its slot back; with no thread to spare, the slot
    # stays idle until refine ends).
    service = Service([2] + [1] * 4)
    looked_at = threading.Event()
    go = threading.Event()
    both: list[bool] = []

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        if not url.startswith("/w0"):
            assert go.wait(10)
        return service.fetch(url, params, into, answered)

    def refine(job: Job, body: bytes, more: bool) -> tuple[bytes, list[Job]] | None:
        if job.label == 0:
            looked_at.set()
            deadline = time.monotonic() + 2
            while reader._in_flight < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            both.append(reader._in_flight == 2)
            go.set()
        return None

    reader = Reader(_jobs(5), fetch, Gate(2, lambda: 0), name="t", refine=refine)
    got = [label for label, _ in reader.pages()]
    assert got == [0, 0, 1, 2, 3, 4]
    assert both == [True]
    assert service.peak <= 2


def test_an_idle_slot_splits_the_last_window_whose_first_page_is_awaited() -> None:
    # Two requests allowed: window 1 answers at once, window 0 hangs. Rather than leave the slot
    # idle, the reader splits window 0 and reads the rest of it meanwhile (once: the narrowed
    # window is not split again); window 0's page is then looked at, next link or not.
    rest_sent = threading.Event()
    rest_first: list[bool] = []
    looked: list[tuple[object, bool]] = []
    asked: list[object] = []

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes, str | None]:
        if url == "/w0":
            rest_first.append(rest_sent.wait(5))
            return b"w0 all", None
        if url == "/rest":
            rest_sent.set()
        return url.encode(), None

    def split(job: Job) -> tuple[object, Job] | None:
        asked.append(job.label)
        return f"{job.label}-low", Job("/rest", None, label=f"{job.label}-high")

    def refine(job: Job, body: bytes, more: bool) -> tuple[bytes, list[Job]] | None:
        looked.append((job.label, more))
        return b"w0 low", []

    reader = Reader(_jobs(2), fetch, Gate(2, lambda: 0), name="t", refine=refine, split=split)
    got = list(reader.pages())
    assert rest_first == [True]
    assert got == [("0-low", b"w0 low"), ("0-high", b"/rest"), (1, b"/w1")]
    assert looked == [("0-low", False)]
    assert asked == [0] and reader.early_splits == 1


def test_no_split_while_jobs_have_requests_to_make() -> None:
    service = Service([2] * 12)
    idle: list[bool] = []  # at each split offered: no job had a request to make
    offered = threading.Event()

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        if url == "/w11":  # the last window's first page comes once a split was offered
            offered.wait(5)
        return service.fetch(url, params, into, answered)

    def split(job: Job) -> tuple[object, Job] | None:
        # Called with the reader's lock held: its jobs are as the reader sees them.
        rest = reader._jobs[reader._head :]
        idle.append(all(j.url is None or j.in_flight for j in rest) and job.in_flight)
        offered.set()
        return None

    reader = Reader(_jobs(12), fetch, Gate(3, lambda: 0), name="t", split=split)
    got = [label for label, _ in reader.pages()]
    assert got == [i for i in range(12) for _ in range(2)]
    assert idle and all(idle)


def test_the_last_job_is_halved_before_its_first_request_for_the_slots_freeing_after_it() -> None:
    # Two requests allowed, three windows of one page. The third is the last with a request to
    # make when its turn comes: it is halved, and its later half again when that one's turn
    # comes (twice at most down one line); jobs following a next link are never halved.
    offered: list[object] = []

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        nxt = "/w1/p1" if url == "/w1" else None
        return _answer(url.encode(), nxt, into)

    def divide(job: Job) -> tuple[Job, Job] | None:
        offered.append(job.label)
        label = str(job.label)
        return Job(f"/w{label}a", None, label=f"{label}a"), Job(f"/w{label}b", None, f"{label}b")

    reader = Reader(_jobs(3), fetch, Gate(2, lambda: 0), name="t", divide=divide)
    got = list(reader.pages())
    assert got == [
        (0, b"/w0"),
        (1, b"/w1"),
        (1, b"/w1/p1"),
        ("2a", b"/w2a"),
        ("2ba", b"/w2ba"),
        ("2bb", b"/w2bb"),
    ]
    assert offered == [2, "2b"] and reader.divided == 2


def test_no_job_is_halved_while_one_request_at_a_time_is_allowed() -> None:
    def divide(job: Job) -> tuple[Job, Job] | None:
        raise AssertionError("one request at a time: nothing to share")

    service = Service([1] * 3)
    reader = Reader(_jobs(3), service.fetch, Gate(1, lambda: 0), name="t", divide=divide)
    assert [label for label, _ in reader.pages()] == [0, 1, 2]
    assert reader.divided == 0


def test_a_scout_among_the_next_jobs_is_read_before_the_jobs_ahead_of_it() -> None:
    # One request at a time: the window being handed over first, then the scout (its first page
    # may split it, or show that it holds more than a page), then the others in order.
    service = Service([1] * 6)
    jobs = list(_jobs(6))
    jobs[4].scout = True
    reader = Reader(jobs, service.fetch, Gate(1, lambda: 0), name="t")
    assert [label for label, _ in reader.pages()] == [0, 1, 2, 3, 4, 5]
    assert service.calls == ["/w0", "/w4", "/w1", "/w2", "/w3", "/w5"]


def test_the_first_error_stops_the_read_and_reaches_the_consumer() -> None:
    service = Service([2] * 30, fail_at="/w7/p1")
    reader = Reader(_jobs(30), service.fetch, Gate(4, lambda: 0), name="t")
    seen: list[object] = []

    def consume() -> None:
        for label, _ in reader.pages():
            seen.append(label)

    with pytest.raises(RuntimeError, match="failed on /w7/p1"):
        consume()
    assert set(seen) <= set(range(8))  # nothing after the failed window is handed over
    assert not [t for t in threading.enumerate() if t.name.startswith(("fetch-t", "plan-t"))]


def test_a_consumer_that_stops_early_stops_the_threads() -> None:
    service = Service([5] * 50)
    reader = Reader(_jobs(50), service.fetch, Gate(4, lambda: 0), name="early")
    pages = reader.pages()
    next(pages)
    t.cast(Generator[object, None, None], pages).close()
    assert not [t for t in threading.enumerate() if t.name.endswith("early") or "-early-" in t.name]
    assert len(service.calls) < 250


def test_refine_probes_count_against_the_limit() -> None:
    service = Service([2] * 12)
    probes_in_flight: list[int] = []

    def refine(job: Job, body: bytes, more: bool) -> tuple[bytes, list[Job]] | None:
        with reader.slot():
            with service.lock:
                probes_in_flight.append(service.in_flight)
                service.in_flight += 1
                service.peak = max(service.peak, service.in_flight)
            time.sleep(0.001)
            with service.lock:
                service.in_flight -= 1
        return None

    reader = Reader(_jobs(12), service.fetch, Gate(3, lambda: 0), name="t", refine=refine)
    assert [label for label, _ in reader.pages()] == [i for i in range(12) for _ in range(2)]
    assert len(probes_in_flight) == 12 and service.peak <= 3


def test_a_refine_error_reaches_the_consumer() -> None:
    def refine(job: Job, body: bytes, more: bool) -> tuple[bytes, list[Job]] | None:
        raise ValueError("the probe failed")

    reader = Reader(_jobs(3), Service([2, 2, 2]).fetch, Gate(2, lambda: 0), name="t", refine=refine)
    with pytest.raises(ValueError, match="the probe failed"):
        list(reader.pages())


def test_gate_halves_on_throttling_once_per_episode_and_grows_back() -> None:
    throttled = [0]
    gate = Gate(8, lambda: throttled[0])
    a, b = gate.start(), gate.start()
    throttled[0] += 1  # a 429 while both were in flight
    gate.done(a)
    gate.done(b)
    assert gate.limit == 4 and gate.decreases == 1  # halved once, not twice
    c = gate.start()
    throttled[0] += 1
    gate.done(c)
    assert gate.limit == 2 and gate.lowest == 2
    for _ in range(2):
        gate.done(gate.start())
    assert gate.limit == 3  # after as many good answers as the limit, one more
    for _ in range(3 + 4 + 5 + 6 + 7):
        gate.done(gate.start())
    assert gate.limit == 8  # never above the ceiling
    gate.done(gate.start())
    assert gate.limit == 8


def test_gate_never_goes_below_one() -> None:
    throttled = [0]
    gate = Gate(2, lambda: throttled[0])
    for _ in range(5):
        s = gate.start()
        throttled[0] += 1
        gate.done(s)
    assert gate.limit == 1


def test_chain_follows_the_links_and_prefetches() -> None:
    calls = []

    def fetch(url: str, params: str | None) -> tuple[bytes, str | None, str | None]:
        calls.append((url, params))
        n = int(url[1:])
        return str(n).encode(), f"/{n + 1}" if n < 4 else None, "delta" if n == 4 else None

    got = list(chain(fetch, "/0", "q", name="c"))
    assert got == [(b"0", None), (b"1", None), (b"2", None), (b"3", None), (b"4", "delta")]
    assert calls[0] == ("/0", "q") and all(p is None for _, p in calls[1:])


class _Body:
    """A page as the reader sees it (it only asks its length), that a weak reference can
    watch: bytes cannot be weakly referenced."""

    def __len__(self) -> int:
        return 10


def _let_go(ref: weakref.ref[_Body]) -> bool:
    """Whether the page was freed, waiting up to 5 s for the thread that should let it go."""
    for _ in range(500):
        if ref() is None:
            return True
        time.sleep(0.01)
    return False


def _held_back(
    held: str, links: dict[str, str], made: list[weakref.ref[_Body]]
) -> tuple[t.Callable[..., t.Any], threading.Event, threading.Event]:
    """A fetch whose request for ``held`` waits for ``release`` (``asked`` is set when it is
    sent); the others answer at once, with the next link ``links`` gives. Every page it makes
    is watched in ``made``."""
    asked, release = threading.Event(), threading.Event()

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[_Body, str | None]:
        if url == held:
            asked.set()
            release.wait(30)  # longer than _let_go waits: released by the test
        body = _Body()
        made.append(weakref.ref(body))
        return body, links.get(url)

    return fetch, asked, release


def _let_go_while_the_consumer_waits(
    pages: Iterator[tuple[t.Any, t.Any]],
    watched: list[weakref.ref[_Body]],
    asked: threading.Event,
    release: threading.Event,
) -> bool:
    """Takes a page and drops it, then waits for the next one (held back): whether the first
    page ``watched`` is freed meanwhile."""
    next(pages)  # taken and written at once
    waiting = threading.Thread(target=lambda: next(pages, None))
    waiting.start()  # the consumer, waiting for the held-back page
    try:
        assert asked.wait(5)
        return _let_go(watched[0])
    finally:
        release.set()
        waiting.join(5)


@pytest.mark.parametrize("how", ["windows", "chain"])
def test_a_page_is_let_go_once_the_consumer_is_done_with_it(how: str) -> None:
    # A page is tens of MB: once the consumer has written it, nothing may keep it alive while
    # the next one is awaited (neither the thread that fetched it, now sending the next request,
    # nor the generator that handed it over, now waiting).
    made: list[weakref.ref[_Body]] = []
    fetch, asked, release = _held_back("/1", {"/0": "/1"}, made)
    pages: Iterator[tuple[t.Any, t.Any]]
    if how == "windows":
        jobs = [Job("/0", None, label=0)]  # one window of two pages
        pages = Reader(jobs, fetch, Gate(1, lambda: 0), name="t").pages()
    else:
        pages = chain(lambda u, p: (*fetch(u, p), None), "/0", None, name="c")
    assert _let_go_while_the_consumer_waits(pages, made, asked, release), "the page is kept"


def test_a_refined_page_is_let_go_once_the_consumer_is_done_with_it() -> None:
    # The page refine made in place of the one fetched: the thread that made it goes on to its
    # next request (window 1's, held back) and must not keep it alive meanwhile.
    fetched: list[weakref.ref[_Body]] = []
    fetch, asked, release = _held_back("/b", {"/a": "/next"}, fetched)
    cut: list[weakref.ref[_Body]] = []

    def refine(job: Job, body: bytes, more: bool) -> tuple[bytes, list[Job]]:
        page = _Body()
        cut.append(weakref.ref(page))
        return t.cast(bytes, page), []

    jobs = [Job("/a", None, label=0), Job("/b", None, label=1)]
    pages = Reader(jobs, fetch, Gate(1, lambda: 0), name="t", refine=refine).pages()
    assert _let_go_while_the_consumer_waits(pages, cut, asked, release), "the cut page is kept"


class _SlowFirst:
    """One page per window, all of ``size`` bytes; window 0's answer comes last (its request
    waits until every other window's page has come)."""

    def __init__(self, windows: int, size: int) -> None:
        self.windows, self.size = windows, size
        self.others = threading.Semaphore(0)

    def fetch(
        self, url: str, params: str | None, into: t.BinaryIO | None = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        i = int(url[2:])
        if i == 0:
            for _ in range(self.windows - 1):
                assert self.others.acquire(timeout=5)
        body = (url + ":").encode().ljust(self.size, b"x")
        if i:
            self.others.release()
        return _answer(body, None, into)


@pytest.fixture
def temp_files(monkeypatch: pytest.MonkeyPatch) -> list[t.Any]:
    """The temporary files the reader opens, in order."""
    files: list[t.Any] = []
    real = tempfile.TemporaryFile

    def recorded() -> t.Any:
        files.append(real())
        return files[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recorded)
    return files


def _slow_first_reader() -> Reader:
    """Six windows of a 1,000-byte page each, window 0's coming last, six requests at a time."""
    return Reader(_jobs(6), _SlowFirst(windows=6, size=1000).fetch, Gate(6, lambda: 0), name="t")


PAGES = [f"/w{i}:".encode().ljust(1000, b"x") for i in range(6)]


def test_pages_of_later_windows_are_written_to_temporary_files_as_they_come(
    temp_files: list[t.Any],
) -> None:
    reader = _slow_first_reader()
    assert [body for _, body in reader.pages()] == PAGES
    # Five pages waited for window 0, each written to its file by the request that brought it;
    # only window 0's own page was ever in memory.
    assert reader.spilled == 5 and len(temp_files) == 5
    assert reader.peak_memory_bytes <= 1000
    # Window 0's page may be counted before the last of the others is.
    assert reader.peak_waiting_bytes >= 5000
    assert all(f.closed for f in temp_files)


def test_a_page_that_cannot_be_written_to_its_file_is_asked_for_again_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[io.BytesIO] = []

    class Full(io.BytesIO):
        def write(self, data: t.Any) -> int:
            raise OSError(28, "No space left on device")

    def full() -> io.BytesIO:
        made.append(Full())
        return made[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    slow = _SlowFirst(windows=6, size=1000)
    calls: list[str] = []

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        calls.append(url)
        if into is not None:
            into.write(b"part")  # fails, as a full disk does
        return slow.fetch(url, params, into, answered)

    reader = Reader(_jobs(6), fetch, Gate(6, lambda: 0), name="t")
    assert [body for _, body in reader.pages()] == PAGES
    # Each later window's request was sent again, its page kept in memory; no file left open.
    assert sorted(calls) == sorted(["/w0", *[f"/w{i}" for i in range(1, 6) for _ in "ab"]])
    assert len(made) >= 5 and all(f.closed for f in made)
    assert reader.spilled == 0  # no file could take them afterwards either


def test_a_page_written_to_its_file_is_looked_at_by_refine_as_its_bytes(
    temp_files: list[t.Any],
) -> None:
    # Window 1's first page comes with a next link while window 0's is awaited: it was written
    # to a file as it came, and refine is given its bytes.
    service = Service([1, 2])
    asked = threading.Event()
    seen: list[tuple[object, bytes]] = []

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes | None, str | None]:
        if url == "/w0":
            assert asked.wait(5)
        if url == "/w1":
            assert into is not None
            asked.set()
        return service.fetch(url, params, into, answered)

    def refine(job: Job, body: bytes, more: bool) -> None:
        seen.append((job.label, body))

    reader = Reader(_jobs(2), fetch, Gate(2, lambda: 0), name="t", refine=refine)
    assert [_text(body) for _, body in reader.pages()] == ["/w0:0", "/w1:0", "/w1:1"]
    assert seen == [(1, b"/w1:0")]
    assert temp_files and all(f.closed for f in temp_files)


def test_a_cut_page_waits_in_a_file_as_the_page_fetched_and_comes_back_cut(
    temp_files: list[t.Any],
) -> None:
    body = b'{"value":[{"a":1},{"a":2},{"a":3}],"@odata.nextLink":"x"}'
    spilled = Spilled.of(Cut(body, 2))
    assert spilled.size == len(body)
    assert spilled.read() == Cut(body, 2) and temp_files[0].closed
    assert Spilled.of(body).read() == body


def test_a_page_being_refined_takes_the_room_of_a_page_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Window 1's first page has a next link: refine looks at it, and holds it, until the pages
    # of windows 2-5 have come; window 0's page comes last. Without counting the page in refine,
    # IN_MEMORY of those four would wait in memory beside it.
    slow = _SlowFirst(windows=6, size=1000)
    looking = threading.Event()
    reader: Reader

    def fetch(
        url: str, params: str | None, into: t.Any = None, answered: t.Any = None
    ) -> tuple[bytes, str | None]:
        if url == "/w1/p1":
            return b"/w1:1".ljust(1000, b"x"), None
        if url not in ("/w0", "/w1"):
            assert looking.wait(5)
        body, _ = slow.fetch(url, params)  # in memory: the page goes through the room's count
        assert body is not None
        return body, "/w1/p1" if url == "/w1" else None

    def refine(job: Job, body: bytes, more: bool) -> None:
        looking.set()
        deadline = time.monotonic() + 5
        while reader._waiting < 4 and time.monotonic() < deadline:
            time.sleep(0.001)

    in_files: list[bytes] = []

    class File(io.BytesIO):
        def write(self, data: t.Any) -> int:
            in_files.append(bytes(data))
            return super().write(data)

    monkeypatch.setattr(tempfile, "TemporaryFile", File)
    reader = Reader(_jobs(6), fetch, Gate(6, lambda: 0), name="t", refine=refine)
    got = [body for _, body in reader.pages()]
    assert got == [*PAGES[:2], b"/w1:1".ljust(1000, b"x"), *PAGES[2:]]
    assert set(PAGES[2:]) <= set(in_files)  # every page that came during the refine


def test_refine_looks_at_one_page_at_a_time_and_leaves_a_written_page_in_its_file(
    temp_files: list[t.Any],
) -> None:
    # Every window's first page has a next link: the threads that fetched them wait their turn
    # (their pages in their files), and a page looked at stays in the file it came in.
    service = Service([2] * 8, seed=5)
    lock = threading.Lock()
    inside, most = [0], [0]

    def refine(job: Job, body: bytes, more: bool) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.005)
        with lock:
            inside[0] -= 1

    reader = Reader(_jobs(8), service.fetch, Gate(4, lambda: 0), name="t", refine=refine)
    assert [label for label, _ in reader.pages()] == [i for i in range(8) for _ in range(2)]
    assert most == [1]
    assert reader.spilled == len(temp_files) > 0  # no page written twice
    assert all(f.closed for f in temp_files)


def test_a_read_stopped_early_closes_its_pages_files(temp_files: list[t.Any]) -> None:
    pages = t.cast(Generator[tuple[object, bytes], None, None], _slow_first_reader().pages())
    next(pages)
    pages.close()  # the consumer went away with pages still waiting
    assert temp_files and all(f.closed for f in temp_files)


def test_pages_stay_in_memory_when_no_temporary_file_can_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full() -> t.Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    reader = _slow_first_reader()
    assert [body for _, body in reader.pages()] == PAGES
    assert reader.spilled == 0 and reader.peak_memory_bytes == 6000
