"""The cost model: how long a real organisation's web server would work on a request.

On a laptop the emulator answers at once, so a client's throughput against it says nothing of a
real tenant, which is latency-bound. With a ``CostModel`` the emulator charges each request the
server time a real organisation would spend on it (a fixed part per request, a part per row and
column read, a part per record written, a fraction of that in the bulk messages), holds the answer
until that time (scaled by ``time_scale``) has passed, and counts the full, unscaled time against
the service protection budget of 1,200 server-seconds per 300 s. The calibration is in the
emulator's README ("Cost model").

The handlers say what a request did in a ``Work`` (rows and columns read, records written and how);
the model turns that into seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: How records are written, as the cost model tells them apart: a request of its own, one operation
#: inside a ``$batch`` (ExecuteMultiple), or one record of a bulk message (CreateMultiple, ...).
WRITE_KINDS = ("single", "batch-op", "bulk")


@dataclass
class Work:
    """What one request (or one ``$batch`` operation) did, for the cost model.

    Attributes:
        rows: rows returned by reads.
        cells: rows x columns returned by reads.
        operations: operations inside a ``$batch``.
        written: records written, by kind (see ``WRITE_KINDS``).
    """

    rows: int = 0
    cells: int = 0
    operations: int = 0
    written: dict[str, int] = field(default_factory=dict)

    def read(self, rows: int, columns: int) -> Work:
        self.rows += rows
        self.cells += rows * columns
        return self

    def wrote(self, rows: int, kind: str = "single") -> Work:
        """Count ``rows`` records written as ``kind`` (the hook for the bulk messages: "bulk")."""
        if kind not in WRITE_KINDS:
            raise ValueError(f"unknown write kind {kind!r}; one of {', '.join(WRITE_KINDS)}")
        self.written[kind] = self.written.get(kind, 0) + rows
        return self

    def add_operation(self, part: Work | None) -> None:
        """Add one ``$batch`` operation: its reads as they are, its single writes as batch ops."""
        self.operations += 1
        if part is None:
            return
        self.rows += part.rows
        self.cells += part.cells
        for kind, n in part.written.items():
            self.wrote(n, "batch-op" if kind == "single" else kind)


@dataclass(frozen=True)
class CostModel:
    """Server time of a request, in seconds of a real organisation's web server.

    ``seconds(work)`` = ``request_seconds`` + reads (``row_seconds`` per row + ``cell_seconds`` per
    row and column) + ``operation_seconds`` per ``$batch`` operation + writes (see
    ``write_seconds``). The defaults make a 5,000-row page of 150 columns about 2 s, a single
    create 0.1 s, 100 creates in one ``$batch`` about 4 s and in one CreateMultiple about 1 s (the
    published figures; the README has the arithmetic).

    Attributes:
        time_scale: real seconds per modelled second: the emulator waits ``seconds * time_scale``
            before answering, and the service protection window, ``Retry-After`` and its penalties
            are scaled alike (0.01 turns a 2 s page into 20 ms of waiting and the 300 s window into
            3 s). Budgets always count the unscaled seconds.
        request_seconds: the fixed part of every request.
        row_seconds: per row returned.
        cell_seconds: per row and column returned.
        operation_seconds: per operation inside a ``$batch``, and per record written on its own.
        bulk_fraction: a record of a bulk message costs this fraction of ``operation_seconds``.
    """

    time_scale: float = 1.0
    request_seconds: float = 0.06
    row_seconds: float = 0.00004
    cell_seconds: float = 0.0000023
    operation_seconds: float = 0.04
    bulk_fraction: float = 0.25

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError("time_scale must be positive")
        for name in ("request_seconds", "row_seconds", "cell_seconds", "operation_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 <= self.bulk_fraction <= 1:
            raise ValueError("bulk_fraction must be between 0 and 1")

    def read_seconds(self, rows: int, columns: int) -> float:
        """Server time to return ``rows`` rows of ``columns`` columns (without the fixed part)."""
        return rows * self.row_seconds + rows * columns * self.cell_seconds

    def write_seconds(self, rows: int, kind: str = "single") -> float:
        """Server time to write ``rows`` records as ``kind`` (without the request's fixed part).

        A record written on its own and one operation inside a ``$batch`` cost the same
        ``operation_seconds`` (a ``$batch`` saves only the requests' fixed parts); a record of a
        bulk message (CreateMultiple, UpdateMultiple, UpsertMultiple) costs ``bulk_fraction`` of it.
        """
        if kind not in WRITE_KINDS:
            raise ValueError(f"unknown write kind {kind!r}; one of {', '.join(WRITE_KINDS)}")
        per = self.operation_seconds * (self.bulk_fraction if kind == "bulk" else 1.0)
        return rows * per

    def seconds(self, work: Work | None) -> float:
        """The whole server time of one request that did ``work``."""
        total = self.request_seconds
        if work is None:
            return total
        total += work.rows * self.row_seconds + work.cells * self.cell_seconds
        # A $batch operation's own fixed part; its writes are charged below (a batch op write
        # already is one operation, so it is not charged twice).
        batch_writes = work.written.get("batch-op", 0)
        total += max(0, work.operations - batch_writes) * self.operation_seconds
        for kind, n in work.written.items():
            total += self.write_seconds(n, kind)
        return total

    def real(self, seconds: float) -> float:
        """Real seconds for modelled ``seconds``."""
        return seconds * self.time_scale
