"""target-dynamics: Singer records upserted into Microsoft Dynamics 365 / Dataverse tables."""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing as t
from pathlib import Path

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.helpers.capabilities import PluginCapabilities

from dynamics_api.errors import ConfigError, DynamicsError
from dynamics_api.http import DataverseClient
from dynamics_api.metadata import (
    EntityModel,
    inactive_state,
    state_options,
    text_lengths,
)
from dynamics_singer.cli import run_plugin
from dynamics_singer.config import SentenceConfigErrors
from dynamics_singer.connection import client_from_config, load_model
from dynamics_singer.progress import PROGRESS_SETTINGS, WriteProgress, interval_of
from dynamics_singer.settings import CONNECTION_SETTINGS, METADATA_SETTINGS
from target_dynamics.batchfiles import read_batch_file
from target_dynamics.plan import (
    DELETE_MODES,
    StreamOptions,
    StreamPlan,
    build_plan,
    parse_stream_options,
)
from target_dynamics.report import DeadLetters, RunReport
from target_dynamics.routes import WRITE_METHODS
from target_dynamics.sinks import DynamicsSink
from target_dynamics.writer import BatchWriter, WriterSettings

log = logging.getLogger(__name__)


# Why 500: a batch counts once against the 6,000 requests / 5 min limit, so larger batches raise
# throughput, but its whole execution time counts against the 1,200 s combined-time limit and
# runs sequentially on the server; 500 upserts (~2.5-5 s on Dataverse) stay far below the 2 min
# request timeout, and a batch re-sent after a connection reset repeats at most 500 rows.
DEFAULT_BATCH_SIZE = 500
DEAD_LETTERS = "dead-letter.jsonl"
DEFAULT_PARALLEL_BATCHES = 4
# Microsoft's advice for the bulk messages: about 1,000 rows per request on a standard table (one
# transaction; bigger requests pay off until the payload and time limits), 100 on an elastic table
# (no transaction, no gain from bigger requests: send more of them in parallel).
DEFAULT_BULK_SIZE = 1000
DEFAULT_ELASTIC_BULK_SIZE = 100
BYPASS_CHOICES = ("CustomSync", "CustomAsync", "CustomSync,CustomAsync")


