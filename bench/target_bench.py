"""target-dynamics against a real organisation's costs: 50,000 account upserts by alternate key.

    python -m bench.target_bench [--rows 50000] [--time-scale 0.3] [--parallel 4]

Every run gets a fresh emulator in its own process (``dynamics-emulator --time-scale T
--service-protection``: the cost model charges each request a real web server's time and holds
the answer for T times it; the service protection limits are the real ones, their window scaled
alike), and the measured program runs as a whole process:

* **bulk**: the ``target-dynamics`` CLI, ``write_method`` auto: UpsertMultiple, 1,000 rows per
  request, at most ``--parallel`` in flight (the emulator's ``x-ms-dop-hint`` is 4);
* **batch**: the same CLI with ``write_method: batch``: ``$batch`` requests of 500 upserts;
* **raw**: the same UpsertMultiple bodies posted by a plain loop (``requests`` and a thread pool of
  ``--parallel``, one token, no validation, no retries): the reference for the client's own cost;
* **bad rows**: bulk again, with 1% of the records binding a contact that does not exist (the
  service refuses them, the target cannot know beforehand): every good row must be written and
  exactly the bad ones dead-lettered; the requests spent isolating them are reported;
* **one by one**: one PATCH per record, one after the other (the way the published figures were
  measured): its modelled floor is ``rows x (request + operation seconds)``; a plain loop measures
  a sample of ``--one-by-one-sample`` records to check the model.

For each: wall seconds, HTTP requests and modelled server seconds (the emulator's counters), rows
per request, the target's peak RSS, 429s. Goals: bulk wall <= 0.33 x batch wall and <= 0.05 x the
one-by-one floor, 0 rows lost, the bad rows exactly, target >= 0.8 x raw (records/s). Writes
bench/results-target.json (``make bench`` folds it into bench/results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
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

from dynamics_emulator.cost import CostModel
from dynamics_emulator.harness import ApiSession, EmulatorProcess, PinnedSession

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results-target.json"
STREAM_OPTIONS = {"account": {"key": ["accountnumber"]}}
ACCOUNT = "Microsoft.Dynamics.CRM.account"
BULK_ROWS = 1000
BATCH_ROWS = 500


# -- input ----------------------------------------------------------------------------------------


def make_records(n: int, prefix: str) -> list[dict[str, Any]]:
    """Enrichment rows for new accounts, by account number."""
    return [
        {
            "accountnumber": f"{prefix}-{i:08d}",
            "name": f"Bench Account {i}",
            "industrycode": 1 + (i % 33),
            "numberofemployees": 10 + i % 5000,
            "revenue": round(1000 + i * 1.37, 2),
            "description": f"Enriched by the benchmark, row {i}; score {i % 100}/100.",
            "lastusedincampaign": "2024-06-01T12:00:00Z",
        }
        for i in range(n)
    ]


def with_bad_rows(records: list[dict[str, Any]], rate: float) -> set[str]:
    """Make every ``1/rate``-th record bind a contact that does not exist; their numbers."""
    step = max(1, round(1 / rate))
    bad = set()
    for i in range(step // 2, len(records), step):
        records[i]["_primarycontactid_value"] = str(uuid.UUID(int=(1 << 110) + i))
        bad.add(records[i]["accountnumber"])
    return bad


def singer_file(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        schema = {
            "type": "SCHEMA",
            "stream": "account",
            "key_properties": ["accountnumber"],
            "schema": {"type": "object", "properties": {}},
        }
        fh.write(orjson.dumps(schema) + b"\n")
        for rec in records:
            fh.write(orjson.dumps({"type": "RECORD", "stream": "account", "record": rec}) + b"\n")
        fh.write(orjson.dumps({"type": "STATE", "value": {"done": len(records)}}) + b"\n")


# -- the emulator ---------------------------------------------------------------------------------


def start_emulator(workdir: Path, scale: float) -> EmulatorProcess:
    return EmulatorProcess(workdir, "--time-scale", str(scale), "--service-protection")


def counters(emu: EmulatorProcess) -> dict[str, Any]:
    url = f"{emu.connection.environment_url}/_emulator/counters"
    with PinnedSession(emu.connection.ca_bundle) as http:
        data: dict[str, Any] = http.get(url, timeout=30).json()
    return data


def spent(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "http_requests": after["requests"] - before["requests"],
        "server_seconds": round(after["server_seconds"] - before["server_seconds"], 1),
        "throttled": after["throttled"] - before["throttled"],
        "peak_concurrency": after["peak_concurrency"],
    }


def accounts_written(emu: EmulatorProcess, prefix: str) -> set[str]:
    """Account numbers in the emulator's store (its SQLite file, read-only)."""
    db = sqlite3.connect(f"file:{emu.workdir / 'org.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT accountnumber FROM account WHERE accountnumber LIKE ?", [f"{prefix}-%"]
        ).fetchall()
    finally:
        db.close()
    return {r[0] for r in rows}


