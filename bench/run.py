"""`make bench`: every benchmark, a table on stdout and bench/results.json.

    python -m bench.run            # everything (about 10 minutes on 2 cores)
    python -m bench.run --quick    # tap at 100,000 only, no comparison
    python -m bench.run --tap-only # the tap's parts only, into the existing results

Parts, each against its own emulator, the measured programs in their own processes:

* tap: 100,000 and 1,000,000 accounts through the real CLI to /dev/null (default settings:
  windows side by side, three runs each), beside the raw loop (bench/tap_bench.py); records/s,
  requests per 1000 records, peak RSS, ratio to raw; the highest peak RSS at 1,000,000 must stay
  within 10% of the highest at 100,000. Then the client's own cost (pre-rendered pages, one
  chain, tap/raw >= 0.6) and a real organisation's latency (cost model, 200,000 accounts, 1 and
  2 web servers): the sequential floor, one chain's wall time, the windows' wall time (<= 0.30
  and <= 0.17 of the floor);
* discovery: crm_schema.xml and a generated 40 MB CSDL of the same shape (its entity types
  repeated under new names): parse time and peak traced memory, cold and from the cache;
* target: 50,000 upserts with the bulk messages, through ``$batch``, one by one (modelled) and
  with 1% bad rows, beside the raw UpsertMultiple loop, against a real organisation's costs
  (bench/target_bench.py);
* tap-ms-dynamics (the singer-io tap, PyPI) in its own virtual environment, when it can be run
  against the emulator without changing its code; otherwise the precise reason.

Timing goals live here, not in tests.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.delta_bench import bench_delta
from bench.discovery_bench import GENERATED_MB, bench_big_discovery, bench_discovery
from bench.tap_bench import PARALLEL_REPEATS, bench_parallel, bench_prerendered, bench_tap

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tap-dynamics-bench"
MEMORY_GROWTH_LIMIT = 0.10
#: The packages whose processes are measured (the raw loop is in ``bench``).
MEASURED = ("dynamics_api", "dynamics_singer", "tap_dynamics", "target_dynamics", "bench")

# -- target ---------------------------------------------------------------------------------------


def bench_target() -> dict[str, Any]:
    out = ROOT / "bench" / "results-target.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.target_bench"],
        cwd=ROOT,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        return {"error": f"bench.target_bench exited {proc.returncode}"}
    data: dict[str, Any] = json.loads(out.read_text())
    return data


# -- tap-ms-dynamics ------------------------------------------------------------------------------

TMSD_VERSION = "0.1.1"
TMSD_TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/token"  # noqa: S105 - a URL


def bench_tap_ms_dynamics() -> dict[str, Any]:
    """Install tap-ms-dynamics in its own venv and decide, from its installed source, whether it
    can run against the emulator unchanged."""
    venv = CACHE / f"tap-ms-dynamics-{TMSD_VERSION}"
    python = venv / "bin" / "python"
    result: dict[str, Any] = {"package": f"tap-ms-dynamics=={TMSD_VERSION}", "venv": str(venv)}
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"tap-ms-dynamics=={TMSD_VERSION}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0:
        result["ran"] = False
        result["reason"] = "pip install failed: " + pip.stderr.strip().splitlines()[-1][:300]
        return result
    where = subprocess.run(
        [
            str(python),
            "-I",  # isolated: not this project's tap_dynamics from the working directory
            "-c",
            "import importlib.util as u; "
            "print(u.find_spec('tap_dynamics').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    client = Path(where) / "client.py"
    source = client.read_text()
    line = next(
        (i for i, text in enumerate(source.splitlines(), 1) if TMSD_TOKEN_URL in text), None
    )
    prefilled = re.search(r"access_token\s*=\s*(config|self\.config)", source) is not None
    result["installed_module"] = "tap_dynamics (the same import name as this project's tap)"
    if line is not None and not prefilled:
        result["ran"] = False
        result["reason"] = (
            f"tap_dynamics/client.py:{line} of tap-ms-dynamics {TMSD_VERSION} posts the config's "
            f"refresh_token to the fixed {TMSD_TOKEN_URL} before its first request "
            "(DynamicsClient._ensure_access_token, called whenever access_token is None), and no "
            "setting pre-fills an access token or changes that URL; its required settings are "
            "start_date, organization_uri, user_agent, client_id, client_secret, redirect_uri and "
            "refresh_token. Running it against the emulator would take a TLS-intercepting proxy "
            "for the public login host (HTTPS_PROXY plus a certificate for that name), i.e. "
            "faking the public cloud's DNS name, which this benchmark does not do. Discovery "
            "would also need the EntityDefinitions endpoint, which the emulator does not serve "
            "(a --catalog run skips it)."
        )
    else:
        result["ran"] = False
        result["reason"] = "its token URL is no longer fixed: extend bench/run.py to run it"
    return result


# -- the table ------------------------------------------------------------------------------------


def _print_section(title: str, data: dict[str, Any]) -> None:
    print(f"\n{title}", flush=True)
    for k, v in data.items():
        text = json.dumps(v) if isinstance(v, dict | list) else v
        print(f"  {k:<36} {text}")


def _tap_table(taps: dict[str, dict[str, Any]]) -> None:
    cols = [
        ("rows", "rows"),
        ("tap rec/s", "tap_records_per_s"),
        ("raw rec/s", "raw_records_per_s"),
        ("tap/raw", "ratio_to_raw"),
        ("req/1000", "tap_requests_per_1000"),
        ("tap RSS MB", "tap_peak_rss_mb"),
        ("raw RSS MB", "raw_peak_rss_mb"),
        ("tap s", "tap_seconds"),
    ]
    print("\ntap: emulator -> tap-dynamics -> /dev/null, beside the raw loop")
    print("  " + " ".join(f"{h:>11}" for h, _ in cols))
    for data in taps.values():
        print("  " + " ".join(f"{data.get(k, '-')!s:>11}" for _, k in cols))


#: The windows' wall time as a share of the sequential floor, by web servers (issue 11).
PARALLEL_GOALS = {1: 0.30, 2: 0.17}
PRERENDERED_GOAL = 0.6


def _parallel_table(runs: dict[str, dict[str, Any]]) -> None:
    print(
        "\ntap on a latency-bound service: cost model, service protection, x-ms-dop-hint 4, "
        f"whole processes, the median of {PARALLEL_REPEATS} runs each (alternating)"
    )
    head = ["servers", "floor s", "seq wall", "seq/floor", "par wall", "par/floor", "goal"]
    head += ["requests", "probes", "429s", "violations", "peak RSS"]
    print("  " + " ".join(f"{h:>10}" for h in head))
    for data in runs.values():
        seq, par = data["sequential"], data["parallel"]
        cells = [
            data["web_servers"],
            data["floor_real_seconds"],
            seq["wall_seconds"],
            seq["ratio_to_floor"],
            par["wall_seconds"],
            par["ratio_to_floor"],
            data["goal"],
            par["requests"],
            par["probes"],
            seq["throttled_429"] + par["throttled_429"],
            seq["retry_after_violations"] + par["retry_after_violations"],
            max(seq["peak_rss_mb"], par["peak_rss_mb"]),
        ]
        print("  " + " ".join(f"{c!s:>10}" for c in cells))


def bench_tap_latency() -> dict[str, Any]:
    """The client's cost (pre-rendered) and the windows on a latency-bound service."""
    out: dict[str, Any] = {}
    print("tap: 200,000 accounts, pre-rendered pages ...", flush=True)
    pre = bench_prerendered(200_000)
    pre["ok"] = pre["ratio_to_raw"] >= PRERENDERED_GOAL
    out["tap_prerendered_200k"] = pre
    _print_section("tap vs raw loop, pre-rendered pages (the client's own cost)", pre)
    runs = {}
    for servers, goal in PARALLEL_GOALS.items():
        print(f"tap: 200,000 accounts, cost model, {servers} web server(s) ...", flush=True)
        data = bench_parallel(200_000, servers)
        data["goal"] = goal
        data["ok"] = data["parallel"]["ratio_to_floor"] <= goal
        runs[f"tap_parallel_{servers}_servers"] = data
    out.update(runs)
    _parallel_table(runs)
    return out


