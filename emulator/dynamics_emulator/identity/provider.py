"""``IdentityProvider``: the emulated Entra ID tenant, its endpoints put together and routed."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from dynamics_emulator.wire import Response

from .authorize import Authorization
from .common import AadError, first_values
from .device import DeviceFlow
from .discovery import Discovery
from .grants import TokenGrants
from .managed import ManagedIdentityEndpoint

logger = logging.getLogger(__name__)


class IdentityProvider(Discovery, TokenGrants, Authorization, DeviceFlow, ManagedIdentityEndpoint):
    """An in-memory Entra ID tenant with clients, users and the tokens issued to them.

    Thread-safe: all state is guarded by one lock. Secrets and tokens are never logged.

    Test hooks and counters: :meth:`approve_device_code`, :meth:`register_managed_identity`,
    :meth:`managed_identity_environ`, :meth:`revoke_all_tokens`,
    :meth:`expire_access_tokens`, :attr:`issued` (successful token responses per grant type),
    :attr:`issued_by_client` (per ``(client_id, grant_type)``) and :attr:`errors` (token and
    device-code endpoint errors per AADSTS code).
    """

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
            return self._device_login(method, first_values(query) | first_values(form))
        if endpoint == "msi":
            return self._managed_identity_token(method, first_values(query), headers)
        tenant_known = self._resolve_tenant(tenant_seg)
        if endpoint in ("discovery", "keys"):
            if method not in ("GET", "HEAD"):
                return Response(405, b"", [("Allow", "GET")])
            if not tenant_known:
                return self._error_response(
                    AadError(400, "invalid_tenant", 90002, self._tenant_not_found(tenant_seg)),
                    correlation_id,
                )
            if endpoint == "keys":
                return self._json(200, self._jwks(), correlation_id)
            return self._json(200, self._discovery(tenant_seg), correlation_id)
        if endpoint == "authorize":
            params = first_values(query) | (first_values(form) if method == "POST" else {})
            return self._authorize(tenant_seg, tenant_known, params, correlation_id)
        # token and devicecode
        try:
            if method != "POST":
                raise AadError(
                    400,
                    "invalid_request",
                    900561,
                    f"The endpoint only accepts POST, OPTIONS requests. Received a {method} "
                    "request.",
                )
            if not tenant_known:
                raise AadError(400, "invalid_request", 90002, self._tenant_not_found(tenant_seg))
            params = first_values(form)
            if endpoint == "devicecode":
                payload = self._devicecode(params)
            else:
                payload = self._token(tenant_seg, params, headers)
        except AadError as exc:
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
        if [p.lower() for p in parts] == ["msi", "token"]:
            return "", "msi"
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