# -- the target -----------------------------------------------------------------------------------


def run_target(
    emu: EmulatorProcess,
    tmp: Path,
    records: list[dict[str, Any]],
    parallel: int,
    **settings: Any,
) -> dict[str, Any]:
    data = tmp / "input.singer"
    singer_file(data, records)
    cfg = emu.connection.settings(
        metadata_cache_ttl=0,
        dead_letter_path=str(tmp / "dead.jsonl"),
        stream_options=STREAM_OPTIONS,
        max_parallel_batches=parallel,
        max_failed_records=len(records),
        **settings,
    )
    (tmp / "config.json").write_text(json.dumps(cfg))
    env = {**os.environ, **emu.connection.environ()}
    before = counters(emu)
    start = time.perf_counter()
    with data.open("rb") as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "target_dynamics", "--config", str(tmp / "config.json")],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.stderr.write(stderr[-3000:])
        raise SystemExit("the target failed")
    after = counters(emu)
    summary = next(line for line in stderr.splitlines() if "Summary for 'account'" in line)
    dead = []
    if (tmp / "dead.jsonl").exists():
        dead = [json.loads(line) for line in (tmp / "dead.jsonl").read_text().splitlines()]
    writes = _count(summary, " $batch requests") + _count(summary, " bulk requests")
    out = {
        "records": len(records),
        "seconds": round(seconds, 2),
        "records_per_s": round(len(records) / seconds),
        **spent(before, after),
        "write_requests": writes,
        "isolating_requests": _count(summary, " requests to isolate"),
        "records_per_request": round(
            len(records) / max(1, after["requests"] - before["requests"]), 1
        ),
        "records_per_write_request": round(len(records) / max(1, writes), 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "dead_letters": [d["record"]["accountnumber"] for d in dead],
        "summary": summary.split("| ")[-1],
    }
    return out


def _count(summary: str, label: str) -> int:
    """The number before ``label`` in the summary line (0 when absent)."""
    head, sep, _ = summary.partition(label)
    if not sep:
        head, sep, _ = summary.partition(label.replace(" requests", " request"))  # "1 bulk request"
    if not sep:
        return 0
    word = head.replace("(", " ").split()[-1]
    return int(word) if word.isdigit() else 0


# -- plain loops ----------------------------------------------------------------------------------


def _sessions(emu: EmulatorProcess) -> tuple[ApiSession, threading.local]:
    signed_in = emu.session()  # a token from the emulator's token endpoint, through msal
    return signed_in, threading.local()


def _session_for(local: threading.local, signed_in: ApiSession) -> requests.Session:
    session = getattr(local, "s", None)
    if session is None:
        session = local.s = PinnedSession(signed_in.connection.ca_bundle)
        session.headers.update(signed_in.headers)
    return session


def run_raw_bulk(
    emu: EmulatorProcess, records: list[dict[str, Any]], parallel: int
) -> dict[str, Any]:
    """The same UpsertMultiple bodies as the target's, posted by a plain thread pool."""
    bodies = []
    for i in range(0, len(records), BULK_ROWS):
        targets = [
            {
                "@odata.type": ACCOUNT,
                "@odata.id": f"accounts(accountnumber='{rec['accountnumber']}')",
                **rec,
            }
            for rec in records[i : i + BULK_ROWS]
        ]
        bodies.append(orjson.dumps({"Targets": targets}))
    signed_in, local = _sessions(emu)
    url = signed_in.url("accounts/Microsoft.Dynamics.CRM.UpsertMultiple")

    def post(body: bytes) -> None:
        r = _session_for(local, signed_in).post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=600
        )
        r.raise_for_status()

    before = counters(emu)
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(post, bodies))
    seconds = time.perf_counter() - start
    after = counters(emu)
    return {
        "records": len(records),
        "seconds": round(seconds, 2),
        "records_per_s": round(len(records) / seconds),
        **spent(before, after),
        "records_per_request": round(len(records) / len(bodies), 1),
    }


