"""Tap throughput: N accounts from the emulator through the real tap-dynamics CLI to /dev/null,
side by side with the raw loop (the same pages fetched and parsed, nothing else).

    python -m bench.tap_bench --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dynamics_emulator import seed
from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[1]


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Run a child; return (wall seconds, its own peak RSS in MB, stdout or b'')."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[2:4]} exited {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024, out


def bench_tap(rows: int, page_size: int = 5000) -> dict[str, Any]:
    counts = seed.default_counts()
    counts["account"] = rows
    t0 = time.perf_counter()
    with Emulator(counts=counts) as emu, tempfile.TemporaryDirectory() as tmp_s:
        seeded = time.perf_counter() - t0
        tmp = Path(tmp_s)
        env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
        cfg = emu.tap_config(
            metadata_cache_dir=str(tmp / "cache"), page_size=page_size, streams=["account"]
        )
        (tmp / "config.json").write_text(json.dumps(cfg))
        disc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tap_dynamics",
                "--config",
                str(tmp / "config.json"),
                "--discover",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
        )
        catalog = json.loads(disc.stdout)
        for entry in catalog["streams"]:
            for md in entry["metadata"]:
                if md["breadcrumb"] == []:
                    md["metadata"]["selected"] = entry["tap_stream_id"] == "account"
        (tmp / "catalog.json").write_text(json.dumps(catalog))

        # The tap: the real CLI, records to /dev/null.
        emu.clear_log()
        tap_cmd = [
            sys.executable,
            "-m",
            "tap_dynamics",
            "--config",
            str(tmp / "config.json"),
            "--catalog",
            str(tmp / "catalog.json"),
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(
            tap_cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(proc.pid, 0)
        tap_seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("the tap failed")
        tap_peak = usage.ru_maxrss / 1024
        pages = emu.requests("/api/data/v9.2/accounts")
        tap_requests = len(pages) + len(emu.requests("/oauth2/"))
        first = pages[0]

        # The raw loop: same first URL (same $select/$orderby), same page size.
        conn = {
            **cfg,
            "ca_bundle": emu.ca_bundle,
            "first_url": f"{emu.url}{first.path}?{first.query}",
        }
        (tmp / "conn.json").write_text(json.dumps(conn))
        raw_seconds, raw_peak, out = run_measured(
            [sys.executable, "-m", "bench.raw_loop", str(tmp / "conn.json")], env
        )
        raw = json.loads(out)
        assert raw["rows"] == rows, raw
        raw["loop_seconds"] = raw["seconds"]
        raw["seconds"] = raw_seconds  # whole process, as for the tap: start-up counts for both
    return {
        "rows": rows,
        "page_size": page_size,
        "seed_seconds": round(seeded, 1),
        "tap_seconds": round(tap_seconds, 2),
        "tap_records_per_s": round(rows / tap_seconds),
        "tap_requests": tap_requests,
        "tap_requests_per_1000": round(tap_requests * 1000 / rows, 3),
        "tap_peak_rss_mb": round(tap_peak, 1),
        "raw_seconds": round(raw["seconds"], 2),
        "raw_loop_only_seconds": round(raw["loop_seconds"], 2),
        "raw_records_per_s": round(rows / raw["seconds"]),
        "raw_peak_rss_mb": round(raw_peak, 1),
        "ratio_to_raw": round(raw["seconds"] / tap_seconds, 2),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--page-size", type=int, default=5000)
    args = p.parse_args()
    print(json.dumps(bench_tap(args.rows, args.page_size), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
