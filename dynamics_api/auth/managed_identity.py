"""Managed identity: tokens for the Azure resource this runs on (a VM or scale set, AKS, App
Service, Functions, Container Apps, Azure Arc), through msal's ``ManagedIdentityClient``, with no
app registration and no credential.

msal finds the endpoint in the environment the platform sets, in this order: Service Fabric
(``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER`` and ``IDENTITY_SERVER_THUMBPRINT``; HTTPS pinned to
that thumbprint), App Service and its kin (``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``, sent as
``X-IDENTITY-HEADER``), Azure Machine Learning (``MSI_ENDPOINT`` and ``MSI_SECRET``), Azure Arc
(``IDENTITY_ENDPOINT`` and ``IMDS_ENDPOINT``, or the agent installed), else the VM's instance
metadata service at ``http://169.254.169.254`` (``AZURE_POD_IDENTITY_AUTHORITY_HOST`` moves it).
No constructor argument names an endpoint; Cloud Shell is not a managed identity source for it.
Every request goes through the :class:`~dynamics_api.session_base.VerifiedSession` it is given,
so TLS is verified against ``REQUESTS_CA_BUNDLE`` (the emulator serves the App Service shape over
HTTPS); Service Fabric alone pins its own certificate.

The identity is the system-assigned one, or the user-assigned one whose client id is
``managed_identity_client_id``. Tokens are for ``<environment_url>`` (msal's managed identity
client takes a resource, not scopes) and go into the token cache, which msal reads first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from msal import managed_identity as msal_mi

from dynamics_api.auth.scrub import Scrubber
from dynamics_api.auth.settings import AuthSettings
from dynamics_api.errors import AuthError

__all__ = ["ManagedIdentityTokens", "endpoint_description"]

#: Where msal keeps managed identity tokens in the cache (its ``realm``).
_CACHE_REALM = "managed_identity"
_NOT_ASSIGNED_RE = re.compile(
    r"Unable to load the proper Managed Identity|Identity not found", re.IGNORECASE
)
_STATUS_RE = re.compile(r"^(\d{3}), (.*)$", re.DOTALL)
#: The platform's secrets for its endpoint: never shown.
_SECRET_VARIABLES = ("IDENTITY_HEADER", "MSI_SECRET")


def endpoint_description(environ: Mapping[str, str] | None = None) -> str:
    """The managed identity endpoint msal will ask, as a user would recognise it (host only)."""
    env = os.environ if environ is None else environ
    source = msal_mi.get_managed_identity_source()

    def host(url: str) -> str:
        return urlsplit(url).netloc or url

    if source is msal_mi.SERVICE_FABRIC:
        return f"the Service Fabric identity endpoint {host(env['IDENTITY_ENDPOINT'])}"
    if source is msal_mi.APP_SERVICE:
        return f"the managed identity endpoint IDENTITY_ENDPOINT ({host(env['IDENTITY_ENDPOINT'])})"
    if source is msal_mi.MACHINE_LEARNING:
        return f"the Azure Machine Learning identity endpoint {host(env['MSI_ENDPOINT'])}"
    if source is msal_mi.AZURE_ARC:
        return "the Azure Arc agent's identity endpoint"
    imds = env.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or "http://169.254.169.254"
    return f"the instance metadata service (IMDS) at {host(imds)}"


class ManagedIdentityTokens:
    """Access tokens for the environment from this resource's managed identity.

    Args:
        settings: the parsed settings (``managed_identity`` set).
        cache: msal's token cache.
        session: the HTTP session for the identity endpoint.
        scrub: the provider's scrubber (learns the platform's endpoint secret and each token).
    """

    def __init__(
        self,
        settings: AuthSettings,
        cache: msal.TokenCache,
        session: requests.Session,
        scrub: Scrubber,
    ) -> None:
        self.client_id = settings.managed_identity_client_id
        self.resource = settings.resource
        identity: msal_mi.ManagedIdentity = (
            msal.UserAssignedManagedIdentity(client_id=self.client_id)
            if self.client_id
            else msal.SystemAssignedManagedIdentity()
        )
        self._cache = cache
        self._client = msal.ManagedIdentityClient(identity, http_client=session, token_cache=cache)
        self._scrub = scrub
        scrub.add(*(os.environ.get(name) for name in _SECRET_VARIABLES))

    @property
    def described(self) -> str:
        """``the user-assigned managed identity '<id>'`` or ``the system-assigned ...``."""
        if self.client_id:
            return f"the user-assigned managed identity '{self.client_id}'"
        return "the system-assigned managed identity"

    def acquire(self, force_refresh: bool = False) -> Mapping[str, Any]:
        """A token result (``access_token``, ``expires_in``, ``token_source``); from msal's cache
        unless ``force_refresh``.

        Raises:
            AuthError: the endpoint could not be reached, or refused.
        """
        if force_refresh:
            self._forget_tokens()
        try:
            result: Mapping[str, Any] = self._client.acquire_token_for_client(
                resource=self.resource
            )
        except requests.RequestException as exc:
            raise self._network_error(exc) from None
        except msal.ManagedIdentityError as exc:
            detail = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else ""
            raise AuthError(
                self._scrub(
                    f"msal could not ask {endpoint_description()} for a token for "
                    f"{self.described} ({detail or type(exc).__name__}): check the platform's "
                    "managed identity setup."
                )
            ) from None
        except (OSError, ValueError):
            # An unreadable Azure Arc key file, or an answer that is not JSON.
            raise AuthError(
                f"{_capital(endpoint_description())} gave no usable answer for {self.described}: "
                "check that this machine runs on an Azure resource with a managed identity."
            ) from None
        if "access_token" not in result:
            raise self._refused(result)
        return result

    def _forget_tokens(self) -> None:
        """Drop this identity's cached tokens, so the next request asks the endpoint."""
        entries = list(
            self._cache.search(
                msal.TokenCache.CredentialType.ACCESS_TOKEN,
                query={"realm": _CACHE_REALM, "client_id": self.client_id},
            )
        )
        for entry in entries:
            self._cache.remove_at(entry)

    def _network_error(self, exc: requests.RequestException) -> AuthError:
        endpoint = endpoint_description()
        if isinstance(exc, requests.exceptions.SSLError):
            return AuthError(
                f"TLS certificate verification failed for {endpoint}: if a private CA (such as "
                "the emulator's) signs its certificate, point REQUESTS_CA_BUNDLE at that CA "
                "bundle."
            )
        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return AuthError(
                f"Could not reach {endpoint} for a token for {self.described}: managed_identity "
                "works on an Azure resource with a managed identity (a VM, AKS, App Service, "
                "Functions, Container Apps or an Arc server); elsewhere sign in with "
                "client_secret, client_certificate_path or federated_token_file."
            )
        return AuthError(
            f"The request to {endpoint} failed ({type(exc).__name__}): check that this runs on "
            "an Azure resource with a managed identity."
        )

    def _refused(self, result: Mapping[str, Any]) -> AuthError:
        endpoint = endpoint_description()
        error = str(result.get("error") or "error")
        description = str(result.get("error_description") or "").strip()
        match = _STATUS_RE.match(description)
        detail = f"HTTP {match.group(1)}: {match.group(2)}" if match else description
        detail = detail.splitlines()[0].strip().rstrip(".") if detail else error
        if _NOT_ASSIGNED_RE.search(description):
            if self.client_id:
                message = (
                    f"{_capital(endpoint)} has no user-assigned managed identity with client id "
                    f"'{self.client_id}' ({detail}): assign that identity to this resource, or "
                    "fix managed_identity_client_id."
                )
            else:
                message = (
                    f"{_capital(endpoint)} has no system-assigned managed identity for this "
                    f"resource ({detail}): enable it, or set managed_identity_client_id to use "
                    "a user-assigned identity."
                )
        else:
            message = (
                f"{_capital(endpoint)} refused a token for {self.described} ({detail}): check "
                "that the identity is assigned to this resource and that environment_url is the "
                "environment's URL."
            )
        return AuthError(self._scrub(message), error=error)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