def run_one_by_one_sample(emu: EmulatorProcess, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One PATCH per record, one after the other (an upsert by the alternate key)."""
    signed_in, local = _sessions(emu)
    session = _session_for(local, signed_in)
    before = counters(emu)
    start = time.perf_counter()
    for rec in records:
        r = session.patch(
            signed_in.url(f"accounts(accountnumber='{rec['accountnumber']}')"),
            data=orjson.dumps(rec),
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        r.raise_for_status()
    seconds = time.perf_counter() - start
    after = counters(emu)
    return {
        "records": len(records),
        "seconds": round(seconds, 2),
        **spent(before, after),
        "records_per_request": 1.0,
    }


# -- the whole ------------------------------------------------------------------------------------


def bench(rows: int, scale: float, parallel: int, bad_rate: float, sample: int) -> dict[str, Any]:
    cost = CostModel()
    results: dict[str, Any] = {
        "rows": rows,
        "time_scale": scale,
        "max_parallel_batches": parallel,
        "bulk_size_rows": BULK_ROWS,
        "batch_size_rows": BATCH_ROWS,
        "bad_rate": bad_rate,
    }
    with tempfile.TemporaryDirectory(prefix="target-bench-") as tmp_s:
        tmp = Path(tmp_s)
        for name, settings in (
            ("bulk", {"write_method": "auto", "bulk_size_rows": BULK_ROWS}),
            ("batch", {"write_method": "batch", "batch_size_rows": BATCH_ROWS}),
        ):
            print(f"{name}: {rows:,} upserts ...", flush=True)
            (tmp / name).mkdir()
            with start_emulator(tmp / name / "emulator", scale) as emu:
                run = run_target(emu, tmp / name, make_records(rows, "BENCH"), parallel, **settings)
                run["lost"] = rows - len(accounts_written(emu, "BENCH"))
            results[name] = run
        print(f"raw: {rows:,} upserts in UpsertMultiple bodies ...", flush=True)
        with start_emulator(tmp / "raw-emulator", scale) as emu:
            results["raw"] = run_raw_bulk(emu, make_records(rows, "RAW"), parallel)
            results["raw"]["lost"] = rows - len(accounts_written(emu, "RAW"))
            print(f"one by one: a sample of {sample:,} PATCH requests ...", flush=True)
            results["one_by_one_sample"] = run_one_by_one_sample(emu, make_records(sample, "ONE"))
        print(f"bad rows: {rows:,} upserts, {bad_rate:.0%} of them refused ...", flush=True)
        records = make_records(rows, "BAD")
        bad = with_bad_rows(records, bad_rate)
        (tmp / "bad").mkdir()
        with start_emulator(tmp / "bad" / "emulator", scale) as emu:
            run = run_target(emu, tmp / "bad", records, parallel, bulk_size_rows=BULK_ROWS)
            written = accounts_written(emu, "BAD")
        good = {r["accountnumber"] for r in records} - bad
        run["bad_records"] = len(bad)
        run["good_rows_written"] = written == good
        run["exactly_the_bad_dead_lettered"] = set(run.pop("dead_letters")) == bad
        run["extra_requests"] = run["write_requests"] - (-(-rows // BULK_ROWS))
        results["bad_rows"] = run
    for name in ("bulk", "batch"):
        results[name].pop("dead_letters")
    one = cost.request_seconds + cost.write_seconds(1, "single")
    floor_seconds = rows * one
    results["one_by_one"] = {
        "records": rows,
        "modelled_server_seconds": round(floor_seconds, 1),
        "seconds": round(floor_seconds * scale, 1),  # the floor: nothing but the service's time
        "seconds_with_parallel_requests": round(floor_seconds * scale / parallel, 1),
        "http_requests": rows,
        "records_per_request": 1.0,
        "sample_seconds_per_record": round(
            results["one_by_one_sample"]["seconds"] / max(1, sample), 4
        ),
        "modelled_seconds_per_record_scaled": round(one * scale, 4),
    }
    bulk, batch, raw = results["bulk"], results["batch"], results["raw"]
    results["ratios"] = {
        "bulk_to_batch_wall": round(bulk["seconds"] / batch["seconds"], 3),
        "bulk_to_one_by_one_floor": round(bulk["seconds"] / results["one_by_one"]["seconds"], 3),
        "bulk_to_parallel_one_by_one_floor": round(
            bulk["seconds"] / results["one_by_one"]["seconds_with_parallel_requests"], 3
        ),
        "target_to_raw_records_per_s": round(bulk["records_per_s"] / raw["records_per_s"], 3),
    }
    ratios = results["ratios"]
    results["goals"] = {
        "bulk<=0.33*batch": ratios["bulk_to_batch_wall"] <= 0.33,
        "bulk<=0.05*one_by_one": ratios["bulk_to_one_by_one_floor"] <= 0.05,
        "0_lost": bulk["lost"] == 0 and batch["lost"] == 0,
        "bad_rows_exact": results["bad_rows"]["good_rows_written"]
        and results["bad_rows"]["exactly_the_bad_dead_lettered"],
        "target>=0.8*raw": ratios["target_to_raw_records_per_s"] >= 0.8,
    }
    return results


def print_table(results: dict[str, Any]) -> None:
    cols = [
        ("run", None),
        ("wall s", "seconds"),
        ("requests", "http_requests"),
        ("server s", "server_seconds"),
        ("rows/request", "records_per_request"),
        ("429s", "throttled"),
        ("peak RSS MB", "peak_rss_mb"),
    ]
    print("  " + " ".join(f"{h:>12}" for h, _ in cols))
    one = results["one_by_one"]
    rows = {
        "bulk": results["bulk"],
        "batch": results["batch"],
        "raw bulk": results["raw"],
        "bad rows": results["bad_rows"],
        "one by one": {**one, "server_seconds": one["modelled_server_seconds"]},
    }
    for name, data in rows.items():
        cells = [name] + [str(data.get(k, "-")) for _, k in cols[1:]]
        print("  " + " ".join(f"{c:>12}" for c in cells))
    print(f"  ratios: {json.dumps(results['ratios'])}")
    print(f"  goals:  {json.dumps(results['goals'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--time-scale", type=float, default=0.3)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--bad-rate", type=float, default=0.01)
    parser.add_argument("--one-by-one-sample", type=int, default=300)
    args = parser.parse_args(argv)
    results = bench(
        args.rows, args.time_scale, args.parallel, args.bad_rate, args.one_by_one_sample
    )
    print_table(results)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0  # the goals are in the results (and the table); make bench reports them


if __name__ == "__main__":
    raise SystemExit(main())
