"""How many write requests the target keeps in flight: what the service says it can take.

Dataverse tells a client how many requests to run in parallel in the ``x-ms-dop-hint`` header of
its responses; its service protection limits (per user and web server) answer 429 when a client
sends more than its budget. :class:`Flow` gates every write request of a run:

* at most ``limit`` requests are in flight; the limit follows the latest ``x-ms-dop-hint``, never
  above the ``cap`` (``max_parallel_batches``, also the connection pool's size);
* a 429 (seen by the client's counters, or in a part of a ``$batch``) halves the limit, once per
  wave of throttling; after ``limit`` answers in a row without one, it goes up by one again,
  back to the hint;
* optionally the first request of the run goes alone (``first_alone``): when the target asks the
  service to bypass business logic, a missing privilege is then one refused request, before any
  other is sent.

The gate sits around the HTTP request only, so a pool thread never holds a slot while it waits for
anything else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dynamics_api.retry import Concurrency

__all__ = ["Flow"]

log = logging.getLogger(__name__)


class Flow(Concurrency):
    """The run's gate on write requests in flight (thread-safe); ``limit`` is the requests
    allowed now, ``target`` what the service's hint allows (capped), to which the limit returns
    after throttling (:class:`~dynamics_api.retry.Concurrency`)."""

    def __init__(self, cap: int, *, first_alone: bool = False) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        super().__init__(cap)
        self.cap = cap
        self._inflight = 0
        self._cond = threading.Condition()
        self._throttles_seen = 0
        self._first_pending = first_alone
        self._first_taken = False

    @property
    def target(self) -> int:
        return self.ceiling

    @contextmanager
    def slot(self, *, write: bool = True) -> Iterator[None]:
        """Hold one of the ``limit`` places for the duration of one request (a read does not
        count as the run's first request)."""
        first = False
        with self._cond:
            while True:
                if self._first_pending and write:
                    if not self._first_taken:
                        self._first_taken = first = True
                        break
                elif self._inflight < self.limit:
                    break
                self._cond.wait()
            self._inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= 1
                if first:
                    self._first_pending = False
                self._cond.notify_all()

    def observe(self, hint: str | None, throttles: int) -> None:
        """After an answer: the service's ``x-ms-dop-hint`` (if any) and the client's count of
        429 answers so far."""
        with self._cond:
            if hint is not None and hint.strip().isdigit() and int(hint) > 0:
                self.cap_at(min(self.cap, int(hint)))
            if throttles > self._throttles_seen:
                self._throttles_seen = throttles
                self._lower()
            elif self.answered() and self.limit == self.target:
                log.info("Throttling stopped: back to %d write request(s) in flight.", self.limit)
            self._cond.notify_all()

    def throttled(self) -> None:
        """A 429 the client's counters do not see (a throttled part of a ``$batch``)."""
        with self._cond:
            self._lower()
            self._cond.notify_all()

    def _lower(self) -> None:
        if self.lower():
            log.info(
                "Dataverse throttled the writes (429): %d write request(s) in flight at most "
                "until it stops.",
                self.limit,
            )
