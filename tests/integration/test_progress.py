"""Progress lines from real runs against the emulator with a slowed service: the tap's per stream
(rows, pages, requests...; the total from RetrieveTotalRecordCount when the service has it) and
the target's while it writes. With the logging configuration Meltano gives plugins that declare
structured-logging, each line is a JSON event that Meltano's own parser reads, its numbers under
``progress``. Nothing here depends on how long anything takes: a slowed page takes longer than
the progress interval, so lines are due."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from meltano.core.logging.parsers import SingerSDKLogParser

from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator
from tests.tapharness import discover, run_tap
from tests.targetharness import messages_text, record_message, run_target, schema_message

COUNT_FUNCTION = "RetrieveTotalRecordCount"


def _structured_logging(tmp: Path) -> dict[str, str]:
    """The environment of a plugin whose logs Meltano parses: singer-sdk's StructuredFormatter
    on stderr, as Meltano writes it for plugins with the structured-logging capability."""
    path = tmp / "sdk-logging.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"f": {"()": "singer_sdk.logging.StructuredFormatter"}},
                "handlers": {
                    "console": {
                        "class": "logging.StreamHandler",
                        "formatter": "f",
                        "stream": "ext://sys.stderr",
                    }
                },
                "root": {"handlers": ["console"], "level": "INFO"},
            }
        )
    )
    return {"SINGER_SDK_LOG_CONFIG": str(path)}


def _events(stderr: str) -> list[Any]:
    """Meltano's parsed records of every line (None for a line it cannot parse)."""
    parser = SingerSDKLogParser()
    return [parser.parse(line) for line in stderr.splitlines() if line.strip()]


def _catalog(emu: Emulator, tmp: Path, streams: set[str]) -> dict[str, Any]:
    catalog = discover(emu, tmp)
    for entry in catalog["streams"]:
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = entry["tap_stream_id"] in streams
    return catalog


