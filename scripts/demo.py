"""`make demo`: the emulator, then Meltano: Dynamics 365 cases into a DuckDB warehouse, case
analytics in SQL over it with one chart, an incremental run, the account-enrichment writeback
(tap-jsonl -> target-dynamics), and the warehouse's row counts against the organisation's.

Everything runs locally: the emulator is a real HTTPS service with its own private CA. What
Meltano prints is shown as it comes (the plugins' progress lines, warnings and errors; the whole
output goes to output/demo/meltano.log), with a line at least every few seconds while a step
works without printing.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from dynamics_emulator.harness import ApiSession, Connection, EmulatorProcess, EmulatorStartError

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".emulator"
OUT = ROOT / "output" / "demo"
WAREHOUSE = OUT / "warehouse.duckdb"
SCHEMA = "dynamics"  # target-duckdb's default_target_schema in meltano.yml
CHART = OUT / "resolution-times.svg"
TRANSCRIPT = OUT / "meltano.log"
MELTANO = str(Path(sys.executable).parent / "meltano")
#: Streams the project selects (meltano.yml) and their entity sets.
TABLES = {
    "account": "accounts",
    "contact": "contacts",
    "incident": "incidents",
    "systemuser": "systemusers",
    "team": "teams",
}
#: Longest silence while a step works: then a "still working" line.
HEARTBEAT_SECONDS = 5.0
#: `meltano install` of the four plugins, measured on a 2-core machine (see CHANGELOG.md).
FIRST_SETUP = "10-30 s the first time, under 10 s later"

ENRICHMENT = ROOT / "data" / "enrichment" / "accounts.jsonl"
SHOW = ("name", "industrycode", "numberofemployees", "revenue", "creditlimit")


# -- running Meltano, showing what it prints ------------------------------------------------------


def _shown(line: str) -> str | None:
    """What to show of one line of Meltano's JSON log: Meltano's own events, the plugins'
    progress lines, warnings and errors, target-duckdb's loads and target-dynamics' summaries.
    Everything else is in the transcript only."""
    try:
        event = json.loads(line)
    except ValueError:
        return line.rstrip() or None
    if not isinstance(event, dict) or "event" not in event:
        return line.rstrip() or None
    message = str(event["event"])
    level = str(event.get("level", "info"))
    plugin = event.get("name") if event.get("stdio") else None
    if plugin is None:
        return message if level != "debug" else None
    if message == "METRIC":
        return None
    interesting = (
        "progress" in event
        or level in ("warning", "error", "critical")
        or message.startswith(("Loading ", "Summary for"))
    )
    return f"[{plugin}] {message}" if interesting else None


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def meltano(args: list[str], env: dict[str, str]) -> None:
    """Run ``meltano <args>`` and show its output as it comes; stop the demo if it fails."""
    print(f"\n$ meltano {' '.join(args)}", flush=True)
    proc = subprocess.Popen(
        [MELTANO, "--log-format", "json", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    started = last = time.monotonic()
    tail: list[str] = []
    with TRANSCRIPT.open("a", encoding="utf-8") as transcript:
        transcript.write(f"$ meltano {' '.join(args)}\n")
        while True:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - last >= HEARTBEAT_SECONDS:
                    print(f"  ... working ({time.monotonic() - started:.0f} s)", flush=True)
                    last = time.monotonic()
                continue
            if line is None:
                break
            transcript.write(line)
            tail = [*tail[-24:], line.rstrip()]
            shown = _shown(line)
            if shown:
                print(f"  {shown[:200]}", flush=True)
                last = time.monotonic()
    rc = proc.wait()
    print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    if rc != 0:
        raise SystemExit(
            f"meltano {args[0]} failed (exit {rc}); the whole output is in {TRANSCRIPT}. "
            "Its end:\n" + "\n".join(tail)
        )


def plugin_env(prefix: str, conn: Connection, **settings: str) -> dict[str, str]:
    """Meltano's environment variables for a plugin's settings (``TAP_DYNAMICS_CLIENT_ID``, ...)."""
    return {f"{prefix}_{k.upper()}": str(v) for k, v in conn.settings(**settings).items()}


# -- the warehouse ------------------------------------------------------------------------------


def table(title: str, headers: list[str], rows: list[tuple[Any, ...]]) -> None:
    """Print rows as an aligned table (numbers to the right)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows if row[i] is not None)
        for i in range(len(headers))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(f"\n{title}")
    print("  " + line(headers))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        print("  " + line(row))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def analytics() -> None:
    """Case analytics in SQL over the warehouse, printed as tables, and the chart."""
    import duckdb

    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        con.execute(f"SET schema = '{SCHEMA}'")
        # The cases with their resolution time (creation to resolution, in days). `resolvedon`
        # is the emulator's: a real organisation keeps it in incidentresolution activities
        # (actualend), to be joined on _incidentid_value instead. The labels
        # (statuscode_label, prioritycode_label, _ownerid_value_name...) are what users see in
        # Dynamics: the tap's include_formatted_values.
        con.execute(
            "CREATE TEMP VIEW cases AS SELECT *, "
            "date_diff('minute', createdon, resolvedon) / 1440.0 AS days FROM incident"
        )
        priorities = con.execute(
            "SELECT DISTINCT prioritycode, prioritycode_label FROM cases ORDER BY 1"
        ).fetchall()
        labels = [str(label) for _, label in priorities]
        pivot = con.execute(
            "PIVOT (SELECT statuscode_label AS status, prioritycode_label AS priority "
            "FROM cases) ON priority USING count(*) GROUP BY status"
        )
        names = [d[0] for d in pivot.description or []]
        by_status = [
            (row[0], *(row[names.index(p)] for p in labels), sum(row[1:]))
            for row in pivot.fetchall()
        ]
        by_status.sort(key=lambda r: (-r[-1], r[0]))
        table("Cases by status and priority", ["status", *labels, "total"], by_status)
        table(
            "Resolution time by priority (days from creation to resolution)",
            ["priority", "resolved", "median", "mean", "90th pct"],
            con.execute(
                "SELECT prioritycode_label, count(*), median(days), avg(days), "
                "quantile_cont(days, 0.9) FROM cases WHERE resolvedon IS NOT NULL "
                "GROUP BY ALL ORDER BY min(prioritycode)"
            ).fetchall(),
        )
        table(
            "Cases per owner (the 10 with most cases)",
            ["owner", "user/team", "cases", "open", "resolved", "median days"],
            con.execute(
                "SELECT _ownerid_value_name, _ownerid_value_table, count(*), "
                "count(*) FILTER (WHERE statecode_label = 'Active'), count(resolvedon), "
                "median(days) FROM cases GROUP BY ALL ORDER BY 3 DESC, 1 LIMIT 10"
            ).fetchall(),
        )
        table(
            "Cases per account (the 10 with most cases; industry from the account table)",
            ["account", "industry", "cases", "open", "median days"],
            con.execute(
                "SELECT a.name, a.industrycode_label, count(*), "
                "count(*) FILTER (WHERE c.statecode_label = 'Active'), median(c.days) "
                "FROM cases c JOIN account a ON c._customerid_value = a.accountid "
                "GROUP BY ALL ORDER BY 3 DESC, 1 LIMIT 10"
            ).fetchall(),
        )
        days = con.execute(
            "SELECT prioritycode_label, days FROM cases WHERE resolvedon IS NOT NULL"
        ).fetchall()
    chart(labels, days)


