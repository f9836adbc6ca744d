"""Token providers: access tokens for the Dataverse Web API, from Entra ID through msal.

:class:`TokenProvider` serves three flows, chosen by the settings (``ARCHITECTURE.md``, "Settings
contract"), all behind one ``token(force_refresh=False)`` contract
(:class:`dynamics_api.http.TokenSource`) and one in-memory cache:

* **Delegated** (``refresh_token`` set, or ``token_cache_path`` naming a cache that already holds a
  refresh token for ``client_id``, as the login command leaves it): the token is the user's. A
  public client (no ``client_secret``) or a confidential one (a secret or certificate) redeems the
  refresh token with ``acquire_token_by_refresh_token`` for ``<resource>/user_impersonation``.
  Entra ID answers with a new (rotated) refresh token, which is kept in memory and in msal's token
  cache; later tokens come from ``acquire_token_silent`` for the signed-in account (msal keeps
  rotating the cached refresh token), falling back to the newest refresh token held in memory. With
  ``token_cache_path`` the cache (so the rotated refresh token) survives the run, and an account
  found there is preferred over the ``refresh_token`` setting, which is then usually older.
* **Client credentials** (no ``refresh_token``): the app's own token for ``<resource>/.default``,
  proven with ``client_secret``, a certificate (:mod:`dynamics_api.auth.certificate`) or a
  federated token read from a file on every token request (workload identity federation:
  :mod:`dynamics_api.auth.federated`). ``tenant_id`` is required.
* **Managed identity** (``managed_identity``): the token of the Azure resource's system- or
  user-assigned identity, from the platform's endpoint (:mod:`dynamics_api.auth.managed_identity`);
  no app registration, no credential, no tenant.

Caching: :meth:`TokenProvider.token` holds the token in memory and asks msal again when fewer than
300 s remain (for short-lived tokens half the lifetime, never less than 60 s); msal's own cache
treats tokens with under 5 minutes left as expired, so the two agree. ``force_refresh=True``
bypasses both caches: ``remove_tokens_for_client()`` for client credentials (whose
``acquire_token_for_client`` would otherwise return the cached token), ``force_refresh`` of
``acquire_token_silent`` for the delegated flow, the identity's cached tokens dropped for a managed
identity. Every acquisition runs in a :meth:`~dynamics_api.auth.cache.TokenCacheFile.transaction`
(file lock, re-read, write back).

Secrets: the client secret, the certificate's key, federated tokens, the platform's managed
identity secret, refresh and access tokens never appear in a log line, an exception message or a
``repr`` (:mod:`dynamics_api.auth.scrub`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import msal
import requests

from dynamics_api.auth.app import build_app, identity_session
from dynamics_api.auth.cache import TokenCacheFile
from dynamics_api.auth.errors import aadsts_code, network_error
from dynamics_api.auth.managed_identity import ManagedIdentityTokens
from dynamics_api.auth.scrub import Scrubber
from dynamics_api.auth.settings import AuthSettings
from dynamics_api.errors import ConfigError

__all__ = [
    "FLOW_CLIENT_CREDENTIALS",
    "FLOW_MANAGED_IDENTITY",
    "FLOW_REFRESH_TOKEN",
    "TokenProvider",
]

logger = logging.getLogger(__name__)

FLOW_CLIENT_CREDENTIALS = "client_credentials"
FLOW_REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a flow name
FLOW_MANAGED_IDENTITY = "managed_identity"

#: Refresh a token when fewer seconds than this remain (msal's own cache treats <5 min as expired).
REFRESH_MARGIN = 300.0
#: Never hand out a cached token that expires sooner than this.
MIN_REMAINING = 60.0
#: Lifetime assumed when a token response gives no ``expires_in``.
DEFAULT_LIFETIME = 300.0

_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})


def _home_account_id(result: Mapping[str, Any]) -> str | None:
    """``uid.utid`` from a token response's ``client_info`` (what msal keys accounts by)."""
    info = result.get("client_info")
    if not isinstance(info, str):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(info + "=" * (-len(info) % 4)))
    except (binascii.Error, ValueError):
        return None
    if isinstance(data, dict) and data.get("uid") and data.get("utid"):
        return f"{data['uid']}.{data['utid']}"
    return None


