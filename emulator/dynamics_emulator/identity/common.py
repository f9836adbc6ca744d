"""What every part of the identity emulation shares: the app registrations, users and grants it
keeps, the AADSTS error, and small helpers for scopes, redirect URIs and base64url."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"  # noqa: S105 - a grant type name
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
#: Not an OAuth grant: how tokens from the managed identity endpoint are counted.
GRANT_MANAGED_IDENTITY = "managed_identity"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The audience Entra ID expects in a federated (workload identity) token.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
GRAPH_RESOURCE = "https://graph.microsoft.com"
TENANT_ALIASES = frozenset({"organizations", "common"})
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential of an app registration (workload identity federation):
    tokens from ``issuer`` about ``subject`` for one of ``audiences`` stand in for a secret.

    Attributes:
        issuer: the external issuer, compared exactly (as Entra ID does, case-sensitively).
        subject: the ``sub`` the token must carry, compared exactly.
        jwks: the issuer's signing keys as a JWKS document (``{"keys": [...]}``), what the real
            service reads from the issuer's OpenID discovery document.
        audiences: accepted ``aud`` values.
        name: shown nowhere important.
    """

    issuer: str
    subject: str
    jwks: Mapping[str, Any] = field(repr=False)
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)
    name: str = ""


@dataclass(frozen=True)
class ManagedIdentity:
    """A managed identity of the emulated Azure resource (system- or user-assigned).

    Attributes:
        client_id: its application (client) id, the ``appid`` of its tokens.
        object_id: its service principal's object id (``oid``).
        resource_id: its ARM resource id (user-assigned identities), for ``mi_res_id``.
    """

    client_id: str
    object_id: str
    resource_id: str | None = None


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
        federated_credentials: external tokens accepted as a ``client_assertion``.
    """

    client_id: str
    secret: str | None = field(default=None, repr=False)
    redirect_uris: tuple[str, ...] = ()
    certificates: tuple[str, ...] = field(default=(), repr=False)
    display_name: str = ""
    app_roles: tuple[str, ...] = ()
    federated_credentials: tuple[FederatedCredential, ...] = ()

    @property
    def is_public(self) -> bool:
        return self.secret is None and not self.certificates and not self.federated_credentials


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
class AccessRecord:
    info: TokenInfo
    expires_at: float
    revoked: bool = False


@dataclass
class AuthCode:
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
class RefreshRecord:
    client_id: str
    user: User
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    state: str = "active"  # "active" | "rotated" | "revoked"


@dataclass
class DeviceCode:
    client_id: str
    scopes: tuple[str, ...]
    user_code: str
    expires_at: float
    user: User | None = None
    redeemed: bool = False


class AadError(Exception):
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


class ScopeError(Exception):
    pass


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def first_values(params: Mapping[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in params.items() if v}


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    lname = name.lower()
    for k, v in headers.items():
        if k.lower() == lname:
            return v
    return None


def missing(name: str) -> AadError:
    return AadError(
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def invalid_grant() -> AadError:
    return AadError(400, "invalid_grant", 70000, "Provided grant is invalid or malformed.")


def norm_resource(resource: str) -> str:
    return resource.rstrip("/").lower()


def split_scope(scope: str) -> tuple[str, str]:
    """``https://org.crm.dynamics.com/user_impersonation`` -> (resource, permission).

    A bare permission (``User.Read``) is Microsoft Graph's, as on the real service.
    """
    if "/" not in scope:
        return GRAPH_RESOURCE, scope
    resource, _, permission = scope.rpartition("/")
    resource = resource.rstrip("/")  # "https://org.crm.dynamics.com//.default" is accepted
    if not permission or not resource or resource.endswith(":"):
        raise ScopeError(scope)
    if "://" in resource and not resource.split("://", 1)[1]:
        raise ScopeError(scope)
    return resource, permission


def redirect_matches(sent: str, registered: str) -> bool:
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


def redirect_mismatch(uri: str, client: ClientApp, status: int, error: str) -> AadError:
    return AadError(
        status,
        error,
        50011,
        f"The redirect URI '{uri}' specified in the request does not match the redirect URIs "
        f"configured for the application '{client.client_id}'. Make sure the redirect URI "
        "sent in the request matches one added to your application in the Azure portal. "
        "Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix "
        "this.",
    )
