"""OpenID discovery (``/{t}/v2.0/.well-known/openid-configuration``, what msal reads first) and
the JWKS (``/{t}/discovery/v2.0/keys``)."""

from __future__ import annotations

from typing import Any

from .common import TENANT_ALIASES
from .state import ProviderState


class Discovery(ProviderState):
    def _discovery(self, tenant_seg: str) -> dict[str, Any]:
        alias = tenant_seg.lower() in TENANT_ALIASES
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
        return self._signer.jwks(self.issuer)
