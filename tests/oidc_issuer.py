"""An external OpenID issuer for workload identity federation tests: a key pair, its JWKS (what the
emulator is configured to trust) and the tokens it signs, shaped like a Kubernetes projected
service account token."""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from dynamics_emulator.identity import TOKEN_EXCHANGE_AUDIENCE, FederatedCredential

AKS_SUBJECT = "system:serviceaccount:etl:tap-dynamics"


@functools.cache
def _key(n: int) -> rsa.RSAPrivateKey:
    # A few keys per process: generating RSA keys is slow.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class ExternalIssuer:
    """An issuer such as ``https://oidc.prod-aks.azure.com/<tenant>/<cluster>/``.

    Args:
        url: the ``iss`` of its tokens.
        key_number: which of a few process-wide keys signs (a new number: a rotated key).
    """

    def __init__(self, url: str, key_number: int = 0) -> None:
        self.url = url
        self.key = _key(key_number)
        self.kid = f"key-{key_number}"

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def credential(self, subject: str = AKS_SUBJECT, **kw: Any) -> FederatedCredential:
        """The federated credential an app registration needs to trust this issuer's ``subject``."""
        return FederatedCredential(issuer=self.url, subject=subject, jwks=self.jwks(), **kw)

    def token(
        self,
        subject: str = AKS_SUBJECT,
        *,
        audience: str | list[str] = TOKEN_EXCHANGE_AUDIENCE,
        lifetime: float = 3600,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """A signed token (RS256, ``kid`` header) like a projected service account token."""
        issued = int(time.time() if now is None else now)
        payload = {
            "iss": self.url,
            "sub": subject,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime),
            "jti": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})
