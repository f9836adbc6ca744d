"""The fault matrix in parallel mode: a table read in windows side by side (the emulator's cost
model on at a small time scale, so that requests really overlap), against a throttling service
and a failing page inside one window. Whatever happens, every row comes once, in modelledon order,
and the bookmark is the one a fault-free read leaves. (kill -9 in the middle of a parallel read:
tests/resilience/test_kill_and_resume.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from dynamics_emulator.cost import CostModel
from dynamics_emulator.faults import Fault
from dynamics_emulator.protection import ServiceLimits
from dynamics_emulator.server import Emulator, LogEntry
from tests.resilience.conftest import FaultMatrix, MatrixRow, when_seen
from tests.tapharness import TapRun, discover, page_requests, run_tap, select

ROWS = 3000
PAGE = 200
SMALL = {"systemuser": 5, "team": 2, "transactioncurrency": 4}
WINDOWS = "in windows of modifiedon side by side"
ACCOUNTS = "/api/data/v9.2/accounts"


@dataclass
class Env:
    emu: Emulator
    catalog: dict[str, Any]
    baseline: TapRun


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("parallel-faults")
    with Emulator(counts={**SMALL, "account": ROWS}, cost_model=CostModel(time_scale=0.002)) as emu:
        catalog = select(discover(emu, tmp / "d"), ["account"])
        clean = run_tap(emu, tmp / "clean", catalog=catalog, config={"page_size": PAGE})
        assert clean.returncode == 0, clean.stderr[-3000:]
        assert WINDOWS in clean.stderr
        yield Env(emu, catalog, clean)


@pytest.fixture
def fresh(env: Env) -> Iterator[Env]:
    """The module's emulator, with no fault, no limit and no counter left from a previous case."""
    env.emu.clear_log()
    env.emu.reset_counters()
    yield env
    env.emu.faults.clear()
    env.emu.protection.use(None)


def _check(env: Env, run: TapRun) -> tuple[int, int, int]:
    """(rows lost, rows that differ, duplicates) against the fault-free parallel read; the run
    read in windows, in modifiedon order, and ended on the same bookmark."""
    assert run.returncode == 0, run.stderr[-3000:]
    assert WINDOWS in run.stderr
    rows = run.records("account")
    got = {r["accountid"]: r for r in rows}
    expected = {r["accountid"]: r for r in env.baseline.records("account")}
    assert set(got) <= set(expected)
    times = [r["modifiedon"] for r in rows]
    assert times == sorted(times)
    assert run.last_state == env.baseline.last_state
    lost = len(set(expected) - set(got))
    different = sum(1 for k, r in got.items() if r != expected[k])
    return lost, different, len(rows) - len(got)


def _record(matrix: FaultMatrix, case: str, faults: int, result: tuple[int, int, int]) -> None:
    lost, different, dups = result
    matrix.record(MatrixRow("tap", case, faults, 1, ROWS, lost, different))
    assert faults > 0, "no fault was injected: the case tests nothing"
    assert (lost, different, dups) == (0, 0, 0)


def test_parallel_read_through_a_429_storm(
    fresh: Env, tmp_path: Path, fault_matrix: FaultMatrix
) -> None:
    # A budget of 6 requests per 250 modelled seconds (0.5 s real) and 2 at a time, while the
    # service recommends 4: the read needs about 40 requests, so whatever the machine's pace, most
    # windows of 0.5 s see a 429 with a Retry-After; the tap waits it out (every thread of the
    # client), halves its requests in flight, and reads every row once. (With 20 requests per
    # window, the storm depended on how fast the machine sent them: 4 to 11 429s.)
    emu = fresh.emu
    emu.protection.use(
        ServiceLimits(
            max_requests=6, max_execution_seconds=None, max_concurrent=2, window_seconds=250
        )
    )
    run = run_tap(
        emu, tmp_path, catalog=fresh.catalog, config={"page_size": PAGE, "max_retries": 100}
    )
    counters = emu.counters()
    _record(fault_matrix, "parallel-429-storm", counters["throttled"], _check(fresh, run))
    assert counters["throttled"] >= 5
    assert "throttled periods" in run.stderr and "(lowest 4 " not in run.stderr
    # Retry-After is honoured: a request sent before its wait ended is a violation. The only
    # ones possible are those another thread sent between the 429 leaving the service and the
    # client reading it (1 to 6 ms here): at most one per other request slot (3 of the 4) for
    # each 429 that was not itself a violation. A client that ignored Retry-After would send its
    # retry into the block each time, a violation for nearly every 429.
    throttled, violations = counters["throttled"], counters["retry_after_violations"]
    assert violations <= 3 * (throttled - violations)


def _window_page(entry: LogEntry) -> bool:
    """A page request of a window (a ``modifiedon`` range), not a probe of the plan."""
    flt = parse_qs(entry.query).get("$filter", [""])[0]
    return bool(page_requests([entry])) and "modifiedon ge" in flt


@pytest.mark.parametrize("status", [500, 503])
def test_parallel_read_survives_a_5xx_inside_one_window(
    fresh: Env, tmp_path: Path, fault_matrix: FaultMatrix, status: int
) -> None:
    # Once windows are being read, the next few data requests fail with a 5xx: the failed page
    # of a window is asked for again (the same link) and its chain goes on; no row is lost or
    # repeated, and the order holds.
    # The failures land on the next requests, probes or pages: the case is run again (at most
    # three times) until one of them was a window's page.
    emu = fresh.emu
    for attempt in range(3):
        emu.clear_log()
        # Once the reader has asked for its first window page (a filtered page request), so
        # that the failures land inside the windows' reading, not on the first probes.
        watcher = when_seen(
            lambda: any(_window_page(e) for e in emu.requests(ACCOUNTS)),
            lambda: emu.faults.script([Fault("status", status=status)] * 3),
        )
        run = run_tap(
            emu, tmp_path / str(attempt), catalog=fresh.catalog, config={"page_size": PAGE}
        )
        watcher.join(timeout=5)
        emu.faults.clear()
        failed = [e for e in emu.requests(ACCOUNTS) if e.status == status]
        result = _check(fresh, run)
        assert len(failed) == 3
        if any(_window_page(e) for e in failed):
            break
    _record(fault_matrix, f"parallel-{status}-inside-a-window", len(failed), result)
    assert any(_window_page(e) for e in failed), [e.query for e in failed]
