"""Change tracking against modifiedon: 100,000 accounts, 1% changed between runs; the time of the
second (delta) run of each, through the real tap CLI. Also: discovery of every custom table
(`custom_entities: ["*"]`) of the real crm_schema.xml.

    python -m bench.delta_bench --rows 100000
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

from bench.discovery_bench import CRM_SCHEMA
from dynamics_emulator import seed
from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[1]


def _tap(
    emu: Emulator, tmp: Path, config: dict[str, Any], args: list[str]
) -> tuple[float, list[bytes]]:
    cfg = emu.tap_config(metadata_cache_dir=str(tmp / "cache"), **config)
    path = tmp / f"config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tap_dynamics", "--config", str(path), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - start, proc.stdout.splitlines()


def _state(lines: list[bytes]) -> dict[str, Any]:
    states = [json.loads(x)["value"] for x in lines if x.startswith(b'{"type":"STATE"')]
    return states[-1]


def _records(lines: list[bytes]) -> int:
    return sum(1 for x in lines if x.startswith(b'{"type":"RECORD"'))


def bench_delta(rows: int) -> dict[str, Any]:
    counts = seed.default_counts()
    counts["account"] = rows
    out: dict[str, Any] = {"rows": rows, "changed": rows // 100}
    with Emulator(counts=counts) as emu, tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        base = {"streams": ["account"]}
        modes: dict[str, dict[str, Any]] = {
            "change_tracking": {"change_tracking": ["account"]},
            "modifiedon": {},
        }
        cats: dict[str, list[str]] = {}
        for mode, cfg in modes.items():
            # One catalog per mode: a catalog discovered with change tracking has no
            # replication key, and would make the other mode read the full table.
            _, disc = _tap(emu, tmp, {**base, **cfg}, ["--discover"])
            catalog = json.loads(b"\n".join(disc))
            for entry in catalog["streams"]:
                for md in entry["metadata"]:
                    if md["breadcrumb"] == []:
                        md["metadata"]["selected"] = True
            (tmp / f"catalog-{mode}.json").write_text(json.dumps(catalog))
            cats[mode] = ["--catalog", str(tmp / f"catalog-{mode}.json")]
        results: dict[str, dict[str, Any]] = {}
        first: dict[str, dict[str, Any]] = {}
        for mode, cfg in modes.items():
            seconds, lines = _tap(emu, tmp, {**base, **cfg}, cats[mode])
            first[mode] = {"seconds": round(seconds, 2), "records": _records(lines)}
            (tmp / f"state-{mode}.json").write_text(json.dumps(_state(lines)))
        # 1% of the rows change (spread over the table), after both first runs.
        ids = emu.row_ids("account")[::100]
        emu.update_rows("account", ids, {"description": "changed for the delta benchmark"})
        for mode, cfg in modes.items():
            emu.clear_log()
            seconds, lines = _tap(
                emu, tmp, {**base, **cfg}, [*cats[mode], "--state", str(tmp / f"state-{mode}.json")]
            )
            results[mode] = {
                "seconds": round(seconds, 2),
                "records": _records(lines),
                "requests": len(emu.requests("/api/data/v9.2/accounts")),
            }
        out["first_run"] = first
        out["second_run"] = results
    with Emulator(csdl_path=CRM_SCHEMA) as emu, tempfile.TemporaryDirectory() as tmp_s:
        seconds, lines = _tap(
            emu, Path(tmp_s), {"custom_entities": ["*"], "metadata_cache_ttl": 0}, ["--discover"]
        )
        streams = json.loads(b"\n".join(lines))["streams"]
        out["discovery_wildcard_crm_schema"] = {
            "seconds_whole_cli": round(seconds, 2),
            "streams": len(streams),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    args = p.parse_args()
    print(json.dumps(bench_delta(args.rows), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
