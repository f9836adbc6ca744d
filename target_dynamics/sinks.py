"""DynamicsSink: records -> validated PATCH operations -> ``$batch`` requests -> per-record outcome.

Flow per stream:

* ``process_record`` (reader thread) turns a record into an operation with the stream's compiled
  :class:`~target_dynamics.plan.StreamPlan`; an invalid record goes to the dead-letter file and
  never reaches the service. Every ``batch_size_rows`` operations a ``$batch`` is handed to the
  target's thread pool (at most ``max_parallel_batches`` in flight, a bounded queue behind them).
* Each ``$batch`` is sent with ``Prefer: odata.continue-on-error`` as an idempotent request (upserts
  may be repeated), so the client's one retry policy re-sends it after 429 (exact Retry-After),
  5xx and connection resets. Each response part is matched to its record by position: successes
  are counted, retryable part failures (429/5xx) are sent again in a smaller batch a bounded number
  of times, other failures are dead-lettered with the Dataverse status, code and message.
* ``process_batch`` (the SDK's drain) waits for every batch handed out so far. The SDK emits STATE
  only after every sink drained, so a STATE never passes a record that is neither written nor
  dead-lettered. Failures that concern the whole run (authentication, privileges, the service
  unreachable after all retries) raise from the drain: no STATE is released and the run fails.
"""

from __future__ import annotations

import random
import threading
import time
import typing as t
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures

from singer_sdk.sinks import BatchSink

from dynamics_api.batch import BatchDecodeError, BatchOperation, decode_batch_response, encode_batch
from dynamics_api.errors import ApiError, error_hint
from dynamics_api.http import RETRYABLE_STATUS, parse_retry_after
from target_dynamics.plan import DELETED_AT, InvalidRecord, StreamPlan

if t.TYPE_CHECKING:
    from target_dynamics.target import TargetDynamics

