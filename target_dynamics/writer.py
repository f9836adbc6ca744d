"""BatchWriter: operations -> ``$batch`` requests -> the outcome of every record.

One writer serves every stream of a run. It owns the thread pool that sends ``$batch`` requests
(at most ``max_parallel_batches`` in flight, a bounded queue behind them), the run's report and
dead-letter file, and the first failure that concerns the whole run.

* Each ``$batch`` is sent with ``Prefer: odata.continue-on-error`` as an idempotent request
  (upserts, deletes and deactivations may be repeated), so the client's retry policy re-sends it
  after 429 (exact Retry-After), 5xx and connection resets.
* Each response part is matched to its operation by position: successes are counted; parts that
  failed retryably (429/5xx) are sent again in a smaller batch, waiting as the same retry policy
  says, at most ``max_part_retries`` times; a 404 to a deletion means the row is already gone;
  other failures are dead-lettered with the Dataverse status, code and message.
* A missing privilege (403) or a failure of the whole request that retrying cannot mend stops the
  run: it is kept as :attr:`BatchWriter.fatal` and raised by the sinks, so no STATE passes the
  records concerned.
"""

from __future__ import annotations

import threading
import typing as t
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from dynamics_api.batch import BatchDecodeError, BatchOperation, decode_batch_response, encode_batch
from dynamics_api.errors import ApiError, api_error
from dynamics_api.http import RETRYABLE_STATUS, DataverseClient, parse_retry_after
from target_dynamics.plan import DELETED_AT, StreamPlan
from target_dynamics.report import DeadLetters, RunReport

__all__ = ["BatchWriter", "Item", "WriterSettings"]

#: (record, operation, key, kind): kind is "write", "delete" or "deactivate".
Item = tuple[dict[str, t.Any], BatchOperation, dict[str, t.Any], str]


@dataclass(frozen=True)
class WriterSettings:
    """How the writer sends: the target's settings that concern requests."""

    batch_size: int
    parallel_batches: int
    part_retries: int
    api_version: str = "9.2"
    dry_run: bool = False

    @property
    def api_root(self) -> str:
        return f"/api/data/v{self.api_version.lstrip('vV')}/"


