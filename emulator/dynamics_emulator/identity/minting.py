"""Minting: the access tokens (v1-shaped, as Dataverse is a v1 resource) and id tokens (v2) the
grants hand out, and how a user flow's scopes become a resource and delegated permissions."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson

from .common import (
    GRANT_REFRESH_TOKEN,
    GRAPH_RESOURCE,
    OIDC_SCOPES,
    AadError,
    AccessRecord,
    ClientApp,
    RefreshRecord,
    ScopeError,
    TokenInfo,
    User,
    b64e,
    norm_resource,
    split_scope,
)
from .state import ProviderState


class Minting(ProviderState):
    """Issues and registers tokens; the grant, authorize and device-code endpoints build on it."""

    def _resolve_user_scopes(self, scopes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
        """(resource, delegated permissions) for a user-flow scope list."""
        resource_scopes = [s for s in scopes if s not in OIDC_SCOPES]
        if not resource_scopes:
            return GRAPH_RESOURCE, ("User.Read",)
        resources: dict[str, tuple[str, list[str]]] = {}
        for s in resource_scopes:
            try:
                resource, permission = split_scope(s)
            except ScopeError:
                raise self._invalid_scope(s) from None
            entry = resources.setdefault(norm_resource(resource), (resource, []))
            permission = "user_impersonation" if permission == ".default" else permission
            if permission not in entry[1]:
                entry[1].append(permission)
        if len(resources) > 1:
            raise self._multi_resource(" ".join(scopes))
        resource, permissions = next(iter(resources.values()))
        return resource, tuple(permissions)

    @staticmethod
    def _invalid_scope(scope: str) -> AadError:
        return AadError(
            400,
            "invalid_scope",
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope "
            f"'{scope}' is not valid.",
        )

    @staticmethod
    def _multi_resource(scope: str) -> AadError:
        return AadError(
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
        if resource == GRAPH_RESOURCE:
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
            self._refresh[refresh] = RefreshRecord(
                client_id=client.client_id,
                user=user,
                scopes=granted,
                issued_at=now,
                expires_at=now + self.refresh_token_lifetime,
            )
            result["refresh_token"] = refresh
        if "openid" in requested or ("openid" in granted and grant_type != GRANT_REFRESH_TOKEN):
            result["id_token"] = self._mint_id_token(client, user, nonce, now)
        result["client_info"] = b64e(orjson.dumps({"uid": user.object_id, "utid": self.tenant_id}))
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
        token = self._signer.sign(claims)
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
        self._access[token] = AccessRecord(info=info, expires_at=info.expires_at)
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
            "sub": b64e(hashlib.sha256(f"{user.object_id}:{client.client_id}".encode()).digest()),
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return self._signer.sign(claims)
