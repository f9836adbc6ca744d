"""`make demo`: start the emulator, run the main job against it, stop the emulator, say where the
output is. Everything runs locally: the emulator is a real HTTPS service with its own private CA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dynamics_emulator.harness import ApiSession, Connection, EmulatorProcess, EmulatorStartError

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".emulator"
OUT = ROOT / "output" / "demo"


INCIDENT_STATUS = {  # Dataverse's standard case status reasons
    1: "In Progress",
    2: "On Hold",
    3: "Waiting for Details",
    4: "Researching",
    5: "Problem Solved",
    1000: "Information Provided",
    6: "Cancelled",
    2000: "Merged",
}
PRIORITY = {1: "High", 2: "Normal", 3: "Low"}
JSONL = OUT / "jsonl"


def meltano(args: list[str], env: dict[str, str]) -> None:
    cmd = [str(Path(sys.executable).parent / "meltano"), *args]
    print(f"\n$ meltano {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise SystemExit(f"meltano {args[0]} failed (exit {proc.returncode}):\n{tail}")


def read_jsonl(name: str) -> list[dict[str, Any]]:
    path = JSONL / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summary(cases: list[dict[str, Any]]) -> None:
    from datetime import datetime
    from statistics import median

    def ts(value: str) -> datetime:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))

    print(f"\nService performance analytics over {len(cases)} cases")
    print("  cases by status and priority:")
    counts: dict[tuple[str, str], int] = {}
    for c in cases:
        key = (
            INCIDENT_STATUS.get(c["statuscode"], str(c["statuscode"])),
            PRIORITY.get(c["prioritycode"], str(c["prioritycode"])),
        )
        counts[key] = counts.get(key, 0) + 1
    statuses = sorted(
        {k[0] for k in counts}, key=lambda s: -sum(v for k, v in counts.items() if k[0] == s)
    )
    print(f"    {'status':<22}" + "".join(f"{p:>8}" for p in PRIORITY.values()))
    for st in statuses:
        print(f"    {st:<22}" + "".join(f"{counts.get((st, p), 0):>8}" for p in PRIORITY.values()))
    resolved = [c for c in cases if c.get("statecode") == 1]
    # Resolution time: creation to the last change of a resolved case (the resolution itself).
    hours = [(ts(c["modifiedon"]) - ts(c["createdon"])).total_seconds() / 3600 for c in resolved]
    if hours:
        print(
            f"  resolved cases: {len(resolved)}; "
            f"median resolution time {median(hours) / 24:.1f} days"
        )


def plugin_env(prefix: str, conn: Connection, **settings: str) -> dict[str, str]:
    """Meltano's environment variables for a plugin's settings (``TAP_DYNAMICS_CLIENT_ID``, ...)."""
    return {f"{prefix}_{k.upper()}": str(v) for k, v in conn.settings(**settings).items()}


def main_job(emu: EmulatorProcess) -> int:
    """meltano run tap-dynamics target-jsonl, twice: a full extract, then an incremental one."""
    cache = str(WORK / "metadata-cache")
    env = {
        **os.environ,
        **emu.connection.environ(),
        **plugin_env("TAP_DYNAMICS", emu.connection, metadata_cache_dir=cache),
    }
    if JSONL.exists():
        for f in JSONL.glob("*.jsonl"):
            f.unlink()
    meltano(["install"], env)
    meltano(["run", "--full-refresh", "tap-dynamics", "target-jsonl"], env)
    cases = read_jsonl("incident")
    landed = {
        name: len(read_jsonl(name))
        for name in ("account", "contact", "incident", "systemuser", "team")
    }
    print("rows landed: " + ", ".join(f"{k} {v}" for k, v in landed.items()))
    summary(cases)
    seeded = emu.info["rows"]["incident"]
    if landed["incident"] != seeded:
        raise SystemExit(f"expected {seeded} cases, {landed['incident']} landed")

    # Change three cases in the organisation, then run again: only they come back.
    http = emu.session()
    changed = touch_cases(http, 3)
    before = len(cases)
    meltano(["run", "tap-dynamics", "target-jsonl"], env)
    after = read_jsonl("incident")[before:]
    ids = {c["incidentid"] for c in after}
    print(
        f"\nIncremental run: {len(after)} case rows "
        f"(changed: {len(changed)}, all present: {changed <= ids})"
    )
    print(f"\nOutput: {JSONL}/*.jsonl")
    if not changed <= ids:
        return 1
    return writeback(http, env, emu.connection)


def touch_cases(http: ApiSession, n: int) -> set[str]:
    rows = http.get(http.url(f"incidents?$select=title&$top={n}"), timeout=30).json()["value"]
    for r in rows:
        http.patch(
            http.url(f"incidents({r['incidentid']})"),
            json={"title": r["title"] + " (escalated)"},
            timeout=30,
        ).raise_for_status()
    return {r["incidentid"] for r in rows}


ENRICHMENT = ROOT / "data" / "enrichment" / "accounts.jsonl"
SHOW = ("name", "industrycode", "numberofemployees", "revenue", "creditlimit")


def show_accounts(http: ApiSession, numbers: list[str], title: str) -> dict[str, Any]:
    print(f"\n{title}")
    print(f"  {'accountnumber':<14}" + "".join(f"{c:>20}" for c in SHOW))
    found = {}
    for number in numbers:
        r = http.get(
            http.url(f"accounts(accountnumber='{number}')?$select={','.join(SHOW)}"), timeout=30
        )
        if r.status_code == 404:
            print(f"  {number:<14}" + f"{'(no such account)':>20}")
            continue
        r.raise_for_status()
        row = r.json()
        found[number] = row
        cells = "".join(f"{str(row.get(c))[:19]:>20}" for c in SHOW)
        print(f"  {number:<14}{cells}")
    return found


def writeback(http: ApiSession, env: dict[str, str], conn: Connection) -> int:
    """meltano run tap-jsonl target-dynamics: enrichment lands on accounts by account number."""
    lines = [json.loads(x) for x in ENRICHMENT.read_text().splitlines() if x.strip()]
    numbers = [lines[0]["accountnumber"], lines[1]["accountnumber"], lines[-1]["accountnumber"]]
    show_accounts(http, numbers, "Accounts before the writeback:")
    dead = OUT / "dead-letter.jsonl"
    dead.unlink(missing_ok=True)
    wenv = {
        **env,
        **plugin_env(
            "TARGET_DYNAMICS",
            conn,
            dead_letter_path=str(dead),
            metadata_cache_dir=str(WORK / "metadata-cache"),
        ),
    }
    meltano(["run", "--full-refresh", "tap-jsonl", "target-dynamics"], wenv)
    after = show_accounts(http, numbers, "Accounts after the writeback:")
    failed = len(dead.read_text().splitlines()) if dead.exists() else 0
    print(f"\nEnrichment file: {len(lines)} records; dead-lettered: {failed}")
    ok = len(after) == len(numbers) and failed == 0
    for n in numbers:
        want = next(x for x in lines if x["accountnumber"] == n)
        ok = ok and after.get(n, {}).get("numberofemployees") == want["numberofemployees"]
    return 0 if ok else 1


def main() -> int:
    started = time.perf_counter()
    try:
        emu = EmulatorProcess(WORK)
    except EmulatorStartError as exc:
        raise SystemExit(str(exc)) from None
    print("\n".join(emu.banner))
    with emu:
        rc = main_job(emu)
    print(f"Demo finished in {time.perf_counter() - started:.1f}s; the emulator is stopped.")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
