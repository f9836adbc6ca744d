"""``kill -9`` in the middle of a run, then a rerun: nothing is lost.

* The tap is killed after it emitted a STATE with a bookmark and more records after it, reading
  one chain of pages or windows side by side; the rerun starts from that last STATE. The union
  of both runs' keys is every row, and the only rows seen twice are at or after the bookmark
  (at-least-once at the boundary, never a gap).
* The target is killed after some write requests (``$batch``, or ``UpsertMultiple``); the same
  input is given again. Upserts are idempotent, so the table equals the fault-free result: every
  record written once in effect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dynamics_emulator.cost import CostModel
from dynamics_emulator.server import Emulator
from tests.resilience.conftest import FaultMatrix, MatrixRow
from tests.resilience.test_fault_matrix import (
    SMALL,
    TARGET_ROWS,
    compare_tables,
    table_snapshot,
    target_input,
    target_records,
)
from tests.tapharness import ROOT, TAP, discover, run_tap, select
from tests.targetharness import TARGET, run_target

ROWS = 25_000  # the SDK writes a STATE every 10,000 records of a sorted stream
PAGE = 1000


def _kill_tap_mid_stream(
    emu: Emulator, tmp: Path, catalog: dict[str, Any], after: int, **config: Any
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Start the tap, read its stdout line by line; after the first STATE with a bookmark and
    ``after`` more records, SIGKILL. Returns (records read, last STATE value, its stderr)."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = emu.tap_config(page_size=PAGE, metadata_cache_dir=str(tmp / "cache"), **config)
    (tmp / "config.json").write_text(json.dumps(cfg))
    (tmp / "catalog.json").write_text(json.dumps(catalog))
    cmd = [*TAP, "--config", str(tmp / "config.json"), "--catalog", str(tmp / "catalog.json")]
    env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
    log = (tmp / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    records: list[dict[str, Any]] = []
    state: dict[str, Any] | None = None
    since_state = -1
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["type"] == "RECORD":
                records.append(msg["record"])
                if since_state >= 0:
                    since_state += 1
            elif msg["type"] == "STATE":
                bookmark = msg["value"].get("bookmarks", {}).get("account", {})
                if "replication_key_value" in bookmark:
                    state = msg["value"]
                    since_state = 0
            if since_state >= after:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
        log.close()
    assert proc.returncode == -signal.SIGKILL, "the tap finished before it could be killed"
    assert state is not None
    return records, state, (tmp / "stderr.txt").read_text()


#: (emulator options, tap settings, what the tap's log says of how it read)
MODES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "one-chain": ({}, {"max_parallel_requests": 1}, "as one chain of pages"),
    # The cost model at a small scale: the windows' requests really overlap when it is killed.
    "windows": (
        {"cost_model": CostModel(time_scale=0.002)},
        {},
        "in windows of modifiedon side by side",
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_tap_kill_9_then_resume_from_last_state(
    tmp_path: Path, fault_matrix: FaultMatrix, mode: str
) -> None:
    options, settings, how = MODES[mode]
    with Emulator(counts={**SMALL, "account": ROWS}, **options) as emu:
        catalog = select(discover(emu, tmp_path / "d", page_size=PAGE), ["account"])
        first, state, log = _kill_tap_mid_stream(
            emu, tmp_path / "1", catalog, after=1500, **settings
        )
        assert how in log
        assert 0 < len(first) < ROWS
        bookmark = state["bookmarks"]["account"]["replication_key_value"]
        second = run_tap(
            emu,
            tmp_path / "2",
            catalog=catalog,
            state=state,
            config={"page_size": PAGE, **settings},
        )
        assert second.returncode == 0, second.stderr[-3000:]
        assert how in second.stderr
        all_ids = set(emu.row_ids("account"))
    first_ids = {r["accountid"] for r in first}
    rows2 = second.records("account")
    second_ids = {r["accountid"] for r in rows2}
    lost = len(all_ids - (first_ids | second_ids))
    fault_matrix.record(
        MatrixRow("tap", f"kill-9-mid-stream-then-resume-{mode}", 1, 2, len(all_ids), lost, 0)
    )
    assert lost == 0
    # The rerun starts at the bookmark (`ge`), so only rows at or after it come twice.
    duplicates = [r for r in rows2 if r["accountid"] in first_ids]
    assert all(r["modifiedon"] >= bookmark for r in duplicates)
    assert all(r["modifiedon"] >= bookmark for r in rows2)
    assert len(second_ids) < ROWS  # it really resumed: not a full re-read


@pytest.mark.parametrize(
    ("write_method", "path"),
    [
        pytest.param("batch", "$batch", id="batch"),
        pytest.param("auto", "Microsoft.Dynamics.CRM.UpsertMultiple", id="bulk"),
    ],
)
def test_target_kill_9_then_rerun_writes_each_record_once_in_effect(
    tmp_path: Path, fault_matrix: FaultMatrix, write_method: str, path: str
) -> None:
    records = target_records(TARGET_ROWS * 4)
    text = target_input(records)
    with Emulator(counts=SMALL) as emu:
        clean = run_target(emu, tmp_path / "clean", text)
        assert clean.returncode == 0, clean.stderr[-3000:]
        expected = table_snapshot(emu)
    with Emulator(counts=SMALL) as emu:
        cfg = emu.tap_config(
            metadata_cache_ttl=0,
            dead_letter_path=str(tmp_path / "dead.jsonl"),
            batch_size_rows=50,
            bulk_size_rows=50,
            max_parallel_batches=2,
            write_method=write_method,
        )
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
        proc = subprocess.Popen(
            [*TARGET, "--config", str(tmp_path / "config.json")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        # Feed the input slowly enough that the kill lands while batches are being written.
        lines = text.encode().splitlines(keepends=True)

        def feed() -> None:
            try:
                for i, line in enumerate(lines):
                    proc.stdin.write(line)  # type: ignore[union-attr]
                    if i % 100 == 0:
                        proc.stdin.flush()  # type: ignore[union-attr]
                        time.sleep(0.02)
                proc.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                return

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        deadline = time.monotonic() + 120
        while len(emu.requests(path)) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        feeder.join(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the target finished before it was killed"
        partial = table_snapshot(emu)
        assert len(partial) < len(expected)  # killed mid-run: not everything was written
        rerun = run_target(emu, tmp_path / "rerun", text, config={"write_method": write_method})
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert rerun.dead_letters == []
        lost, different = compare_tables(expected, table_snapshot(emu))
    fault_matrix.record(
        MatrixRow(
            "target",
            f"kill-9-mid-run-then-rerun-{'batch' if write_method == 'batch' else 'bulk'}",
            1,
            2,
            len(expected),
            lost,
            different,
        )
    )
    assert (lost, different) == (0, 0)
