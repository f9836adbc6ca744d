"""The run's bookkeeping: per-stream counters and the dead-letter file (both thread-safe).

What the summary can say: a ``204`` to an upsert PATCH does not tell whether the row was created or
updated (only ``Prefer: return=representation`` does, at the cost of a row in every response), so
upserts are counted as *written*; ``created`` is counted for ``mode: create`` (If-None-Match: *)
and ``updated`` for ``mode: update`` (If-Match: *), where the service's success says which.
Records deleted at source are counted apart: deleted, deactivated, skipped (``delete_mode: skip``),
and *already gone* (the row was not in Dataverse: a 404 to the DELETE or the deactivation).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import msgspec

__all__ = ["DeadLetters", "RunReport", "StreamCounts"]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value
    return str(value)


_encoder = msgspec.json.Encoder(decimal_format="number", enc_hook=_default)


@dataclass
class StreamCounts:
    """Counters of one stream."""

    records: int = 0
    written: int = 0
    created: int = 0
    updated: int = 0
    invalid: int = 0
    rejected: int = 0
    retried: int = 0
    batches: int = 0
    bulk_requests: int = 0
    isolating_requests: int = 0  # bulk and $batch requests spent finding a bulk request's bad rows
    deletions: int = 0  # records deleted at source that were sent (delete or deactivate)
    deleted: int = 0
    deactivated: int = 0
    already_gone: int = 0
    skipped_deletions: int = 0

    @property
    def failed(self) -> int:
        """Records not written (all of them are in the dead-letter file)."""
        return self.invalid + self.rejected

    @property
    def settled(self) -> int:
        """Records whose outcome is known: written, failed, or a deletion applied or skipped."""
        deletions = self.deleted + self.deactivated + self.already_gone + self.skipped_deletions
        return self.written + self.failed + deletions


class RunReport:
    """Per-stream counters, updated from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.streams: dict[str, StreamCounts] = {}

    def add(self, stream: str, **amounts: int) -> None:
        """Add to counters of ``stream`` by name."""
        with self._lock:
            counts = self.streams.setdefault(stream, StreamCounts())
            for name, amount in amounts.items():
                setattr(counts, name, getattr(counts, name) + amount)

    def total_failed(self) -> int:
        """Records not written, over all streams."""
        with self._lock:
            return sum(c.failed for c in self.streams.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        """The counters as plain data."""
        with self._lock:
            return {
                name: {**c.__dict__, "failed": c.failed, "settled": c.settled}
                for name, c in self.streams.items()
            }

    def totals(self) -> dict[str, int]:
        """The counters summed over every stream."""
        total: Counter[str] = Counter()
        for counts in self.snapshot().values():
            total.update(counts)
        return dict(total)

    def log(self, logger: logging.Logger, *, dry_run: bool) -> None:
        """Log one summary line per stream."""
        for name, c in sorted(self.snapshot().items()):
            logger.info(
                "%s for '%s': %s",
                "Dry run summary" if dry_run else "Summary",
                name,
                "; ".join(_summary_parts(c, dry_run=dry_run)),
            )


def _summary_parts(c: dict[str, int], *, dry_run: bool) -> list[str]:
    deletions = c["deletions"] + c["skipped_deletions"]
    parts = [f"{c['records']} records"]
    if dry_run:
        valid = c["records"] - c["invalid"] - deletions
        parts.append(f"{valid} valid (would be written)")
        if deletions:
            parts.append(
                f"deleted at source: {c['deletions']} would be deleted or deactivated, "
                f"{c['skipped_deletions']} skipped (delete_mode skip)"
            )
        parts.append(f"{c['invalid']} invalid (dead-lettered); nothing was written")
        return parts
    written = f"{c['written']} written"
    if c["created"] or c["updated"]:
        written += f" ({c['created']} created, {c['updated']} updated)"
    parts.append(written)
    if deletions:
        parts.append(
            f"deleted at source: {c['deleted']} deleted, {c['deactivated']} deactivated, "
            f"{c['already_gone']} already gone, {c['skipped_deletions']} skipped "
            "(delete_mode skip)"
        )
    parts.append(
        f"{c['failed']} failed ({c['invalid']} invalid, {c['rejected']} rejected by Dataverse; "
        "all dead-lettered)"
    )
    requests = (
        f"{_count(c['retried'], 'operation')} retried, {_count(c['batches'], '$batch request')}"
    )
    if c["bulk_requests"]:
        requests += f", {_count(c['bulk_requests'], 'bulk request')}"
    if c["isolating_requests"]:
        requests += f" ({_count(c['isolating_requests'], 'request')} to isolate failed records)"
    parts.append(requests)
    return parts


def _count(n: int, word: str) -> str:
    """``1 bulk request``, ``3 bulk requests``."""
    return f"{n} {word if n == 1 else word + 's'}"


class DeadLetters:
    """Appends one JSON line per record that was not written; opened on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self.count = 0

    def write(
        self,
        *,
        stream: str,
        record: Any,
        status: int | None,
        code: str,
        message: str,
        key: Any,
        operation: str,
    ) -> None:
        """Append a dead letter (the record is the user's data; no secret is ever in it)."""
        line = _encoder.encode(
            {
                "stream": stream,
                "record": record,
                "status": status,
                "code": code,
                "message": message,
                "key": key,
                "operation": operation,
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
        )
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab")
            self._file.write(line + b"\n")
            self._file.flush()
            self.count += 1

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
