"""The identity emulation's keys: the RS256 key that signs every token it issues (and its JWKS),
and the certificates apps sign client assertions with. JWTs are made and read by PyJWT."""

from __future__ import annotations

import binascii
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .common import AadError, b64d, b64e

ASSERTION_ALGORITHMS = ("RS256", "PS256")
#: Clock skew allowed either way on an assertion's ``exp`` and ``nbf``.
ASSERTION_SKEW = 300
#: Only the signature: the claims of an assertion are checked by the token endpoint, each with its
#: own AADSTS code and against the provider's clock (PyJWT would read the wall clock).
SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


@functools.cache
def default_signing_key() -> rsa.RSAPrivateKey:
    # One key per process: generating RSA keys is slow and tests build many providers.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _int_b64(n: int) -> str:
    return b64e(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Signer:
    """Signs tokens with one RSA key, published at the JWKS endpoint under its key id."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key = key
        pub = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = b64e(hashlib.sha1(pub).digest())  # noqa: S324 - a key id, not security

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self.key, algorithm="RS256", headers={"x5t": self.kid, "kid": self.kid}
        )

    def jwks(self, issuer: str) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": _int_b64(numbers.n),
                    "e": _int_b64(numbers.e),
                    "issuer": issuer,
                }
            ]
        }


@dataclass
class CertKey:
    """A registered certificate's public key and its thumbprints (``x5t``, ``x5t#S256``)."""

    sha1: bytes
    sha256: bytes
    key: rsa.RSAPublicKey


def certificate_keys(pems: Sequence[str]) -> list[CertKey]:
    """The keys of an app's PEM certificates; raises ValueError for a non-RSA certificate."""
    keys: list[CertKey] = []
    for pem in pems:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("only RSA certificates are supported")
        keys.append(
            CertKey(
                sha1=cert.fingerprint(hashes.SHA1()),  # noqa: S303 - x5t is SHA-1 by spec
                sha256=cert.fingerprint(hashes.SHA256()),
                key=public,
            )
        )
    return keys


def _bad(code: int, description: str) -> AadError:
    return AadError(401, "invalid_client", code, description)


def parse_client_assertion(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a client assertion, its signature not yet checked.

    Raises AadError: 50027 malformed, 5002738 unsupported algorithm.
    """
    try:
        unverified = jwt.decode_complete(assertion, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise invalid_jwt() from None
    header, claims = unverified["header"], unverified["payload"]
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise _bad(5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm.")
    return header, claims


def invalid_jwt() -> AadError:
    return _bad(50027, "JWT token is invalid or malformed.")


def verify_certificate_assertion(
    assertion: str, header: dict[str, Any], keys: Sequence[CertKey]
) -> None:
    """Check that one of the app's registered certificates (``keys``) signed the assertion; the
    certificate is named by the ``x5t#S256`` or ``x5t`` header.

    Raises AadError: 700027 certificate not registered or signature invalid.
    """
    key: rsa.RSAPublicKey | None = None
    try:
        if isinstance(header.get("x5t#S256"), str):
            want = b64d(header["x5t#S256"])
            key = next((k.key for k in keys if k.sha256 == want), None)
        elif isinstance(header.get("x5t"), str):
            want = b64d(header["x5t"])
            key = next((k.key for k in keys if k.sha1 == want), None)
    except (binascii.Error, ValueError):
        key = None
    if key is None:
        raise _bad(
            700027,
            "The certificate with identifier used to sign the client assertion is not "
            "registered on application.",
        )
    try:
        jwt.decode(assertion, key, algorithms=list(ASSERTION_ALGORITHMS), options=SIGNATURE_ONLY)
    except jwt.InvalidTokenError:
        raise _bad(700027, "Client assertion failed signature validation.") from None


def check_assertion_lifetime(
    claims: dict[str, Any], now: float, timestamp: Callable[[float], str]
) -> None:
    """``exp`` (required) and ``nbf`` hold at ``now``, give or take :data:`ASSERTION_SKEW`.

    Raises AadError: 700024 (``timestamp`` formats the times in its description).
    """
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if (
        isinstance(exp, int | float)
        and now <= exp + ASSERTION_SKEW
        and not (isinstance(nbf, int | float) and nbf > now + ASSERTION_SKEW)
    ):
        return
    start = nbf if isinstance(nbf, int | float) else claims.get("iat")
    valid_from = timestamp(start) if isinstance(start, int | float) else "unknown"
    expiry = timestamp(exp) if isinstance(exp, int | float) else "unknown"
    raise _bad(
        700024,
        f"Client assertion is not within its valid time range. Current time: {timestamp(now)}, "
        f"assertion valid from {valid_from}, expiry time of assertion {expiry}.",
    )
