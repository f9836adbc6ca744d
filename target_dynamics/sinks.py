"""DynamicsSink: records of one stream -> validated operations, in input order per row.

* ``process_record`` (reader thread) turns a record into an operation with the stream's compiled
  :class:`~target_dynamics.plan.StreamPlan`: a write (a bulk message's target, or a ``$batch``
  operation, as the table's route says), or what ``delete_mode`` makes of a record deleted at
  source; an invalid record goes to the dead-letter file and never reaches the service. When the
  chunk holds the route's rows per request (``bulk_size_rows``, ``elastic_bulk_size_rows`` or
  ``batch_size_rows``) it is handed to the run's :class:`~target_dynamics.writer.BatchWriter`.
* Records of one row are applied in input order: a chunk never holds two operations of one row,
  and a record whose row is in a chunk still in flight waits for it (retries and the isolation of
  failed records included).
* ``process_batch`` (the SDK's drain) waits for every batch handed out so far. The SDK emits STATE
  only after every sink drained, so a STATE never passes a record that is neither written nor
  dead-lettered. Failures that concern the whole run raise from the drain: no STATE is released
  and the run fails.
"""

from __future__ import annotations

import threading
import typing as t
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from singer_sdk.sinks import BatchSink

from target_dynamics.items import Item
from target_dynamics.plan import DELETED_AT, InvalidRecord, StreamPlan
from target_dynamics.routes import Route
from target_dynamics.writer import BatchWriter

if t.TYPE_CHECKING:
    from target_dynamics.target import TargetDynamics

_Identity = tuple[str, t.Any]


class DynamicsSink(BatchSink):
    """Writes one stream into one Dataverse table."""

    def __init__(
        self,
        target: TargetDynamics,
        stream_name: str,
        schema: dict[str, t.Any],
        key_properties: t.Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self.plan: StreamPlan = target.plan_for(stream_name)
        self.writer: BatchWriter = target.writer
        self._chunk: list[Item] = []
        self._chunk_ids: set[_Identity] = set()
        # Rows named by operations handed out and maybe not applied yet: a later record of the
        # same row waits for them, so records of one row are applied in input order even with
        # parallel $batch requests (and their retries).
        self._handed_out: dict[_Identity, Future[None]] = {}
        self._futures: list[Future[None]] = []
        self._skip_warned = False
        self._dry_run = self.writer.settings.dry_run
        # The table's route (bulk message or $batch) is asked of the service before any write.
        self.route: Route | None = None if self._dry_run else self.writer.route(self.plan)
        if self.route is None:
            how = " (dry run: nothing is written)"
        elif self.route.bulk:
            how = f", {self.route.message} in requests of {self.route.rows} rows"
        else:
            how = f", $batch requests of {self.route.rows} operations"
        self.logger.info(
            "Stream '%s' -> table '%s' (%s), key %s, mode %s%s",
            stream_name,
            self.plan.table,
            self.plan.entity_set,
            ", ".join(self.plan.key),
            self.plan.mode,
            how,
        )

    # -- the SDK's per-record work, replaced ---------------------------------------------------

    def get_validator(self) -> None:
        """No JSON Schema validation: the plan validates against the table's metadata."""
        return None

    # The three SDK-private overrides below have no public equivalent; the SDK's RECORD path
    # calls them before process_record, which tests/unit/test_sdk_contract.py checks.

    def _validate_and_parse(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        # No timestamp parsing either: date strings stay strings, checked once by the plan.
        return record

    def _singer_validate_message(self, record: dict[str, t.Any]) -> None:
        # A record without its key is dead-lettered by the plan instead of stopping the run.
        return None

    @property
    def _chunk_rows(self) -> int:
        """Records per request on this stream's route (it may fall back to $batch mid-run)."""
        return self.route.rows if self.route is not None else self.writer.settings.batch_size

    @property
    def max_size(self) -> int:
        """Records between drains: enough for every parallel request to be full."""
        return self._chunk_rows * self.writer.settings.parallel_batches * 2

    # -- records --------------------------------------------------------------------------------

    def _remove_sdc_metadata_from_record(self, record: dict[str, t.Any]) -> None:
        # The SDK drops every _sdc_* field before process_record, _sdc_deleted_at included,
        # which would turn a deletion into an empty upsert. Only that one is kept;
        # tests/unit/test_sdk_contract.py and tests/integration/test_target_deletes.py fail if
        # the SDK changes this path.
        deleted_at = record.get(DELETED_AT)
        super()._remove_sdc_metadata_from_record(record)
        if deleted_at is not None:
            record[DELETED_AT] = deleted_at

    def process_record(self, record: dict[str, t.Any], context: dict[str, t.Any]) -> None:
        """Validate and queue one record: a write, or what ``delete_mode`` makes of a record
        deleted at source (never an upsert)."""
        report = self.writer.report
        plan = self.plan
        report.add(self.stream_name, records=1)
        kind = "write"
        try:
            if record.get(DELETED_AT) is not None:
                if plan.delete_mode == "skip":
                    self._skip_deletion()
                    return
                kind = "delete" if plan.delete_mode == "hard" else "deactivate"
                op, key = plan.delete_operation(record)
                item = Item(record, key, kind, op=op)
                report.add(self.stream_name, deletions=1)
            elif self.route is not None and self.route.bulk:
                target, key = plan.bulk_target(record)
                item = Item(record, key, target=target)
            else:
                op, key = plan.operation(record)
                item = Item(record, key, op=op)
        except InvalidRecord as reason:
            report.add(self.stream_name, invalid=1)
            self.writer.dead_letter(
                plan, record, None, "invalid", str(reason), plan.key_of(record), kind
            )
            return
        if self._dry_run:
            return
        self._queue(item, plan.identities(record))

    def _skip_deletion(self) -> None:
        self.writer.report.add(self.stream_name, skipped_deletions=1)
        if not self._skip_warned:
            self._skip_warned = True
            self.logger.warning(
                "Stream '%s' has records deleted at source (_sdc_deleted_at); they are skipped "
                "because delete_mode is skip (the default): set delete_mode to hard or "
                "deactivate to apply them.",
                self.stream_name,
            )

    def _queue(self, item: Item, identities: tuple[_Identity, ...]) -> None:
        if not self._chunk_ids.isdisjoint(identities):
            self._submit()  # a row appears twice: its earlier operation goes first
        earlier = [f for i in identities if (f := self._handed_out.get(i)) and not f.done()]
        if earlier:
            wait_futures(earlier)
            self.writer.raise_fatal()
        self._chunk.append(item)
        self._chunk_ids.update(identities)
        if len(self._chunk) >= self._chunk_rows:
            self._submit()

    def process_batch(self, context: dict[str, t.Any]) -> None:
        """Send what is queued and wait for every chunk of this stream."""
        if self._chunk:
            self._submit()
        futures, self._futures = self._futures, []
        first: BaseException | None = None
        for future in futures:
            exc = future.exception()
            if exc is not None and first is None:
                first = exc
        self._handed_out.clear()
        if first is not None:
            raise first

    # -- sending --------------------------------------------------------------------------------

    def _submit(self) -> None:
        chunk, self._chunk = self._chunk, []
        ids, self._chunk_ids = self._chunk_ids, set()
        future = self.writer.submit(chunk, self.plan, self._tally)
        self._futures.append(future)
        for identity in ids:
            self._handed_out[identity] = future

    def _tally(self, n: int) -> None:
        with _TALLY_LOCK:
            self.tally_record_written(n)


_TALLY_LOCK = threading.Lock()
