"""target-dynamics throughput: 50,000 account upserts into the emulator, beside a raw loop.

    python -m bench.target_bench [--rows 50000] [--batch-size 500] [--parallel 4]

Two runs against one in-process emulator, in the same process run:

* **target**: the real ``target-dynamics`` CLI (a subprocess) reads a Singer file of ``--rows``
  account records (new primary ids, so each upsert creates a row) and writes them with
  ``batch_size_rows`` / ``max_parallel_batches``;
* **raw**: the same ``$batch`` bodies (built beforehand by ``dynamics_api.batch``), posted directly
  with ``requests`` from a thread pool of the same size, one token, no validation, no retries.

Reports records/s, records per HTTP request (every request the emulator saw: token, $metadata and
$batch), peak RSS of the target process and the ratio target/raw; writes bench/results-target.json.
Goals: at least 100 records per request, at least 0.5 of the raw loop.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import requests

from dynamics_api.auth import TokenProvider
from dynamics_api.batch import BatchOperation, encode_batch
from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-target.json"


def make_records(n: int, offset: int) -> list[dict[str, Any]]:
    """Account rows with new GUIDs and a realistic handful of enrichment columns."""
    out = []
    for i in range(n):
        out.append(
            {
                "accountid": str(uuid.UUID(int=(offset + i + 1) * 7919 + (1 << 120))),
                "name": f"Bench Account {offset + i}",
                "accountnumber": f"BENCH-{offset + i:08d}",
                "industrycode": 1 + (i % 33),
                "numberofemployees": 10 + i % 5000,
                "revenue": round(1000 + i * 1.37, 2),
                "description": f"Enriched by the benchmark, row {i}; score {i % 100}/100.",
                "lastusedincampaign": "2024-06-01T12:00:00Z",
            }
        )
    return out


def singer_file(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        schema = {
            "type": "SCHEMA",
            "stream": "account",
            "key_properties": ["accountid"],
            "schema": {"type": "object", "properties": {}},
        }
        fh.write(orjson.dumps(schema) + b"\n")
        for rec in records:
            fh.write(orjson.dumps({"type": "RECORD", "stream": "account", "record": rec}) + b"\n")
        fh.write(orjson.dumps({"type": "STATE", "value": {"done": True}}) + b"\n")


def run_target(
    emu: Emulator, tmp: Path, records: list[dict[str, Any]], batch: int, parallel: int
) -> dict[str, Any]:
    data = tmp / "input.singer"
    singer_file(data, records)
    cfg = emu.tap_config(
        metadata_cache_ttl=0,
        dead_letter_path=str(tmp / "dead.jsonl"),
        batch_size_rows=batch,
        max_parallel_batches=parallel,
    )
    (tmp / "config.json").write_text(json.dumps(cfg))
    env = {**os.environ, "REQUESTS_CA_BUNDLE": emu.ca_bundle}
    emu.clear_log()
    start = time.perf_counter()
    with data.open("rb") as stdin:
        proc = subprocess.run(
            [sys.executable, "-m", "target_dynamics", "--config", str(tmp / "config.json")],
            stdin=stdin,
            capture_output=True,
            cwd=ROOT,
            env=env,
            check=False,
        )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode()[-3000:])
        raise SystemExit("the target failed")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    requests_seen = len([e for e in emu.log if e.path.startswith("/")])
    batches = [e for e in emu.log if e.path.endswith("$batch")]
    return {
        "records": len(records),
        "seconds": seconds,
        "records_per_s": len(records) / seconds,
        "http_requests": requests_seen,
        "batch_requests": len(batches),
        "records_per_request": len(records) / requests_seen,
        "peak_rss_mb": peak_mb,
    }


def run_raw(
    emu: Emulator, records: list[dict[str, Any]], batch: int, parallel: int
) -> dict[str, Any]:
    os.environ["REQUESTS_CA_BUNDLE"] = emu.ca_bundle
    tokens = TokenProvider.from_config(emu.tap_config())
    token = tokens.token()
    bodies = []
    for i in range(0, len(records), batch):
        ops = []
        for rec in records[i : i + batch]:
            payload = {k: v for k, v in rec.items() if k != "accountid"}
            ops.append(
                BatchOperation("PATCH", f"accounts({rec['accountid']})", {}, orjson.dumps(payload))
            )
        bodies.append(encode_batch(ops))
    local = threading.local()
    url = f"{emu.url}/api/data/v9.2/$batch"

    def post(enc: Any) -> None:
        session = getattr(local, "s", None)
        if session is None:
            session = local.s = requests.Session()
            session.verify = emu.ca_bundle
        r = session.post(
            url,
            data=enc.body,
            timeout=300,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": enc.content_type,
                "Prefer": "odata.continue-on-error",
                "OData-Version": "4.0",
                "OData-MaxVersion": "4.0",
                "Accept": "application/json",
            },
        )
        r.raise_for_status()

    emu.clear_log()
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(post, bodies))
    seconds = time.perf_counter() - start
    return {
        "records": len(records),
        "seconds": seconds,
        "records_per_s": len(records) / seconds,
        "http_requests": len(bodies),
        "records_per_request": len(records) / len(bodies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args(argv)
    saved_bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    with Emulator() as emu, tempfile.TemporaryDirectory() as tmp:
        target = run_target(
            emu, Path(tmp), make_records(args.rows, 0), args.batch_size, args.parallel
        )
        raw = run_raw(emu, make_records(args.rows, args.rows), args.batch_size, args.parallel)
    if saved_bundle is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = saved_bundle
    ratio = target["records_per_s"] / raw["records_per_s"]
    result = {
        "rows": args.rows,
        "batch_size_rows": args.batch_size,
        "max_parallel_batches": args.parallel,
        "target": target,
        "raw": raw,
        "ratio_target_to_raw": ratio,
        "goals": {
            "records_per_request>=100": target["records_per_request"] >= 100,
            "ratio>=0.5": ratio >= 0.5,
        },
    }
    print(
        f"{'path':<8} {'records/s':>10} {'seconds':>8} {'requests':>9} {'rec/request':>12} "
        f"{'peak RSS MB':>12}"
    )
    print(
        f"{'target':<8} {target['records_per_s']:>10.0f} {target['seconds']:>8.2f} "
        f"{target['http_requests']:>9} {target['records_per_request']:>12.1f} "
        f"{target['peak_rss_mb']:>12.1f}"
    )
    print(
        f"{'raw':<8} {raw['records_per_s']:>10.0f} {raw['seconds']:>8.2f} "
        f"{raw['http_requests']:>9} {raw['records_per_request']:>12.1f} {'-':>12}"
    )
    print(f"ratio target/raw: {ratio:.2f}")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
