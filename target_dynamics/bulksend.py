"""Records -> bulk messages (``UpsertMultiple``, ``UpdateMultiple``, ``CreateMultiple``) -> the
outcome of every record, without losing the good rows of a request that failed.

* One request carries the targets of one chunk (``bulk_size_rows``, or ``elastic_bulk_size_rows``
  on an elastic table); the sink never puts two records of one row in a chunk, and a later record
  of a row waits until the chunk holding it is done (its isolation included).
* Throttling (429) and transient failures (5xx, resets) are retried by the client's one retry
  policy, waiting ``Retry-After``; they never count as a record's failure. When the retries run
  out, the run stops with no STATE past these records (a rerun writes them).
* On a standard table a bulk request is one transaction: one bad record fails (and rolls back)
  all of them, and the answer does not say which. The failed request is split in ``SPLIT`` parts,
  each sent again, and so on; a failing part of at most ``FLOOR`` records goes as one ``$batch``
  (continue-on-error), which answers for each record. Only the records that fail on their own are
  dead-lettered, each with its Dataverse error; every request spent isolating them is counted
  (``isolating_requests`` in the summary). With ``k`` bad records among ``n`` this costs about
  ``SPLIT * k * log_SPLIT(n / FLOOR)`` requests, bounded by the depth ``log_SPLIT(n / FLOOR)``.
* On an elastic table each record is written on its own: the answer lists the failed records
  (``Plugin.BulkApiErrorDetails``, asked for with ``Prefer: odata.include-annotations``), which are
  dead-lettered; the others are written.
* A table that answers that it does not have the message falls back to ``$batch`` (see
  :mod:`target_dynamics.routes`).
"""

from __future__ import annotations

import json
import typing as t
from collections import deque
from collections.abc import Callable

from dynamics_api.errors import ApiError
from target_dynamics.batchsend import send_batch
from target_dynamics.items import Item
from target_dynamics.plan import StreamPlan
from target_dynamics.routes import Route, is_unsupported

if t.TYPE_CHECKING:
    from target_dynamics.writer import BatchWriter

__all__ = ["FLOOR", "SPLIT", "send_bulk"]

#: Parts a failed bulk request is split into (simulated over 1% bad rows in 1,000-row requests,
#: 4 parts cost about a quarter less server time than halves, for fewer requests than 8 parts).
SPLIT = 4
#: A failed request of at most this many records goes as one ``$batch``, which answers for each.
FLOOR = 16
ERROR_DETAILS = "@Microsoft.PowerApps.CDS.ErrorDetails.Plugin.BulkApiErrorDetails"
PREFER_DETAILS = 'odata.include-annotations="Microsoft.PowerApps.CDS.ErrorDetails.*"'


def send_bulk(
    writer: BatchWriter,
    items: list[Item],
    plan: StreamPlan,
    route: Route,
    on_done: Callable[[int], None],
) -> None:
    """Write ``items`` (one chunk) with ``route``'s bulk message."""
    report = writer.report
    stream = plan.stream
    path = f"{plan.entity_set}/Microsoft.Dynamics.CRM.{route.message}"
    # (records, sent to isolate failed records)
    pending: deque[tuple[list[Item], bool]] = deque([(items, False)])
    while pending:
        part, isolating = pending.popleft()
        if not route.bulk:  # the table fell back (now, or in another thread)
            send_batch(
                writer, [i for p, _ in [(part, isolating), *pending] for i in p], plan, on_done
            )
            return
        body = b'{"Targets":[' + b",".join(_target(i, plan) for i in part) + b"]}"
        try:
            writer.post(
                path,
                body,
                "application/json",
                plan,
                prefer=PREFER_DETAILS,
                # a CreateMultiple repeated after a cut connection could create the rows twice
                idempotent=plan.mode != "create",
            )
        except ApiError as err:
            if is_unsupported(err, route.message):
                writer.routes.unsupported(route)  # raises when write_method is bulk
                pending.appendleft((part, isolating))
                continue
            report.add(stream, bulk_requests=1, isolating_requests=int(isolating))
            if err.status in (0, 401, 403) or err.retryable:
                raise  # the run cannot go on: no STATE past these records
            _after_failure(writer, part, plan, route, err, pending, on_done)
            writer.answered()
            continue
        report.add(stream, bulk_requests=1, isolating_requests=int(isolating))
        writer.count_done(plan, {"write": len(part)}, on_done)
        writer.answered()


def _target(item: Item, plan: StreamPlan) -> bytes:
    if item.target is None:  # built for $batch before the table's route was known
        item.target = plan.bulk_target(item.record)[0]
    return item.target


def _after_failure(
    writer: BatchWriter,
    part: list[Item],
    plan: StreamPlan,
    route: Route,
    err: ApiError,
    pending: deque[tuple[list[Item], bool]],
    on_done: Callable[[int], None],
) -> None:
    """A bulk request failed for some of its records: find which, write the others."""
    failed = _listed_failures(err, len(part))
    if failed is not None:
        route.elastic = True  # only an elastic table answers for each record
        _partial(writer, part, plan, err, failed, on_done)
        return
    if len(part) == 1:
        item = part[0]
        writer.report.add(plan.stream, rejected=1)
        writer.dead_letter(
            plan, item.record, err.status, err.code, err.service_message, item.key, item.kind
        )
        return
    if len(part) <= FLOOR:
        writer.report.add(plan.stream, isolating_requests=1)
        send_batch(writer, part, plan, on_done)
        return
    step = -(-len(part) // SPLIT)
    pieces = [part[i : i + step] for i in range(0, len(part), step)]
    pending.extendleft((piece, True) for piece in reversed(pieces))


def _listed_failures(err: ApiError, size: int) -> dict[int, int] | None:
    """RequestIndex -> StatusCode of the records an elastic table's answer lists as failed;
    None when the answer lists none (a standard table)."""
    raw = err.annotations.get(ERROR_DETAILS)
    if not isinstance(raw, str):
        return None
    try:
        details = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(details, list):
        return None
    out: dict[int, int] = {}
    for d in details:
        if not isinstance(d, dict):
            continue
        index, status = d.get("RequestIndex"), d.get("StatusCode")
        if (
            isinstance(index, int)
            and isinstance(status, int)
            and 0 <= index < size
            and status >= 400
        ):
            out[index] = status
    return out or None


def _partial(
    writer: BatchWriter,
    part: list[Item],
    plan: StreamPlan,
    err: ApiError,
    failed: dict[int, int],
    on_done: Callable[[int], None],
) -> None:
    written = 0
    first = min(failed)
    for index, item in enumerate(part):
        status = failed.get(index)
        if status is None:
            written += 1
            continue
        message = err.service_message
        if index != first:
            message = (
                f"{message} (the message of the request's first failed record: Dataverse gives "
                f"only that one; this record failed with status {status})"
            )
        writer.report.add(plan.stream, rejected=1)
        writer.dead_letter(plan, item.record, status, err.code, message, item.key, item.kind)
    writer.count_done(plan, {"write": written}, on_done)
