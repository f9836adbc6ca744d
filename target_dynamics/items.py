"""One record on its way to the service: what to send, and what to report about it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamics_api.batch import BatchOperation
from target_dynamics.plan import StreamPlan

__all__ = ["Item"]


@dataclass(slots=True)
class Item:
    """A validated record: its ``$batch`` operation or its bulk message target (one of them is
    built first; the other only if the record changes path).

    Attributes:
        record: the record as it came (for the dead-letter file, and to rebuild the request).
        key: its key values (for the dead-letter file).
        kind: ``write``, ``delete`` or ``deactivate``.
        op: the ``$batch`` operation.
        target: the JSON item of a bulk message's ``Targets``.
    """

    record: dict[str, Any]
    key: dict[str, Any]
    kind: str = "write"
    op: BatchOperation | None = None
    target: bytes | None = None

    def operation(self, plan: StreamPlan) -> BatchOperation:
        """The ``$batch`` operation (built from the record when it was meant for a bulk
        message: a table that fell back, or rows a failed bulk request isolates)."""
        if self.op is None:
            self.op = plan.operation(self.record)[0]
        return self.op
