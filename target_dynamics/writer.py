"""BatchWriter: chunks of validated records -> requests -> the outcome of every record.

One writer serves every stream of a run. It owns the thread pool that sends the requests, the
:class:`~target_dynamics.flow.Flow` that gates how many are in flight (``x-ms-dop-hint``, capped by
``max_parallel_batches``, lowered on 429), the :class:`~target_dynamics.routes.Routes` that say
how each table is written, the run's report and dead-letter file, and the first failure that
concerns the whole run.

A chunk's records to write go the table's route: a bulk message
(:mod:`target_dynamics.bulksend`) or ``$batch`` (:mod:`target_dynamics.batchsend`); its deletes
and deactivations always go through ``$batch`` (``DeleteMultiple`` is for elastic tables only).

A missing privilege (403), a failure of a whole request that retrying cannot mend, or a table
without the bulk message under ``write_method: bulk`` stops the run: it is kept as
:attr:`BatchWriter.fatal` and raised by the sinks, so no STATE passes the records concerned.
"""

from __future__ import annotations

import threading
import typing as t
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from dynamics_api.errors import ApiError, ConfigError, DynamicsError
from dynamics_api.http import DataverseClient
from target_dynamics.batchsend import send_batch
from target_dynamics.bulksend import send_bulk
from target_dynamics.flow import Flow
from target_dynamics.items import Item
from target_dynamics.plan import DELETED_AT, StreamPlan
from target_dynamics.report import DeadLetters, RunReport
from target_dynamics.routes import Route, Routes

__all__ = ["BYPASS_PRIVILEGE", "BatchWriter", "Item", "WriterSettings"]

BYPASS_PRIVILEGE = "prvBypassCustomBusinessLogic"


@dataclass(frozen=True)
class WriterSettings:
    """How the writer sends: the target's settings that concern requests."""

    batch_size: int
    parallel_batches: int
    part_retries: int
    api_version: str = "9.2"
    dry_run: bool = False
    write_method: str = "auto"
    bulk_size: int = 1000
    elastic_bulk_size: int = 100
    #: Headers of every write request (the business-logic bypass).
    request_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_root(self) -> str:
        return f"/api/data/v{self.api_version.lstrip('vV')}/"


class BatchWriter:
    """Sends the records of every stream and accounts for each of them."""

    def __init__(
        self,
        client: Callable[[], DataverseClient],
        settings: WriterSettings,
        report: RunReport,
        dead_letters: DeadLetters,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        #: Called after each write request's answer is accounted for (the progress lines).
        self._on_batch = on_batch
        self.settings = settings
        self.report = report
        self.dead_letters = dead_letters
        self.fatal: BaseException | None = None
        # With the bypass headers, the first request goes alone: a user without the privilege
        # then gets one refused request, and nothing else is sent.
        self.flow = Flow(settings.parallel_batches, first_alone=bool(settings.request_headers))
        self.routes = Routes(
            self._get,
            method=settings.write_method,
            bulk_rows=settings.bulk_size,
            elastic_rows=settings.elastic_bulk_size,
            batch_rows=settings.batch_size,
        )
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        # Chunks queued or in flight: enough to keep every worker busy, bounded so memory
        # stays flat whatever the input size.
        self._inflight = threading.BoundedSemaphore(settings.parallel_batches * 2)

    # -- handing out ----------------------------------------------------------------------------

    def raise_fatal(self) -> None:
        """Raise the failure that stopped the run, if any."""
        if self.fatal is not None:
            raise self.fatal

    def route(self, plan: StreamPlan) -> Route:
        """How ``plan``'s records are written (asked of the service once per table and mode)."""
        return self.routes.route(plan)

    def submit(
        self, chunk: list[Item], plan: StreamPlan, on_done: Callable[[int], None]
    ) -> Future[None]:
        """Send ``chunk`` (one stream's records) in the background; ``on_done(n)`` is told
        how many records were applied. Blocks while the queue of chunks is full."""
        self.raise_fatal()
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.settings.parallel_batches, thread_name_prefix="dynamics-write"
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

    def count_done(
        self, plan: StreamPlan, done: Mapping[str, int], on_done: Callable[[int], None]
    ) -> None:
        """Count records applied: ``done`` by kind (write, delete, deactivate, gone)."""
        total = sum(done.values())
        if not total:
            return
        written = done.get("write", 0)
        self.report.add(
            plan.stream,
            written=written,
            created=written if plan.mode == "create" else 0,
            updated=written if plan.mode == "update" else 0,
            deleted=done.get("delete", 0),
            deactivated=done.get("deactivate", 0),
            already_gone=done.get("gone", 0),
        )
        on_done(total)

    def answered(self) -> None:
        """One write request's answer is accounted for."""
        if self._on_batch is not None:
            self._on_batch()

    # -- requests (pool threads) ------------------------------------------------------------------

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str,
        plan: StreamPlan,
        *,
        prefer: str,
        idempotent: bool,
    ) -> requests.Response:
        """POST one write request through the flow gate, with the run's request headers.

        Raises:
            ApiError: as :meth:`DataverseClient.request` says.
            ConfigError: the user may not bypass business logic.
        """
        headers = {**self.settings.request_headers, "Content-Type": content_type, "Prefer": prefer}
        return self._through_flow(
            "POST", path, data=body, headers=headers, entity=plan.table, idempotent=idempotent
        )

    def _get(self, method: str, path: str, **kw: t.Any) -> requests.Response:
        return self._through_flow(method, path, **kw)

    def _through_flow(self, method: str, path: str, **kw: t.Any) -> requests.Response:
        client = self.client()
        write = method != "GET"
        with self.flow.slot(write=write):
            self.raise_fatal()  # another request found that the run cannot go on
            try:
                response = client.request(method, path, **kw)
            except ApiError as err:
                self.flow.observe(None, client.stats.statuses[429])
                exc = self.refused(err)
                if write and (exc is not err or err.status in (0, 401, 403) or err.retryable):
                    # Known before the slot is released, so no request waiting for it is sent.
                    self.fatal = self.fatal or exc
                raise exc from None
            self.flow.observe(response.headers.get("x-ms-dop-hint"), client.stats.statuses[429])
            return response

    def refused(self, err: ApiError) -> DynamicsError:
        """``err``, or the one sentence for a user who may not bypass business logic."""
        if err.status == 403 and BYPASS_PRIVILEGE in err.service_message:
            return ConfigError(
                "bypass_business_logic is set, but the user the target signs in as lacks the "
                f"{BYPASS_PRIVILEGE} privilege: grant it with a security role (System "
                "Administrator has it) or unset bypass_business_logic; nothing was written."
            )
        return err

    def _send(self, chunk: list[Item], plan: StreamPlan, on_done: Callable[[int], None]) -> None:
        try:
            route = self.routes.route(plan)
            writes = [item for item in chunk if item.kind == "write"]
            others = [item for item in chunk if item.kind != "write"]
            if writes and route.bulk:
                send_bulk(self, writes, plan, route, on_done)
            elif writes:
                send_batch(self, writes, plan, on_done)
            if others:
                send_batch(self, others, plan, on_done)
        except BaseException as exc:
            if self.fatal is None:
                self.fatal = exc
            raise
