"""The one parser of the authentication settings (see ``ARCHITECTURE.md``, "Settings contract").

:meth:`AuthSettings.from_config` reads a tap's or target's config mapping (or what the login
command gathered from files and variables) and checks what every flow needs: the environment and
the client, at most one app credential, a readable certificate. What a particular flow needs on
top (a tenant for client credentials, a public client for the device code) is checked where that
flow starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics_api.auth.certificate import ClientCertificate
from dynamics_api.auth.errors import auth_error
from dynamics_api.cloud import normalize_environment_url, resolve_authority_host, resource_for
from dynamics_api.errors import AuthError, ConfigError

__all__ = ["AUTH_SETTINGS", "AuthSettings", "text_setting"]

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


@dataclass(frozen=True)
class AuthSettings:
    """The authentication settings, checked and normalised.

    Attributes:
        environment_url: the environment (``https://org.crm.dynamics.com``), normalised.
        resource: the token audience derived from it.
        client_id: the Entra ID application (client) id.
        tenant_id: directory id or domain; ``None`` means ``organizations``.
        authority_host: the Entra ID host, from the setting or the environment's cloud.
        client_secret: the app's secret; never shown in ``repr``.
        certificate: a certificate credential instead of a secret.
        refresh_token: a user's refresh token (the delegated flow); never shown in ``repr``.
        token_cache_path: where msal's token cache persists between runs.
    """

    environment_url: str
    resource: str
    client_id: str
    tenant_id: str | None
    authority_host: str
    client_secret: str | None = field(repr=False)
    certificate: ClientCertificate | None
    refresh_token: str | None = field(repr=False)
    token_cache_path: Path | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuthSettings:
        """Read :data:`AUTH_SETTINGS` from ``config``; empty strings count as unset.

        Raises:
            ConfigError: a setting is missing, malformed or inconsistent, or the certificate
                file cannot be used.
        """
        environment_url = text_setting(config, "environment_url")
        if environment_url is None:
            raise ConfigError(
                "The setting environment_url is required: set it to the environment's URL, for "
                "example https://yourorg.crm.dynamics.com."
            )
        client_id = text_setting(config, "client_id")
        if client_id is None:
            raise ConfigError(
                "The setting client_id is required: set the application (client) id of the "
                "Entra ID app registration."
            )
        secret = text_setting(config, "client_secret")
        cert_path = text_setting(config, "client_certificate_path")
        thumbprint = text_setting(config, "client_certificate_thumbprint")
        if thumbprint and not cert_path:
            raise ConfigError(
                "The setting client_certificate_thumbprint is set without "
                "client_certificate_path: set the path of the PEM file holding the certificate's "
                "private key."
            )
        if secret and cert_path:
            raise ConfigError(
                "Both client_secret and client_certificate_path are set: keep only the "
                "credential the app registration should use."
            )
        url = normalize_environment_url(environment_url)
        authority_host = resolve_authority_host(url, text_setting(config, "authority_host"))
        cache_path = text_setting(config, "token_cache_path")
        return cls(
            environment_url=url,
            resource=resource_for(url),
            client_id=client_id,
            tenant_id=text_setting(config, "tenant_id"),
            authority_host=authority_host,
            client_secret=secret,
            certificate=ClientCertificate.load(cert_path, thumbprint) if cert_path else None,
            refresh_token=text_setting(config, "refresh_token"),
            token_cache_path=Path(cache_path).expanduser() if cache_path else None,
        )

    @property
    def authority(self) -> str:
        """``<authority_host>/<tenant_id or organizations>``."""
        return f"{self.authority_host}/{self.tenant_id or 'organizations'}"

    @property
    def confidential(self) -> bool:
        """Whether the app proves itself (a secret or a certificate): a confidential client."""
        return self.client_secret is not None or self.certificate is not None

    @property
    def credential_kind(self) -> str:
        """``client_secret``, ``certificate`` or ``none`` (a public client)."""
        if self.client_secret:
            return "client_secret"
        if self.certificate is not None:
            return "certificate"
        return "none"

    def msal_credential(self) -> str | dict[str, str] | None:
        """The ``client_credential`` for msal; ``None`` for a public client."""
        if self.certificate is not None:
            return self.certificate.msal_credential()
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
        """One sentence for an msal error result (:func:`dynamics_api.auth.errors.auth_error`)."""
        return auth_error(
            result,
            client_id=self.client_id,
            tenant_id=self.tenant_id,
            resource=self.resource,
            certificate_thumbprint=self.certificate.thumbprint if self.certificate else None,
            refused=refused,
            scrub=scrub,
        )