def _box(values: list[float]) -> tuple[float, float, float, float, float, float, list[float]]:
    """Whisker ends, quartiles, mean and outliers of one group (whiskers at 1.5 IQR, as usual);
    a group of one value is that value throughout."""
    if len(values) == 1:
        return (values[0],) * 6 + ([],)
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    reach = 1.5 * (q3 - q1)
    inside = [v for v in values if q1 - reach <= v <= q3 + reach]
    outliers = [v for v in values if v < q1 - reach or v > q3 + reach]
    return min(inside), q1, med, q3, max(inside), statistics.fmean(values), outliers


def chart(priorities: list[str], days: list[tuple[str, float]]) -> None:
    """One SVG: the spread of resolution times per priority (drawn here: a plotting library
    would bring numpy into the environment, which the plugins do not need)."""
    groups = [[d for p, d in days if p == label] for label in priorities]
    width, height, left, right, top, bottom = 800, 60 + 70 * len(groups), 170, 30, 50, 60
    top_value = max((max(g) for g in groups if g), default=1.0) or 1.0
    step_days = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if top_value / s <= 10)
    span = step_days * (int(top_value // step_days) + 1)

    def x(value: float) -> float:
        return left + (width - left - right) * value / span

    def text(at_x: float, at_y: float, words: str, anchor: str = "middle", size: int = 12) -> str:
        words = words.replace("&", "&amp;").replace("<", "&lt;")
        return (
            f'<text x="{at_x:.1f}" y="{at_y:.1f}" text-anchor="{anchor}" '
            f'font-size="{size}">{words}</text>'
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        text(
            width / 2,
            24,
            "Resolution time of resolved cases, by priority (cases in brackets)",
            size=14,
        ),
    ]
    axis_y = height - bottom
    for tick in range(0, span + 1, step_days):
        parts.append(
            f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{axis_y}" stroke="#ddd"/>'
        )
        parts.append(text(x(tick), axis_y + 16, str(tick)))
    parts.append(
        text(
            (left + width - right) / 2,
            height - 18,
            "days from creation to resolution (box: quartiles, line: median, triangle: mean)",
        )
    )
    row = (axis_y - top) / max(len(groups), 1)
    for i, (label, group) in enumerate(zip(priorities, groups, strict=True)):
        mid = top + row * (i + 0.5)
        parts.append(text(left - 10, mid + 4, f"{label} ({len(group)})", anchor="end"))
        if not group:
            continue
        low, q1, med, q3, high, mean, outliers = _box(group)
        half = min(18.0, row / 3)
        parts += [
            f'<line x1="{x(low):.1f}" y1="{mid}" x2="{x(q1):.1f}" y2="{mid}" stroke="black"/>',
            f'<line x1="{x(q3):.1f}" y1="{mid}" x2="{x(high):.1f}" y2="{mid}" stroke="black"/>',
            f'<rect x="{x(q1):.1f}" y="{mid - half:.1f}" width="{x(q3) - x(q1):.1f}" '
            f'height="{2 * half:.1f}" fill="#cfe2f3" stroke="black"/>',
            f'<line x1="{x(med):.1f}" y1="{mid - half:.1f}" x2="{x(med):.1f}" '
            f'y2="{mid + half:.1f}" stroke="#e67e22" stroke-width="2"/>',
            f'<path d="M{x(mean):.1f},{mid - 5:.1f} l5,9 h-10 z" fill="#27ae60"/>',
        ]
        for end in (low, high):
            parts.append(
                f'<line x1="{x(end):.1f}" y1="{mid - half / 2:.1f}" x2="{x(end):.1f}" '
                f'y2="{mid + half / 2:.1f}" stroke="black"/>'
            )
        parts += [
            f'<circle cx="{x(v):.1f}" cy="{mid}" r="3" fill="none" stroke="black"/>'
            for v in outliers
        ]
    parts.append("</svg>")
    CHART.write_text("\n".join(parts) + "\n", encoding="utf-8")


def warehouse_counts() -> dict[str, int]:
    """Rows per table of the warehouse's schema."""
    import duckdb

    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                "ORDER BY 1",
                [SCHEMA],
            ).fetchall()
        ]
        counts = {}
        for name in names:
            ident = '"' + name.replace('"', '""') + '"'
            # Identifiers from the catalog, quoted; no value is spliced in.
            row = con.execute(f'SELECT count(*) FROM "{SCHEMA}".{ident}').fetchone()  # noqa: S608
            counts[name] = int(row[0]) if row else 0
        return counts


