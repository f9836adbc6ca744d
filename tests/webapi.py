"""A minimal Web API client for tests of the emulator: real msal, real HTTPS, the emulator's CA.

It is deliberately independent of ``dynamics_api`` (the product client), so emulator tests do not
depend on the code they are meant to check.
"""

from __future__ import annotations

from typing import Any

import msal
import requests

from dynamics_emulator.server import Emulator


class PinnedSession(requests.Session):
    """A session that always verifies against one CA bundle.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment override
    ``Session.verify``; machines (CI's included) set them to the system store, which does not hold
    the emulator's private CA. Passing ``verify`` per request is what makes the pin stick.
    """

    def __init__(self, ca_bundle: str) -> None:
        super().__init__()
        self.verify = ca_bundle

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any
    ) -> requests.Response:
        kw.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kw)


class WebApi:
    def __init__(self, emulator: Emulator, version: str = "v9.2") -> None:
        self.emulator = emulator
        self.base = f"{emulator.url}/api/data/{version}"
        self.app = msal.ConfidentialClientApplication(
            emulator.client_id,
            client_credential=emulator.client_secret,
            authority=emulator.authority,
            instance_discovery=False,
            http_client=PinnedSession(emulator.ca_bundle),
        )
        self.session = PinnedSession(emulator.ca_bundle)
        self.session.headers.update(
            {
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
            }
        )
        self.refresh_token()

    def refresh_token(self) -> None:
        """Get a new token from the identity endpoint (msal's cache would hand back the old one,
        which is exactly what a client must not do after a 401)."""
        self.app.remove_tokens_for_client()
        result = self.app.acquire_token_for_client(scopes=[f"{self.emulator.url}/.default"])
        assert "access_token" in result, result.get("error_description")
        self.session.headers["Authorization"] = f"Bearer {result['access_token']}"

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self.base}/{path.lstrip('/')}"

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
