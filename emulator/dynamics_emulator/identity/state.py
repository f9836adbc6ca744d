"""The state of the emulated Entra ID tenant: its configuration, app registrations and users, the
grants it has issued (access and refresh tokens, codes, device codes), and what every endpoint
shares (client and user lookup, tenant names, counters, AADSTS error bodies).

The endpoints are mixins over this class (``discovery``, ``grants``, ``authorize``, ``device``,
with ``minting`` beneath them); ``provider.IdentityProvider`` puts them together.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from dynamics_emulator.wire import Response

from .common import (
    HTML_TYPE,
    JSON_TYPE,
    TENANT_ALIASES,
    AadError,
    AccessRecord,
    AuthCode,
    ClientApp,
    DeviceCode,
    ManagedIdentity,
    RefreshRecord,
    TokenInfo,
    User,
    header_value,
    norm_resource,
)
from .federation import issuer_keys
from .signing import CertKey, Signer, certificate_keys, default_signing_key

logger = logging.getLogger(__name__)


class ProviderState:
    """The tenant's configuration, registrations and issued grants, and the helpers every
    endpoint uses. All state is guarded by one lock; secrets and tokens are never logged."""

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
        managed_identities: tuple[ManagedIdentity, ...] = (),
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
        self._signer = Signer(signing_key or default_signing_key())
        self._lock = threading.RLock()
        self._clients: dict[str, ClientApp] = {}
        self._cert_keys: dict[str, list[CertKey]] = {}
        self._users: list[User] = []
        self._default_user = default_user
        self._access: dict[str, AccessRecord] = {}
        self._codes: dict[str, AuthCode] = {}
        self._refresh: dict[str, RefreshRecord] = {}
        self._device: dict[str, DeviceCode] = {}
        self._device_by_user_code: dict[str, str] = {}
        self.issued: Counter[str] = Counter()
        self.issued_by_client: Counter[tuple[str, str]] = Counter()
        self.errors: Counter[int] = Counter()
        #: The secret a caller of the managed identity endpoint must send as X-IDENTITY-HEADER
        #: (the platform's ``IDENTITY_HEADER``).
        self.managed_identity_header = secrets.token_urlsafe(24)
        #: The emulated Azure resource's system-assigned identity (ids derived from the tenant).
        self.system_assigned_identity = ManagedIdentity(
            client_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"mi-client:{tenant_id}")),
            object_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"mi-object:{tenant_id}")),
        )
        self._user_assigned: list[ManagedIdentity] = []
        for client in clients:
            self.register_client(client)
        for user in users:
            self.register_user(user)
        for identity in managed_identities:
            self.register_managed_identity(identity)

    # ------------------------------------------------------------------ configuration

    @property
    def authority(self) -> str:
        """The msal authority for this tenant: ``<base_url>/<tenant-guid>``."""
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def issuer(self) -> str:
        """The v2 issuer (id tokens; discovery for the tenant GUID)."""
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    @property
    def managed_identity_endpoint(self) -> str:
        """The managed identity endpoint (App Service style): what ``IDENTITY_ENDPOINT`` names."""
        return f"{self.base_url}/msi/token"

    def managed_identity_environ(self) -> dict[str, str]:
        """``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` as the platform sets them; msal's
        managed identity client then asks this emulator."""
        return {
            "IDENTITY_ENDPOINT": self.managed_identity_endpoint,
            "IDENTITY_HEADER": self.managed_identity_header,
        }

    def register_client(self, client: ClientApp) -> None:
        """Add or replace an app registration.

        Raises:
            ValueError: a certificate is not RSA, or a federated credential's JWKS has no key.
        """
        keys = certificate_keys(client.certificates)
        issuer_keys(client.federated_credentials)
        with self._lock:
            self._clients[client.client_id.lower()] = client
            self._cert_keys[client.client_id.lower()] = keys

    def register_managed_identity(self, identity: ManagedIdentity) -> None:
        """Assign a user-assigned identity to the emulated resource (replacing one with the same
        client id)."""
        with self._lock:
            self._user_assigned = [
                i for i in self._user_assigned if i.client_id.lower() != identity.client_id.lower()
            ] + [identity]

    def register_user(self, user: User) -> None:
        with self._lock:
            self._users.append(user)

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
            if resource is not None and norm_resource(resource) != norm_resource(rec.info.resource):
                return None
            return replace(rec.info, expires_at=rec.expires_at)

    def _resolve_tenant(self, segment: str) -> bool:
        seg = segment.lower()
        return seg in TENANT_ALIASES or seg in self._tenant_names

    def _tenant_not_found(self, segment: str) -> str:
        return (
            f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud. Check with your subscription administrator, "
            "this may happen if there are no active subscriptions for the tenant."
        )

    def _client(self, client_id: str) -> ClientApp:
        with self._lock:
            client = self._clients.get(client_id.lower())
        if client is None:
            raise AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_id}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )
        return client

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
        value = header_value(headers, "client-request-id")
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

    def _error_response(self, exc: AadError, correlation_id: str) -> Response:
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
                ("Content-Type", JSON_TYPE),
                ("Cache-Control", "no-store, no-cache"),
                ("Pragma", "no-cache"),
                ("x-ms-request-id", trace_id or str(uuid.uuid4())),
                ("client-request-id", correlation_id),
            ],
        )

    @staticmethod
    def _html(status: int, inner: str) -> Response:
        page = f"<html><head><title>Device login</title></head><body>{inner}</body></html>"
        return Response(status, page.encode("utf-8"), [("Content-Type", HTML_TYPE)])
