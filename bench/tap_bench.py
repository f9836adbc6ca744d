"""Tap throughput: accounts from the emulator through the real tap-dynamics CLI to /dev/null.

Three measurements, each against its own emulator, the tap and the raw loop in their own processes:

* :func:`bench_tap`: N accounts with the tap's default settings (windows side by side, the
  emulator's hint of 4), beside the raw loop (one chain of the same columns, fetched and parsed,
  nothing else); records/s and peak RSS (the memory check compares the highest peak of three
  runs at 100,000 and at 1,000,000 rows);
* :func:`bench_prerendered`: the client's own cost: pages pre-rendered (the server is not the
  bottleneck), the tap reading one chain beside the raw loop over the same pages, all columns;
* :func:`bench_parallel`: a real organisation's latency: the cost model on (about 1 s of server
  time per 5,000-row page of the emulator's account columns, at ``time_scale``), service
  protection on, 1 or 2 web servers, ``x-ms-dop-hint`` 4: the sequential floor (pages x
  modelled page time), one chain's wall time and the windows' wall time, in modelled and real
  seconds.

    python -m bench.tap_bench --rows 100000
    python -m bench.tap_bench --parallel --servers 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import PREFIX as PEAK
from bench.measure import WALL
from dynamics_api.odata import build_query
from dynamics_emulator import seed
from dynamics_emulator.cost import CostModel
from dynamics_emulator.protection import ServiceLimits
from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = "/api/data/v9.2/accounts"
#: Real seconds per modelled second in the parallel bench. At full scale the process's own
#: start-up (about 1 s: imports, sign-in) is small beside the read, as it is on a real
#: organisation; a smaller scale would measure start-up instead of the read.
PARALLEL_TIME_SCALE = 1.0
#: Runs of each read on the cost model (alternating); the run of median wall time is reported.
PARALLEL_REPEATS = 3
#: Runs of the tap at each size in :func:`bench_tap`. Its peak RSS is the moment two ~11 MB pages
#: are held at once (one being emitted, one being looked at or received); a short read may or may
#: not meet that moment, so one run's peak at 100,000 rows is 71 or 80 MB by chance. The memory
#: check compares the highest of these runs at each size: the bound that holds, not a lucky run.
TAP_RUNS = 3


def run_child(cmd: list[str], env: dict[str, str], *, stdout: Any) -> tuple[float, float]:
    """Run a child to its end (through bench.measure); return (wall seconds, its peak RSS MB),
    both as bench.measure saw them: from the child's start to its end."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.measure", *cmd],
        cwd=ROOT,
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        check=False,
    )
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} exited {proc.returncode}: {lines[-4:]}")
    wall, peak = lines[-1].split()
    return float(wall.removeprefix(WALL)), float(peak.removeprefix(PEAK))


@dataclass
class Setup:
    """A tap pointed at an emulator, the account stream selected (every column)."""

    emu: Emulator
    tmp: Path
    env: dict[str, str]
    config: dict[str, Any]
    columns: list[str]

    def write_config(self, **settings: Any) -> Path:
        path = self.tmp / "config.json"
        path.write_text(json.dumps({**self.config, **settings}))
        return path

    def tap(self, out: Path | None = None, **settings: Any) -> tuple[float, float]:
        """One run of the CLI to ``out`` (default /dev/null): (wall seconds, peak RSS MB)."""
        cmd = [sys.executable, "-m", "tap_dynamics", "--config", str(self.write_config(**settings))]
        cmd += ["--catalog", str(self.tmp / "catalog.json")]
        if out is None:
            return run_child(cmd, self.env, stdout=subprocess.DEVNULL)
        with out.open("wb") as sink:
            return run_child(cmd, self.env, stdout=sink)

    def raw(self, rows: int) -> dict[str, Any]:
        """The raw loop over one chain of the tap's columns, in its own process."""
        query = build_query(select=self.columns, orderby="modifiedon asc,accountid asc")
        conn = {
            **self.config,
            "ca_bundle": self.emu.ca_bundle,
            "first_url": f"{self.emu.url}{ACCOUNTS}?{query}",
        }
        (self.tmp / "conn.json").write_text(json.dumps(conn))
        cmd = [sys.executable, "-m", "bench.raw_loop", str(self.tmp / "conn.json")]
        out_path = self.tmp / "raw.json"
        with out_path.open("wb") as out:
            seconds, peak = run_child(cmd, self.env, stdout=out)
        raw: dict[str, Any] = json.loads(out_path.read_text())
        assert raw["rows"] == rows, raw
        raw["loop_seconds"] = raw["seconds"]
        raw["seconds"] = seconds  # whole process, as for the tap: start-up counts for both
        raw["peak_rss_mb"] = peak
        return raw