def escalated_titles(ids: set[str]) -> dict[str, str]:
    """incidentid -> title in the warehouse, for these cases."""
    import duckdb

    with duckdb.connect(str(WAREHOUSE), read_only=True) as con:
        con.execute(f"SET schema = '{SCHEMA}'")
        rows = con.execute(
            "SELECT incidentid, title FROM incident WHERE list_contains(?, incidentid)",
            [sorted(ids)],
        ).fetchall()
    return {r[0]: r[1] for r in rows}


# -- the organisation (the emulator) ------------------------------------------------------------


def organisation_counts(http: ApiSession) -> dict[str, int]:
    """Rows per table in the organisation now (``<set>/$count``)."""
    out = {}
    for name, entity_set in TABLES.items():
        r = http.get(http.url(f"{entity_set}/$count"), timeout=30)
        r.raise_for_status()
        out[name] = int(r.text.strip().lstrip("\ufeff"))
    return out


def touch_cases(http: ApiSession, n: int) -> set[str]:
    """Escalate ``n`` cases (their title changes), as an agent would."""
    rows = http.get(http.url(f"incidents?$select=title&$top={n}"), timeout=30).json()["value"]
    for r in rows:
        http.patch(
            http.url(f"incidents({r['incidentid']})"),
            json={"title": r["title"] + " (escalated)"},
            timeout=30,
        ).raise_for_status()
    return {r["incidentid"] for r in rows}


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


