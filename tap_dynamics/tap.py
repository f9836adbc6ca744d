"""tap-dynamics: Microsoft Dynamics 365 / Dataverse tables as Singer streams."""

from __future__ import annotations

import typing as t

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities, TapCapabilities

from dynamics_api.errors import ConfigError
from dynamics_api.http import DataverseClient
from dynamics_api.metadata import EntityModel, json_schema
from dynamics_singer.cli import run_plugin
from dynamics_singer.config import SentenceConfigErrors
from dynamics_singer.connection import client_from_config, load_model
from dynamics_singer.progress import PROGRESS_SETTINGS
from dynamics_singer.settings import CONNECTION_SETTINGS, METADATA_SETTINGS
from tap_dynamics.client import DynamicsStream
from tap_dynamics.formatted import FormattedColumnError, extend_schema
from tap_dynamics.selection import is_wildcard, resolve_custom_entities
from tap_dynamics.streams import STANDARD_STREAMS
from tap_dynamics.writer import FastWriter


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
            "max_parallel_requests",
            th.IntegerType(minimum=1, maximum=52),
            title="Parallel requests",
            description="Most requests in flight while one table is read in windows side by "
            "side. Default: the service's recommendation (`x-ms-dop-hint`) for each web server "
            "seen answering, at most 16; when set, the lower of the two is used. 1 reads every "
            "table as one chain of pages. The service's limits are per user: several runs as "
            "the same application user share them.",
        ),
        *METADATA_SETTINGS,
        *PROGRESS_SETTINGS,
    ).to_dict()

    _client: DataverseClient | None = None

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def client(self) -> DataverseClient:
        if self._client is None:
            # The SDK only warns about missing required settings in --discover mode; the factory
            # says which are missing in one sentence.
            setting = int(self.config.get("max_parallel_requests") or 0)
            self._client = client_from_config(
                self.config, plugin=self.name, max_connections=max(16, setting + 2)
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
        return load_model(self.client, self.config, wanted)

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
    run_plugin(TapDynamics.cli, prog="tap-dynamics", env_prefix="TAP_DYNAMICS_", fast_exit=True)


if __name__ == "__main__":
    main()