def check_records(out: Path, expected: set[str]) -> dict[str, Any]:
    """What a run wrote against the table's keys: rows lost, duplicated, out of order."""
    seen: list[str] = []
    times: list[str] = []
    with out.open("rb") as lines:
        for line in lines:
            if line.startswith(b'{"type":"RECORD"'):
                record = json.loads(line)["record"]
                seen.append(record["accountid"])
                times.append(record["modifiedon"] or "")
    return {
        "records": len(seen),
        "lost": len(expected - set(seen)),
        "duplicated": len(seen) - len(set(seen)),
        "in_modifiedon_order": times == sorted(times),
    }


def prepare(emu: Emulator, tmp: Path, page_size: int = 5000) -> Setup:
    env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
    cfg = emu.tap_config(
        metadata_cache_dir=str(tmp / "cache"), page_size=page_size, streams=["account"]
    )
    (tmp / "config.json").write_text(json.dumps(cfg))
    disc = subprocess.run(
        [sys.executable, "-m", "tap_dynamics", "--config", str(tmp / "config.json"), "--discover"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )
    catalog = json.loads(disc.stdout)
    columns: list[str] = []
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = entry["tap_stream_id"] == "account"
        if entry["tap_stream_id"] == "account":
            columns = list(entry["schema"]["properties"])
    (tmp / "catalog.json").write_text(json.dumps(catalog))
    return Setup(emu, tmp, env, cfg, columns)


def _counts(rows: int) -> dict[str, int]:
    counts = seed.default_counts()
    counts["account"] = rows
    return counts


def _is_probe(query: str) -> bool:
    """The planner's probes ask for ``$top`` rows (``$count`` ones too); pages never do."""
    return "$top=" in query or "%24top=" in query


def bench_tap(rows: int, page_size: int = 5000, runs: int = TAP_RUNS) -> dict[str, Any]:
    """The tap with its default settings (windows side by side) beside the raw loop; the tap
    ``runs`` times on the same emulator: the median wall time, the highest peak RSS (every run's
    wall and peak are kept)."""
    t0 = time.perf_counter()
    with Emulator(counts=_counts(rows)) as emu, tempfile.TemporaryDirectory() as tmp_s:
        seeded = time.perf_counter() - t0
        setup = prepare(emu, Path(tmp_s), page_size)
        walls, peaks, requests = [], [], []
        for _ in range(runs):
            emu.clear_log()
            wall, peak = setup.tap()
            walls.append(round(wall, 2))
            peaks.append(round(peak, 1))
            requests.append(len(emu.requests(ACCOUNTS)) + len(emu.requests("/oauth2/")))
        raw = setup.raw(rows)
    tap_seconds = sorted(walls)[len(walls) // 2]
    return {
        "rows": rows,
        "page_size": page_size,
        "mode": "default settings: windows side by side (x-ms-dop-hint 4)",
        "seed_seconds": round(seeded, 1),
        "tap_runs": runs,
        "tap_seconds": tap_seconds,
        "tap_seconds_runs": walls,
        "tap_records_per_s": round(rows / tap_seconds),
        "tap_requests": max(requests),
        "tap_requests_per_1000": round(max(requests) * 1000 / rows, 3),
        "tap_peak_rss_mb": max(peaks),
        "tap_peak_rss_runs_mb": peaks,
        "raw_seconds": round(raw["seconds"], 2),
        "raw_loop_only_seconds": round(raw["loop_seconds"], 2),
        "raw_records_per_s": round(rows / raw["seconds"]),
        "raw_peak_rss_mb": round(raw["peak_rss_mb"], 1),
        "ratio_to_raw": round(raw["seconds"] / tap_seconds, 2),
    }


def bench_prerendered(rows: int = 200_000, page_size: int = 5000) -> dict[str, Any]:
    """The client's cost: every page answered from pre-rendered bytes; the tap (one chain, the
    same requests as the raw loop) beside the raw loop, all 154 columns."""
    with (
        Emulator(counts=_counts(rows), prerender=True) as emu,
        tempfile.TemporaryDirectory() as tmp_s,
    ):
        setup = prepare(emu, Path(tmp_s), page_size)
        setup.raw(rows)  # renders every page once; the runs below are answered from the cache
        emu.reset_counters()
        tap_seconds, tap_peak = setup.tap(max_parallel_requests=1)
        raw = setup.raw(rows)
        cache = emu.counters()["prerender"]
    return {
        "rows": rows,
        "columns": len(setup.columns),
        "tap_seconds": round(tap_seconds, 2),
        "tap_records_per_s": round(rows / tap_seconds),
        "tap_peak_rss_mb": round(tap_peak, 1),
        "raw_seconds": round(raw["seconds"], 2),
        "raw_loop_only_seconds": round(raw["loop_seconds"], 2),
        "raw_records_per_s": round(rows / raw["seconds"]),
        "ratio_to_raw": round(raw["seconds"] / tap_seconds, 2),
        "goal": ">= 0.6",
        "prerender": cache,
    }


def bench_parallel(
    rows: int = 200_000,
    servers: int = 1,
    *,
    time_scale: float = PARALLEL_TIME_SCALE,
    repeats: int = PARALLEL_REPEATS,
) -> dict[str, Any]:
    """One table on a latency-bound service: the sequential floor, one chain, windows.

    Each read runs ``repeats`` times, alternating (one chain, windows, one chain, ...); the run
    of median wall time is reported, with every run's wall time beside it (a shared machine's
    pace varies by several percent from one minute to the next)."""
    model = CostModel(time_scale=time_scale)
    with (
        Emulator(
            counts=_counts(rows),
            cost_model=model,
            service_protection=ServiceLimits(),
            web_servers=servers,
            dop_hint=4,
            prerender=True,
        ) as emu,
        tempfile.TemporaryDirectory() as tmp_s,
    ):
        setup = prepare(emu, Path(tmp_s))
        # Warm-up without the cost model: every page either read will ask for is rendered once
        # (both reads are deterministic), so the timed runs measure waiting, not rendering.
        emu.front.cost_model = None
        setup.tap(max_parallel_requests=1)
        setup.tap()
        emu.front.cost_model = model

        keys = set(emu.row_ids("account"))
        out: dict[str, Any] = {"rows": rows, "web_servers": servers, "dop_hint": 4}
        out["time_scale"] = time_scale
        runs: list[tuple[str, dict[str, Any]]] = [
            ("sequential", {"max_parallel_requests": 1}),
            ("parallel", {}),
        ]
        done: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in runs}
        for _ in range(repeats):
            for name, settings in runs:
                done[name].append(_timed_read(setup, name, settings, keys, time_scale))
        for name, _ in runs:
            out[name] = _median_run(done[name])
        # The floor: the chain's pages one after the other, each its modelled time.
        floor = out["sequential"]["page_server_seconds"]
        out["floor_modelled_seconds"] = round(floor, 1)
        out["floor_real_seconds"] = round(floor * time_scale, 2)
        for name, _ in runs:
            run = out[name]
            run["ratio_to_floor"] = round(run["wall_seconds"] / (floor * time_scale), 3)
            run["read_ratio_to_floor"] = round(run["read_seconds"] / (floor * time_scale), 3)
            run["ratios_to_floor"] = [
                round(w / (floor * time_scale), 3) for w in run["wall_seconds_runs"]
            ]
    return out


def _timed_read(
    setup: Setup, name: str, settings: dict[str, Any], keys: set[str], time_scale: float
) -> dict[str, Any]:
    """One whole process reading the table on the cost model, and what the service saw."""
    emu = setup.emu
    emu.protection.use(ServiceLimits())  # each run starts with the budgets of a fresh caller
    emu.clear_log()
    emu.reset_counters()
    out_file = setup.tmp / f"{name}.jsonl"
    seconds, peak = setup.tap(out_file, **settings)
    log = emu.requests(ACCOUNTS)
    pages = [e for e in log if not _is_probe(e.query)]
    counters = emu.counters()
    # From the first request's arrival to the last answer: the read without the process's
    # start-up (imports, sign-in, catalog).
    # (A log entry's time is when its answer was written; it started ``duration`` before.)
    read = max(e.time for e in log) - min(e.time - e.duration for e in log)
    run = {
        "wall_seconds": round(seconds, 2),
        "read_seconds": round(read, 2),
        "wall_modelled_seconds": round(seconds / time_scale, 1),
        "requests": len(log),
        "page_requests": len(pages),
        "probes": len(log) - len(pages),
        "throttled_429": counters["throttled"],
        "retry_after_violations": counters["retry_after_violations"],
        "peak_concurrency": counters["peak_concurrency"],
        "server_seconds": round(counters["server_seconds"], 1),
        "peak_rss_mb": round(peak, 1),
        "page_server_seconds": round(sum(e.server_seconds or 0.0 for e in pages), 3),
    }
    run.update(check_records(out_file, keys))
    out_file.unlink()
    return run


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's wall and read time, and the worst of the
    runs for what must hold in all of them (rows lost, duplicated, out of order; 429s,
    Retry-After violations; peak RSS)."""
    ranked = sorted(runs, key=lambda r: r["wall_seconds"])
    out = dict(ranked[len(ranked) // 2])
    out["wall_seconds_runs"] = [r["wall_seconds"] for r in runs]
    out["read_seconds_runs"] = [r["read_seconds"] for r in runs]
    for key in ("lost", "duplicated", "retry_after_violations", "throttled_429"):
        out[key] = max(r[key] for r in runs)
    out["in_modifiedon_order"] = all(r["in_modifiedon_order"] for r in runs)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--page-size", type=int, default=5000)
    p.add_argument("--prerendered", action="store_true", help="the client's cost, pre-rendered")
    p.add_argument("--parallel", action="store_true", help="the cost model: floor vs windows")
    p.add_argument("--servers", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=PARALLEL_TIME_SCALE)
    args = p.parse_args()
    if args.parallel:
        result = bench_parallel(args.rows, args.servers, time_scale=args.time_scale)
    elif args.prerendered:
        result = bench_prerendered(args.rows, args.page_size)
    else:
        result = bench_tap(args.rows, args.page_size)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