def test_tap_progress_per_stream_as_structured_events(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    catalog = _catalog(emu, tmp_path / "d", {"account", "team"})
    emu.clear_log()
    # Every page of accounts takes 0.25 s, more than the progress interval.
    emu.faults.add(Fault("slow", delay=0.25), times=100, path_contains="/accounts")
    run = run_tap(
        emu,
        tmp_path / "r",
        # One chain, so that every line falls on a whole number of pages.
        config={"page_size": 100, "progress_interval": 0.1, "max_parallel_requests": 1},
        catalog=catalog,
        env=_structured_logging(tmp_path),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("account")) == emu.counts["account"]
    events = _events(run.stderr)
    assert events and all(e is not None for e in events)  # every line is a structured event
    assert all(e.level < logging.WARNING for e in events), [
        e.message for e in events if e.level >= logging.WARNING
    ]
    progress = [e for e in events if "progress" in e.extra]
    account = [e.extra["progress"] for e in progress if e.stream_name == "account"]
    interim = [p for p in account if not p["final"]]
    final = [p for p in account if p["final"]]
    assert interim, "no progress line while the slowed stream was read"
    rows = [p["rows"] for p in interim]
    assert rows == sorted(rows) and all(r % 100 == 0 and 0 < r <= 500 for r in rows)
    assert len(final) == 1
    assert (final[0]["rows"], final[0]["pages"]) == (emu.counts["account"], 5)
    assert final[0]["requests"] >= 5 and final[0]["retries"] == 0
    assert {"rows_per_second", "throttled_seconds", "elapsed_seconds"} <= set(final[0])
    team = [
        e.extra["progress"]
        for e in progress
        if e.stream_name == "team" and e.extra["progress"]["final"]
    ]
    assert [p["rows"] for p in team] == [emu.counts["team"]]
    messages = [e.message for e in progress if e.stream_name == "account"]
    assert messages[-1].startswith("Stream 'account' done: 500 rows, 5 pages, ")

    # One count per stream, never retried; its total used when the service answers it (the
    # emulator learns RetrieveTotalRecordCount on another branch: until then it answers 4xx and
    # the lines carry no total).
    counts = emu.requests(COUNT_FUNCTION)
    assert len(counts) == 2, [(c.path, c.query, c.status) for c in counts]
    if all(c.status == 200 for c in counts):
        assert all(p["total"] == emu.counts["account"] for p in account)
        assert any("eta_seconds" in p for p in interim) or interim[-1]["rows"] == 500
        assert " of 500 rows (" in next(m for m in messages if "done" not in m)
    else:
        assert all(400 <= c.status < 500 for c in counts)
        assert all(p["total"] is None for p in account)
        assert not any("eta_seconds" in p for p in account)


def test_a_failing_count_is_sent_once_and_not_warned_about(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    catalog = _catalog(emu, tmp_path / "d", {"team", "systemuser"})
    emu.clear_log()
    emu.faults.add(Fault("status", status=503), times=10, path_contains=COUNT_FUNCTION)
    run = run_tap(emu, tmp_path / "r", config={"progress_interval": 0.1}, catalog=catalog)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(emu.requests(COUNT_FUNCTION)) == 2  # one per stream: a 503 there is not retried
    assert "WARNING" not in run.stderr
    assert "Stream 'team' done: 6 rows, 1 page, " in run.stderr
    assert "Stream 'systemuser' done: 25 rows, 1 page, " in run.stderr


def test_incremental_run_asks_no_total(fresh_emulator: Emulator, tmp_path: Path) -> None:
    """With a bookmark the rows to come are not the table's: no count is asked for."""
    emu = fresh_emulator
    catalog = _catalog(emu, tmp_path / "d", {"team"})
    emu.clear_log()
    state = {
        "bookmarks": {
            "team": {
                "replication_key": "modifiedon",
                "replication_key_value": "2000-01-01T00:00:00Z",
            }
        }
    }
    run = run_tap(emu, tmp_path / "r", catalog=catalog, state=state)
    assert run.returncode == 0, run.stderr[-3000:]
    assert emu.requests(COUNT_FUNCTION) == []
    assert "Stream 'team' done: 6 rows, 1 page, " in run.stderr


def test_target_progress_while_writing(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    # Each $batch takes 0.25 s; three operations are throttled once (Retry-After 0.2 s).
    emu.faults.add(Fault("slow", delay=0.25), times=100, path_contains="$batch")
    emu.part_faults.add(Fault("status", status=429, retry_after=0.2), times=3)
    props = {"accountnumber": {"type": "string"}, "name": {"type": "string"}}
    messages = [schema_message("account", props)] + [
        record_message("account", {"accountnumber": f"PRG-{i:04d}", "name": f"Progress {i}"})
        for i in range(300)
    ]
    run = run_target(
        emu,
        tmp_path,
        messages_text(messages),
        config={
            "progress_interval": 0.1,
            "stream_options": {"account": {"key": ["accountnumber"]}},
            "write_method": "batch",  # the slowed and throttled requests are $batch ones
        },
        env=_structured_logging(tmp_path),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    events = [e for e in _events(run.stderr) if e is not None and "progress" in e.extra]
    interim = [e.extra["progress"] for e in events if not e.extra["progress"]["final"]]
    final = [e for e in events if e.extra["progress"]["final"]]
    assert interim, "no progress line while the slowed batches were written"
    assert [p["written"] for p in interim] == sorted(p["written"] for p in interim)
    assert len(final) == 1
    done = final[0].extra["progress"]
    assert (done["records"], done["written"], done["failed"]) == (300, 300, 0)
    assert done["retries"] >= 1 and done["throttled_seconds"] >= 0.2
    assert done["requests"] >= 6  # 300 records in $batch requests of 50
    assert final[0].message.startswith("Writing done: 300 records, 300 written, 0 failed, ")
