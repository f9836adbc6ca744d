"""The managed identity endpoint, in the shape App Service (and Functions, Container Apps,
Automation) serves it: ``GET <IDENTITY_ENDPOINT>?resource=...&api-version=2019-08-01`` with the
platform's secret in ``X-IDENTITY-HEADER``.

Why this shape and not the VM's IMDS: the platform names the endpoint (``IDENTITY_ENDPOINT``, any
URL, HTTPS included) and its secret (``IDENTITY_HEADER``) in the environment, so msal's managed
identity client asks the emulator wherever it runs, through the HTTP session it was given (TLS
verified against the emulator's CA). IMDS lives at the link-local ``169.254.169.254`` over plain
HTTP; msal redirects it only through the ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` variable of the
retired AAD Pod Identity add-on.

Served at ``<base_url>/msi/token`` (:attr:`ProviderState.managed_identity_endpoint`). The
identity: the system-assigned one unless the request names a user-assigned one by ``client_id``,
``object_id`` or ``mi_res_id``. Answers:

* 200 ``{"access_token", "expires_on" (epoch seconds, text), "resource", "token_type",
  "client_id"}``; the token is app-only (``idtyp`` app, ``appid`` the identity's client id,
  ``appidacr`` 2).
* 400 ``{"statusCode": 400, "message": "Unable to load the proper Managed Identity.",
  "correlationId"}`` for an identity not assigned to the resource (the real answer).

Choices where the real service is not (publicly) specified, in the same body shape: a missing or
wrong ``X-IDENTITY-HEADER`` is 401; a missing ``resource``, an ``api-version`` other than
2019-08-01 or several identity selectors are 400; any method but GET is 405.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping

from dynamics_emulator.wire import Response

from .common import GRANT_MANAGED_IDENTITY, ClientApp, ManagedIdentity, header_value
from .minting import Minting

API_VERSION = "2019-08-01"
_SELECTORS = ("client_id", "object_id", "mi_res_id")


class _RefusedError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ManagedIdentityEndpoint(Minting):
    def _managed_identity_token(
        self, method: str, params: dict[str, str], headers: Mapping[str, str]
    ) -> Response:
        correlation_id = str(uuid.uuid4())
        if method != "GET":
            return Response(405, b"", [("Allow", "GET")])
        try:
            identity, resource = self._managed_identity_request(params, headers)
        except _RefusedError as refused:
            payload = {
                "statusCode": refused.status,
                "message": refused.message,
                "correlationId": correlation_id,
            }
            return self._json(refused.status, payload, correlation_id)
        now = self._clock()
        client = ClientApp(identity.client_id, display_name="managed identity")
        with self._lock:
            token, expires_in = self._mint_access_token(
                client=client,
                grant_type=GRANT_MANAGED_IDENTITY,
                user=None,
                resource=resource,
                permissions=(),
                roles=(),
                acr="2",
                oid=identity.object_id,
                now=now,
            )
            self._count(client, GRANT_MANAGED_IDENTITY)
        payload = {
            "access_token": token,
            "expires_on": str(int(now) + expires_in),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }
        return self._json(200, payload, correlation_id)

    def _managed_identity_request(
        self, params: dict[str, str], headers: Mapping[str, str]
    ) -> tuple[ManagedIdentity, str]:
        sent = header_value(headers, "X-IDENTITY-HEADER") or ""
        if not hmac.compare_digest(sent.encode(), self.managed_identity_header.encode()):
            raise _RefusedError(
                401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER."
            )
        if params.get("api-version") != API_VERSION:
            raise _RefusedError(400, f"The api-version must be {API_VERSION}.")
        resource = params.get("resource")
        if not resource:
            raise _RefusedError(400, "The resource parameter is required.")
        chosen = [(name, params[name]) for name in _SELECTORS if params.get(name)]
        if len(chosen) > 1:
            raise _RefusedError(400, "Only one of client_id, object_id and mi_res_id may be given.")
        identity = self._find_managed_identity(*chosen[0]) if chosen else None
        if chosen and identity is None:
            raise _RefusedError(400, "Unable to load the proper Managed Identity.")
        return identity or self.system_assigned_identity, resource

    def _find_managed_identity(self, selector: str, value: str) -> ManagedIdentity | None:
        wanted = value.lower()
        with self._lock:
            for identity in self._user_assigned:
                have = {
                    "client_id": identity.client_id,
                    "object_id": identity.object_id,
                    "mi_res_id": identity.resource_id,
                }[selector]
                if have is not None and have.lower() == wanted:
                    return identity
        return None
