"""The raw limit for the tap: the same pages as the tap requests, fetched with requests and parsed,
nothing else (no Singer, no output). Run as its own process by bench/tap_bench.py.

    python -m bench.raw_loop <connection.json>
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import msal
import orjson
import requests


class _Pinned(requests.Session):
    def request(self, *args: Any, **kw: Any) -> requests.Response:
        kw.setdefault("verify", self.verify)
        return super().request(*args, **kw)


def main() -> int:
    conn = json.loads(open(sys.argv[1]).read())  # noqa: SIM115 - tiny file, read once
    http = _Pinned()
    http.verify = conn["ca_bundle"]
    app = msal.ConfidentialClientApplication(
        conn["client_id"],
        client_credential=conn["client_secret"],
        authority=f"{conn['authority_host']}/{conn['tenant_id']}",
        instance_discovery=False,
        http_client=http,
    )
    token = app.acquire_token_for_client(scopes=[f"{conn['environment_url']}/.default"])
    http.headers.update(
        {
            "Authorization": f"Bearer {token['access_token']}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "Prefer": f"odata.maxpagesize={conn['page_size']}",
        }
    )
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
