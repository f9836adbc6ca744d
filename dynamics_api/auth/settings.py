"""The one parser of the authentication settings (see ``ARCHITECTURE.md``, "Settings contract").

:meth:`AuthSettings.from_config` reads a tap's or target's config mapping (or what the login
command gathered from files and variables) and checks what every flow needs: the environment and
the client, at most one app credential (a secret, a certificate or a federated token file), a
readable certificate or token file; or a managed identity, which needs neither an app
registration nor a credential. What a particular flow needs on top (a tenant for client
credentials, a public client for the device code) is checked where that flow starts.

``federated_token_file`` defaults to ``AZURE_FEDERATED_TOKEN_FILE`` (set by AKS workload
identity) only when no other way of signing in is configured (no secret, certificate, refresh
token or managed identity), so a variable left in the environment never changes a working
configuration.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics_api.auth.certificate import ClientCertificate
from dynamics_api.auth.errors import auth_error
from dynamics_api.auth.federated import FederatedTokenFile, federated_error
from dynamics_api.cloud import normalize_environment_url, resolve_authority_host, resource_for
from dynamics_api.errors import AuthError, ConfigError

__all__ = ["AUTH_SETTINGS", "AuthSettings", "bool_setting", "text_setting"]

#: The settings :meth:`AuthSettings.from_config` reads.
AUTH_SETTINGS = (
    "environment_url",
    "client_id",
    "client_secret",
    "client_certificate_path",
    "client_certificate_thumbprint",
    "refresh_token",
    "tenant_id",
    "authority_host",
    "token_cache_path",
    "managed_identity",
    "managed_identity_client_id",
    "federated_token_file",
)

_CLIENT_ID_REQUIRED = (
    "The setting client_id is required: set the application (client) id of the Entra ID app "
    "registration (or set managed_identity to sign in as this Azure resource's managed identity)."
)


def text_setting(config: Mapping[str, Any], name: str) -> str | None:
    """A text setting, stripped; ``None`` when absent or empty.

    Raises:
        ConfigError: the value is not text.
    """
    value = config.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"The setting {name} must be text, not {type(value).__name__}.")
    return value.strip() or None


def bool_setting(config: Mapping[str, Any], name: str) -> bool:
    """A true/false setting (``true``/``false`` as text too, as environment variables give it);
    ``False`` when absent or empty.

    Raises:
        ConfigError: any other value.
    """
    value = config.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise ConfigError(f"The setting {name} must be true or false.")


@dataclass(frozen=True)
class AuthSettings:
    """The authentication settings, checked and normalised.

    Attributes:
        environment_url: the environment (``https://org.crm.dynamics.com``), normalised.
        resource: the token audience derived from it.
        client_id: the Entra ID application (client) id; ``None`` only with a managed identity.
        tenant_id: directory id or domain; ``None`` means ``organizations``.
        authority_host: the Entra ID host, from the setting or the environment's cloud (empty
            for a managed identity where neither gives one: it is not used then).
        client_secret: the app's secret; never shown in ``repr``.
        certificate: a certificate credential instead of a secret.
        refresh_token: a user's refresh token (the delegated flow); never shown in ``repr``.
        token_cache_path: where msal's token cache persists between runs.
        managed_identity: sign in as the Azure resource's managed identity.
        managed_identity_client_id: the user-assigned identity's client id (``None``: the
            system-assigned identity).
        federated_token: the file holding a federated token, the app's credential instead of a
            secret (workload identity federation).
    """

    environment_url: str
    resource: str
    client_id: str | None
    tenant_id: str | None
    authority_host: str
    client_secret: str | None = field(repr=False)
    certificate: ClientCertificate | None
    refresh_token: str | None = field(repr=False)
    token_cache_path: Path | None
    managed_identity: bool = False
    managed_identity_client_id: str | None = None
    federated_token: FederatedTokenFile | None = None

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
    ) -> AuthSettings:
        """Read :data:`AUTH_SETTINGS` from ``config``; empty strings count as unset.

        Args:
            config: the settings.
            environ: where ``AZURE_FEDERATED_TOKEN_FILE`` is looked up (default ``os.environ``).

        Raises:
            ConfigError: a setting is missing, malformed or inconsistent, or the certificate
                or federated token file cannot be used.
        """
        environment_url = text_setting(config, "environment_url")
        if environment_url is None:
            raise ConfigError(
                "The setting environment_url is required: set it to the environment's URL, for "
                "example https://yourorg.crm.dynamics.com."
            )
        client_id = text_setting(config, "client_id")
        secret = text_setting(config, "client_secret")
        cert_path = text_setting(config, "client_certificate_path")
        thumbprint = text_setting(config, "client_certificate_thumbprint")
        refresh_token = text_setting(config, "refresh_token")
        token_file = text_setting(config, "federated_token_file")
        managed = bool_setting(config, "managed_identity")
        mi_client_id = text_setting(config, "managed_identity_client_id")
        if mi_client_id and not managed:
            raise ConfigError(
                "The setting managed_identity_client_id is set without managed_identity: set "
                "managed_identity to true to sign in as that user-assigned managed identity."
            )
        if managed:
            _check_managed_identity(
                client_id=client_id,
                client_secret=secret,
                client_certificate_path=cert_path,
                refresh_token=refresh_token,
                federated_token_file=token_file,
            )
        elif client_id is None:
            raise ConfigError(_CLIENT_ID_REQUIRED)
        if thumbprint and not cert_path:
            raise ConfigError(
                "The setting client_certificate_thumbprint is set without "
                "client_certificate_path: set the path of the PEM file holding the certificate's "
                "private key."
            )
        credentials = [
            name
            for name, value in (
                ("client_secret", secret),
                ("client_certificate_path", cert_path),
                ("federated_token_file", token_file),
            )
            if value
        ]
        if len(credentials) > 1:
            raise ConfigError(
                f"Both {credentials[0]} and {credentials[1]} are set: keep only the credential "
                "the app registration should use."
            )
        url = normalize_environment_url(environment_url)
        try:
            authority_host = resolve_authority_host(url, text_setting(config, "authority_host"))
        except ConfigError:
            if not managed:
                raise
            authority_host = ""  # a managed identity asks its platform's endpoint, not Entra ID
        cache_path = text_setting(config, "token_cache_path")
        federated = FederatedTokenFile.locate(
            token_file,
            os.environ if environ is None else environ,
            use_environment=not (managed or secret or cert_path or refresh_token),
        )
        return cls(
            environment_url=url,
            resource=resource_for(url),
            client_id=client_id,
            tenant_id=text_setting(config, "tenant_id"),
            authority_host=authority_host,
            client_secret=secret,
            certificate=ClientCertificate.load(cert_path, thumbprint) if cert_path else None,
            refresh_token=refresh_token,
            token_cache_path=Path(cache_path).expanduser() if cache_path else None,
            managed_identity=managed,
            managed_identity_client_id=mi_client_id if managed else None,
            federated_token=federated,
        )

    @property
    def authority(self) -> str:
        """``<authority_host>/<tenant_id or organizations>``."""
        return f"{self.authority_host}/{self.tenant_id or 'organizations'}"

    @property
    def app_client_id(self) -> str:
        """``client_id``, for the flows of an app registration (all but managed identity).

        Raises:
            ConfigError: it is not set (the settings name a managed identity).
        """
        if self.client_id is None:
            raise ConfigError(_CLIENT_ID_REQUIRED)
        return self.client_id

    @property
    def confidential(self) -> bool:
        """Whether the app proves itself (a secret, a certificate or a federated token): a
        confidential client."""
        return (
            self.client_secret is not None
            or self.certificate is not None
            or self.federated_token is not None
        )

    @property
    def credential_kind(self) -> str:
        """``client_secret``, ``certificate``, ``federated_token``, ``managed_identity`` or
        ``none`` (a public client)."""
        if self.managed_identity:
            return "managed_identity"
        if self.client_secret:
            return "client_secret"
        if self.certificate is not None:
            return "certificate"
        if self.federated_token is not None:
            return "federated_token"
        return "none"

    def msal_credential(
        self, on_assertion: Callable[[str], None] | None = None
    ) -> str | dict[str, Any] | None:
        """The ``client_credential`` for msal; ``None`` for a public client.

        Args:
            on_assertion: called with each federated token read for msal (to scrub it).
        """
        if self.certificate is not None:
            return self.certificate.msal_credential()
        if self.federated_token is not None:
            assertion = self.federated_token.assertion(on_assertion or (lambda _token: None))
            return {"client_assertion": assertion}
        return self.client_secret

    def secrets(self) -> tuple[str, ...]:
        """The values never to show: the client secret, the refresh token, the private key."""
        values = (
            self.client_secret,
            self.refresh_token,
            self.certificate.private_key_pem if self.certificate else None,
        )
        return tuple(v for v in values if v)

    def auth_error(
        self,
        result: Mapping[str, Any],
        *,
        scrub: Callable[[str], str],
        refused: str = "a token",
    ) -> AuthError:
        """One sentence for an msal error result (:func:`dynamics_api.auth.errors.auth_error`;
        :func:`dynamics_api.auth.federated.federated_error` for a refused federated token)."""
        if self.federated_token is not None:
            refusal = federated_error(result, self.federated_token, self.app_client_id, scrub)
            if refusal is not None:
                return refusal
        return auth_error(
            result,
            client_id=self.app_client_id,
            tenant_id=self.tenant_id,
            resource=self.resource,
            certificate_thumbprint=self.certificate.thumbprint if self.certificate else None,
            refused=refused,
            scrub=scrub,
        )


def _check_managed_identity(**settings: str | None) -> None:
    """A managed identity needs no app registration and no credential: none may be set."""
    extra = [name for name, value in settings.items() if value]
    if extra:
        names = " and ".join(extra)
        raise ConfigError(
            f"managed_identity is set together with {names}: a managed identity signs in "
            f"without an app registration or a credential, so remove {names} (for a "
            "user-assigned identity set managed_identity_client_id)."
        )