def compile_measured() -> str:
    """Compile the measured packages' bytecode, as pip does when it installs them: in this
    editable checkout, with ``PYTHONDONTWRITEBYTECODE`` set (as on the CI machine), every process
    would compile some 60 modules from source when it starts (0.05-0.07 s of each run)."""
    for package in MEASURED:
        compileall.compile_dir(ROOT / package, quiet=1)
    return f"compiled before measuring: {', '.join(MEASURED)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark.")
    parser.add_argument("--quick", action="store_true", help="tap at 100,000 only; no comparison")
    parser.add_argument(
        "--tap-only",
        action="store_true",
        help="the tap's parts only; their results replace the tap's in bench/results.json",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "bytecode": compile_measured(),
    }
    taps: dict[str, dict[str, Any]] = {}
    for rows in [100_000] if args.quick else [100_000, 1_000_000]:
        print(f"tap: {rows:,} accounts ...", flush=True)
        taps[f"tap_{rows // 1000}k"] = bench_tap(rows)
    results.update(taps)
    _tap_table(taps)
    if "tap_1000k" in taps:
        small, big = taps["tap_100k"]["tap_peak_rss_mb"], taps["tap_1000k"]["tap_peak_rss_mb"]
        growth = big / small - 1
        results["tap_memory"] = {
            "peak_rss_100k_mb": small,
            "peak_rss_1m_mb": big,
            "peak_rss_100k_runs_mb": taps["tap_100k"]["tap_peak_rss_runs_mb"],
            "peak_rss_1m_runs_mb": taps["tap_1000k"]["tap_peak_rss_runs_mb"],
            "growth": round(growth, 3),
            "limit": MEMORY_GROWTH_LIMIT,
            "ok": growth <= MEMORY_GROWTH_LIMIT,
            # The raw loop keeps nothing between pages: its growth is the floor that requests,
            # orjson and the allocator give; the tap's own share is the difference.
            "raw_loop_growth": round(
                taps["tap_1000k"]["raw_peak_rss_mb"] / taps["tap_100k"]["raw_peak_rss_mb"] - 1, 3
            ),
        }
        _print_section("tap memory, 1,000,000 vs 100,000 rows", results["tap_memory"])
    results.update(bench_tap_latency())
    if args.tap_only:
        kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        kept.update({k: v for k, v in results.items() if k != "machine"})
        kept["tap_machine"] = results["machine"]
        kept["tap_seconds_total"] = round(time.perf_counter() - started, 1)
        RESULTS.write_text(json.dumps(kept, indent=2) + "\n")
        print(f"\nthe tap's results written to {RESULTS.relative_to(ROOT)}")
        return 0

    print("\ndiscovery ...", flush=True)
    results["discovery"] = bench_discovery()
    _print_section("discovery: crm_schema.xml", results["discovery"])
    results["discovery_40mb"] = bench_big_discovery()
    _print_section(f"discovery: generated {GENERATED_MB} MB CSDL", results["discovery_40mb"])

    print("\ntarget: 50,000 upserts (bulk, batch, raw, bad rows) ...", flush=True)
    target = bench_target()
    results["target"] = target
    if "bulk" in target:
        summary = {
            f"{run}_{k}": target[run][k]
            for run in ("bulk", "batch", "raw", "bad_rows")
            for k in ("seconds", "http_requests", "server_seconds")
        }
        summary |= {"one_by_one_floor_seconds": target["one_by_one"]["seconds"]}
        summary |= target["ratios"] | {"goals": target["goals"]}
        _print_section("target: account upserts against a real organisation's costs", summary)
    else:
        _print_section("target", target)

    if not args.quick:
        print("\nchange tracking vs modifiedon: 100,000 accounts, 1% changed ...", flush=True)
        delta = bench_delta(100_000)
        results["delta"] = delta
        _print_section(
            "second run: change tracking vs modifiedon",
            {f"{mode}_{k}": v for mode, d in delta["second_run"].items() for k, v in d.items()}
            | {
                "wildcard_discovery_crm_schema_s": delta["discovery_wildcard_crm_schema"][
                    "seconds_whole_cli"
                ]
            },
        )

        print("\ntap-ms-dynamics ...", flush=True)
        results["tap_ms_dynamics"] = bench_tap_ms_dynamics()
        _print_section(
            "tap-ms-dynamics (singer-io) against the emulator", results["tap_ms_dynamics"]
        )

    results["total_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
