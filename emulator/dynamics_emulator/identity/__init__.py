"""A transport-independent emulation of the Entra ID (Azure AD) v2 endpoints.

The HTTPS server routes requests to :meth:`IdentityProvider.handle`; the data API asks
:meth:`IdentityProvider.validate_access_token` whether a bearer token is good.

Served paths (``{t}`` is the tenant GUID, a configured tenant domain, ``organizations`` or
``common``), one module each:

* ``GET  /{t}/v2.0/.well-known/openid-configuration`` - OIDC discovery (what msal reads), and
  ``GET  /{t}/discovery/v2.0/keys`` - the JWKS holding the RS256 key that signs every token
  (``discovery``; keys and JWTs in ``signing``).
* ``GET|POST /{t}/oauth2/v2.0/authorize`` - auto-approves as the default user (or the user named
  by ``login_hint``) and redirects back with a code (``query``, ``fragment`` or ``form_post``);
  PKCE (``authorize``).
* ``POST /{t}/oauth2/v2.0/devicecode`` - starts a device flow; ``GET|POST /devicelogin`` - a tiny
  page where a human can approve a device code (``device``).
* ``POST /{t}/oauth2/v2.0/token`` - grants ``client_credentials``, ``authorization_code``,
  ``refresh_token`` and ``urn:ietf:params:oauth:grant-type:device_code`` (``grants``; the tokens
  themselves are made in ``minting``); clients prove themselves with a secret, a certificate's
  assertion or an external issuer's token matching a federated credential (``federation``).
* ``GET  /msi/token`` - the managed identity endpoint in App Service's shape
  (``IDENTITY_ENDPOINT`` / ``X-IDENTITY-HEADER``): tokens for the system-assigned identity and
  the user-assigned ones registered (``managed``).

State (clients, users, issued grants, counters) lives in ``state``; ``provider`` routes.

Errors use the real AADSTS body shape. Choices where the real service is not (or not
publicly) specified:

* Refresh tokens rotate strictly: every successful refresh returns a new refresh token and the
  presented one is dead from then on; presenting it again gives ``invalid_grant`` AADSTS70000
  (the real service would still accept it). A refresh token's lifetime is a sliding
  inactivity window (``refresh_token_lifetime``) since each use issues a fresh one; an expired
  one gives AADSTS700082.
* :meth:`IdentityProvider.revoke_all_tokens` behaves like "revoke sessions": refresh tokens
  then give AADSTS50173; access tokens stop validating. Outstanding codes are unaffected.
* An unknown, malformed or other-client code, refresh token or device code gives AADSTS70000.
* Access tokens are v1-shaped (Dataverse is a v1 resource: ``aud`` is the resource URL,
  ``appid``, ``scp``/``roles``, ``ver`` 1.0) but ``iss`` is ``<base_url>/<tid>/`` rather than
  ``https://sts.windows.net/<tid>/``. id tokens are v2 (``iss`` = the discovery issuer).
* Client-credentials responses carry no ``scope`` (like the real v2 endpoint). User tokens
  asked with ``<resource>/.default`` get ``<resource>/user_impersonation``.
* Tokens are RS256-signed with a per-process key published at the JWKS endpoint; the
  registry behind :meth:`IdentityProvider.validate_access_token` is the source of truth.

Token-endpoint errors (HTTP 400 unless noted): 900144 missing parameter, 70003 unsupported
grant, 90002 unknown tenant, 900561 not a POST, 700016 unknown client (``unauthorized_client``),
401 ``invalid_client``: 7000215 wrong secret, 7000218 no credential, 700025 public client sent a
credential, 700027/700021/700023/700024/50027 bad client assertion, 700211/700213/70021/7000272
bad federated assertion; ``invalid_grant``: 70000
unknown/rotated/other-client grant, 70008 expired code, 54005 code reused, 501481 PKCE mismatch,
500112 redirect_uri differs from the authorize request, 700082 refresh token expired, 50173
revoked; ``invalid_client`` 50011 unregistered redirect_uri; ``invalid_scope``: 1002012 client
credentials without ``/.default``, 28000 several resources, 70011 malformed scope; device flow:
70016 ``authorization_pending``, 70020 ``expired_token``.
"""

from .common import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_MANAGED_IDENTITY,
    GRANT_REFRESH_TOKEN,
    TOKEN_EXCHANGE_AUDIENCE,
    ClientApp,
    FederatedCredential,
    ManagedIdentity,
    TokenInfo,
    User,
)
from .provider import IdentityProvider

__all__ = [
    "GRANT_AUTHORIZATION_CODE",
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_DEVICE_CODE",
    "GRANT_MANAGED_IDENTITY",
    "GRANT_REFRESH_TOKEN",
    "TOKEN_EXCHANGE_AUDIENCE",
    "ClientApp",
    "FederatedCredential",
    "IdentityProvider",
    "ManagedIdentity",
    "TokenInfo",
    "User",
]
