"""Authentication for the Dataverse Web API: Entra ID through msal.

* :mod:`~dynamics_api.auth.settings`: the one parser of the auth settings (:class:`AuthSettings`).
* :mod:`~dynamics_api.auth.certificate`: the certificate credential (:class:`ClientCertificate`).
* :mod:`~dynamics_api.auth.federated`: the federated token credential, read from a file
  (:class:`FederatedTokenFile`, workload identity federation).
* :mod:`~dynamics_api.auth.app`: the one msal application builder (authority, instance discovery,
  HTTP client, token cache).
* :mod:`~dynamics_api.auth.cache`: the persisted token cache (0600, locked, one transaction);
  :mod:`~dynamics_api.auth.lock`: its file lock (``fcntl``, or a lock file where there is none).
* :mod:`~dynamics_api.auth.providers`: the token provider (:class:`TokenProvider`: client secret,
  certificate or federated token; refresh token; managed identity through
  :mod:`~dynamics_api.auth.managed_identity`).
* :mod:`~dynamics_api.auth.login`: the sign-in flows (browser, device code) behind the plugins'
  ``login`` command.
* :mod:`~dynamics_api.auth.errors`: one sentence for each way Entra ID refuses.
* :mod:`~dynamics_api.auth.scrub`: the one secret scrubber, also on msal's loggers.
"""

from __future__ import annotations

from dynamics_api.auth.app import (
    HTTP_TIMEOUT,
    MICROSOFT_AUTHORITY_HOSTS,
    build_app,
    uses_instance_discovery,
)
from dynamics_api.auth.cache import (
    TokenCacheFile,
    load_token_cache,
    save_token_cache,
    token_cache_lock,
)
from dynamics_api.auth.certificate import ClientCertificate
from dynamics_api.auth.errors import auth_error, discovery_error, network_error
from dynamics_api.auth.federated import FEDERATED_TOKEN_ENV, FederatedTokenFile
from dynamics_api.auth.login import (
    FLOW_AUTHORIZATION_CODE,
    FLOW_DEVICE_CODE,
    LoginResult,
    sign_in,
)
from dynamics_api.auth.providers import (
    FLOW_CLIENT_CREDENTIALS,
    FLOW_MANAGED_IDENTITY,
    FLOW_REFRESH_TOKEN,
    TokenProvider,
)
from dynamics_api.auth.scrub import Scrubber, install_msal_log_redaction, redact
from dynamics_api.auth.settings import AUTH_SETTINGS, AuthSettings

__all__ = [
    "AUTH_SETTINGS",
    "FEDERATED_TOKEN_ENV",
    "FLOW_AUTHORIZATION_CODE",
    "FLOW_CLIENT_CREDENTIALS",
    "FLOW_DEVICE_CODE",
    "FLOW_MANAGED_IDENTITY",
    "FLOW_REFRESH_TOKEN",
    "HTTP_TIMEOUT",
    "MICROSOFT_AUTHORITY_HOSTS",
    "AuthSettings",
    "ClientCertificate",
    "FederatedTokenFile",
    "LoginResult",
    "Scrubber",
    "TokenCacheFile",
    "TokenProvider",
    "auth_error",
    "build_app",
    "discovery_error",
    "load_token_cache",
    "network_error",
    "redact",
    "save_token_cache",
    "sign_in",
    "token_cache_lock",
    "uses_instance_discovery",
]

install_msal_log_redaction()
