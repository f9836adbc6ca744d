"""The one secret scrubber: what keeps secrets and tokens out of logs and error messages.

Two layers:

* :func:`redact` masks what looks like a secret whatever it is: JWTs (access and id tokens, signed
  client assertions), secret-named fields in JSON or in a Python ``repr`` (``"refresh_token":
  "..."``, ``'code': '...'``) and secret-named query parameters (``?code=...``).
* :class:`Scrubber` also removes the exact values it was given (a client secret, a refresh token,
  a private key), which need not look like anything, then applies :func:`redact`.

msal masks the secrets it knows of in its DEBUG ``event=`` lines; as a second guard
:func:`install_msal_log_redaction` puts a filter running :func:`redact` on msal's loggers (it
logs the signed client assertion of certificate credentials, and its redirect listener logs the
sign-in answer, authorization code included).
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "Scrubber", "install_msal_log_redaction", "redact"]

REDACTED = "********"

#: Shorter values are not scrubbed: replacing them would mangle ordinary text.
_MIN_SECRET_LENGTH = 4
_MASKED_NAMES = (
    "client_assertion|client_secret|refresh_token|access_token|id_token|secret|code|"
    "code_verifier|password"
)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# "name": "value" (JSON) or 'name': 'value' (a dict's repr); the value's quotes decide its end.
_SECRET_FIELD_RE = re.compile(
    rf"""(?P<key>(?P<q>["'])(?:{_MASKED_NAMES})(?P=q)\s*:\s*)(?P<v>["'])(?:(?!(?P=v)).)*(?P=v)"""
)
_SECRET_PARAM_RE = re.compile(rf"(?P<key>[?&](?:{_MASKED_NAMES})=)[^&\s'\"#]+")


def redact(text: str) -> str:
    """Mask JWTs, secret-named fields (JSON or ``repr``) and secret-named query parameters."""
    text = _SECRET_FIELD_RE.sub(lambda m: f"{m['key']}{m['v']}{REDACTED}{m['v']}", text)
    text = _SECRET_PARAM_RE.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return _JWT_RE.sub(REDACTED, text)


class Scrubber:
    """Removes known secret values, then anything :func:`redact` recognises, from a text.

    Args:
        secrets: values never to show (``None`` and empty ones are ignored).
    """

    def __init__(self, *secrets: str | None) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Never show these values either (values shorter than 4 characters are ignored)."""
        self._secrets.update(s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH)

    def __call__(self, text: str) -> str:
        # Longest first: a secret that contains another is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return redact(text)

    def __repr__(self) -> str:
        return f"Scrubber({len(self._secrets)} values)"


class _RedactingFilter(logging.Filter):
    """Runs :func:`redact` over a log record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg = redacted
            record.args = ()
        return True


_REDACTING_FILTER = _RedactingFilter()


def install_msal_log_redaction() -> None:
    """Put the redacting filter on every msal logger that exists (a logger's filters see only
    its own records, not its children's, so each one gets it)."""
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name == "msal" or name.startswith("msal.")
    ]
    # msal.oauth2cli.oauth2 only comes to exist when msal builds its first client.
    for name in {"msal", "msal.application", "msal.token_cache", "msal.oauth2cli.oauth2", *names}:
        log = logging.getLogger(name)
        if _REDACTING_FILTER not in log.filters:
            log.addFilter(_REDACTING_FILTER)
