"""A ``requests`` session that really verifies TLS against the CA the environment names.

``requests`` lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override ``Session.verify`` when a
request is sent without an explicit ``verify``, and skips the environment entirely when a prepared
request is sent with ``Session.send`` (singer-sdk does that). Machines here (CI included) export
both variables pointing at the system store, so the only reliable rule is: read the CA once, from
the standard variables, and pass ``verify`` explicitly on every request. :class:`VerifiedSession`
does exactly that and is what every HTTP client of ``dynamics_api`` (msal's ``http_client``
included) is built on.

TLS verification is never switched off: ``verify`` is either ``True`` (the certifi/system store)
or a CA bundle path.
"""

from __future__ import annotations

import os
from typing import Any

import requests

__all__ = ["VerifiedSession", "ca_verify"]

Timeout = float | tuple[float, float]


def ca_verify() -> str | bool:
    """The ``verify`` value to use: the CA bundle named by the environment, else ``True``.

    Returns:
        ``REQUESTS_CA_BUNDLE`` if set and non-empty, else ``CURL_CA_BUNDLE`` if set and non-empty
        (the order ``requests`` itself uses), else ``True``. Never ``False``.
    """
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


class VerifiedSession(requests.Session):
    """A session that sends its own ``verify`` (and an optional default timeout) on every request.

    Args:
        verify: a CA bundle path or ``True``; default :func:`ca_verify` at construction time.
            ``False`` is refused: TLS verification stays on.
        timeout: default ``timeout`` for requests that give none (``None``: no default).

    Raises:
        ValueError: ``verify`` is ``False``.
    """

    def __init__(self, verify: str | bool | None = None, timeout: Timeout | None = None) -> None:
        super().__init__()
        chosen = ca_verify() if verify is None else verify
        if chosen is False:
            raise ValueError("TLS verification cannot be switched off")
        self.verify = chosen
        self.default_timeout = timeout

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any
    ) -> requests.Response:
        """Send a request with ``verify`` (and the default timeout) filled in when absent."""
        if kw.get("verify") is None:
            kw["verify"] = self.verify
        if kw.get("timeout") is None and self.default_timeout is not None:
            kw["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kw)

    def __repr__(self) -> str:
        return f"VerifiedSession(verify={self.verify!r})"