class TokenProvider:
    """Access tokens for one Dataverse environment, thread-safe and cached in memory.

    Build it with :meth:`from_config`. Call :meth:`token` before each request; after a 401 call
    ``token(force_refresh=True)`` once and retry. Nothing touches the network until the first
    :meth:`token` call.

    Args:
        settings: the parsed settings; ``managed_identity`` selects the managed identity, a
            ``refresh_token`` (or a cached one) the delegated flow.
        session: the HTTP session for the identity endpoints (default: a new
            :class:`~dynamics_api.session_base.VerifiedSession`, closed by :meth:`close`).

    Raises:
        ConfigError: the settings do not make a flow, or the token cache file cannot be read.
    """

    def __init__(self, settings: AuthSettings, *, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.environment_url = settings.environment_url
        self.resource = settings.resource
        self.authority_host = settings.authority_host
        self.client_id = settings.client_id
        self.tenant_id = settings.tenant_id
        self.authority = settings.authority
        self.token_cache_path = settings.token_cache_path
        self._store = TokenCacheFile(settings.token_cache_path)
        # Delegated when a refresh token is given, or when the cache file already holds one for
        # this client (put there by the login command or by an earlier delegated run).
        delegated = bool(settings.refresh_token) or (
            self.client_id is not None and self._store.has_refresh_token(self.client_id)
        )
        if settings.managed_identity:
            self.flow = FLOW_MANAGED_IDENTITY
        elif delegated:
            self.flow = FLOW_REFRESH_TOKEN
        else:
            self.flow = FLOW_CLIENT_CREDENTIALS
            _check_client_credentials(settings)
        self.scopes = (
            [f"{self.resource}/user_impersonation"]
            if self.flow == FLOW_REFRESH_TOKEN
            else [f"{self.resource}/.default"]
        )
        self._refresh_token = settings.refresh_token
        # Everything that must never be shown, for scrubbing service texts.
        self._scrub = Scrubber(*settings.secrets())
        self._owns_session = session is None
        self._session: requests.Session = session or identity_session()
        self._lock = threading.RLock()
        self._app: msal.ClientApplication | None = None
        self._managed: ManagedIdentityTokens | None = None
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._lifetime = 0.0
        self._home_account_id: str | None = None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, session: requests.Session | None = None
    ) -> TokenProvider:
        """Build a provider from tap/target settings (:class:`AuthSettings` reads them).

        Args:
            config: the settings.
            session: the HTTP session for the identity endpoints (default: a new
                :class:`~dynamics_api.session_base.VerifiedSession`).

        Returns:
            The provider (no network traffic yet).

        Raises:
            ConfigError: settings missing, malformed or inconsistent.
        """
        return cls(AuthSettings.from_config(config), session=session)

    @property
    def credential_kind(self) -> str:
        """``client_secret``, ``certificate``, ``federated_token``, ``managed_identity`` or
        ``none`` (a public client)."""
        return self.settings.credential_kind

    @property
    def _who(self) -> str:
        """Who the tokens are for, in log lines."""
        if self.flow == FLOW_MANAGED_IDENTITY:
            return self._get_managed().described
        return f"client_id {self.client_id}"

    def __repr__(self) -> str:
        return (
            f"TokenProvider(environment_url={self.environment_url!r}, "
            f"client_id={self.client_id!r}, tenant_id={self.tenant_id!r}, "
            f"authority_host={self.authority_host!r}, flow={self.flow!r}, "
            f"credential={self.credential_kind!r}, "
            f"token_cache_path={str(self.token_cache_path) if self.token_cache_path else None!r})"
        )

    def close(self) -> None:
        """Close the HTTP session if this provider created it."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> TokenProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------- tokens

    def token(self, force_refresh: bool = False, *, rejected_token: str | None = None) -> str:
        """A valid access token for the environment.

        A token held in memory is reused while more than the refresh margin remains (300 s, or
        half the lifetime for short-lived tokens, but never less than 60 s).

        Args:
            force_refresh: skip every cache (this provider's and msal's) and ask Entra ID; use it
                once after the Web API answered 401.
            rejected_token: with ``force_refresh``, the token the Web API rejected: when another
                thread has already replaced it, the replacement is returned without a new request.

        Returns:
            The bearer token (without ``Bearer``).

        Raises:
            AuthError: Entra ID refused, or could not be reached.
            ConfigError: the token cache file cannot be written.
        """
        with self._lock:
            now = time.time()
            held = self._access_token
            if held is not None and self._fresh(now):
                if not force_refresh:
                    return held
                if rejected_token is not None and rejected_token != held:
                    return held
            result = self._acquire(force_refresh)
            token = str(result["access_token"])
            try:
                lifetime = float(result.get("expires_in") or DEFAULT_LIFETIME)
            except (TypeError, ValueError):
                lifetime = DEFAULT_LIFETIME
            self._access_token = token
            self._lifetime = lifetime
            self._expires_at = now + lifetime
            self._scrub.add(token)
            source = result.get("token_source", "identity_provider")
            logger.info(
                "Got an access token for %s (%s, %s flow, from %s), valid for %d s",
                self.resource,
                self._who,
                self.flow,
                "msal's cache" if source == "cache" else "Entra ID",
                int(lifetime),
            )
            return token

    def _fresh(self, now: float) -> bool:
        margin = min(REFRESH_MARGIN, max(MIN_REMAINING, self._lifetime / 2))
        return self._expires_at - now >= margin

    def _acquire(self, force_refresh: bool) -> Mapping[str, Any]:
        if self.flow == FLOW_MANAGED_IDENTITY:
            managed = self._get_managed()
            with self._store.transaction():
                return managed.acquire(force_refresh)
        app = self._get_app()
        with self._store.transaction():
            try:
                if self.flow == FLOW_CLIENT_CREDENTIALS:
                    assert isinstance(app, msal.ConfidentialClientApplication)
                    if force_refresh:
                        app.remove_tokens_for_client()
                    result: Mapping[str, Any] = app.acquire_token_for_client(scopes=self.scopes)
                else:
                    result = self._acquire_delegated(app, force_refresh)
            except requests.RequestException as exc:
                raise network_error(self.authority_host, exc) from None
        if "access_token" not in result:
            raise self.settings.auth_error(result, scrub=self._scrub)
        return result

    def _acquire_delegated(
        self, app: msal.ClientApplication, force_refresh: bool
    ) -> Mapping[str, Any]:
        first_error: Mapping[str, Any] | None = None
        account, cached_rts = self._find_account(app)
        if account is not None:
            silent = app.acquire_token_silent_with_error(
                self.scopes, account, force_refresh=force_refresh
            )
            if silent and "access_token" in silent:
                self._remember(silent, account.get("home_account_id"))
                return silent
            if silent:
                first_error = silent
        rt = self._refresh_token
        if rt and rt not in cached_rts:
            if first_error is not None:
                code = aadsts_code(first_error)
                logger.info(
                    "The token cache's refresh token was refused (%s); trying the one from the "
                    "settings",
                    f"AADSTS{code}" if code is not None else first_error.get("error"),
                )
            result = app.acquire_token_by_refresh_token(rt, scopes=self.scopes)
            if "access_token" in result:
                self._remember(result, _home_account_id(result))
                return result
            return first_error or result
        if first_error is not None:
            return first_error
        return {
            "error": "no_refresh_token",
            "error_description": "No refresh token is available for this client.",
        }

    def _remember(self, result: Mapping[str, Any], home_account_id: object) -> None:
        """Keep the rotated refresh token (msal has put it in the cache too) and the account."""
        new_rt = result.get("refresh_token")
        if isinstance(new_rt, str) and new_rt:
            self._refresh_token = new_rt
            self._scrub.add(new_rt)
        if isinstance(home_account_id, str) and home_account_id:
            self._home_account_id = home_account_id

    def _find_account(self, app: msal.ClientApplication) -> tuple[dict[str, Any] | None, set[str]]:
        """The cached account with a refresh token for this client (the newest one first), and
        the refresh tokens msal would try for it."""
        best: tuple[int, dict[str, Any], set[str]] | None = None
        for account in app.get_accounts():
            entries = list(
                self._store.cache.search(
                    msal.TokenCache.CredentialType.REFRESH_TOKEN,
                    query={
                        "client_id": self.client_id,
                        "home_account_id": account.get("home_account_id"),
                        "environment": account.get("environment"),
                    },
                )
            )
            if not entries:
                continue
            secrets_ = {str(e.get("secret")) for e in entries}
            if account.get("home_account_id") == self._home_account_id:
                return account, secrets_
            newest = max(int(e.get("last_modification_time") or 0) for e in entries)
            if best is None or newest > best[0]:
                best = (newest, account, secrets_)
        if best is None:
            return None, set()
        return best[1], best[2]

    def _get_managed(self) -> ManagedIdentityTokens:
        if self._managed is None:
            self._managed = ManagedIdentityTokens(
                self.settings, self._store.cache, self._session, self._scrub
            )
        return self._managed

    def _get_app(self) -> msal.ClientApplication:
        if self._app is None:
            self._app = build_app(
                self.settings, self._store.cache, self._session, scrub=self._scrub
            )
        return self._app


def _check_client_credentials(settings: AuthSettings) -> None:
    """What the client-credentials flow needs: an app credential and a real tenant."""
    if not settings.confidential:
        raise ConfigError(
            "No credential is set: set client_secret (or client_certificate_path, or "
            "federated_token_file) and tenant_id for the client-credentials flow, set "
            "managed_identity on an Azure resource with a managed identity, or sign in with "
            "`tap-dynamics login` for the delegated flow (README: Getting a refresh token)."
        )
    if not settings.tenant_id:
        raise ConfigError(
            "The setting tenant_id is required for the client-credentials flow: set the "
            "directory (tenant) id or domain, for example contoso.onmicrosoft.com."
        )
    if settings.tenant_id.lower() in _TENANT_ALIASES:
        raise ConfigError(
            f"The setting tenant_id is '{settings.tenant_id}', which the client-credentials flow "
            "cannot use: set the directory (tenant) id or domain."
        )