class TargetDynamics(SentenceConfigErrors, Target):
    """Writes Singer records into Dataverse tables with the bulk messages (UpsertMultiple,
    UpdateMultiple, CreateMultiple) where a table supports them, and PATCH requests grouped in
    $batch elsewhere; records deleted at source (_sdc_deleted_at) are skipped, deleted or
    deactivated as delete_mode says. BATCH files (jsonl, gzip or not; parquet with pyarrow) are
    read from file:// manifests. ACTIVATE_VERSION messages do not apply to Dataverse tables and
    are ignored."""

    name = "target-dynamics"
    package_name = "tap-dynamics"
    default_sink_class = DynamicsSink
    message_reader_class = MsgSpecReader  # exact decimals, fast parsing
    capabilities: t.ClassVar[list[t.Any]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
        PluginCapabilities.BATCH,
    ]

    config_jsonschema = th.PropertiesList(
        *CONNECTION_SETTINGS,
        th.Property(
            "stream_options",
            th.ObjectType(),
            title="Stream options",
            description="Per stream: `entity` (table logical name, default the stream name), "
            '`key` ("primary" or the columns of a declared alternate key), `mode` (upsert, '
            "update or create), `lookups` (field -> target table, or {table, key} to bind "
            "by the target table's alternate key) and `delete_mode` (overrides the setting).",
        ),
        th.Property(
            "delete_mode",
            th.StringType(allowed_values=list(DELETE_MODES)),
            default="skip",
            title="Delete mode",
            description="What a record deleted at source (`_sdc_deleted_at` set) does: `skip` "
            "(default: nothing is written, the summary counts it), `hard` (DELETE the row by "
            "the stream's key; a row already gone counts as deleted) or `deactivate` (set the "
            "table's Inactive state and its default status). Never an upsert.",
        ),
        th.Property(
            "write_method",
            th.StringType(allowed_values=list(WRITE_METHODS)),
            default="auto",
            title="Write method",
            description="How records are written: `auto` (default: the bulk message of the "
            "mode, UpsertMultiple, UpdateMultiple or CreateMultiple, where the table supports "
            "it, asked once per table; $batch elsewhere), `bulk` (the bulk messages only; a "
            "table without them stops the run) or `batch` ($batch only). Deletes and "
            "deactivations always go through $batch.",
        ),
        th.Property(
            "bulk_size_rows",
            th.IntegerType(minimum=1, maximum=10000),
            default=DEFAULT_BULK_SIZE,
            title="Bulk request size",
            description="Records per bulk message request on a standard table (one "
            "transaction per request).",
        ),
        th.Property(
            "elastic_bulk_size_rows",
            th.IntegerType(minimum=1, maximum=10000),
            default=DEFAULT_ELASTIC_BULK_SIZE,
            title="Elastic bulk request size",
            description="Records per bulk message request on an elastic table.",
        ),
        th.Property(
            "batch_size_rows",
            th.IntegerType(minimum=1, maximum=1000),
            default=DEFAULT_BATCH_SIZE,
            title="Batch size",
            description="Operations per $batch request (at most 1000).",
        ),
        th.Property(
            "max_parallel_batches",
            th.IntegerType(minimum=1, maximum=52),
            default=DEFAULT_PARALLEL_BATCHES,
            title="Parallel requests",
            description="Most write requests (bulk or $batch) in flight at once; the service's "
            "x-ms-dop-hint lowers it, and so does throttling (429) until it stops.",
        ),
        th.Property(
            "bypass_business_logic",
            th.StringType(allowed_values=list(BYPASS_CHOICES)),
            title="Bypass business logic",
            description="Skip the environment's custom synchronous logic (`CustomSync`: "
            "plug-ins and real-time workflows), asynchronous logic (`CustomAsync`: asynchronous "
            "plug-ins and workflows) or both (`CustomSync,CustomAsync`) for the target's writes "
            "(MSCRM.BypassBusinessLogicExecution). Needs the prvBypassCustomBusinessLogic "
            "privilege; Microsoft's own logic still runs.",
        ),
        th.Property(
            "bypass_power_automate_flows",
            th.BooleanType,
            default=False,
            title="Bypass Power Automate flows",
            description="Do not trigger Power Automate flows for the target's writes "
            "(MSCRM.SuppressCallbackRegistrationExpanderJob).",
        ),
        th.Property(
            "dead_letter_path",
            th.StringType,
            default=DEAD_LETTERS,
            title="Dead-letter file",
            description="JSONL file (appended) receiving every record that was not written, "
            "with the Dataverse error or the validation reason.",
        ),
        th.Property(
            "max_failed_records",
            th.IntegerType(minimum=0),
            default=0,
            title="Max failed records",
            description="The run exits non-zero when more records than this failed.",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            title="Dry run",
            description="Validate records against the metadata and report; write nothing.",
        ),
        th.Property(
            "max_part_retries",
            th.IntegerType(minimum=0, maximum=20),
            default=5,
            title="Operation retries",
            description="Retries of an operation whose part of a $batch was throttled (429) "
            "or failed transiently (5xx).",
        ),
        *METADATA_SETTINGS,
        *PROGRESS_SETTINGS,
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._lock = threading.RLock()
        self._client: DataverseClient | None = None
        self._model: EntityModel | None = None
        self._lengths_done: set[str] = set()
        self._plans: dict[str, StreamPlan] | None = None
        self._writer: BatchWriter | None = None
        self.report = RunReport()
        self._versions_noted: set[str] = set()
        super().__init__(*args, **kwargs)
        self.options: dict[str, StreamOptions] = parse_stream_options(
            self.config.get("stream_options") or {}
        )
        self.dead_letters = DeadLetters(Path(self.config.get("dead_letter_path") or DEAD_LETTERS))
        self.progress = WriteProgress(
            self.logger,
            lambda: self._client,
            self._progress_counts,
            interval=interval_of(self.config),
        )

    def _progress_counts(self) -> dict[str, int]:
        totals = self.report.totals()
        # Records accounted for (rows/s); a dry run writes nothing, so every record counts.
        totals["done"] = totals.get("records" if self.dry_run else "settled", 0)
        return totals

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict[str, t.Any]) -> None:
        """The SDK's built-in settings, less those that do not apply to Dataverse tables:
        ``add_record_metadata`` (the ``_sdc_*`` columns do not exist in the tables),
        ``load_method`` (``overwrite`` would delete a CRM table; ``stream_options.<s>.mode``
        and ``delete_mode`` say how rows are written) and ``batch_config`` (BATCH manifests name
        their files by ``file://`` URL; the target needs no storage settings to read them)."""
        super().append_builtin_config(config_jsonschema)
        for name in ("add_record_metadata", "load_method", "batch_config"):
            config_jsonschema["properties"].pop(name, None)

    # -- messages the SDK would mishandle ---------------------------------------------------------

    def _process_batch_message(self, message_dict: dict[str, t.Any]) -> None:
        # SDK-private override: the SDK hands the files to Sink.process_batch_files, which skips
        # stream maps and the per-record path (deletes, validation, dead letters). Here every
        # record of every file goes through the SDK-private _process_record_message, exactly as a
        # RECORD message of the stream would (tests/unit/test_sdk_contract.py checks the path).
        self.message_reader.assert_line_requires(
            message_dict, requires={"stream", "encoding", "manifest"}
        )
        stream = message_dict["stream"]
        encoding = message_dict["encoding"] or {}
        fmt = str(encoding.get("format") or "jsonl")
        compression = encoding.get("compression")
        for url in message_dict["manifest"]:
            for record in read_batch_file(str(url), fmt, compression):
                self._process_record_message({"type": "RECORD", "stream": stream, "record": record})

    def _process_activate_version_message(self, message_dict: dict[str, t.Any]) -> None:
        # SDK-private override: the SDK warns on every such message. A Dataverse table has no
        # versions to switch between (rows are written in place; rows deleted at source arrive as
        # records with _sdc_deleted_at), so it is noted once per stream. The contract test checks
        # that the SDK's reader still dispatches these messages here.
        stream = str(message_dict.get("stream"))
        if stream not in self._versions_noted:
            self._versions_noted.add(stream)
            self.logger.info(
                "ACTIVATE_VERSION of stream '%s' ignored: Dataverse tables have no versions to "
                "activate (rows are written in place; deletions come as records with "
                "_sdc_deleted_at, see delete_mode).",
                stream,
            )

    # -- settings ---------------------------------------------------------------------------

    @property
    def batch_size(self) -> int:
        """Operations per $batch."""
        return int(self.config.get("batch_size_rows") or DEFAULT_BATCH_SIZE)

    @property
    def parallel_batches(self) -> int:
        """Most $batch requests in flight."""
        return int(self.config.get("max_parallel_batches") or DEFAULT_PARALLEL_BATCHES)

    @property
    def request_headers(self) -> dict[str, str]:
        """Headers of every write request: the business-logic and flow bypass switches."""
        headers = {}
        bypass = self.config.get("bypass_business_logic")
        if bypass:
            headers["MSCRM.BypassBusinessLogicExecution"] = str(bypass)
        if self.config.get("bypass_power_automate_flows"):
            headers["MSCRM.SuppressCallbackRegistrationExpanderJob"] = "true"
        return headers

    @property
    def dry_run(self) -> bool:
        """Validate only."""
        return bool(self.config.get("dry_run"))

    @property
    def part_retries(self) -> int:
        """Retries of a retryable failed operation."""
        return int(self.config.get("max_part_retries", 5))

    # -- shared resources (thread-safe) -------------------------------------------------------

    @property
    def client(self) -> DataverseClient:
        """The one Web API client of the run; its pool caps the requests in flight."""
        with self._lock:
            if self._client is None:
                self._client = client_from_config(
                    self.config,
                    plugin=self.name,
                    user_agent="target-dynamics",
                    max_connections=self.parallel_batches,
                )
            return self._client

    @property
    def writer(self) -> BatchWriter:
        """The one writer of the run: the pool that sends the write requests of every stream,
        the report and the dead letters."""
        with self._lock:
            if self._writer is None:
                self._writer = BatchWriter(
                    lambda: self.client,
                    WriterSettings(
                        batch_size=self.batch_size,
                        parallel_batches=self.parallel_batches,
                        part_retries=self.part_retries,
                        api_version=str(self.config.get("api_version") or "9.2"),
                        dry_run=self.dry_run,
                        write_method=str(self.config.get("write_method") or "auto"),
                        bulk_size=int(self.config.get("bulk_size_rows") or DEFAULT_BULK_SIZE),
                        elastic_bulk_size=int(
                            self.config.get("elastic_bulk_size_rows") or DEFAULT_ELASTIC_BULK_SIZE
                        ),
                        request_headers=self.request_headers,
                    ),
                    self.report,
                    self.dead_letters,
                    on_batch=self.progress.tick,
                )
            return self._writer

    def model(self) -> EntityModel:
        """The environment's entity model (every table), fetched once."""
        with self._lock:
            if self._model is None:
                self._model = load_model(self.client, self.config)
            return self._model

    def _add_string_lengths(self, table: str) -> None:
        """Text columns' maximum lengths, which ``$metadata`` does not carry, from the
        EntityDefinitions API, so over-long values are dead-lettered before they are sent. When
        the lengths cannot be read, the service's own length error still dead-letters them."""
        model = self.model()
        entity = model.entities.get(table)
        if entity is None or table in self._lengths_done:
            return
        self._lengths_done.add(table)
        try:
            lengths = text_lengths(self.client, table)
        except DynamicsError as err:
            self.logger.info("Text column lengths of '%s' not available: %s", table, err)
            return
        for name, limit in lengths.items():
            prop = entity.properties.get(name)
            if prop is not None:
                entity.properties[name] = dataclasses.replace(prop, max_length=limit)

    @property
    def delete_mode(self) -> str:
        """What records deleted at source do, unless a stream's option says otherwise."""
        return str(self.config.get("delete_mode") or "skip")

    def _inactive(self, table: str, stream: str) -> tuple[int, int] | None:
        """(statecode, statuscode) of the table's Inactive state, from EntityDefinitions."""
        try:
            found = inactive_state(state_options(self.client, table))
        except DynamicsError as err:
            raise ConfigError(
                f"delete_mode is deactivate for stream '{stream}', but the states of table "
                f"'{table}' could not be read ({err}); check the user's read access to table "
                "definitions, or use delete_mode hard or skip."
            ) from None
        if found is None or found.default_status is None:
            return None
        return found.value, found.default_status

    def _build_plan(self, stream: str, opts: StreamOptions) -> StreamPlan:
        table = opts.entity or stream.strip().lower()
        self._add_string_lengths(table)
        mode = opts.delete_mode or self.delete_mode
        inactive = None
        if mode == "deactivate" and table in self.model().entities:
            inactive = self._inactive(table, stream)
        return build_plan(
            stream,
            opts,
            self.model(),
            delete_mode=self.delete_mode,
            inactive=inactive,
            request_headers=self.request_headers,
        )

    def plan_for(self, stream_name: str) -> StreamPlan:
        """The compiled write plan of a stream.

        The first call validates every configured stream (keys, lookups, the inactive state for
        ``delete_mode: deactivate``) against the metadata, so a wrong setting fails before any
        write.

        Raises:
            ConfigError: an unknown table, an undeclared key, a bad lookup, a table that cannot
                be deactivated.
        """
        with self._lock:
            if self._plans is None:
                plans = {}
                for name, opts in self.options.items():
                    plans[name] = self._build_plan(name, opts)
                self._plans = plans
            plan = self._plans.get(stream_name)
            if plan is None:
                plan = self._build_plan(stream_name, StreamOptions())
                self._plans[stream_name] = plan
            return plan

    # -- end of run -------------------------------------------------------------------------

    def process_endofpipe(self) -> None:
        """Drain everything, then report and decide the exit status."""
        try:
            super().process_endofpipe()
        finally:
            with self._lock:
                writer = self._writer
            if writer is not None:
                writer.close()
            self.dead_letters.close()
            with self._lock:
                if self._client is not None:
                    self._client.close()
        self.progress.finish()
        self.report.log(self.logger, dry_run=self.dry_run)
        failed = self.report.total_failed()
        limit = int(self.config.get("max_failed_records", 0))
        if failed > limit:
            raise RunFailedError(
                f"{failed} record(s) were not written (more than max_failed_records={limit}); "
                f"they are in the dead-letter file {self.dead_letters.path}."
            )


class RunFailedError(DynamicsError):
    """More records failed than ``max_failed_records`` allows."""


def main() -> None:
    """Console entry point (``target-dynamics``); ``target-dynamics login`` signs a user in."""
    run_plugin(TargetDynamics.cli, prog="target-dynamics", env_prefix="TARGET_DYNAMICS_")


if __name__ == "__main__":
    main()
