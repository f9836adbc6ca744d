"""The one msal application builder: authority, instance discovery, HTTP client and token cache
(for an app registration; a managed identity has its own msal client:
:mod:`dynamics_api.auth.managed_identity`).

Authority: ``<authority_host>/<tenant_id or "organizations">``, ``authority_host`` coming from the
setting or from the environment's cloud (:mod:`dynamics_api.cloud`).

Instance discovery: for an authority host that msal does not know (anything but Microsoft's login
hosts), msal validates the authority by calling
``https://login.microsoftonline.com/common/discovery/instance`` unless ``instance_discovery=False``.
That call would leave the machine (and fail against the emulator or an air-gapped proxy), so it is
switched off for hosts outside :data:`MICROSOFT_AUTHORITY_HOSTS`; for Microsoft's own hosts msal
keeps its defaults (it skips the call for hosts it knows and uses its alias table).

HTTP: msal gets a :class:`~dynamics_api.session_base.VerifiedSession` as ``http_client`` (msal
ignores its own ``verify``/``timeout`` then), so the CA named by ``REQUESTS_CA_BUNDLE`` is the one
trusted and verification is never off.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from dynamics_api.auth.errors import discovery_error, network_error
from dynamics_api.auth.scrub import Scrubber
from dynamics_api.auth.settings import AuthSettings
from dynamics_api.session_base import VerifiedSession

__all__ = [
    "HTTP_TIMEOUT",
    "MICROSOFT_AUTHORITY_HOSTS",
    "build_app",
    "identity_session",
    "uses_instance_discovery",
]

#: HTTP timeout (connect, read) for the identity endpoints.
HTTP_TIMEOUT = (10.0, 60.0)

#: Entra ID hosts run by Microsoft: msal keeps its default instance discovery for these only.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)


def uses_instance_discovery(authority_host: str) -> bool:
    """Whether msal may keep its instance discovery for this host (Microsoft's hosts only).

    For any other host pass ``instance_discovery=False`` to msal: its discovery call would go to
    login.microsoftonline.com and fail for the emulator or an air-gapped proxy.
    """
    return (urlsplit(authority_host).hostname or "").lower() in MICROSOFT_AUTHORITY_HOSTS


def identity_session() -> VerifiedSession:
    """A new HTTP session for the identity endpoints (verified TLS, :data:`HTTP_TIMEOUT`)."""
    return VerifiedSession(timeout=HTTP_TIMEOUT)


def build_app(
    settings: AuthSettings,
    cache: msal.TokenCache,
    session: requests.Session,
    *,
    scrub: Scrubber,
    refused: str = "a token",
) -> msal.ClientApplication:
    """The msal application for ``settings``: confidential with a secret or certificate, public
    otherwise. msal reads the tenant's sign-in configuration here (one request).

    Args:
        settings: the parsed settings.
        cache: msal's token cache (usually :attr:`TokenCacheFile.cache`).
        session: the HTTP client for the identity endpoints.
        scrub: removes secrets from error sentences; learns each federated token read.
        refused: what Entra ID refused, for error codes without a sentence of their own.

    Raises:
        AuthError: Entra ID could not be reached, or has no configuration for the tenant.
        ConfigError: the settings name no app registration (a managed identity).
    """
    kwargs: dict[str, Any] = {
        "authority": settings.authority,
        "token_cache": cache,
        "http_client": session,
    }
    if not uses_instance_discovery(settings.authority_host):
        kwargs["instance_discovery"] = False
    client_id = settings.app_client_id
    credential = settings.msal_credential(on_assertion=scrub.add)
    try:
        if credential:
            return msal.ConfidentialClientApplication(
                client_id, client_credential=credential, **kwargs
            )
        return msal.PublicClientApplication(client_id, **kwargs)
    except requests.RequestException as exc:
        raise network_error(settings.authority_host, exc) from None
    except ValueError:
        # Tenant discovery failed (msal says "Unable to get authority configuration"); ask once
        # more to learn Entra ID's own error code.
        raise discovery_error(
            session,
            authority=settings.authority,
            authority_host=settings.authority_host,
            tenant_id=settings.tenant_id,
            on_error=lambda result: settings.auth_error(result, scrub=scrub, refused=refused),
        ) from None
