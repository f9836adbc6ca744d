"""The settings both plugins share: how to reach and sign in to an environment, and where the
parsed ``$metadata`` is cached. Declared once; the names are the contract in ARCHITECTURE.md.
"""

from __future__ import annotations

from pathlib import Path

from singer_sdk import typing as th

__all__ = ["CONNECTION_SETTINGS", "DEFAULT_CACHE_DIR", "METADATA_SETTINGS"]

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "tap-dynamics"

CONNECTION_SETTINGS = th.PropertiesList(
    th.Property(
        "environment_url",
        th.StringType,
        required=True,
        title="Environment URL",
        description="The Dataverse environment, e.g. https://contoso.crm.dynamics.com.",
    ),
    th.Property(
        "client_id",
        th.StringType,
        title="Client ID",
        description="The Entra ID application (client) id; required unless managed_identity.",
    ),
    th.Property(
        "client_secret",
        th.StringType,
        secret=True,
        title="Client secret",
        description="The app's secret (client-credentials flow; also for a confidential app's "
        "refresh-token flow).",
    ),
    th.Property(
        "refresh_token",
        th.StringType,
        secret=True,
        title="Refresh token",
        description="When set, the delegated flow (a signed-in user) is used; see the README for "
        "how to obtain one. Rotated tokens are kept in token_cache_path.",
    ),
    th.Property(
        "tenant_id",
        th.StringType,
        title="Tenant ID",
        description="Directory id or domain; required for client credentials, default "
        "`organizations` for the delegated flow.",
    ),
    th.Property(
        "authority_host",
        th.StringType,
        title="Authority host",
        description="Entra ID login host; derived from the environment's cloud (public, GCC, "
        "GCC High, DoD, China) when not set.",
    ),
    th.Property(
        "client_certificate_path",
        th.StringType,
        title="Client certificate",
        description="PEM file with the app's certificate and private key (instead of a secret).",
    ),
    th.Property(
        "client_certificate_thumbprint",
        th.StringType,
        title="Certificate thumbprint",
        description="SHA-1 thumbprint of the certificate; computed from the file when not set.",
    ),
    th.Property(
        "token_cache_path",
        th.StringType,
        title="Token cache",
        description="File where the token cache (including rotated refresh tokens) persists "
        "between runs, with permissions 0600.",
    ),
    th.Property(
        "managed_identity",
        th.BooleanType,
        title="Managed identity",
        description="Sign in as the Azure resource's managed identity (VM, AKS, App Service, "
        "Functions, Container Apps, Arc): no client_id, no secret.",
    ),
    th.Property(
        "managed_identity_client_id",
        th.StringType,
        title="Managed identity client ID",
        description="Client id of the user-assigned managed identity to use; the system-assigned "
        "one when not set.",
    ),
    th.Property(
        "federated_token_file",
        th.StringType,
        title="Federated token file",
        description="File holding a token from a trusted issuer (workload identity federation), "
        "read again for every token request; default AZURE_FEDERATED_TOKEN_FILE when no other "
        "credential is set.",
    ),
    th.Property(
        "api_version",
        th.StringType,
        default="9.2",
        title="Web API version",
        description="Dataverse Web API version.",
    ),
    th.Property(
        "request_timeout",
        th.NumberType,
        default=120,
        title="Request timeout",
        description="Seconds to wait for a response before retrying.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=6,
        title="Max retries",
        description="Retries of one request after throttling (429) or transient failures.",
    ),
)


METADATA_SETTINGS = th.PropertiesList(
    th.Property(
        "metadata_cache_dir",
        th.StringType,
        title="Metadata cache directory",
        description="Where the parsed `$metadata` is cached (default ~/.cache/tap-dynamics).",
    ),
    th.Property(
        "metadata_cache_ttl",
        th.NumberType,
        default=86400,
        title="Metadata cache lifetime",
        description="Seconds a cached `$metadata` stays valid; 0 disables the cache.",
    ),
)
