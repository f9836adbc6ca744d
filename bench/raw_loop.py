"""The raw limit for the tap: the same pages as the tap requests, fetched with requests and parsed,
nothing else (no Singer, no output). Run as its own process by bench/tap_bench.py.

    python -m bench.raw_loop <connection.json>
"""

from __future__ import annotations

import json
import resource
import sys
import time

import orjson

from dynamics_emulator.harness import ApiSession, Connection


def main() -> int:
    conn = json.loads(open(sys.argv[1]).read())  # noqa: SIM115 - tiny file, read once
    http = ApiSession(Connection.from_settings(conn, ca_bundle=conn["ca_bundle"]))
    http.headers["Prefer"] = f"odata.maxpagesize={conn['page_size']}"
    # As every Web API client should (and the tap does): no cached answer from the service.
    http.headers["If-None-Match"] = "null"
    url: str | None = conn["first_url"]
    rows = requests_made = 0
    start = time.perf_counter()
    while url:
        r = http.get(url, timeout=300)
        r.raise_for_status()
        body = orjson.loads(r.content)
        rows += len(body["value"])
        requests_made += 1
        url = body.get("@odata.nextLink")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"rows": rows, "requests": requests_made, "seconds": seconds, "peak_mb": peak})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
