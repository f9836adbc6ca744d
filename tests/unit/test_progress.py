"""dynamics_singer.progress on its own: when lines are due, what they say, the numbers they carry
for structured logging, and RetrieveTotalRecordCount read from a stub client (no I/O; the real
runs against the emulator are in tests/integration/test_progress.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from dynamics_api.errors import api_error
from dynamics_api.http import DataverseClient
from dynamics_api.retry import RetryPolicy
from dynamics_api.stats import ClientStats
from dynamics_singer.progress import (
    StreamProgress,
    WriteProgress,
    interval_of,
    total_record_count,
    tracked,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class StubResponse:
    content: bytes


@dataclass
class StubClient:
    """What progress reads of a client: its counters, and one answer to request()."""

    stats: ClientStats = field(default_factory=ClientStats)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(sleep=lambda _s: None))
    answer: bytes | Exception = b""
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def request(self, method: str, path: str, **kw: Any) -> StubResponse:
        self.calls.append((method, path, kw))
        if isinstance(self.answer, Exception):
            raise self.answer
        return StubResponse(self.answer)


def _client(stub: StubClient) -> DataverseClient:
    return cast(DataverseClient, stub)


def _progress_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if hasattr(r, "progress")]


def test_stream_lines_at_most_every_interval_then_one_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    stub = StubClient()
    progress = StreamProgress(
        logging.getLogger("t"), lambda: _client(stub), "account", interval=30, clock=clock
    )
    stub.stats.add(requests=3)
    progress.page(5000)  # 0 s: not due
    clock.now += 29.9
    progress.page(5000)  # 29.9 s: not due
    clock.now += 0.2
    progress.page(5000)  # 30.1 s: due
    clock.now += 10
    progress.page(1000)  # 10 s after the last line: not due
    progress.finish()
    progress.finish()  # once only
    lines = _progress_records(caplog)
    assert [r.getMessage() for r in lines] == [
        "Stream 'account': 15,000 rows, 3 pages, 498 rows/s, 3 requests, 0 retries, "
        "0.0 s throttled",
        "Stream 'account' done: 16,000 rows, 4 pages, 399 rows/s, 3 requests, 0 retries, "
        "0.0 s throttled, in 40 s",
    ]
    first, last = (cast(Any, r).progress for r in lines)
    assert first["rows"] == 15000 and first["pages"] == 3 and first["final"] is False
    assert last["final"] is True and last["rows"] == 16000 and last["total"] is None
    assert all(cast(Any, r).stream_name == "account" for r in lines)


def test_total_gives_share_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    stub = StubClient()
    progress = StreamProgress(
        logging.getLogger("t"),
        lambda: _client(stub),
        "incident",
        interval=1,
        total=10_000,
        clock=clock,
    )
    clock.now += 10
    progress.page(2500)  # 250 rows/s, 7,500 to go: 30 s
    line = _progress_records(caplog)[-1]
    assert line.getMessage().startswith("Stream 'incident': 2,500 of 10,000 rows (25%), 1 page")
    assert line.getMessage().endswith("; about 30 s left")
    assert cast(Any, line).progress["eta_seconds"] == 30.0
    assert cast(Any, line).progress["total"] == 10_000
    clock.now += 600
    progress.page(2500)
    # 5,000 rows in 610 s, 5,000 to go
    assert "about 10 min 10 s left" in _progress_records(caplog)[-1].getMessage()


def test_counters_are_this_streams_own_and_throttling_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    stub = StubClient()
    stub.stats.add(requests=40)  # an earlier stream's
    stub.retry.wait(5.0, "earlier", throttled=True, given=True)
    progress = StreamProgress(
        logging.getLogger("t"), lambda: _client(stub), "team", interval=0, clock=Clock()
    )
    stub.stats.add(requests=3)
    stub.retry.wait(2.0, "429", throttled=True, given=True)
    stub.retry.wait(1.0, "503", throttled=False, given=False)
    progress.page(6)
    assert not _progress_records(caplog)  # interval 0: only the last line
    progress.finish()
    data = cast(Any, _progress_records(caplog)[-1]).progress
    assert (data["requests"], data["retries"], data["throttled_seconds"]) == (3, 2, 2.0)
    assert "3 requests, 2 retries, 2.0 s throttled" in _progress_records(caplog)[-1].getMessage()


def test_tracked_says_stopped_on_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    stub = StubClient()
    progress = StreamProgress(
        logging.getLogger("t"), lambda: _client(stub), "lead", interval=30, clock=Clock()
    )

    def rows() -> Any:
        progress.page(2)
        yield 1
        yield 2
        raise RuntimeError("boom")

    got: list[int] = []
    with pytest.raises(RuntimeError):
        got.extend(tracked(progress, rows()))
    assert got == [1, 2]
    assert _progress_records(caplog)[-1].getMessage().startswith("Stream 'lead' stopped: 2 rows")


def test_write_progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    stub = StubClient()
    counts = {"records": 0, "written": 0, "failed": 0, "done": 0}
    progress = WriteProgress(
        logging.getLogger("t"), lambda: None, lambda: counts, interval=5, clock=clock
    )
    progress.tick()
    assert not _progress_records(caplog)
    clock.now += 5
    counts.update(records=1500, written=990, failed=10, done=1000)
    progress.tick()
    clock.now += 5
    progress.finish()
    first, last = _progress_records(caplog)
    assert first.getMessage() == (
        "Writing: 1,500 records, 990 written, 10 failed, 200 rows/s, 0 requests, 0 retries, "
        "0.0 s throttled"
    )
    assert last.getMessage().startswith("Writing done: 1,500 records, 990 written, 10 failed")
    assert cast(Any, last).progress == {
        "final": True,
        "records": 1500,
        "written": 990,
        "failed": 10,
        "rows_per_second": 100.0,
        "requests": 0,
        "retries": 0,
        "throttled_seconds": 0.0,
        "elapsed_seconds": 10.0,
    }
    assert stub.calls == []


@pytest.mark.parametrize(
    ("config", "interval"),
    [
        pytest.param({}, 30.0, id="default"),
        pytest.param({"progress_interval": 0.5}, 0.5, id="short"),
        pytest.param({"progress_interval": 0}, 0.0, id="off"),
    ],
)
def test_interval_setting(config: dict[str, Any], interval: float) -> None:
    assert interval_of(config) == interval


def test_total_record_count_reads_the_collection() -> None:
    stub = StubClient(
        answer=b'{"EntityRecordCountCollection": {"Count": 1, "IsReadOnly": false, '
        b'"Keys": ["account"], "Values": [52000]}}'
    )
    assert total_record_count(_client(stub), "account") == 52000
    method, path, kw = stub.calls[0]
    assert (method, path) == ("GET", "RetrieveTotalRecordCount(EntityNames=@p)")
    assert kw["params"] == "@p=%5B%22account%22%5D"
    assert kw["max_retries"] == 0  # sent once: its failure must not cost waits or warnings


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(api_error(404, "GET", "/RetrieveTotalRecordCount"), id="not-found"),
        pytest.param(api_error(400, "GET", "/RetrieveTotalRecordCount"), id="bad-request"),
        pytest.param(api_error(503, "GET", "/RetrieveTotalRecordCount"), id="unavailable"),
        pytest.param(b"<html>", id="not-json"),
        pytest.param(b'{"value": []}', id="other-shape"),
        pytest.param(
            b'{"EntityRecordCountCollection": {"Keys": ["contact"], "Values": [3]}}',
            id="other-table",
        ),
        pytest.param(
            b'{"EntityRecordCountCollection": {"Keys": ["account"], "Values": [-1]}}',
            id="negative",
        ),
    ],
)
def test_total_record_count_is_none_on_any_failure(
    answer: bytes | Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert total_record_count(_client(StubClient(answer=answer)), "account") is None
    assert all(r.levelno <= logging.DEBUG for r in caplog.records)
