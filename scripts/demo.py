"""`make demo`: start the emulator, run the main job against it, stop the emulator, say where the
output is. Everything runs locally: the emulator is a real HTTPS service with its own private CA.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".emulator"
OUT = ROOT / "output" / "demo"


def start_emulator(secret: str) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    env = {**os.environ, "DEMO_CLIENT_SECRET": secret}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynamics_emulator",
            "--port",
            "0",
            "--workdir",
            str(WORK),
            "--client-secret-env",
            "DEMO_CLIENT_SECRET",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:
        line = raw.decode().rstrip()
        lines.append(line)
        if line.startswith("  connection file"):
            break
    else:
        raise SystemExit("The emulator did not start:\n" + "\n".join(lines))
    print("\n".join(lines))
    return proc, json.loads((WORK / "emulator.json").read_text())


def stop_emulator(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main_job(info: dict[str, Any], secret: str) -> int:
    """Until the tap lands: show the emulator serving Customer Service data to a real client."""
    import msal
    import requests

    class Pinned(requests.Session):
        def request(self, *a: Any, **kw: Any) -> requests.Response:
            kw.setdefault("verify", info["ca_bundle"])
            return super().request(*a, **kw)

    http = Pinned()
    app = msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=secret,
        authority=f"{info['authority_host']}/{info['tenant_id']}",
        instance_discovery=False,
        http_client=http,
    )
    token = app.acquire_token_for_client(scopes=[f"{info['environment_url']}/.default"])
    http.headers.update(
        {
            "Authorization": f"Bearer {token['access_token']}",
            "Prefer": 'odata.maxpagesize=500,odata.include-annotations="*"',
        }
    )
    url: str | None = (
        f"{info['environment_url']}/api/data/v9.2/incidents"
        "?$select=title,statuscode,prioritycode,createdon,resolvedon"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    pages = 0
    while url:
        body = http.get(url, timeout=60).json()
        cases.extend(body["value"])
        pages += 1
        url = body.get("@odata.nextLink")
    out = OUT / "incidents.jsonl"
    with out.open("w") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    fv = "@OData.Community.Display.V1.FormattedValue"
    by_status: dict[str, int] = {}
    for c in cases:
        key = c.get(f"statuscode{fv}", str(c["statuscode"]))
        by_status[key] = by_status.get(key, 0) + 1
    print(f"\nRead {len(cases)} cases in {pages} pages.")
    print("Cases by status:")
    for k, v in sorted(by_status.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<24} {v:>5}")
    print(f"\nOutput: {out}")
    return 0


def main() -> int:
    secret = secrets.token_urlsafe(24)
    started = time.perf_counter()
    proc, info = start_emulator(secret)
    try:
        rc = main_job(info, secret)
    finally:
        stop_emulator(proc)
    print(f"Demo finished in {time.perf_counter() - started:.1f}s; the emulator is stopped.")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
