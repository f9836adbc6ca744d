"""The one retry policy: how long to wait before the next attempt, and when to stop.

Used by :class:`~dynamics_api.http.DataverseClient` for whole requests and by target-dynamics for
the operations of a ``$batch`` that failed on their own (a throttled or failed part):

- a ``Retry-After`` the service gave is honoured exactly (no jitter on top of it); one longer than
  ``max_retry_after`` is not waited for;
- otherwise the wait grows exponentially, ``backoff_base * 2**n`` plus at most ``jitter`` of it,
  never more than ``backoff_max``;
- every wait is one log line (INFO for throttling, WARNING for failures) and is counted.

:class:`Concurrency` is the other half of throttling: how many requests a reader or writer keeps
in flight (halved when the service throttles, one more after as many answers without);
:class:`Gate` tells it from the client's count of throttled waits.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUS", "Concurrency", "Gate", "Hold", "RetryPolicy", "parse_retry_after"]

log = logging.getLogger("dynamics_api.http")

#: Statuses after which the same request may succeed: throttling and transient server failures.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_AFTER_SECONDS_RE = re.compile(r"^\d{1,15}(?:\.\d{1,6})?$")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value.

    Args:
        value: the header: whole (or decimal) seconds, or an HTTP date.
        now: the current time, for HTTP dates (default: the clock, UTC).

    Returns:
        The seconds to wait (0 for a date in the past), or None when the header is absent, empty,
        negative or not understood (the caller then backs off on its own).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _RETRY_AFTER_SECONDS_RE.match(text):
        return float(text)
    if text[0] in "+-" or text[0].isdigit():
        return None  # negative, signed, exponent or otherwise malformed seconds
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime form, or "-0000": HTTP dates are always GMT
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return max(0.0, (when - current).total_seconds())


@dataclass
class RetryPolicy:
    """How long to wait before a retry, and when to give up.

    Attributes:
        max_retries: retries of one request (or one ``$batch`` operation) at most.
        backoff_base: first exponential wait, in seconds.
        backoff_max: longest exponential wait.
        max_retry_after: longest ``Retry-After`` honoured; a longer one fails the request.
        jitter: at most this fraction is added to exponential waits (never to Retry-After).
        sleep: how to wait (tests pass a recorder).
    """

    max_retries: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 300.0
    jitter: float = 0.1
    sleep: Callable[[float], None] = time.sleep
    waited_seconds: float = field(default=0.0, init=False)
    waits: int = field(default=0, init=False)
    #: The part of ``waited_seconds`` spent because the service throttled (429).
    throttled_seconds: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0.")

    def backoff(self, retry: int) -> float:
        """The exponential wait before retry number ``retry + 1`` (jitter included)."""
        delay = min(self.backoff_max, self.backoff_base * (2.0 ** min(retry, 60)))
        if self.jitter > 0:
            delay = min(self.backoff_max, delay * (1.0 + random.uniform(0.0, self.jitter)))
        return delay

    def delay(self, retry: int, retry_after: float | None) -> float:
        """The wait before the next attempt: the service's ``Retry-After`` exactly, or the
        backoff."""
        return retry_after if retry_after is not None else self.backoff(retry)

    def too_long(self, retry_after: float | None) -> bool:
        """Whether the service asked to wait longer than this policy will."""
        return retry_after is not None and retry_after > self.max_retry_after

    def exhausted(self, retries: int, limit: int | None = None) -> bool:
        """Whether ``retries`` retries already used up the limit (``max_retries`` by default)."""
        return retries >= (self.max_retries if limit is None else limit)

    def gives_up(self, retries: int, limit: int, retry_after: float | None) -> str | None:
        """Why a request answered 429 or 5xx is not retried, in one sentence for the user (the
        service asked for a longer wait than ``max_retry_after``, or ``retries`` used up
        ``limit``); None: it is retried."""
        if retry_after is not None and self.too_long(retry_after):
            return (
                f"Dataverse asked to wait {retry_after:.0f} s before retrying, more than "
                f"max_retry_after ({self.max_retry_after:.0f} s): run again later, or use "
                "fewer parallel requests."
            )
        if self.exhausted(retries, limit):
            return (
                f"Gave up after {limit} retries: the service is throttling or failing; try "
                "again later."
            )
        return None

    def wait(self, seconds: float, what: str, *, throttled: bool, given: bool) -> None:
        """Log one line for this wait, then sleep ``seconds``.

        Args:
            seconds: how long.
            what: what is retried and why (``Dataverse answered 429 on GET /accounts: retry 1
                of 6``); never a header, token or query value.
            throttled: the service throttled (INFO); otherwise a failure (WARNING).
            given: the wait is the service's ``Retry-After``.
        """
        source = "as Retry-After asks" if given else "backing off"
        log.log(
            logging.INFO if throttled else logging.WARNING,
            "%s in %.2f s (%s)",
            what,
            seconds,
            source,
        )
        with self._lock:
            self.waited_seconds += seconds
            self.waits += 1
            if throttled:
                self.throttled_seconds += seconds
        self.sleep(seconds)


class Hold:
    """A pause every thread of one client keeps: the service throttles the user (its limits are
    per user and web server, not per connection), so after a 429 with ``Retry-After`` every
    request waits, not only the one that was refused.

    When the pause ends, one request goes first (the *lead*) and the others wait for its answer:
    every thread sending at once at the end of the wait would put the requests after the first
    into a block the service may have extended meanwhile (it makes a caller that keeps sending
    while throttled wait longer), and each of them would be refused, and make it longer again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._until = 0.0
        self._waited = threading.local()  # the hold this thread has already waited for
        self._throttled = False  # since the last 429, no request sent after its wait answered
        self._lead = False  # that request is in flight

    def start(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now; the calling thread waits them itself."""
        until = time.monotonic() + seconds
        with self._cond:
            self._until = max(self._until, until)
            # Only its own wait: a longer hold another thread set is still to be waited for.
            self._waited.until = until
            self._throttled = True
            self._cond.notify_all()

    def remaining(self) -> float:
        """Seconds this thread still has to wait (0 when it already waited for this hold); the
        caller then sleeps them."""
        with self._cond:
            until = self._until
        if until <= getattr(self._waited, "until", 0.0):
            return 0.0
        self._waited.until = until
        return max(0.0, until - time.monotonic())

    def enter(self, sleep: Callable[[float], None]) -> bool:
        """Wait until this thread may send: the hold's time (``sleep`` waits it), then, while the
        client is throttled, the answer to the request sent first after it.

        Returns:
            True when this thread's request is that first one: its caller must call
            :meth:`answered` once the request ends, however it ends.
        """
        while True:
            left = self.remaining()
            if left > 0:
                sleep(left)
                continue
            with self._cond:
                if not self._throttled:
                    return False
                if not self._lead:
                    self._lead = True
                    return True
                self._cond.wait()

    def answered(self, lead: bool, throttled: bool) -> None:
        """A request ended; for the lead, ``throttled`` says whether it was refused (429) or
        failed without an answer: the others go when it was not, else the next one leads."""
        if not lead:
            return
        with self._cond:
            self._lead = False
            if not throttled:
                self._throttled = False
            self._cond.notify_all()


class Concurrency:
    """Requests allowed in flight: additive increase, multiplicative decrease.

    Halved when the service throttles (:meth:`lower`), one more after as many answers in a row
    without throttling as the limit (:meth:`answered`), never above ``ceiling``. Not thread-safe:
    its owner calls it under its own lock and decides what one episode of throttling is.
    """

    def __init__(self, ceiling: int) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        self.ceiling = ceiling
        self.limit = ceiling
        self.lowest = ceiling
        self._streak = 0

    def lower(self) -> bool:
        """The service throttled: halve the limit (at least 1); True when it went down."""
        self._streak = 0
        if self.limit <= 1:
            return False
        self.limit //= 2
        self.lowest = min(self.lowest, self.limit)
        return True

    def answered(self) -> bool:
        """An answer without throttling; True when the limit went up by one."""
        self._streak += 1
        if self.limit < self.ceiling and self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            return True
        return False

    def cap_at(self, ceiling: int) -> None:
        """A new ceiling (the service's latest hint): the limit is never above it."""
        self.ceiling = max(1, ceiling)
        self.limit = min(self.limit, self.ceiling)


class Gate(Concurrency):
    """How many requests may be in flight (:class:`Concurrency`), told by
    the client's count of throttled waits.

    ``throttled()`` returns the client's count of waits caused by a 429 so far; a request during
    which it grew was throttled (or ran while another one was).
    """

    def __init__(self, ceiling: int, throttled: Callable[[], int]) -> None:
        super().__init__(ceiling)
        self._throttled = throttled
        self._seen = throttled()
        self.decreases = 0

    def start(self) -> int:
        """Mark a request as started; returns what :meth:`done` needs."""
        return self._throttled()

    def done(self, started_with: int) -> None:
        """A request ended: lower the limit if the service throttled since it started (once per
        episode), raise it by one after ``limit`` answers without throttling."""
        now = self._throttled()
        if now > self._seen and started_with >= self._seen:
            # Throttled: the first request to notice halves the limit; requests that started
            # before that halving do not halve it again.
            self._seen = now
            self.lower()
            self.decreases += 1
            return
        if now > self._seen:
            self._seen = now
            return
        self.answered()
