"""Workload identity federation: a ``client_assertion`` issued by an external identity provider
(a Kubernetes service account token, a CI system's OIDC token) accepted in place of a secret by an
app registration with a matching federated identity credential.

The checks, in order, each with the real service's AADSTS code and wording:

1. the assertion parses as a JWT with a supported algorithm (50027, 5002738; ``signing``);
2. a federated credential of the app names its issuer, compared exactly (700211);
3. one of that issuer's keys (the JWKS configured on the credential, which the real service reads
   from the issuer's discovery document) has the ``kid`` of the header (7000272) and verifies the
   signature (700027);
4. a credential of that issuer names its subject, compared exactly (700213), and one of those
   lists its audience (70021, which names issuer, subject and audience);
5. ``exp`` and ``nbf`` hold, with 5 minutes of clock skew either way (700024).

Choices where the real service is not (publicly) specified: a bad signature by a published key
answers 700027 (the certificate credential's code); an assertion without a text ``iss`` or
``sub`` is malformed (50027); without an ``aud`` it matches no audience (70021).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jwt

from .common import AadError, ClientApp, FederatedCredential
from .signing import (
    ASSERTION_ALGORITHMS,
    SIGNATURE_ONLY,
    check_assertion_lifetime,
    invalid_jwt,
)

_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
_CHECK = "Please check your federated identity credential Subject, Audience and Issuer against "


def _bad(code: int, description: str) -> AadError:
    return AadError(401, "invalid_client", code, description)


def issuer_keys(credentials: Sequence[FederatedCredential]) -> list[jwt.PyJWK]:
    """The signing keys of the credentials' JWKS documents.

    Raises:
        ValueError: a JWKS document holds no usable key.
    """
    keys: list[jwt.PyJWK] = []
    for credential in credentials:
        try:
            keys.extend(jwt.PyJWKSet.from_dict(dict(credential.jwks)).keys)
        except jwt.PyJWTError as exc:
            raise ValueError(
                f"the JWKS of the federated credential for {credential.issuer!r} is not usable "
                f"({exc})"
            ) from None
    return keys


def verify_federated_assertion(
    client: ClientApp,
    assertion: str,
    header: dict[str, Any],
    claims: dict[str, Any],
    *,
    now: float,
    timestamp: Callable[[float], str],
) -> None:
    """Accept ``assertion`` (already parsed into ``header`` and ``claims``) for ``client``, or
    raise the AADSTS error the real service gives.

    Args:
        timestamp: formats epoch seconds as the service's error descriptions do.

    Raises:
        AadError: 50027, 700211, 7000272, 700027, 700213, 70021 or 700024 (``invalid_client``).
    """
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        raise invalid_jwt()
    by_issuer = [c for c in client.federated_credentials if c.issuer == issuer]
    if not by_issuer:
        raise _bad(
            700211,
            "No matching federated identity record found for presented assertion issuer "
            f"'{issuer}'. {_CHECK}the presented assertion. {_DOCS}",
        )
    _verify_signature(assertion, header, issuer, by_issuer)
    by_subject = [c for c in by_issuer if c.subject == subject]
    if not by_subject:
        raise _bad(
            700213,
            "No matching federated identity record found for presented assertion subject "
            f"'{subject}'. {_CHECK}the presented assertion. {_DOCS}",
        )
    aud = claims.get("aud")
    audiences = [a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str)]
    if not any(a in c.audiences for c in by_subject for a in audiences):
        raise _bad(
            70021,
            "No matching federated identity record found for presented assertion. Assertion "
            f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: "
            f"'{','.join(audiences)}'. {_DOCS}",
        )
    check_assertion_lifetime(claims, now, timestamp)


def _verify_signature(
    assertion: str, header: dict[str, Any], issuer: str, credentials: Sequence[FederatedCredential]
) -> None:
    kid = header.get("kid")
    keys = [k for k in issuer_keys(credentials) if kid is None or k.key_id == kid]
    if not keys:
        raise _bad(
            7000272,
            f"The certificate with identifier {kid} used to sign the federated credential could "
            f"not be found in the metadata of identity provider {issuer}. Please validate that "
            "your Identity Provider's metadata exposes the key used to sign the incoming token.",
        )
    for key in keys:
        try:
            jwt.decode(
                assertion, key.key, algorithms=list(ASSERTION_ALGORITHMS), options=SIGNATURE_ONLY
            )
        except jwt.InvalidTokenError:
            continue
        return
    raise _bad(700027, "Client assertion failed signature validation.")
