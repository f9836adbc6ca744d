"""`make bench`: every benchmark, a table on stdout and bench/results.json.

Timing goals live here, not in tests. Each part runs in its own processes against an emulator.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.discovery_bench import bench_discovery
from bench.tap_bench import bench_tap

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"


def _target() -> dict[str, Any] | None:
    script = ROOT / "bench" / "target_bench.py"
    if not script.exists():
        return None
    out = ROOT / "bench" / "results-target.json"
    proc = subprocess.run([sys.executable, "-m", "bench.target_bench"], cwd=ROOT, check=False)
    if proc.returncode != 0:
        return {"error": f"bench.target_bench exited {proc.returncode}"}
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _row(name: str, value: Any) -> str:
    return f"  {name:<34} {value}"


def main() -> int:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    print("tap: 100,000 accounts, emulator -> tap-dynamics -> /dev/null", flush=True)
    tap = bench_tap(100_000)
    results["tap_100k"] = tap
    for k, v in tap.items():
        print(_row(k, v))
    print("\ndiscovery: crm_schema.xml", flush=True)
    disc = bench_discovery()
    results["discovery"] = disc
    for k, v in disc.items():
        print(_row(k, v))
    target = _target()
    if target is not None:
        print("\ntarget: account upserts into the emulator", flush=True)
        results["target"] = target
        for k, v in target.items():
            print(_row(k, v if not isinstance(v, dict) else json.dumps(v)))
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
