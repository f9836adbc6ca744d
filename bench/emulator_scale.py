"""Serve N accounts from the emulator CLI and page through all of them; report the emulator's
start-up time, serving rate and peak memory (VmHWM of its process).

    python -m bench.emulator_scale --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import orjson

from dynamics_emulator.harness import ApiSession, EmulatorProcess


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def page_through(session: ApiSession, table_set: str) -> tuple[int, int, float]:
    session.headers["Prefer"] = "odata.maxpagesize=5000"
    url: str | None = session.url(table_set)
    rows = pages = 0
    start = time.perf_counter()
    while url:
        r = session.get(url, timeout=300)
        r.raise_for_status()
        body = orjson.loads(r.content)
        rows += len(body["value"])
        pages += 1
        url = body.get("@odata.nextLink")
    return rows, pages, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--table", default="account")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="emu-scale-") as tmp:
        t0 = time.perf_counter()
        with EmulatorProcess(tmp, "--rows", str(args.rows), "--table", args.table) as emu:
            ready = time.perf_counter() - t0
            rss_ready = peak_rss_mb(emu.pid)
            rows, pages, secs = page_through(emu.session(), args.table + "s")
            rss_peak = peak_rss_mb(emu.pid)
    result = {
        "rows": rows,
        "pages": pages,
        "startup_s": round(ready, 1),
        "serve_s": round(secs, 1),
        "rows_per_s": round(rows / secs),
        "peak_rss_after_seed_mb": round(rss_ready, 1),
        "peak_rss_mb": round(rss_peak, 1),
    }
    print(json.dumps(result, indent=2))
    return 0 if rows == args.rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
