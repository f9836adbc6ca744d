"""A minimal Web API client for tests of the emulator: real msal, real HTTPS, the emulator's CA.

It is deliberately independent of ``dynamics_api`` (the product client), so emulator tests do not
depend on the code they are meant to check: the session is the emulator's own harness
(``dynamics_emulator.harness.ApiSession``).
"""

from __future__ import annotations

from typing import Any

import requests

from dynamics_emulator.harness import ApiSession
from dynamics_emulator.server import Emulator


class WebApi:
    def __init__(self, emulator: Emulator, version: str = "v9.2") -> None:
        self.emulator = emulator
        self.session = ApiSession(emulator.connection, version)
        self.base = self.session.base

    def refresh_token(self) -> None:
        """Get a new token from the identity endpoint (not msal's cached one)."""
        self.session.refresh_token()

    def url(self, path: str) -> str:
        return self.session.url(path)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=60, **kw)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.session.request(method, self.url(path), timeout=60, **kw)

    def get_all(self, path: str, page_size: int | None = None) -> list[dict[str, Any]]:
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        rows: list[dict[str, Any]] = []
        url: str | None = self.url(path)
        while url:
            r = self.session.get(url, headers=headers, timeout=60)
            assert r.status_code == 200, r.text
            body = r.json()
            rows.extend(body["value"])
            url = body.get("@odata.nextLink")
        return rows

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> WebApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