# (record, operation, key, kind): kind is "write", "delete" or "deactivate"
_Item = tuple[dict[str, t.Any], BatchOperation, dict[str, t.Any], str]
_Identity = tuple[str, t.Any]
_MAX_PART_WAIT = 300.0


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
        self.dyn = target
        self.plan: StreamPlan = target.plan_for(stream_name)
        self._chunk: list[_Item] = []
        self._chunk_ids: set[_Identity] = set()
        # Rows named by operations handed out and maybe not applied yet: a later record of the
        # same row waits for them, so records of one row are applied in input order even with
        # parallel $batch requests (and their retries).
        self._handed_out: dict[_Identity, Future[None]] = {}
        self._futures: list[Future[None]] = []
        self._skip_warned = False
        self._batch_size = target.batch_size
        self._dry_run = target.dry_run
        version = str(self.config.get("api_version") or "9.2").lstrip("vV")
        self._api_root = f"/api/data/v{version}/"
        self.logger.info(
            "Stream '%s' -> table '%s' (%s), key %s, mode %s%s",
            stream_name,
            self.plan.table,
            self.plan.entity_set,
            ", ".join(self.plan.key),
            self.plan.mode,
            " (dry run: nothing is written)" if self._dry_run else "",
        )

    # -- the SDK's per-record work, replaced ---------------------------------------------------

    def get_validator(self) -> None:
        """No JSON Schema validation: the plan validates against the table's metadata."""
        return None

    def _validate_and_parse(self, record: dict[str, t.Any]) -> dict[str, t.Any]:
        # No timestamp parsing either: date strings stay strings, checked once by the plan.
        return record

    def _singer_validate_message(self, record: dict[str, t.Any]) -> None:
        # A record without its key is dead-lettered by the plan instead of stopping the run.
        return None

    @property
    def max_size(self) -> int:
        """Records between drains: enough for every parallel batch to be full."""
        return self._batch_size * max(1, self.dyn.parallel_batches) * 2

    # -- records --------------------------------------------------------------------------------

    def _remove_sdc_metadata_from_record(self, record: dict[str, t.Any]) -> None:
        # Override: the SDK drops every _sdc_* field before process_record, _sdc_deleted_at
        # included, which would turn a deletion into an empty upsert. Only that one is kept;
        # tests/integration/test_target_deletes.py fails if the SDK changes this path.
        deleted_at = record.get(DELETED_AT)
        super()._remove_sdc_metadata_from_record(record)
        if deleted_at is not None:
            record[DELETED_AT] = deleted_at

    def process_record(self, record: dict[str, t.Any], context: dict[str, t.Any]) -> None:
        """Validate and queue one record: a write, or what ``delete_mode`` makes of a record
        deleted at source (never an upsert)."""
        report = self.dyn.report
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
                report.add(self.stream_name, deletions=1)
            else:
                op, key = plan.operation(record)
        except InvalidRecord as reason:
            report.add(self.stream_name, invalid=1)
            self._dead_letter(record, None, "invalid", str(reason), plan.key_of(record), kind)
            return
        if self._dry_run:
            return
        self._queue((record, op, key, kind), plan.identities(record))

    def _skip_deletion(self) -> None:
        self.dyn.report.add(self.stream_name, skipped_deletions=1)
        if not self._skip_warned:
            self._skip_warned = True
            self.logger.warning(
                "Stream '%s' has records deleted at source (_sdc_deleted_at); they are skipped "
                "because delete_mode is skip (the default): set delete_mode to hard or "
                "deactivate to apply them.",
                self.stream_name,
            )

    def _queue(self, item: _Item, identities: tuple[_Identity, ...]) -> None:
        if not self._chunk_ids.isdisjoint(identities):
            self._submit()  # a row appears twice: its earlier operation goes first
        earlier = [f for i in identities if (f := self._handed_out.get(i)) and not f.done()]
        if earlier:
            wait_futures(earlier)
            self._raise_fatal()
        self._chunk.append(item)
        self._chunk_ids.update(identities)
        if len(self._chunk) >= self._batch_size:
            self._submit()

    def process_batch(self, context: dict[str, t.Any]) -> None:
        """Send what is queued and wait for every batch of this stream."""
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

    def _raise_fatal(self) -> None:
        fatal = self.dyn.fatal
        if fatal is not None:
            raise fatal

    def _submit(self) -> None:
        self._raise_fatal()
        chunk, self._chunk = self._chunk, []
        ids, self._chunk_ids = self._chunk_ids, set()
        inflight = self.dyn.inflight
        inflight.acquire()
        try:
            future = self.dyn.executor.submit(self._send, chunk)
        except BaseException:
            inflight.release()
            raise
        future.add_done_callback(lambda _f: inflight.release())
        self._futures.append(future)
        for identity in ids:
            self._handed_out[identity] = future

    def _send(self, chunk: list[_Item]) -> None:
        try:
            self._send_with_retries(chunk)
        except BaseException as exc:
            self.dyn.fatal = exc
            raise

    def _send_with_retries(self, chunk: list[_Item]) -> None:
        client = self.dyn.client
        retries_left = self.dyn.part_retries
        report = self.dyn.report
        stream = self.stream_name
        pending = chunk
        attempt = 0
        while pending:
            encoded = encode_batch([item[1] for item in pending], api_root=self._api_root)
            try:
                response = client.request(
                    "POST",
                    "$batch",
                    data=encoded.body,
                    headers={
                        "Content-Type": encoded.content_type,
                        "Prefer": "odata.continue-on-error",
                    },
                    entity=self.plan.table,
                    idempotent=True,  # upserts, deletes and deactivations may be repeated
                )
            except ApiError as err:
                if err.status in (0, 401, 403) or err.retryable:
                    raise  # the run cannot go on: no STATE past these records
                report.add(stream, batches=1, rejected=len(pending))
                for record, _, key, kind in pending:
                    self._dead_letter(record, err.status, err.code, err.service_message, key, kind)
                return
            report.add(stream, batches=1)
            try:
                results = decode_batch_response(
                    response.content, response.headers.get("Content-Type", "")
                )
            except BatchDecodeError as exc:
                results = []
                self.logger.warning("Unreadable $batch response (%s); retrying its operations", exc)
            retry: list[_Item] = []
            wait = 0.0
            done = {"write": 0, "delete": 0, "deactivate": 0, "gone": 0}
            for i, item in enumerate(pending):
                res = results[i] if i < len(results) else None
                kind = item[3]
                if res is not None and res.ok:
                    done[kind] += 1
                    continue
                status = res.status if res is not None else 0
                if status == 404 and kind != "write":
                    done["gone"] += 1  # deleted at source, and not (or no longer) in Dataverse
                    continue
                if res is not None and status == 403:
                    # A missing privilege fails every record of the table alike: stop the run
                    # with the table and the role to grant (no STATE goes past these records,
                    # so a rerun after the fix writes them), rather than dead-letter them all.
                    code, message = res.error()
                    method = item[1].method
                    raise ApiError(
                        status=403,
                        code=code,
                        service_message=message or res.reason,
                        method=method,
                        path=f"/{self.plan.entity_set}",
                        entity=self.plan.table,
                        hint=error_hint(403, code, message, method=method, entity=self.plan.table),
                    )
                if (res is None or status in RETRYABLE_STATUS) and attempt < retries_left:
                    retry.append(item)
                    given = parse_retry_after(res.headers.get("retry-after")) if res else None
                    backoff = min(30.0, 2.0**attempt) * (1 + random.random() * 0.1)
                    wait = max(wait, given if given is not None else backoff)
                    continue
                record, _, key, _ = item
                if res is None:
                    code, message = "", "The $batch response had no part for this operation."
                else:
                    code, message = res.error()
                    message = message or res.reason
                report.add(stream, rejected=1)
                self._dead_letter(record, status or None, code, message, key, kind)
            self._count_done(done)
            pending = retry
            attempt += 1
            if pending:
                report.add(stream, retried=len(pending))
                self.logger.info(
                    "Retrying %d operation(s) of stream '%s' in %.1f s (attempt %d)",
                    len(pending),
                    stream,
                    wait,
                    attempt,
                )
                time.sleep(min(wait, _MAX_PART_WAIT))

    def _count_done(self, done: dict[str, int]) -> None:
        total = sum(done.values())
        if not total:
            return
        written = done["write"]
        mode = self.plan.mode
        self.dyn.report.add(
            self.stream_name,
            written=written,
            created=written if mode == "create" else 0,
            updated=written if mode == "update" else 0,
            deleted=done["delete"],
            deactivated=done["deactivate"],
            already_gone=done["gone"],
        )
        with _TALLY_LOCK:
            self.tally_record_written(total)

    def _dead_letter(
        self,
        record: dict[str, t.Any],
        status: int | None,
        code: str,
        message: str,
        key: dict[str, t.Any],
        kind: str = "write",
    ) -> None:
        clean = {k: v for k, v in record.items() if not k.startswith("_sdc_") or k == DELETED_AT}
        self.dyn.dead_letters.write(
            stream=self.stream_name,
            record=clean,
            status=status,
            code=code,
            message=message,
            key=key,
            operation=self.plan.mode if kind == "write" else kind,
        )


_TALLY_LOCK = threading.Lock()
