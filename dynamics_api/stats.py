"""Counters of a client's requests, for benchmarks, progress lines and run summaries."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientStats"]


@dataclass
class ClientStats:
    """Counters for benchmarks and run summaries; updated under a lock, read with :meth:`snapshot`.

    Attributes:
        requests: HTTP attempts sent (retries included).
        retries: attempts that were repeated after a failure (401 refreshes not included).
        throttled_waits: waits caused by a 429.
        held_waits: requests that waited because another one of this client was throttled.
        waited_seconds: total time slept before retries (and held).
        network_errors: attempts that got no complete response.
        token_refreshes: tokens refreshed after a 401.
        statuses: responses by HTTP status.
    """

    requests: int = 0
    retries: int = 0
    throttled_waits: int = 0
    held_waits: int = 0
    waited_seconds: float = 0.0
    network_errors: int = 0
    token_refreshes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **amounts: float) -> None:
        """Add to counters by name (``stats.add(requests=1)``)."""
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def count_status(self, status: int) -> None:
        """Count one response with this status."""
        with self._lock:
            self.statuses[status] += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the counters as plain data."""
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "throttled_waits": self.throttled_waits,
                "held_waits": self.held_waits,
                "waited_seconds": self.waited_seconds,
                "network_errors": self.network_errors,
                "token_refreshes": self.token_refreshes,
                "statuses": dict(self.statuses),
            }