# -- the steps ----------------------------------------------------------------------------------


def step(n: int, title: str) -> None:
    print(f"\n=== {n}/6 {title}", flush=True)


def extract(env: dict[str, str]) -> None:
    """Full extract into the warehouse, the analytics, then an incremental run."""
    step(2, "Extract: Dynamics 365 -> DuckDB (meltano run tap-dynamics target-duckdb)")
    meltano(["run", "--full-refresh", "tap-dynamics", "target-duckdb"], env)
    step(3, f"Case analytics: SQL over {WAREHOUSE.relative_to(ROOT)}")
    analytics()
    print(f"\nChart of resolution times: {CHART.relative_to(ROOT)}")


def incremental(env: dict[str, str], http: ApiSession) -> bool:
    step(4, "Incremental: three cases change in Dynamics, the next run brings only them")
    changed = touch_cases(http, 3)
    meltano(["run", "tap-dynamics", "target-duckdb"], env)
    titles = escalated_titles(changed)
    ok = len(titles) == len(changed) and all(t.endswith("(escalated)") for t in titles.values())
    print(f"\n  the {len(changed)} changed cases in the warehouse, with their new titles: {ok}")
    return ok


def writeback(http: ApiSession, env: dict[str, str], conn: Connection) -> bool:
    """meltano run tap-jsonl target-dynamics: enrichment lands on accounts by account number."""
    step(5, "Writeback: an enrichment file -> Dynamics accounts (tap-jsonl target-dynamics)")
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
    return ok


def reconcile(env: dict[str, str], http: ApiSession) -> bool:
    """One more incremental run (the enriched accounts land), then rows per table: the
    warehouse against the organisation."""
    step(6, "Extract again: the enriched accounts land in the warehouse")
    meltano(["run", "tap-dynamics", "target-duckdb"], env)
    landed = warehouse_counts()
    expected = organisation_counts(http)
    rows = [
        (name, landed.get(name, 0), expected[name], "yes" if landed.get(name) == n else "NO")
        for name, n in expected.items()
    ]
    table(
        f"Rows per table: {WAREHOUSE.relative_to(ROOT)} (schema {SCHEMA}) and the organisation",
        ["table", "warehouse", "organisation", "equal"],
        rows,
    )
    return all(r[3] == "yes" for r in rows) and set(landed) == set(expected)


def run(emu: EmulatorProcess) -> int:
    env = {
        **os.environ,
        **emu.connection.environ(),
        **plugin_env("TAP_DYNAMICS", emu.connection, metadata_cache_dir=str(WORK / "meta")),
        "TARGET_DUCKDB_PATH": str(WAREHOUSE),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    step(1, f"Meltano installs the plugins: {FIRST_SETUP}")
    meltano(["install"], env)
    extract(env)
    http = emu.session()
    ok = incremental(env, http)
    ok = writeback(http, env, emu.connection) and ok
    ok = reconcile(env, http) and ok
    print(f"\nChart of resolution times: {CHART}")
    return 0 if ok else 1


def main() -> int:
    started = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    for old in (WAREHOUSE, CHART, TRANSCRIPT):
        old.unlink(missing_ok=True)
    print("Starting the emulator (a local Dynamics 365 organisation over HTTPS)...", flush=True)
    try:
        emu = EmulatorProcess(WORK)
    except EmulatorStartError as exc:
        raise SystemExit(str(exc)) from None
    print("\n".join(emu.banner))
    with emu:
        rc = run(emu)
    print(f"Demo finished in {time.perf_counter() - started:.0f} s; the emulator is stopped.")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
