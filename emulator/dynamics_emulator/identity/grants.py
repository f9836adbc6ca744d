"""The token endpoint (``POST /{t}/oauth2/v2.0/token``): client authentication (secret, Basic,
certificate assertion, an external issuer's federated assertion: ``federation``) and the grants
``client_credentials``, ``authorization_code``, ``refresh_token`` (rotated strictly) and the
device code."""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from .authorize import pkce_matches
from .common import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH_TOKEN,
    JWT_BEARER,
    AadError,
    ClientApp,
    ScopeError,
    header_value,
    invalid_grant,
    missing,
    norm_resource,
    redirect_matches,
    redirect_mismatch,
    split_scope,
)
from .federation import verify_federated_assertion
from .minting import Minting
from .signing import (
    check_assertion_lifetime,
    parse_client_assertion,
    verify_certificate_assertion,
)

_SUPPORTED_GRANTS = frozenset(
    {GRANT_CLIENT_CREDENTIALS, GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, GRANT_DEVICE_CODE}
)


class TokenGrants(Minting):
    def _token(
        self, tenant_seg: str, p: dict[str, str], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        grant_type = p.get("grant_type")
        if not grant_type:
            raise missing("grant_type")
        if grant_type not in _SUPPORTED_GRANTS:
            raise AadError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        basic = self._basic_auth(headers)
        client_id = p.get("client_id") or (basic[0] if basic else None)
        if not client_id:
            raise missing("client_id")
        client = self._client(client_id)
        now = self._clock()
        if grant_type == GRANT_CLIENT_CREDENTIALS:
            return self._grant_client_credentials(client, tenant_seg, p, basic, now)
        if grant_type == GRANT_AUTHORIZATION_CODE:
            return self._grant_authorization_code(client, tenant_seg, p, basic, now)
        if grant_type == GRANT_REFRESH_TOKEN:
            return self._grant_refresh_token(client, tenant_seg, p, basic, now)
        return self._grant_device_code(client, tenant_seg, p, basic, now)

    @staticmethod
    def _basic_auth(headers: Mapping[str, str]) -> tuple[str, str] | None:
        value = header_value(headers, "Authorization")
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
                raise AadError(
                    401,
                    "invalid_client",
                    700025,
                    "Client is public so neither 'client_assertion' nor 'client_secret' should be "
                    "presented.",
                )
            return "0"
        if assertion:
            if p.get("client_assertion_type") != JWT_BEARER:
                raise AadError(
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
                raise AadError(
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
    def _credential_required() -> AadError:
        return AadError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or "
            "'client_secret'.",
        )

    def _verify_assertion(
        self, client: ClientApp, tenant_seg: str, assertion: str, now: float
    ) -> None:
        """A certificate assertion (signed by the app, ``iss`` = ``sub`` = its client id) or, for
        an app with federated credentials, an external issuer's token (``federation``)."""

        def bad(code: int, description: str) -> AadError:
            return AadError(401, "invalid_client", code, description)

        header, claims = parse_client_assertion(assertion)
        if client.federated_credentials and claims.get("iss") != client.client_id:
            verify_federated_assertion(
                client, assertion, header, claims, now=now, timestamp=self._ts
            )
            return
        with self._lock:
            keys = list(self._cert_keys.get(client.client_id.lower(), []))
        verify_certificate_assertion(assertion, header, keys)
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise bad(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )
        auds = claims.get("aud")
        aud_list = auds if isinstance(auds, list) else [auds]
        if not any(isinstance(a, str) and self._assertion_audience_ok(a) for a in aud_list):
            raise bad(700023, "Client assertion audience claim does not match Realm issuer.")
        check_assertion_lifetime(claims, now, self._ts)

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
            raise missing("scope")
        resources: dict[str, str] = {}
        for s in scope.split():
            if not s.endswith("/.default"):
                raise AadError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {s} is not valid. Client credential flows must "
                    "have a scope value with /.default suffixed to the resource identifier "
                    "(application ID URI).",
                )
            try:
                resource, _ = split_scope(s)
            except ScopeError:
                raise self._invalid_scope(s) from None
            resources.setdefault(norm_resource(resource), resource)
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
            raise missing("code")
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=True)
        with self._lock:
            rec = self._codes.get(code)
            if rec is None or rec.client_id.lower() != client.client_id.lower():
                raise invalid_grant()
            if rec.used:
                raise AadError(
                    400,
                    "invalid_grant",
                    54005,
                    "OAuth2 Authorization code was already redeemed, please retry with a new "
                    "valid code or use an existing refresh token.",
                )
            if now >= rec.expires_at:
                raise AadError(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to "
                    "inactivity. Send a new interactive authorization request for this user and "
                    "resource.",
                )
            redirect_uri = p.get("redirect_uri")
            if rec.redirect_uri_sent and not redirect_uri:
                raise missing("redirect_uri")
            if redirect_uri is not None and redirect_uri != rec.redirect_uri:
                if not any(redirect_matches(redirect_uri, r) for r in client.redirect_uris):
                    raise redirect_mismatch(redirect_uri, client, 400, "invalid_client")
                raise AadError(
                    400,
                    "invalid_grant",
                    500112,
                    f"The reply address '{redirect_uri}' does not match the reply address "
                    f"'{rec.redirect_uri}' provided when requesting Authorization code.",
                )
            if rec.code_challenge is not None:
                verifier = p.get("code_verifier") or ""
                if not pkce_matches(rec.code_challenge, rec.code_challenge_method, verifier):
                    raise AadError(
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
            raise missing("refresh_token")
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=True)
        with self._lock:
            rec = self._refresh.get(token)
            if rec is None or rec.client_id.lower() != client.client_id.lower():
                raise invalid_grant()
            if rec.state == "rotated":
                raise invalid_grant()
            if rec.state == "revoked":
                raise AadError(
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
                raise AadError(
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
            raise missing("device_code")
        acr = self._authenticate(client, tenant_seg, p, basic, now, required=False)
        with self._lock:
            rec = self._device.get(device_code)
            if rec is None or rec.client_id.lower() != client.client_id.lower() or rec.redeemed:
                raise invalid_grant()
            if now >= rec.expires_at:
                raise AadError(
                    400,
                    "expired_token",
                    70020,
                    "The provided value for the input parameter 'device_code' is not valid. "
                    "This device code has expired.",
                )
            if rec.user is None:
                raise AadError(
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
