"""A transport-independent emulation of the Entra ID (Azure AD) v2 endpoints.

The HTTPS server routes requests to :meth:`IdentityProvider.handle`; the data API asks
:meth:`IdentityProvider.validate_access_token` whether a bearer token is good.

Served paths (``{t}`` is the tenant GUID, a configured tenant domain, ``organizations`` or
``common``):

* ``GET  /{t}/v2.0/.well-known/openid-configuration`` - OIDC discovery (what msal reads).
* ``GET  /{t}/discovery/v2.0/keys`` - the JWKS holding the RS256 key that signs every token.
* ``GET|POST /{t}/oauth2/v2.0/authorize`` - auto-approves as the default user (or the user named
  by ``login_hint``) and redirects back with a code (``query``, ``fragment`` or ``form_post``).
* ``POST /{t}/oauth2/v2.0/devicecode`` - starts a device flow.
* ``POST /{t}/oauth2/v2.0/token`` - grants ``client_credentials``, ``authorization_code``,
  ``refresh_token`` and ``urn:ietf:params:oauth:grant-type:device_code``.
* ``GET|POST /devicelogin`` - a tiny page where a human can approve a device code.

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
credential, 700027/700021/700023/700024/50027 bad client assertion; ``invalid_grant``: 70000
unknown/rotated/other-client grant, 70008 expired code, 54005 code reused, 501481 PKCE mismatch,
500112 redirect_uri differs from the authorize request, 700082 refresh token expired, 50173
revoked; ``invalid_client`` 50011 unregistered redirect_uri; ``invalid_scope``: 1002012 client
credentials without ``/.default``, 28000 several resources, 70011 malformed scope; device flow:
70016 ``authorization_pending``, 70020 ``expired_token``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import html
import logging
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dynamics_emulator.wire import Response

__all__ = [
    "GRANT_AUTHORIZATION_CODE",
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_DEVICE_CODE",
    "GRANT_REFRESH_TOKEN",
    "ClientApp",
    "IdentityProvider",
    "TokenInfo",
    "User",
]

logger = logging.getLogger(__name__)

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
_SUPPORTED_GRANTS = frozenset(
    {GRANT_CLIENT_CREDENTIALS, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, GRANT_DEVICE_CODE}
)
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
_GRAPH_RESOURCE = "https://graph.microsoft.com"
_TENANT_ALIASES = frozenset({"organizations", "common"})
_JSON_TYPE = "application/json; charset=utf-8"
_HTML_TYPE = "text/html; charset=utf-8"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"
_ASSERTION_SKEW = 300
_ASSERTION_ALGORITHMS = ("RS256", "PS256")
_SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


@dataclass(frozen=True)
class ClientApp:
    """An app registration.

    Attributes:
        client_id: the application (client) id.
        secret: the client secret; ``None`` (and no certificates) makes it a public client.
        redirect_uris: registered reply URLs (exact match; for ``http://localhost`` and
            ``http://127.0.0.1`` the port is ignored, as Entra does for native apps).
        certificates: PEM certificates whose keys may sign a ``client_assertion``.
        display_name: shown nowhere important.
        app_roles: the ``roles`` put in app-only (client credentials) tokens.
    """

    client_id: str
    secret: str | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = ()
    certificates: tuple[str, ...] = field(default=(), repr=False)
    display_name: str = ""
    app_roles: tuple[str, ...] = ()

    @property
    def is_public(self) -> bool:
        return self.secret is None and not self.certificates


@dataclass(frozen=True)
class User:
    object_id: str
    upn: str
    name: str


@dataclass(frozen=True)
class TokenInfo:
    """What an access token grants.

    Attributes:
        client_id: the app the token was issued to.
        user_object_id: the signed-in user's object id; ``None`` for app-only tokens.
        upn: the user's UPN (``None`` for app-only tokens).
        scopes: delegated permissions (``scp``), e.g. ``("user_impersonation",)``; empty for
            app-only tokens.
        roles: application roles (app-only tokens).
        resource: the audience, e.g. ``https://org.crm.dynamics.com``.
        tenant_id: the tenant GUID.
        expires_at: epoch seconds.
        grant_type: the grant that produced the token.
    """

    client_id: str
    user_object_id: str | None
    upn: str | None
    scopes: tuple[str, ...]
    roles: tuple[str, ...]
    resource: str
    tenant_id: str
    expires_at: float
    grant_type: str


@dataclass
class _AccessRecord:
    info: TokenInfo
    expires_at: float
    revoked: bool = False


@dataclass
class _AuthCode:
    client_id: str
    user: User
    scopes: tuple[str, ...]
    redirect_uri: str
    redirect_uri_sent: bool
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used: bool = False


@dataclass
class _RefreshRecord:
    client_id: str
    user: User
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    state: str = "active"  # "active" | "rotated" | "revoked"


@dataclass
class _DeviceCode:
    client_id: str
    scopes: tuple[str, ...]
    user_code: str
    expires_at: float
    user: User | None = None
    redeemed: bool = False


@dataclass
class _CertKey:
    sha1: bytes
    sha256: bytes
    key: rsa.RSAPublicKey


class _AadError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        code: int,
        description: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description
        self.extra = extra or {}


class _ScopeError(Exception):
    pass


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(n: int) -> str:
    return _b64e(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@functools.cache
def _default_signing_key() -> rsa.RSAPrivateKey:
    # One key per process: generating RSA keys is slow and tests build many providers.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _first(params: Mapping[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in params.items() if v}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def _missing(name: str) -> _AadError:
    return _AadError(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _invalid_grant() -> _AadError:
    return _AadError(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")


def _norm_resource(resource: str) -> str:
    return resource.rstrip("/").lower()


def _split_scope(scope: str) -> tuple[str, str]:
    """``https://org.crm.dynamics.com/user_impersonation`` -> (resource, permission).

    A bare permission (``User.Read``) is Microsoft Graph's, as on the real service.
    """
    if "/" not in scope:
        return _GRAPH_RESOURCE, scope
    resource, _, permission = scope.rpartition("/")
    resource = resource.rstrip("/")  # "https://org.crm.dynamics.com//.default" is accepted
    if not permission or not resource or resource.endswith(":"):
        raise _ScopeError(scope)
    if "://" in resource and not resource.split("://", 1)[1]:
        raise _ScopeError(scope)
    return resource, permission


def _redirect_matches(sent: str, registered: str) -> bool:
    if sent == registered:
        return True
    a, b = urlsplit(sent), urlsplit(registered)
    loopback = {"localhost", "127.0.0.1"}
    return (
        a.scheme == b.scheme == "http"
        and a.hostname in loopback
        and a.hostname == b.hostname
        and (a.path or "/") == (b.path or "/")
        and a.query == b.query
    )


class IdentityProvider:
    """An in-memory Entra ID tenant with clients, users and the tokens issued to them.

    Thread-safe: all state is guarded by one lock. Secrets and tokens are never logged.

    Test hooks and counters: :meth:`approve_device_code`, :meth:`revoke_all_tokens`,
    :meth:`expire_access_tokens`, :attr:`issued` (successful token responses per grant type),
    :attr:`issued_by_client` (per ``(client_id, grant_type)``) and :attr:`errors` (token and
    device-code endpoint errors per AADSTS code).
    """

    def __init__(
        self,
        base_url: str,
        *,
        tenant_id: str,
        clients: list[ClientApp],
        users: list[User],
        access_token_lifetime: int = 3599,
        refresh_token_lifetime: int = 86400,
        code_lifetime: int = 600,
        device_code_lifetime: int = 900,
        device_code_interval: int = 5,
        tenant_domains: tuple[str, ...] = (),
        default_user: str | None = None,
        clock: Callable[[], float] = time.time,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self._base_path = parts.path.rstrip("/")
        self.tenant_id = tenant_id
        self.access_token_lifetime = access_token_lifetime
        self.refresh_token_lifetime = refresh_token_lifetime
        self.code_lifetime = code_lifetime
        self.device_code_lifetime = device_code_lifetime
        self.device_code_interval = device_code_interval
        self._tenant_names = {tenant_id.lower(), *(d.lower() for d in tenant_domains)}
        self._clock = clock
        self._key = signing_key or _default_signing_key()
        pub = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._kid = _b64e(hashlib.sha1(pub).digest())  # noqa: S324 - a key id, not security
        self._lock = threading.RLock()
        self._clients: dict[str, ClientApp] = {}
        self._cert_keys: dict[str, list[_CertKey]] = {}
        self._users: list[User] = []
        self._default_user = default_user
        self._access: dict[str, _AccessRecord] = {}
        self._codes: dict[str, _AuthCode] = {}
        self._refresh: dict[str, _RefreshRecord] = {}
        self._device: dict[str, _DeviceCode] = {}
        self._device_by_user_code: dict[str, str] = {}
        self.issued: Counter[str] = Counter()
        self.issued_by_client: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[int] = Counter()
        for client in clients:
            self.register_client(client)
        for user in users:
            self.register_user(user)

    # ------------------------------------------------------------------ configuration

    @property
    def authority(self) -> str:
        """The msal authority for this tenant: ``<base_url>/<tenant-guid>``."""
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        """The v2 issuer (id tokens; discovery for the tenant GUID)."""
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    def register_client(self, client: ClientApp) -> None:
        keys: list[_CertKey] = []
        for pem in client.certificates:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
            public = cert.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise ValueError("only RSA certificates are supported")
            keys.append(
                _CertKey(
                    sha1=cert.fingerprint(hashes.SHA1()),  # noqa: S303 - x5t is SHA-1 by spec
                    sha256=cert.fingerprint(hashes.SHA256()),
                    key=public,
                )
            )
        with self._lock:
            self._clients[client.client_id.lower()] = client
            self._cert_keys[client.client_id.lower()] = keys

    def register_user(self, user: User) -> None:
        with self._lock:
            self._users.append(user)

    # ------------------------------------------------------------------ test hooks

    def approve_device_code(self, user_code: str, upn: str | None = None) -> None:
        """Sign in ``upn`` (default: the default user) for a pending device code.

        Raises:
            KeyError: unknown user code or user.
        """
        with self._lock:
            device_code = self._device_by_user_code.get(user_code.strip().upper())
            if device_code is None:
                raise KeyError(user_code)
            user = self._find_user(upn) if upn else self._default()
            if user is None:
                raise KeyError(upn or "no default user")
            self._device[device_code].user = user

    def revoke_all_tokens(self) -> None:
        """Invalidate every access and refresh token issued so far."""
        with self._lock:
            for rec in self._access.values():
                rec.revoked = True
            for rt in self._refresh.values():
                if rt.state == "active":
                    rt.state = "revoked"

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expire now (refresh tokens stay valid)."""
        with self._lock:
            now = self._clock()
            for rec in self._access.values():
                rec.expires_at = min(rec.expires_at, now)

    # ------------------------------------------------------------------ validation

    def validate_access_token(self, token: str, resource: str | None = None) -> TokenInfo | None:
        """The token's grant, or ``None`` if unknown, expired, revoked or for another resource."""
        with self._lock:
            rec = self._access.get(token)
            if rec is None or rec.revoked or self._clock() >= rec.expires_at:
                return None
            if resource is not None and _norm_resource(resource) != _norm_resource(
                rec.info.resource
            ):
                return None
            return replace(rec.info, expires_at=rec.expires_at)

    # ------------------------------------------------------------------ routing

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, list[str]],
        headers: Mapping[str, str],
    ) -> Response | None:
        """Answer an identity request, or return ``None`` when ``path`` is not one."""
        route = self._route(path)
        if route is None:
            return None
        tenant_seg, endpoint = route
        method = method.upper()
        correlation_id = self._correlation_id(headers)
        if endpoint == "devicelogin":
            return self._device_login(method, _first(query) | _first(form))
        tenant_known = self._resolve_tenant(tenant_seg)
        if endpoint in ("discovery", "keys"):
            if method not in ("GET", "HEAD"):
                return Response(405, b"", [("Allow", "GET")])
            if not tenant_known:
                return self._error_response(
                    _AadError(400, "invalid_tenant", 90002, self._tenant_not_found(tenant_seg)),
                    correlation_id,
                )
            if endpoint == "keys":
                return self._json(200, self._jwks(), correlation_id)
            return self._json(200, self._discovery(tenant_seg), correlation_id)
        if endpoint == "authorize":
            params = _first(query) | (_first(form) if method == "POST" else {})
            return self._authorize(tenant_seg, tenant_known, params, correlation_id)
        # token and devicecode
        try:
            if method != "POST":
                raise _AadError(
                    400,
                    "invalid_request",
                    900561,
                    f"The endpoint only accepts POST, OPTIONS requests. Received a {method} "
                    "request.",
                )
            if not tenant_known:
                raise _AadError(400, "invalid_request", 90002, self._tenant_not_found(tenant_seg))
            params = _first(form)
            if endpoint == "devicecode":
                payload = self._devicecode(params)
            else:
                payload = self._token(tenant_seg, params, headers)
        except _AadError as exc:
            with self._lock:
                self.errors[exc.code] += 1
            logger.debug("identity %s error AADSTS%d (%s)", endpoint, exc.code, exc.error)
            return self._error_response(exc, correlation_id)
        return self._json(200, payload, correlation_id)

    def _route(self, path: str) -> tuple[str, str] | None:
        path = path.split("?", 1)[0]
        if self._base_path:
            if not path.startswith(self._base_path + "/"):
                return None
            path = path[len(self._base_path) :]
        parts = [p for p in path.split("/") if p]
        if parts == ["devicelogin"]:
            return "", "devicelogin"
        if len(parts) != 4:
            return None
        tenant, rest = parts[0], [p.lower() for p in parts[1:]]
        if rest == ["v2.0", ".well-known", "openid-configuration"]:
            return tenant, "discovery"
        if rest == ["discovery", "v2.0", "keys"]:
            return tenant, "keys"
        if rest[:2] == ["oauth2", "v2.0"] and rest[2] in ("token", "authorize", "devicecode"):
            return tenant, rest[2]
        return None

    def _resolve_tenant(self, segment: str) -> bool:
        seg = segment.lower()
        return seg in _TENANT_ALIASES or seg in self._tenant_names

    def _tenant_not_found(self, segment: str) -> str:
        return (
            f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription administrator, "
            "this may happen if there are no active subscriptions for the tenant."
        )

    # ------------------------------------------------------------------ discovery

    def _discovery(self, tenant_seg: str) -> dict[str, Any]:
        alias = tenant_seg.lower() in _TENANT_ALIASES
        t = tenant_seg.lower() if alias else self.tenant_id
        root = f"{self.base_url}/{t}"
        return {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.base_url}/{{tenantid}}/v2.0" if alias else self.issuer,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{root}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "oid",
            ],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }

    def _jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self._kid,
                    "x5t": self._kid,
                    "n": _int_b64(numbers.n),
                    "e": _int_b64(numbers.e),
                    "issuer": self.issuer,
                }
            ]
        }

    # ------------------------------------------------------------------ token endpoint

    def _token(
        self, tenant_seg: str, p: dict[str, str], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        grant_type = p.get("grant_type")
        if not grant_type:
            raise _missing("grant_type")
        if grant_type not in _SUPPORTED_GRANTS:
            raise _AadError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        basic = self._basic_auth(headers)
        client_id = p.get("client_id") or (basic[0] if basic else None)
        if not client_id:
            raise _missing("client_id")
        client = self._client(client_id)
        now = self._clock()
        if grant_type == GRANT_CLIENT_CREDENTIALS:
            return self._grant_client_credentials(client, tenant_seg, p, basic, now)
        if grant_type == GRANT_AUTHORIZATION_CODE:
            return self._grant_authorization_code(client, tenant_seg, p, basic, now)
        if grant_type == GRANT_REFRESH_TOKEN:
            return self._grant_refresh_token(client, tenant_seg, p, basic, now)
        return self._grant_device_code(client, tenant_seg, p, basic, now)

    def _client(self, client_id: str) -> ClientApp:
        with self._lock:
            client = self._clients.get(client_id.lower())
        if client is None:
            raise _AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )
        return client

    @staticmethod
    def _basic_auth(headers: Mapping[str, str]) -> tuple[str, str] | None:
        value = _header(headers, "Authorization")
        if not value or not value.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        return unquote_plus(user), unquote_plus(password)

    def _authenticate(
        self,
        client: ClientApp,
        tenant_seg: str,
        p: dict[str, str],
        basic: tuple[str, str] | None,
        now: float,
        *,
        required: bool,
    ) -> str:
        """Check the client credential; returns ``appidacr``: "0" public, "1" secret, "2" cert."""
        secret = p.get("client_secret")
        if secret is None and basic is not None and basic[0].lower() == client.client_id.lower():
            secret = basic[1]
        assertion = p.get("client_assertion")
        if client.is_public:
            if secret or assertion:
                raise _AadError(
                    401,
                    "invalid_client",
                    700025,
                    "Client is public so neither 'client_assertion' nor 'client_secret' should be "
                    "presented.",
                )
            return "0"
        if assertion:
            if p.get("client_assertion_type") != _JWT_BEARER:
                raise _AadError(
                    400,
                    "invalid_request",
                    90014,
                    "The required field 'client_assertion_type' is missing from the credential. "
                    "Ensure that you have all the necessary parameters for the login request.",
                )
            self._verify_assertion(client, tenant_seg, assertion, now)
            return "2"
        if secret:
            if client.secret is None or not hmac.compare_digest(
                secret.encode("utf-8"), client.secret.encode("utf-8")
            ):
                raise _AadError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request "
                    "is the client secret value, not the client secret ID, for a secret added to "
                    f"app '{client.client_id}'.",
                )
            return "1"
        if required:
            raise self._credential_required()
        return "0"

    @staticmethod
    def _credential_required() -> _AadError:
        return _AadError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )

    def _verify_assertion(
        self, client: ClientApp, tenant_seg: str, assertion: str, now: float
    ) -> None:
        def bad(code: int, description: str) -> _AadError:
            return _AadError(401, "invalid_client", code, description)

        try:
            # Parsed first without the key: which certificate signed it is in the header.
            unverified = jwt.decode_complete(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise bad(50027, "JWT token is invalid or malformed.") from None
        header, claims = unverified["header"], unverified["payload"]
        alg = header.get("alg")
        if alg not in _ASSERTION_ALGORITHMS:
            raise bad(
                5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm."
            )
        with self._lock:
            keys = list(self._cert_keys.get(client.client_id.lower(), []))
        key: rsa.RSAPublicKey | None = None
        try:
            if isinstance(header.get("x5t#S256"), str):
                want = _b64d(header["x5t#S256"])
                key = next((k.key for k in keys if k.sha256 == want), None)
            elif isinstance(header.get("x5t"), str):
                want = _b64d(header["x5t"])
                key = next((k.key for k in keys if k.sha1 == want), None)
        except (binascii.Error, ValueError):
            key = None
        if key is None:
            raise bad(
                700027,
                "The certificate with identifier used to sign the client assertion is not "
                "registered on application.",
            )
        try:
            # The signature only: the claims are checked below, each with its own AADSTS code,
            # against the provider's clock (PyJWT would read the wall clock).
            jwt.decode(
                assertion, key, algorithms=list(_ASSERTION_ALGORITHMS), options=_SIGNATURE_ONLY
            )
        except jwt.InvalidTokenError:
            raise bad(700027, "Client assertion failed signature validation.") from None
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise bad(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )
        auds = claims.get("aud")
        aud_list = auds if isinstance(auds, list) else [auds]
        if not any(isinstance(a, str) and self._assertion_audience_ok(a) for a in aud_list):
            raise bad(700023, "Client assertion audience claim does not match Realm issuer.")
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if (
            not isinstance(exp, int | float)
            or now > exp + _ASSERTION_SKEW
            or (isinstance(nbf, int | float) and nbf > now + _ASSERTION_SKEW)
        ):
            raise bad(
                700024,
                f"Client assertion is not within its valid time range. Current time: "
                f"{self._ts(now)}, expiry time of assertion {exp}.",
            )

    def _assertion_audience_ok(self, aud: str) -> bool:
        if aud.rstrip("/") == self.issuer:
            return True
        prefix = self.base_url + "/"
        if not aud.startswith(prefix):
            return False
        segs = aud[len(prefix) :].split("/")
        return (
            len(segs) >= 2
            and self._resolve_tenant(segs[0])
            and [s.lower() for s in segs[1:]] in (["oauth2", "v2.0", "token"], ["oauth2", "token"])
        )

    def _grant_client_credentials(
        self,
        client: ClientApp,
        tenant_seg: str,
        p: dict[str, str],
        basic: tuple[str, str] | None,
        now: float,
    ) -> dict[str, Any]:
        if client.is_public and not (p.get("client_secret") or p.get("client_assertion")):
            raise self._credential_required()  # public clients have no app identity to act as
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=True)
        scope = p.get("scope")
        if not scope or not scope.split():
            raise _missing("scope")
        resources: dict[str, str] = {}
        for s in scope.split():
            if not s.endswith("/.default"):
                raise _AadError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {s} is not valid. Client credential flows must "
                    "have a scope value with /.default suffixed to the resource identifier "
                    "(application ID URI).",
                )
            try:
                resource, _ = _split_scope(s)
            except _ScopeError:
                raise self._invalid_scope(s) from None
            resources.setdefault(_norm_resource(resource), resource)
        if len(resources) > 1:
            raise self._multi_resource(scope)
        resource = next(iter(resources.values()))
        sp_oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{self.tenant_id}:{client.client_id}"))
        with self._lock:
            token, expires_in = self._mint_access_token(
                client=client,
                grant_type=GRANT_CLIENT_CREDENTIALS,
                user=None,
                resource=resource,
                permissions=(),
                roles=client.app_roles,
                acr=acr,
                oid=sp_oid,
                now=now,
            )
            self._count(client, GRANT_CLIENT_CREDENTIALS)
        return {
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }

    def _grant_authorization_code(
        self,
        client: ClientApp,
        tenant_seg: str,
        p: dict[str, str],
        basic: tuple[str, str] | None,
        now: float,
    ) -> dict[str, Any]:
        code = p.get("code")
        if not code:
            raise _missing("code")
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=True)
        with self._lock:
            rec = self._codes.get(code)
            if rec is None or rec.client_id.lower() != client.client_id.lower():
                raise _invalid_grant()
            if rec.used:
                raise _AadError(
                    400,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new "
                    "valid code or use an existing refresh token.",
                )
            if now >= rec.expires_at:
                raise _AadError(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to "
                    "inactivity. Send a new interactive authorization request for this user and "
                    "resource.",
                )
            redirect_uri = p.get("redirect_uri")
            if rec.redirect_uri_sent and not redirect_uri:
                raise _missing("redirect_uri")
            if redirect_uri is not None and redirect_uri != rec.redirect_uri:
                if not any(_redirect_matches(redirect_uri, r) for r in client.redirect_uris):
                    raise self._redirect_mismatch(redirect_uri, client, 400, "invalid_client")
                raise _AadError(
                    400,
                    "invalid_grant",
                    500112,
                    f"The reply address '{redirect_uri}' does not match the reply address "
                    f"'{rec.redirect_uri}' provided when requesting Authorization code.",
                )
            if rec.code_challenge is not None:
                verifier = p.get("code_verifier") or ""
                if rec.code_challenge_method == "S256":
                    computed = _b64e(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
                else:
                    computed = verifier
                if not verifier or not hmac.compare_digest(computed, rec.code_challenge):
                    raise _AadError(
                        400,
                        "invalid_grant",
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the "
                        "authorization request.",
                    )
            rec.used = True
            return self._user_tokens(
                client=client,
                grant_type=GRANT_AUTHORIZATION_CODE,
                user=rec.user,
                granted=rec.scopes,
                requested=tuple(p["scope"].split()) if p.get("scope") else rec.scopes,
                nonce=rec.nonce,
                acr=acr,
                now=now,
            )

    def _grant_refresh_token(
        self,
        client: ClientApp,
        tenant_seg: str,
        p: dict[str, str],
        basic: tuple[str, str] | None,
        now: float,
    ) -> dict[str, Any]:
        token = p.get("refresh_token")
        if not token:
            raise _missing("refresh_token")
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=True)
        with self._lock:
            rec = self._refresh.get(token)
            if rec is None or rec.client_id.lower() != client.client_id.lower():
                raise _invalid_grant()
            if rec.state == "rotated":
                raise _invalid_grant()
            if rec.state == "revoked":
                raise _AadError(
                    400,
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token "
                    "is needed. The user might have changed or reset their password. The grant "
                    f"was issued on '{self._iso(rec.issued_at)}' and the TokensValidFrom date "
                    "(before which tokens are not valid) for this user is "
                    f"'{self._iso(now)}'.",
                )
            if now >= rec.expires_at:
                inactive_days = int((now - rec.issued_at) // 86400)
                raise _AadError(
                    400,
                    "invalid_grant",
                    700082,
                    "The refresh token has expired due to inactivity. The token was issued on "
                    f"{self._iso(rec.issued_at)} and was inactive for "
                    f"{inactive_days}.00:00:00.",
                )
            requested = tuple(p["scope"].split()) if p.get("scope") else rec.scopes
            result = self._user_tokens(
                client=client,
                grant_type=GRANT_REFRESH_TOKEN,
                user=rec.user,
                granted=tuple(dict.fromkeys(rec.scopes + requested)),
                requested=requested,
                nonce=None,
                acr=acr,
                now=now,
            )
            rec.state = "rotated"
            return result

    def _grant_device_code(
        self,
        client: ClientApp,
        tenant_seg: str,
        p: dict[str, str],
        basic: tuple[str, str] | None,
        now: float,
    ) -> dict[str, Any]:
        device_code = p.get("device_code")
        if not device_code:
            raise _missing("device_code")
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=False)
        with self._lock:
            rec = self._device.get(device_code)
            if rec is None or rec.client_id.lower() != client.client_id.lower() or rec.redeemed:
                raise _invalid_grant()
            if now >= rec.expires_at:
                raise _AadError(
                    400,
                    "expired_token",
                    70020,
                    "The provided value for the input parameter 'device_code' is not valid. "
                    "This device code has expired.",
                )
            if rec.user is None:
                raise _AadError(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            rec.redeemed = True
            return self._user_tokens(
                client=client,
                grant_type=GRANT_DEVICE_CODE,
                user=rec.user,
                granted=rec.scopes,
                requested=rec.scopes,
                nonce=None,
                acr=acr,
                now=now,
            )

    # ------------------------------------------------------------------ device code endpoint

    def _devicecode(self, p: dict[str, str]) -> dict[str, Any]:
        client_id = p.get("client_id")
        if not client_id:
            raise _missing("client_id")
        client = self._client(client_id)
        scope = p.get("scope")
        if not scope or not scope.split():
            raise _missing("scope")
        scopes = tuple(scope.split())
        self._resolve_user_scopes(scopes)  # validates
        now = self._clock()
        with self._lock:
            user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
            while user_code in self._device_by_user_code:
                user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
            device_code = "DAQABIQEAAAD" + secrets.token_urlsafe(96)
            self._device[device_code] = _DeviceCode(
                client_id=client.client_id,
                scopes=scopes,
                user_code=user_code,
                expires_at=now + self.device_code_lifetime,
            )
            self._device_by_user_code[user_code] = device_code
        uri = f"{self.base_url}/devicelogin"
        return {
            "user_code": user_code,
            "device_code": device_code,
            "verification_uri": uri,
            "expires_in": self.device_code_lifetime,
            "interval": self.device_code_interval,
            "message": (
                f"To sign in, use a web browser to open the page {uri} and enter the code "
                f"{user_code} to authenticate."
            ),
        }

    def _device_login(self, method: str, params: dict[str, str]) -> Response:
        if method == "POST" and params.get("user_code"):
            try:
                self.approve_device_code(params["user_code"], params.get("login_hint") or None)
            except KeyError:
                return self._html(
                    400, "<p>That code didn't work. Check the code and try again.</p>"
                )
            return self._html(200, "<p>You have signed in. You may now close this window.</p>")
        return self._html(
            200,
            '<form method="post"><label>Enter code <input name="user_code"></label>'
            '<button type="submit">Next</button></form>',
        )

    # ------------------------------------------------------------------ authorize endpoint

    def _authorize(
        self, tenant_seg: str, tenant_known: bool, p: dict[str, str], correlation_id: str
    ) -> Response:
        now = self._clock()
        if not tenant_known:
            return self._error_page(90002, self._tenant_not_found(tenant_seg), correlation_id, now)
        client_id = p.get("client_id")
        if not client_id:
            err = _missing("client_id")
            return self._error_page(err.code, err.description, correlation_id, now)
        try:
            client = self._client(client_id)
        except _AadError as exc:
            return self._error_page(exc.code, exc.description, correlation_id, now)
        redirect_uri = p.get("redirect_uri")
        redirect_uri_sent = redirect_uri is not None
        if redirect_uri is None:
            if not client.redirect_uris:
                return self._error_page(
                    500113,
                    "No reply address is registered for the application.",
                    correlation_id,
                    now,
                )
            redirect_uri = client.redirect_uris[0]
        if not any(_redirect_matches(redirect_uri, r) for r in client.redirect_uris):
            err = self._redirect_mismatch(redirect_uri, client, 400, "invalid_request")
            return self._error_page(err.code, err.description, correlation_id, now)
        response_mode = p.get("response_mode") or "query"
        if response_mode not in ("query", "fragment", "form_post"):
            response_mode = "query"
        state = p.get("state")

        def fail(error: str, code: int, description: str) -> Response:
            params = {
                "error": error,
                "error_description": self._describe(code, description, correlation_id, now),
                "error_uri": f"{self.base_url}/error?code={code}",
            }
            if state is not None:
                params["state"] = state
            return self._redirect(redirect_uri, response_mode, params)

        response_type = p.get("response_type")
        if not response_type:
            return fail("invalid_request", 900144, _missing("response_type").description)
        if response_type != "code":
            return fail(
                "unsupported_response_type",
                700054,
                f"response_type '{response_type}' is not enabled for the application.",
            )
        scope = p.get("scope")
        if not scope or not scope.split():
            return fail("invalid_request", 900144, _missing("scope").description)
        scopes = tuple(scope.split())
        try:
            self._resolve_user_scopes(scopes)
        except _AadError as exc:
            return fail(exc.error, exc.code, exc.description)
        challenge = p.get("code_challenge")
        method = p.get("code_challenge_method")
        if challenge is not None:
            method = method or "plain"
            if method not in ("S256", "plain"):
                return fail(
                    "invalid_request",
                    501491,
                    f"Invalid code_challenge_method '{method}'. Supported values: S256, plain.",
                )
        login_hint = p.get("login_hint")
        with self._lock:
            user = self._find_user(login_hint) if login_hint else self._default()
        if user is None:
            if login_hint:
                return fail(
                    "invalid_request",
                    50034,
                    f"The user account {login_hint} does not exist in the '{self.tenant_id}' "
                    "directory. To sign into this application, the account must be added to the "
                    "directory.",
                )
            return fail("login_required", 50058, "No user is configured to sign in.")
        code = "1.A" + secrets.token_urlsafe(64)
        with self._lock:
            self._codes[code] = _AuthCode(
                client_id=client.client_id,
                user=user,
                scopes=scopes,
                redirect_uri=redirect_uri,
                redirect_uri_sent=redirect_uri_sent,
                nonce=p.get("nonce"),
                code_challenge=challenge,
                code_challenge_method=method if challenge is not None else None,
                expires_at=now + self.code_lifetime,
            )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        params["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_OID, user.object_id))
        return self._redirect(redirect_uri, response_mode, params)

    def _redirect(self, redirect_uri: str, response_mode: str, params: dict[str, str]) -> Response:
        no_store = [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")]
        if response_mode == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}" />'
                for k, v in params.items()
            )
            page = (
                "<html><head><title>Working...</title></head><body>"
                f'<form method="POST" name="hiddenform" action="{html.escape(redirect_uri)}">'
                f"{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p>"
                '<input type="submit" value="Submit" /></noscript></form>'
                "<script>document.forms[0].submit();</script></body></html>"
            )
            return Response(200, page.encode("utf-8"), [("Content-Type", _HTML_TYPE), *no_store])
        encoded = urlencode(params)
        if response_mode == "fragment":
            location = f"{redirect_uri.split('#', 1)[0]}#{encoded}"
        else:
            sep = "&" if "?" in redirect_uri else "?"
            location = f"{redirect_uri}{sep}{encoded}"
        return Response(302, b"", [("Location", location), *no_store])

    def _error_page(self, code: int, description: str, correlation_id: str, now: float) -> Response:
        text = html.escape(self._describe(code, description, correlation_id, now))
        body = (
            "<html><head><title>Sign in to your account</title></head><body>"
            "<h1>Sorry, but we're having trouble signing you in.</h1>"
            f"<pre>{text}</pre></body></html>"
        )
        return Response(400, body.encode("utf-8"), [("Content-Type", _HTML_TYPE)])

    @staticmethod
    def _redirect_mismatch(uri: str, client: ClientApp, status: int, error: str) -> _AadError:
        return _AadError(
            status,
            error,
            50011,
            f"The redirect URI '{uri}' specified in the request does not match the redirect URIs "
            f"configured for the application '{client.client_id}'. Make sure the redirect URI "
            "sent in the request matches one added to your application in the Azure portal. "
            "Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix "
            "this.",
        )

    # ------------------------------------------------------------------ minting

    def _resolve_user_scopes(self, scopes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """(resource, delegated permissions) for a user-flow scope list."""
        resource_scopes = [s for s in scopes if s not in _OIDC_SCOPES]
        if not resource_scopes:
            return _GRAPH_RESOURCE, ("User.Read",)
        resources: dict[str, tuple[str, list[str]]] = {}
        for s in resource_scopes:
            try:
                resource, permission = _split_scope(s)
            except _ScopeError:
                raise self._invalid_scope(s) from None
            entry = resources.setdefault(_norm_resource(resource), (resource, []))
            permission = "user_impersonation" if permission == ".default" else permission
            if permission not in entry[1]:
                entry[1].append(permission)
        if len(resources) > 1:
            raise self._multi_resource(" ".join(scopes))
        resource, permissions = next(iter(resources.values()))
        return resource, tuple(permissions)

    @staticmethod
    def _invalid_scope(scope: str) -> _AadError:
        return _AadError(
            400,
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope "
            f"'{scope}' is not valid.",
        )

    @staticmethod
    def _multi_resource(scope: str) -> _AadError:
        return _AadError(
            400,
            "invalid_scope",
            28000,
            "Provided value for the input parameter scope is not valid because it contains more "
            f"than one resource. Scope {scope} is not valid.",
        )

    def _user_tokens(
        self,
        *,
        client: ClientApp,
        grant_type: str,
        user: User,
        granted: tuple[str, ...],
        requested: tuple[str, ...],
        nonce: str | None,
        acr: str,
        now: float,
    ) -> dict[str, Any]:
        """Mint the token response of a user flow; caller holds the lock."""
        resource, permissions = self._resolve_user_scopes(requested)
        token, expires_in = self._mint_access_token(
            client=client,
            grant_type=grant_type,
            user=user,
            resource=resource,
            permissions=permissions,
            roles=(),
            acr=acr,
            oid=user.object_id,
            now=now,
        )
        if resource == _GRAPH_RESOURCE:
            scope_text = " ".join(
                [s for s in requested if s in ("openid", "profile", "email")] + list(permissions)
            )
        else:
            scope_text = " ".join(f"{resource}/{perm}" for perm in permissions)
        result: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": scope_text,
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }
        if "offline_access" in granted:
            refresh = "1.A" + secrets.token_urlsafe(96)
            self._refresh[refresh] = _RefreshRecord(
                client_id=client.client_id,
                user=user,
                scopes=granted,
                issued_at=now,
                expires_at=now + self.refresh_token_lifetime,
            )
            result["refresh_token"] = refresh
        if "openid" in requested or ("openid" in granted and grant_type != GRANT_REFRESH_TOKEN):
            result["id_token"] = self._mint_id_token(client, user, nonce, now)
        result["client_info"] = _b64e(orjson.dumps({"uid": user.object_id, "utid": self.tenant_id}))
        self._count(client, grant_type)
        return result

    def _mint_access_token(
        self,
        *,
        client: ClientApp,
        grant_type: str,
        user: User | None,
        resource: str,
        permissions: tuple[str, ...],
        roles: tuple[str, ...],
        acr: str,
        oid: str,
        now: float,
    ) -> tuple[str, int]:
        """Sign and register an access token; caller holds the lock."""
        lifetime = self.access_token_lifetime
        issued = int(now)
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": f"{self.base_url}/{self.tenant_id}/",
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "appid": client.client_id,
            "appidacr": acr,
            "idtyp": "user" if user else "app",
            "oid": oid,
            "sub": oid,
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if user is not None:
            claims.update(
                scp=" ".join(permissions), upn=user.upn, unique_name=user.upn, name=user.name
            )
        if roles:
            claims["roles"] = list(roles)
        token = self._sign(claims)
        info = TokenInfo(
            client_id=client.client_id,
            user_object_id=user.object_id if user else None,
            upn=user.upn if user else None,
            scopes=permissions,
            roles=roles,
            resource=resource,
            tenant_id=self.tenant_id,
            expires_at=float(issued + lifetime),
            grant_type=grant_type,
        )
        self._access[token] = _AccessRecord(info=info, expires_at=info.expires_at)
        return token, lifetime

    def _mint_id_token(self, client: ClientApp, user: User, nonce: str | None, now: float) -> str:
        issued = int(now)
        claims: dict[str, Any] = {
            "aud": client.client_id,
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.access_token_lifetime,
            "name": user.name,
            "oid": user.object_id,
            "preferred_username": user.upn,
            "sub": _b64e(hashlib.sha256(f"{user.object_id}:{client.client_id}".encode()).digest()),
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return self._sign(claims)

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._key, algorithm="RS256", headers={"x5t": self._kid, "kid": self._kid}
        )

    def _count(self, client: ClientApp, grant_type: str) -> None:
        self.issued[grant_type] += 1
        self.issued_by_client[(client.client_id, grant_type)] += 1
        logger.debug("issued token to %s via %s", client.client_id, grant_type)
        if self.issued.total() % 512 == 0:
            self._prune(self._clock())

    def _prune(self, now: float) -> None:
        """Forget what can no longer be redeemed or validated; caller holds the lock.

        Pruned refresh tokens and codes then answer AADSTS70000 instead of their specific code.
        """
        self._access = {k: r for k, r in self._access.items() if r.expires_at > now}
        self._codes = {
            k: c for k, c in self._codes.items() if c.expires_at > now - self.code_lifetime
        }
        self._refresh = {k: r for k, r in self._refresh.items() if r.expires_at > now}
        self._device = {
            k: d for k, d in self._device.items() if d.expires_at > now - self.device_code_lifetime
        }
        self._device_by_user_code = {d.user_code: k for k, d in self._device.items()}

    # ------------------------------------------------------------------ helpers

    def _default(self) -> User | None:
        if self._default_user:
            return self._find_user(self._default_user)
        return self._users[0] if self._users else None

    def _find_user(self, hint: str) -> User | None:
        h = hint.lower()
        for u in self._users:
            if u.upn.lower() == h or u.object_id.lower() == h:
                return u
        return None

    @staticmethod
    def _correlation_id(headers: Mapping[str, str]) -> str:
        value = _header(headers, "client-request-id")
        if value:
            try:
                return str(uuid.UUID(value))
            except ValueError:
                pass
        return str(uuid.uuid4())

    @staticmethod
    def _ts(now: float) -> str:
        return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    @staticmethod
    def _iso(now: float) -> str:
        return datetime.fromtimestamp(now, UTC).strftime("%m/%d/%Y %H:%M:%S")

    def _describe(
        self,
        code: int,
        description: str,
        correlation_id: str,
        now: float,
        trace_id: str | None = None,
    ) -> str:
        """The AADSTS ``error_description``: message plus trace, correlation and timestamp."""
        return (
            f"AADSTS{code}: {description}\r\nTrace ID: {trace_id or uuid.uuid4()}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {self._ts(now)}"
        )

    def _error_response(self, exc: _AadError, correlation_id: str) -> Response:
        now = self._clock()
        trace_id = str(uuid.uuid4())
        timestamp = self._ts(now)
        body: dict[str, Any] = {
            "error": exc.error,
            "error_description": self._describe(
                exc.code, exc.description, correlation_id, now, trace_id
            ),
            "error_codes": [exc.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.base_url}/error?code={exc.code}",
        }
        body.update(exc.extra)
        return self._json(exc.status, body, correlation_id, trace_id)

    @staticmethod
    def _json(
        status: int, payload: Any, correlation_id: str, trace_id: str | None = None
    ) -> Response:
        return Response(
            status,
            orjson.dumps(payload),
            [
                ("Content-Type", _JSON_TYPE),
                ("Cache-Control", "no-store, no-cache"),
                ("Pragma", "no-cache"),
                ("x-ms-request-id", trace_id or str(uuid.uuid4())),
                ("client-request-id", correlation_id),
            ],
        )

    @staticmethod
    def _html(status: int, inner: str) -> Response:
        page = f"<html><head><title>Device login</title></head><body>{inner}</body></html>"
        return Response(status, page.encode("utf-8"), [("Content-Type", _HTML_TYPE)])
