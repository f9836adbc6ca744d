"""Serve N accounts from the emulator CLI and page through all of them; report the emulator's
start-up time, serving rate and peak memory (VmHWM of its process).

    python -m bench.emulator_scale --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msal
import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_emulator(
    workdir: Path, rows: int, table: str
) -> tuple[subprocess.Popen[bytes], dict[str, Any], str]:
    secret = "bench-" + os.urandom(8).hex()
    env = {**os.environ, "EMULATOR_BENCH_SECRET": secret}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynamics_emulator",
            "--port",
            "0",
            "--workdir",
            str(workdir),
            "--rows",
            str(rows),
            "--table",
            table,
            "--client-secret-env",
            "EMULATOR_BENCH_SECRET",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    conn = workdir / "emulator.json"
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(b"  connection file"):
            break
    else:
        raise RuntimeError("the emulator exited before it was ready")
    return proc, json.loads(conn.read_text()), secret


class PinnedSession(requests.Session):
    def request(self, *args: Any, **kw: Any) -> requests.Response:
        kw.setdefault("verify", self.verify)
        return super().request(*args, **kw)


def page_through(info: dict[str, Any], secret: str, table_set: str) -> tuple[int, int, float]:
    session = PinnedSession()
    session.verify = info["ca_bundle"]
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=secret,
        authority=f"{info['authority_host']}/{info['tenant_id']}",
        instance_discovery=False,
        http_client=session,
    )
    token = app.acquire_token_for_client(scopes=[f"{info['environment_url']}/.default"])
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    session.headers["Prefer"] = "odata.maxpagesize=5000"
    url: str | None = f"{info['environment_url']}/api/data/v9.2/{table_set}"
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
        proc, info, secret = start_emulator(Path(tmp), args.rows, args.table)
        ready = time.perf_counter() - t0
        rss_ready = peak_rss_mb(proc.pid)
        try:
            rows, pages, secs = page_through(info, secret, args.table + "s")
            rss_peak = peak_rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
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
