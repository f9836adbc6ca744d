"""tap-dynamics: Microsoft Dynamics 365 / Dataverse tables as Singer streams."""

from __future__ import annotations

import typing as t
from pathlib import Path

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

from dynamics_api.auth import TokenProvider
from dynamics_api.cloud import normalize_environment_url
from dynamics_api.errors import ConfigError
from dynamics_api.http import DataverseClient
from dynamics_api.metadata import EntityModel, MetadataCache, fetch_metadata, json_schema
from tap_dynamics.client import DynamicsStream
from tap_dynamics.entry import SentenceConfigErrors, run_plugin
from tap_dynamics.formatted import FormattedColumnError, extend_schema
from tap_dynamics.selection import is_wildcard, resolve_custom_entities
from tap_dynamics.streams import STANDARD_STREAMS
from tap_dynamics.writer import FastWriter

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "tap-dynamics"

# Settings shared with target-dynamics (the names are the contract in ARCHITECTURE.md).
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


class TapDynamics(SentenceConfigErrors, Tap):
    """Extracts Dynamics 365 Customer Service tables from the Dataverse Web API."""

    name = "tap-dynamics"
    package_name = "tap-dynamics"
    message_writer_class = FastWriter
    # No ACTIVATE_VERSION: every stream is incremental (modifiedon) or read through change
    # tracking, and rows deleted at source are reported as records with _sdc_deleted_at.
    capabilities: t.ClassVar[list[t.Any]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.BATCH,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        *CONNECTION_SETTINGS,
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Earliest `modifiedon` to extract on the first run.",
        ),
        th.Property(
            "streams",
            th.ArrayType(th.StringType),
            title="Standard streams",
            description="Which standard tables to offer (default: all of account, contact, "
            "incident, activitypointer, email, phonecall, task, opportunity, lead, systemuser, "
            "team). Selection is still done with the catalog.",
        ),
        th.Property(
            "custom_entities",
            th.ArrayType(th.StringType),
            default=[],
            title="Custom tables",
            description='Logical names of extra tables to extract, e.g. `new_project`; `"*"` '
            "for every custom table, or patterns such as `new_*`.",
        ),
        th.Property(
            "custom_entities_include",
            th.ArrayType(th.StringType),
            title="Custom tables: include",
            description="With a wildcard in custom_entities: only tables matching these patterns.",
        ),
        th.Property(
            "custom_entities_exclude",
            th.ArrayType(th.StringType),
            title="Custom tables: exclude",
            description="With a wildcard in custom_entities: leave out tables matching these.",
        ),
        th.Property(
            "include_formatted_values",
            th.BooleanType,
            default=False,
            title="Formatted values",
            description="Add SQL-safe columns with what users see: `<column>_label` for choices "
            "and yes/no columns, `<lookup>_name` for lookup display names, `<lookup>_table` for "
            "the table a polymorphic lookup points at.",
        ),
        th.Property(
            "change_tracking",
            th.ArrayType(th.StringType),
            default=[],
            title="Change tracking",
            description='Streams to read through Dataverse change tracking (`"*"` for all): '
            "the first run reads every row, later runs read only changes, and deleted rows are "
            "emitted with `_sdc_deleted_at` (when the tap saw the deletion). Tables without "
            "change tracking fall back to `modifiedon`, with a warning.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=5000),
            default=5000,
            title="Page size",
            description="Rows per page (`Prefer: odata.maxpagesize`), at most 5000.",
        ),
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
    ).to_dict()

    _client: DataverseClient | None = None

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def client(self) -> DataverseClient:
        if self._client is None:
            cfg = self.config
            # The SDK only warns about missing required settings in --discover mode.
            needed = (
                ("environment_url",)
                if cfg.get("managed_identity")
                else ("environment_url", "client_id")
            )
            missing = [k for k in needed if not cfg.get(k)]
            if missing:
                names = " and ".join(missing)
                envs = ", ".join(f"TAP_DYNAMICS_{k.upper()}" for k in missing)
                raise ConfigError(
                    f"{names} {'is' if len(missing) == 1 else 'are'} not set: add "
                    f"{'it' if len(missing) == 1 else 'them'} to the config file (with Meltano: "
                    f"`meltano config tap-dynamics set ...` or {envs})."
                )
            url = normalize_environment_url(cfg["environment_url"])
            tokens = TokenProvider.from_config({**cfg, "environment_url": url})
            timeout = float(cfg.get("request_timeout") or 120)
            self._client = DataverseClient(
                url,
                tokens,
                api_version=str(cfg.get("api_version") or "9.2"),
                timeout=(min(10.0, timeout), timeout),
                max_retries=int(cfg.get("max_retries", 6)),
            )
        return self._client

    def stream_names(self) -> tuple[list[str], list[str]]:
        """(standard and explicitly named tables, wildcard patterns of custom tables)."""
        standard = self.config.get("streams") or list(STANDARD_STREAMS)
        unknown = [s for s in standard if s not in STANDARD_STREAMS]
        if unknown:
            raise ConfigError(
                f"streams lists {', '.join(repr(u) for u in unknown)}, which are not standard "
                f"tables ({', '.join(STANDARD_STREAMS)}); put other tables in custom_entities."
            )
        custom = [c.strip().lower() for c in self.config.get("custom_entities") or []]
        patterns = [c for c in custom if is_wildcard(c)]
        named = [c for c in custom if not is_wildcard(c)]
        return list(dict.fromkeys([*standard, *named])), patterns

    def load_metadata(self, wanted: list[str] | None) -> EntityModel:
        cfg = self.config
        ttl = float(cfg.get("metadata_cache_ttl", 86400))
        cache = None
        if ttl > 0:
            cache = MetadataCache(Path(cfg.get("metadata_cache_dir") or DEFAULT_CACHE_DIR), ttl)
        client = self.client

        def open_stream(url: str) -> t.Iterator[bytes]:
            return client.iter_bytes(url, headers={"Accept": "application/xml"})

        version = str(cfg.get("api_version") or "9.2")
        return fetch_metadata(
            open_stream, client.environment_url, wanted, cache, api_version=version
        )

    # -- discovery ------------------------------------------------------------------------------

    def discover_streams(self) -> list[DynamicsStream]:
        if self.input_catalog is not None:
            return self._streams_from_catalog()
        names, patterns = self.stream_names()
        model = self.load_metadata(None if patterns else names)
        wildcard: set[str] = set()
        if patterns:
            found = resolve_custom_entities(
                patterns,
                model,
                include=self.config.get("custom_entities_include"),
                exclude=self.config.get("custom_entities_exclude"),
            )
            wildcard = {f for f in found if f not in names}
            names = list(dict.fromkeys([*names, *found]))
        formatted = bool(self.config.get("include_formatted_values"))
        streams: list[DynamicsStream] = []
        missing = []
        for name in names:
            entity = model.entities.get(name)
            if entity is None or not entity.entity_set:
                missing.append(name)
                continue
            schema = json_schema(entity)
            if formatted:
                try:
                    schema = extend_schema(entity, schema, model)
                except FormattedColumnError as err:
                    raise ConfigError(f"include_formatted_values: {err}") from None
            cls = STANDARD_STREAMS.get(name, DynamicsStream)
            stream = cls(
                self,
                schema=schema,
                client=None,
                name=name,
                entity_set=entity.entity_set,
                # systemuser/team are keyed on the shared principal `ownerid` in the CSDL;
                # their own id column is the stable key of the table.
                primary_keys=[entity.primary_id] if entity.primary_id else entity.key,
            )
            stream.skip_if_denied = name in wildcard
            streams.append(stream)
        if missing:
            raise ConfigError(
                f"The environment has no table named {', '.join(repr(m) for m in missing)}: "
                "check the logical names in custom_entities (e.g. new_project, not "
                "new_projects)."
            )
        return streams

    def _streams_from_catalog(self) -> list[DynamicsStream]:
        """Streams from the given catalog alone: no $metadata request."""
        assert self.input_catalog is not None
        named, patterns = self.stream_names()
        streams: list[DynamicsStream] = []
        for entry in self.input_catalog.values():
            name = entry.tap_stream_id
            cls = STANDARD_STREAMS.get(name, DynamicsStream)
            entity_set = entry.table or cls.entity_set or None
            if entity_set is None:
                raise ConfigError(
                    f"The catalog entry '{name}' has no 'table' (its entity set); run "
                    "`tap-dynamics --discover` again to refresh the catalog."
                )
            stream = cls(
                self,
                schema=entry.schema.to_dict(),
                client=None,
                name=name,
                entity_set=entity_set,
                primary_keys=entry.key_properties or None,
            )
            # A table that came from a wildcard in custom_entities (not named anywhere).
            stream.skip_if_denied = bool(patterns) and name not in named
            streams.append(stream)
        return streams


def main() -> None:
    """Console entry point (``tap-dynamics``); ``tap-dynamics login`` signs a user in, also as
    ``tap-dynamics --config FILE login`` (how ``meltano invoke`` runs it)."""
    run_plugin(TapDynamics.cli, prog="tap-dynamics", env_prefix="TAP_DYNAMICS_")


if __name__ == "__main__":
    main()