class BatchWriter:
    """Sends operations of every stream in ``$batch`` requests and accounts for each record."""

    def __init__(
        self,
        client: Callable[[], DataverseClient],
        settings: WriterSettings,
        report: RunReport,
        dead_letters: DeadLetters,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        #: Called after each $batch answer is accounted for (the progress lines).
        self._on_batch = on_batch
        self.settings = settings
        self.report = report
        self.dead_letters = dead_letters
        self.fatal: BaseException | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        # Batches queued or in flight: enough to keep every worker busy, bounded so memory
        # stays flat whatever the input size.
        self._inflight = threading.BoundedSemaphore(settings.parallel_batches * 2)

    # -- handing out ----------------------------------------------------------------------------

    def raise_fatal(self) -> None:
        """Raise the failure that stopped the run, if any."""
        if self.fatal is not None:
            raise self.fatal

    def submit(
        self, chunk: list[Item], plan: StreamPlan, on_done: Callable[[int], None]
    ) -> Future[None]:
        """Send ``chunk`` (one stream's operations) in the background; ``on_done(n)`` is told
        how many records were applied. Blocks while the queue of batches is full."""
        self.raise_fatal()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.settings.parallel_batches, thread_name_prefix="dynamics-batch"
                )
            executor = self._executor
        self._inflight.acquire()
        try:
            future = executor.submit(self._send, chunk, plan, on_done)
        except BaseException:
            self._inflight.release()
            raise
        future.add_done_callback(lambda _f: self._inflight.release())
        return future

    def close(self) -> None:
        """Wait for everything handed out, then stop the threads."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self.dead_letters.close()

    # -- one record that is not written ---------------------------------------------------------

    def dead_letter(
        self,
        plan: StreamPlan,
        record: dict[str, t.Any],
        status: int | None,
        code: str,
        message: str,
        key: dict[str, t.Any],
        kind: str = "write",
    ) -> None:
        """Append the record to the dead-letter file with why it was not written."""
        clean = {k: v for k, v in record.items() if not k.startswith("_sdc_") or k == DELETED_AT}
        self.dead_letters.write(
            stream=plan.stream,
            record=clean,
            status=status,
            code=code,
            message=message,
            key=key,
            operation=plan.mode if kind == "write" else kind,
        )

    # -- sending (pool threads) -----------------------------------------------------------------

    def _send(self, chunk: list[Item], plan: StreamPlan, on_done: Callable[[int], None]) -> None:
        try:
            self._send_with_retries(chunk, plan, on_done)
        except BaseException as exc:
            self.fatal = exc
            raise

    def _send_with_retries(
        self, chunk: list[Item], plan: StreamPlan, on_done: Callable[[int], None]
    ) -> None:
        client = self._client()
        policy = client.retry
        limit = self.settings.part_retries
        stream = plan.stream
        pending = chunk
        attempt = 0
        while pending:
            encoded = encode_batch([item[1] for item in pending], api_root=self.settings.api_root)
            try:
                response = client.request(
                    "POST",
                    "$batch",
                    data=encoded.body,
                    headers={
                        "Content-Type": encoded.content_type,
                        "Prefer": "odata.continue-on-error",
                    },
                    entity=plan.table,
                    idempotent=True,  # upserts, deletes and deactivations may be repeated
                )
            except ApiError as err:
                if err.status in (0, 401, 403) or err.retryable:
                    raise  # the run cannot go on: no STATE past these records
                self.report.add(stream, batches=1, rejected=len(pending))
                for record, _, key, kind in pending:
                    self.dead_letter(
                        plan, record, err.status, err.code, err.service_message, key, kind
                    )
                return
            self.report.add(stream, batches=1)
            try:
                results = decode_batch_response(
                    response.content, response.headers.get("Content-Type", "")
                )
            except BatchDecodeError as exc:
                results = []
                reason = f"Unreadable $batch response ({exc}); retrying its operations"
            else:
                reason = "throttled or failed in their $batch"
            retry: list[Item] = []
            asked: float | None = None
            throttled = False
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
                    raise api_error(
                        403,
                        item[1].method,
                        f"/{plan.entity_set}",
                        code=code,
                        message=message or res.reason,
                        entity=plan.table,
                    )
                given = parse_retry_after(res.headers.get("retry-after")) if res else None
                if (
                    (res is None or status in RETRYABLE_STATUS)
                    and not policy.exhausted(attempt, limit)
                    and not policy.too_long(given)
                ):
                    retry.append(item)
                    throttled = throttled or status == 429
                    if given is not None:
                        asked = max(asked or 0.0, given)
                    continue
                record, _, key, _ = item
                if res is None:
                    code, message = "", "The $batch response had no part for this operation."
                else:
                    code, message = res.error()
                    message = message or res.reason
                    if policy.too_long(given):
                        message += (
                            f" (Dataverse asked to wait {given:.0f} s, more than "
                            f"max_retry_after {policy.max_retry_after:.0f} s)"
                        )
                self.report.add(stream, rejected=1)
                self.dead_letter(plan, record, status or None, code, message, key, kind)
            self._count_done(plan, done, on_done)
            if self._on_batch is not None:
                self._on_batch()
            pending = retry
            if pending:
                self.report.add(stream, retried=len(pending))
                if throttled and asked is not None:
                    client.hold(asked)  # the other batches wait too: the limit is the user's
                wait = policy.delay(attempt, asked)
                attempt += 1
                policy.wait(
                    wait,
                    f"{len(pending)} operation(s) of stream '{stream}' {reason}: retry "
                    f"{attempt} of {limit}",
                    throttled=throttled,
                    given=asked is not None,
                )

    def _count_done(
        self, plan: StreamPlan, done: dict[str, int], on_done: Callable[[int], None]
    ) -> None:
        total = sum(done.values())
        if not total:
            return
        written = done["write"]
        self.report.add(
            plan.stream,
            written=written,
            created=written if plan.mode == "create" else 0,
            updated=written if plan.mode == "update" else 0,
            deleted=done["delete"],
            deactivated=done["deactivate"],
            already_gone=done["gone"],
        )
        on_done(total)
