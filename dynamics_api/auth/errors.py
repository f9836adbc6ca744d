"""One sentence for each way Entra ID can refuse: msal error results (with the known AADSTS codes
explained), failed requests to the authority, and an unreadable tenant configuration.

The error types themselves live in :mod:`dynamics_api.errors`; this module only words them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from dynamics_api.auth.scrub import redact
from dynamics_api.errors import AuthError

__all__ = ["aadsts_code", "auth_error", "denied_error", "discovery_error", "network_error"]

_AADSTS_RE = re.compile(r"AADSTS(\d+)")


def _first_sentence(description: str) -> str:
    """``"AADSTS7000215: Invalid client secret provided. Ensure...\\r\\nTrace ID: ..."`` ->
    ``"Invalid client secret provided."``."""
    text = description.replace("\r\n", "\n").split("\n", 1)[0]
    text = re.sub(r"^\s*AADSTS\d+:\s*", "", text).strip()
    match = re.search(r"(?<=[.!?])\s", text)
    if match:
        text = text[: match.start()]
    if len(text) > 300:
        text = text[:297].rstrip() + "..."
    if text and text[-1] not in ".!?":
        text += "."
    return text


def aadsts_code(result: Mapping[str, Any]) -> int | None:
    """The AADSTS code of an error result: from ``error_codes``, else from the description."""
    codes = result.get("error_codes")
    if isinstance(codes, list):
        for code in codes:
            if isinstance(code, int) and not isinstance(code, bool):
                return code
            if isinstance(code, str) and code.isdigit():
                return int(code)
    match = _AADSTS_RE.search(str(result.get("error_description") or ""))
    return int(match.group(1)) if match else None


def auth_error(
    result: Mapping[str, Any],
    *,
    client_id: str,
    tenant_id: str | None,
    resource: str,
    certificate_thumbprint: str | None = None,
    refused: str = "a token",
    scrub: Callable[[str], str] = redact,
) -> AuthError:
    """One sentence for an msal (or redirect) error result, with the known AADSTS codes explained.

    Args:
        result: the error dict (``error``, ``error_description``, ``error_codes``).
        client_id, tenant_id, resource: named in the sentence (``None`` tenant: organizations).
        certificate_thumbprint: the certificate credential's thumbprint, if one is used.
        refused: what Entra ID refused, for codes without a specific sentence ("a token").
        scrub: removes secrets from the sentence (default: JWT-shaped strings and secret fields).

    Returns:
        The error (``error`` and ``aadsts`` set from the result).
    """
    error = str(result.get("error") or "")
    code = aadsts_code(result)
    sentence = _first_sentence(str(result.get("error_description") or ""))
    cid = client_id
    tenant = tenant_id or "organizations"
    tag = f"AADSTS{code}" if code is not None else (error or "no code")
    relogin = (
        "Sign in again (`tap-dynamics login`) to get a new refresh_token (README: Getting a "
        "refresh token)."
    )
    messages: dict[int, str] = {
        7000215: (
            f"Entra ID rejected the client secret for client_id '{cid}' ({tag}). Check "
            "client_secret: it may be wrong or expired (use the secret's value, not its ID)."
        ),
        7000222: (
            f"The client secret for client_id '{cid}' has expired ({tag}). Create a new "
            "secret in the app registration and set client_secret."
        ),
        7000218: (
            f"client_id '{cid}' is a confidential application and needs a credential "
            f"({tag}). Set client_secret, client_certificate_path or federated_token_file."
        ),
        700025: (
            f"client_id '{cid}' is a public client application, which must not send a "
            f"credential ({tag}). Remove client_secret and client_certificate_path."
        ),
        700016: (
            f"Entra ID does not know an application with client_id '{cid}' in tenant "
            f"'{tenant}' ({tag}). Check client_id and tenant_id."
        ),
        90002: (
            f"Entra ID could not find the tenant '{tenant}' ({tag}). Check tenant_id (and "
            "authority_host for a sovereign cloud)."
        ),
        70000: (
            f"Entra ID rejected the refresh token as invalid or already used ({tag}). {relogin}"
        ),
        700082: (f"The refresh token has expired after a period of inactivity ({tag}). {relogin}"),
        50173: (
            "The refresh token was revoked (for example after a password change or a "
            f"sign-out of all sessions) ({tag}). {relogin}"
        ),
        65001: (
            f"The user or an administrator has not consented to client_id '{cid}' using "
            f"Dynamics 365 ({tag}). Grant consent for the Dynamics CRM user_impersonation "
            "permission in the app registration, then sign in again."
        ),
        500011: (
            f"Entra ID found no Dynamics 365 resource '{resource}' in tenant "
            f"'{tenant}' ({tag}). Check environment_url: it must be your environment's "
            "URL, such as https://yourorg.crm.dynamics.com."
        ),
        700027: (
            f"Entra ID did not accept the certificate for client_id '{cid}' ({tag}). Check "
            "that client_certificate_path holds the certificate registered on the app "
            f"(thumbprint {certificate_thumbprint.upper() if certificate_thumbprint else '?'})"
            " and its private key."
        ),
    }
    if code in messages:
        message = messages[code]
    elif error == "no_refresh_token":
        message = f"No refresh token is available for client_id '{cid}'. {relogin}"
    else:
        detail = f": {sentence}" if sentence else "."
        message = f"Entra ID refused {refused} for client_id '{cid}' ({tag}){detail}"
    return AuthError(scrub(message), error=error or None, aadsts=code)


def network_error(authority_host: str, exc: requests.RequestException) -> AuthError:
    """One sentence for a failed request to the Entra ID authority (no URL query, no secret)."""
    host = urlsplit(authority_host).netloc
    if isinstance(exc, requests.exceptions.SSLError):
        what = f"TLS certificate verification failed for the Entra ID authority {host}"
    elif isinstance(exc, requests.exceptions.Timeout):
        what = f"The Entra ID authority {host} did not answer in time"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        what = f"Could not connect to the Entra ID authority {host}"
    else:
        what = f"The request to the Entra ID authority {host} failed ({type(exc).__name__})"
    return AuthError(
        f"{what}: check authority_host and network access, and if a proxy or private CA "
        "(such as the emulator's) signs its certificate, point REQUESTS_CA_BUNDLE at that "
        "CA bundle."
    )


def discovery_error(
    session: requests.Session,
    *,
    authority: str,
    authority_host: str,
    tenant_id: str | None,
    on_error: Callable[[Mapping[str, Any]], AuthError],
) -> AuthError:
    """Why msal could not read the tenant's sign-in configuration (it only says ValueError).

    Asks ``<authority>/v2.0/.well-known/openid-configuration`` once more to learn Entra ID's own
    error; ``on_error`` turns such an error body into the sentence (usually :func:`auth_error`).
    """
    url = f"{authority}/v2.0/.well-known/openid-configuration"
    host = urlsplit(authority_host).netloc
    try:
        resp = session.get(url, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        return network_error(authority_host, exc)
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and (body.get("error") or body.get("error_codes")):
        return on_error(body)
    return AuthError(
        f"Entra ID at {host} gave no sign-in configuration for tenant "
        f"'{tenant_id or 'organizations'}' (HTTP {resp.status_code}). Check tenant_id "
        "and authority_host."
    )


def denied_error(result: Mapping[str, Any], *, client_id: str) -> AuthError:
    """One sentence for a sign-in the user cancelled or was refused (``access_denied``)."""
    error = str(result.get("error") or "access_denied")
    code = aadsts_code(result)
    tag = f"{error}, AADSTS{code}" if code is not None else error
    return AuthError(
        f"The sign-in was cancelled or access was denied ({tag}): run the login command again "
        f"and accept the request for client_id '{client_id}' (an administrator may have to "
        "grant consent first).",
        error=error,
        aadsts=code,
    )
