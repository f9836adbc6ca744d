"""Workload identity federation: a token from another identity provider (a Kubernetes service
account token, a CI system's OIDC token), read from a file, proves the app registration instead
of a secret.

The file is named by the ``federated_token_file`` setting, or by ``AZURE_FEDERATED_TOKEN_FILE``
(what AKS workload identity sets in the pod) when no other credential is configured. msal gets a
``client_assertion`` callable (:meth:`FederatedTokenFile.assertion`), which it calls whenever it
sends a token request; the file is read again on every call, so a token that Kubernetes rotated
in the file (it does so well before expiry) is the one sent. Entra ID matches the token's issuer,
subject and audience (``api://AzureADTokenExchange``) against the app's federated credentials;
:func:`federated_error` words its refusals.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamics_api.auth.errors import aadsts_code
from dynamics_api.errors import AuthError, ConfigError

__all__ = ["FEDERATED_TOKEN_ENV", "FederatedTokenFile", "federated_error"]

#: The variable AKS workload identity (and azure-identity) use for the token file.
FEDERATED_TOKEN_ENV = "AZURE_FEDERATED_TOKEN_FILE"  # noqa: S105 - a variable name
#: Larger files are not tokens (a projected service account token is about 1 KB).
_MAX_SIZE = 64 * 1024


@dataclass(frozen=True)
class FederatedTokenFile:
    """The file holding the federated token.

    Attributes:
        path: the file (``~`` expanded).
        source: what named it, for messages: ``federated_token_file`` or the variable's name.
    """

    path: Path
    source: str

    @classmethod
    def locate(
        cls, setting: str | None, environ: Mapping[str, str], *, use_environment: bool
    ) -> FederatedTokenFile | None:
        """The token file from the setting, else (when ``use_environment``) from
        ``AZURE_FEDERATED_TOKEN_FILE``; checked to be readable now.

        Raises:
            ConfigError: the file cannot be read.
        """
        if setting:
            found = cls(Path(setting).expanduser(), "federated_token_file")
        elif use_environment and (environ.get(FEDERATED_TOKEN_ENV) or "").strip():
            found = cls(
                Path(environ[FEDERATED_TOKEN_ENV].strip()).expanduser(), FEDERATED_TOKEN_ENV
            )
        else:
            return None
        found.read()
        return found

    @property
    def described(self) -> str:
        """``federated_token_file ('/path')`` or ``AZURE_FEDERATED_TOKEN_FILE ('/path')``."""
        return f"{self.source} ({str(self.path)!r})"

    def read(self) -> str:
        """The token in the file now.

        Raises:
            ConfigError: the file cannot be read, is empty or too big to be a token.
        """
        try:
            with self.path.open("rb") as handle:
                data = handle.read(_MAX_SIZE + 1)
        except OSError as exc:
            raise ConfigError(
                f"The federated token file named by {self.described} cannot be read "
                f"({exc.strerror or type(exc).__name__}): point it at the token file your "
                "platform writes (in an AKS pod with workload identity, "
                "AZURE_FEDERATED_TOKEN_FILE)."
            ) from None
        token = data.decode("utf-8", "replace").strip()
        if not token or len(data) > _MAX_SIZE:
            raise ConfigError(
                f"The federated token file named by {self.described} is "
                f"{'empty' if not token else 'too big to hold a token'}: point it at the token "
                "file your platform writes."
            )
        return token

    def assertion(self, on_read: Callable[[str], None]) -> Callable[[], str]:
        """msal's ``client_assertion``: reads the file on every call and hands each token to
        ``on_read`` first (to scrub it from messages)."""

        def current() -> str:
            token = self.read()
            on_read(token)
            return token

        return current

    def claims(self) -> dict[str, Any]:
        """The token's claims, unverified (to name its issuer and subject in messages); empty
        when the file holds no readable JWT."""
        try:
            payload = self.read().split(".")[1]
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ConfigError, IndexError, binascii.Error, ValueError):
            return {}
        return data if isinstance(data, dict) else {}


def federated_error(
    result: Mapping[str, Any],
    token_file: FederatedTokenFile,
    client_id: str,
    scrub: Callable[[str], str],
) -> AuthError | None:
    """One sentence for Entra ID refusing the federated token (``None``: not such a refusal).

    Args:
        result: msal's error result.
        token_file: the token's file (its claims are read to name issuer and subject).
        client_id: the app registration.
        scrub: removes secrets from the sentence.
    """
    code = aadsts_code(result)
    tag = f"AADSTS{code}"
    if code not in (70021, 700211, 700212, 700213, 7000272, 700027, 700024, 50027):
        return None
    claims = token_file.claims()
    issuer = str(claims.get("iss", "?"))
    subject = str(claims.get("sub", "?"))
    aud = claims.get("aud", "?")
    audience = ",".join(map(str, aud)) if isinstance(aud, list) else str(aud)
    where = token_file.described
    if code == 50027:
        message = (
            f"Entra ID could not read the federated token in {where} as a JWT ({tag}): point the "
            "setting at the token file your platform writes (in an AKS pod with workload "
            "identity, AZURE_FEDERATED_TOKEN_FILE)."
        )
    elif code == 700024:
        message = (
            f"The federated token in {where} has expired or is not valid yet ({tag}): check that "
            "the platform still refreshes the file (Kubernetes rotates a projected service "
            "account token) and that this machine's clock is right."
        )
    elif code in (7000272, 700027):
        message = (
            f"Entra ID could not verify the signature of the federated token in {where} "
            f"(issuer '{issuer}') ({tag}): the issuer's OpenID discovery document must publish "
            "the key that signs its tokens."
        )
    else:
        message = (
            f"Entra ID found no federated credential on client_id '{client_id}' for the token in "
            f"{where} (issuer '{issuer}', subject '{subject}', audience '{audience}') ({tag}): "
            "add a federated credential with exactly this issuer and subject (compared "
            "case-sensitively) and the audience api://AzureADTokenExchange to the app "
            "registration, or check client_id."
        )
    return AuthError(scrub(message), error=str(result.get("error") or "") or None, aadsts=code)
