"""Operations -> ``$batch`` requests -> the outcome of every record.

What goes this way: deletes and deactivations, tables (or modes) without a bulk message, every
table with ``write_method: batch``, and the last few rows a failed bulk request isolates (a
``$batch`` answers for each of them).

* Each ``$batch`` is sent with ``Prefer: odata.continue-on-error`` as an idempotent request
  (upserts, deletes and deactivations may be repeated), so the client's retry policy re-sends it
  after 429 (exact Retry-After), 5xx and connection resets.
* Each response part is matched to its operation by position: successes are counted; parts that
  failed retryably (429/5xx) are sent again in a smaller batch, waiting as the same retry policy
  says, at most ``max_part_retries`` times; a 404 to a deletion means the row is already gone;
  other failures are dead-lettered with the Dataverse status, code and message.
* A missing privilege (403) or a failure of the whole request that retrying cannot mend stops the
  run (see :class:`~target_dynamics.writer.BatchWriter`).
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable

from dynamics_api.batch import BatchDecodeError, decode_batch_response, encode_batch
from dynamics_api.errors import ApiError, api_error
from dynamics_api.http import RETRYABLE_STATUS, parse_retry_after
from target_dynamics.items import Item
from target_dynamics.plan import StreamPlan

if t.TYPE_CHECKING:
    from target_dynamics.writer import BatchWriter

__all__ = ["send_batch"]


def send_batch(
    writer: BatchWriter, items: list[Item], plan: StreamPlan, on_done: Callable[[int], None]
) -> None:
    """Write ``items`` through ``$batch`` requests of at most ``batch_size_rows`` operations."""
    size = writer.settings.batch_size
    for start in range(0, len(items), size):
        _send_with_retries(writer, items[start : start + size], plan, on_done)


def _send_with_retries(
    writer: BatchWriter, chunk: list[Item], plan: StreamPlan, on_done: Callable[[int], None]
) -> None:
    client = writer.client()
    policy = client.retry
    limit = writer.settings.part_retries
    report = writer.report
    stream = plan.stream
    pending = chunk
    attempt = 0
    while pending:
        encoded = encode_batch(
            [item.operation(plan) for item in pending], api_root=writer.settings.api_root
        )
        try:
            response = writer.post(
                "$batch",
                encoded.body,
                encoded.content_type,
                plan,
                prefer="odata.continue-on-error",
                idempotent=True,  # upserts, deletes and deactivations may be repeated
            )
        except ApiError as err:
            if err.status in (0, 401, 403) or err.retryable:
                raise  # the run cannot go on: no STATE past these records
            report.add(stream, batches=1, rejected=len(pending))
            for item in pending:
                writer.dead_letter(
                    plan,
                    item.record,
                    err.status,
                    err.code,
                    err.service_message,
                    item.key,
                    item.kind,
                )
            writer.answered()
            return
        report.add(stream, batches=1)
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
            kind = item.kind
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
                raise writer.refused(
                    api_error(
                        403,
                        item.operation(plan).method,
                        f"/{plan.entity_set}",
                        code=code,
                        message=message or res.reason,
                        entity=plan.table,
                    )
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
            report.add(stream, rejected=1)
            writer.dead_letter(plan, item.record, status or None, code, message, item.key, kind)
        writer.count_done(plan, done, on_done)
        writer.answered()
        pending = retry
        if pending:
            report.add(stream, retried=len(pending))
            if throttled:
                writer.flow.throttled()
                if asked is not None:
                    client.hold(asked)  # the other requests wait too: the limit is the user's
            wait = policy.delay(attempt, asked)
            attempt += 1
            policy.wait(
                wait,
                f"{len(pending)} operation(s) of stream '{stream}' {reason}: retry "
                f"{attempt} of {limit}",
                throttled=throttled,
                given=asked is not None,
            )
