"""Service protection: Dataverse's limits per caller and per web server, and the counters.

The service evaluates three limits per user (or application user) and per web server over a
sliding window of 300 s: 6,000 requests, 1,200 s of combined execution time and 52 concurrent
requests. Past the first two it answers 429 with ``Retry-After`` (the budget trips after the fact:
a request that was admitted runs to the end); past concurrency it answers 429 at once. A caller
that keeps sending while throttled is made to wait longer (the documentation says so without a
number; here each early request extends the wait by ``penalty_seconds``, doubling, at most one
window).

Everything is measured in *modelled* seconds: real seconds divided by the time scale (see
``cost.CostModel.time_scale``), so with a scale of 0.01 the 300 s window passes in 3 real seconds
and a ``Retry-After`` of 120 s is sent as ``1.2``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .wire import THROTTLE_CONCURRENCY, THROTTLE_REQUESTS, THROTTLE_TIME, ODataError


@dataclass(frozen=True)
class ServiceLimits:
    """The limits, per caller and per web server. The defaults are the real service's; None
    switches a limit off.

    Attributes:
        max_requests: requests per window.
        max_execution_seconds: combined server time per window.
        max_concurrent: requests in flight at once.
        window_seconds: the sliding window.
        penalty_seconds: how much longer a throttled caller waits for its first request sent
            before its ``Retry-After`` passed; it doubles with each further one, up to a window.
    """

    max_requests: int | None = 6000
    max_execution_seconds: float | None = 1200.0
    max_concurrent: int | None = 52
    window_seconds: float = 300.0
    penalty_seconds: float = 5.0

    @property
    def active(self) -> bool:
        return any(
            v is not None
            for v in (self.max_requests, self.max_execution_seconds, self.max_concurrent)
        )


#: No limit at all (the emulator's default: tests and benchmarks ask for limits).
NO_LIMITS = ServiceLimits(max_requests=None, max_execution_seconds=None, max_concurrent=None)


@dataclass
class _Budget:
    """One caller on one web server."""

    starts: deque[float] = field(default_factory=deque)  # admitted requests' start times
    spent: deque[tuple[float, float]] = field(default_factory=deque)  # (end, server seconds)
    spent_total: float = 0.0
    active: int = 0
    blocked_until: float = -math.inf  # a window limit tripped: refused until then
    blocked_code: str = ""
    blocked_message: str = ""
    strikes: int = 0  # requests sent while blocked
    retry_until: float = -math.inf  # the end of the last Retry-After given


@dataclass
class ServerStats:
    """What one simulated web server saw."""

    requests: int = 0  # authenticated data-API requests that reached it (refused ones too)
    throttled: int = 0  # 429s it sent
    retry_after_violations: int = 0  # requests that came before their Retry-After passed
    server_seconds: float = 0.0  # modelled server time of the requests it ran
    active: int = 0
    peak_concurrency: int = 0


class ServiceProtection:
    """The limits and their accounting, per (web server, caller). Thread-safe.

    Args:
        clock: real seconds (monotonic); tests pass their own.
        time_scale: real seconds per modelled second.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, time_scale: float = 1.0
    ) -> None:
        self.clock = clock
        self.time_scale = time_scale
        self.limits = NO_LIMITS
        self._lock = threading.Lock()
        self._budgets: dict[tuple[int, str], _Budget] = {}
        self._servers: dict[int, ServerStats] = {}
        self._active_total = 0
        self.peak_concurrency = 0

    # -- configuration -------------------------------------------------------------------------

    def use(self, limits: ServiceLimits | None) -> None:
        """Apply ``limits`` (None: none) and forget every caller's history."""
        with self._lock:
            self.limits = limits if limits is not None else NO_LIMITS
            self._budgets = {k: _Budget(active=b.active) for k, b in self._budgets.items()}

    def configure(
        self,
        *,
        max_requests: int | None = None,
        window_seconds: float | None = None,
        max_concurrent: int | None = None,
        max_execution_seconds: float | None = None,
        penalty_seconds: float | None = None,
    ) -> None:
        """Set each limit (None: off); ``configure()`` switches them all off."""
        limits = ServiceLimits(
            max_requests=max_requests,
            max_execution_seconds=max_execution_seconds,
            max_concurrent=max_concurrent,
        )
        if window_seconds is not None:
            limits = replace(limits, window_seconds=window_seconds)
        if penalty_seconds is not None:
            limits = replace(limits, penalty_seconds=penalty_seconds)
        self.use(limits)

    def now(self) -> float:
        """The modelled clock."""
        return self.clock() / self.time_scale

    # -- requests ------------------------------------------------------------------------------

    def enter(self, caller: str, server: int = 0) -> None:
        """Count a request in, or raise the 429 the service would answer."""
        now = self.now()
        lim = self.limits
        with self._lock:
            stats = self._servers.setdefault(server, ServerStats())
            stats.requests += 1
            b = self._budgets.setdefault((server, caller), _Budget())
            if now < b.retry_until:
                stats.retry_after_violations += 1
            self._expire(b, now, lim.window_seconds)
            if now < b.blocked_until:
                # Still throttled, and sending: the wait grows.
                b.strikes += 1
                b.blocked_until += min(
                    lim.penalty_seconds * 2 ** (b.strikes - 1), lim.window_seconds
                )
                raise self._refuse(b, stats, now, b.blocked_code, b.blocked_message)
            b.strikes = 0
            if lim.max_concurrent is not None and b.active >= lim.max_concurrent:
                message = (
                    f"Number of concurrent requests exceeded the limit of {lim.max_concurrent}."
                )
                # Nothing to wait out but a request finishing: one second, never longer.
                raise self._refuse(b, stats, now, THROTTLE_CONCURRENCY, message, until=now + 1)
            window = _whole(lim.window_seconds)
            if lim.max_requests is not None and len(b.starts) >= lim.max_requests:
                b.blocked_until = b.starts[0] + lim.window_seconds
                b.blocked_code = THROTTLE_REQUESTS
                b.blocked_message = (
                    f"Number of requests exceeded the limit of {lim.max_requests} over time "
                    f"window of {window} seconds."
                )
                raise self._refuse(b, stats, now, b.blocked_code, b.blocked_message)
            limit = lim.max_execution_seconds
            if limit is not None and b.spent_total >= limit:
                b.blocked_until = self._time_frees(b, limit, lim.window_seconds)
                b.blocked_code = THROTTLE_TIME
                b.blocked_message = (
                    "Combined execution time of incoming requests exceeded limit of "
                    f"{round(limit * 1000):,} milliseconds over time window of {window} seconds. "
                    "Decrease number of concurrent requests or reduce the duration of requests "
                    "and try again later."
                )
                raise self._refuse(b, stats, now, b.blocked_code, b.blocked_message)
            b.starts.append(now)
            b.active += 1
            stats.active += 1
            stats.peak_concurrency = max(stats.peak_concurrency, stats.active)
            self._active_total += 1
            self.peak_concurrency = max(self.peak_concurrency, self._active_total)

    def leave(self, caller: str, seconds: float, server: int = 0) -> None:
        """A request admitted by ``enter`` finished after ``seconds`` of (modelled) server time."""
        now = self.now()
        with self._lock:
            stats = self._servers.setdefault(server, ServerStats())
            stats.active = max(0, stats.active - 1)
            stats.server_seconds += seconds
            self._active_total = max(0, self._active_total - 1)
            b = self._budgets.setdefault((server, caller), _Budget())
            b.active = max(0, b.active - 1)
            b.spent.append((now, seconds))
            b.spent_total += seconds

    def _refuse(
        self,
        b: _Budget,
        stats: ServerStats,
        now: float,
        code: str,
        message: str,
        *,
        until: float | None = None,
    ) -> ODataError:
        """The 429: ``Retry-After`` in whole modelled seconds, sent in real (scaled) seconds."""
        wait = max(1, math.ceil((b.blocked_until if until is None else until) - now - 1e-9))
        b.retry_until = now + wait
        stats.throttled += 1
        return ODataError(429, code, message, [("Retry-After", self.header_seconds(wait))])

    def header_seconds(self, seconds: float) -> str:
        """A modelled duration as real seconds for a header (whole when the scale is 1)."""
        real = seconds * self.time_scale
        if float(real).is_integer():
            return str(int(real))
        # Whole milliseconds, rounded up (after float noise: 305 x 0.01 is 3.0500000000000003).
        return f"{math.ceil(round(real * 1000, 6)) / 1000:g}"

    @staticmethod
    def _expire(b: _Budget, now: float, window: float) -> None:
        while b.starts and b.starts[0] <= now - window:
            b.starts.popleft()
        while b.spent and b.spent[0][0] <= now - window:
            b.spent_total -= b.spent.popleft()[1]
        if not b.spent:
            b.spent_total = 0.0  # no float drift once the window is empty

    @staticmethod
    def _time_frees(b: _Budget, limit: float, window: float) -> float:
        """When enough server time leaves the window to go under the limit again."""
        total = b.spent_total
        for end, seconds in b.spent:
            total -= seconds
            if total < limit:
                return end + window
        return b.spent[-1][0] + window if b.spent else -math.inf

    # -- accounting ----------------------------------------------------------------------------

    def remaining(self, caller: str, server: int = 0) -> int | None:
        """Requests left in the window (the ``x-ms-ratelimit-burst-remaining-xrm-requests``)."""
        if self.limits.max_requests is None:
            return None
        with self._lock:
            b = self._budgets.get((server, caller))
            if b is None:
                return self.limits.max_requests
            self._expire(b, self.now(), self.limits.window_seconds)
            return max(0, self.limits.max_requests - len(b.starts))

    def time_remaining(self, caller: str, server: int = 0) -> float | None:
        """Server seconds left in the window (``x-ms-ratelimit-time-remaining-xrm-requests``)."""
        if self.limits.max_execution_seconds is None:
            return None
        with self._lock:
            b = self._budgets.get((server, caller))
            spent = 0.0
            if b is not None:
                self._expire(b, self.now(), self.limits.window_seconds)
                spent = b.spent_total
            return max(0.0, self.limits.max_execution_seconds - spent)

    def active(self, server: int) -> int:
        """Requests in flight on ``server``."""
        with self._lock:
            stats = self._servers.get(server)
            return stats.active if stats is not None else 0

    @property
    def throttled(self) -> int:
        """429s sent by service protection, all servers together."""
        with self._lock:
            return sum(s.throttled for s in self._servers.values())

    @property
    def retry_after_violations(self) -> int:
        with self._lock:
            return sum(s.retry_after_violations for s in self._servers.values())

    def server_stats(self, server: int) -> ServerStats:
        with self._lock:
            return replace(self._servers.get(server) or ServerStats())

    def snapshot(self, servers: int) -> dict[str, Any]:
        """The counters, as plain data (the benchmarks read them)."""
        with self._lock:
            per = [
                {
                    "server": i,
                    "requests": s.requests,
                    "throttled": s.throttled,
                    "retry_after_violations": s.retry_after_violations,
                    "server_seconds": round(s.server_seconds, 6),
                    "peak_concurrency": s.peak_concurrency,
                }
                for i, s in ((i, self._servers.get(i) or ServerStats()) for i in range(servers))
            ]
            return {
                "requests": sum(p["requests"] for p in per),
                "throttled": sum(p["throttled"] for p in per),
                "retry_after_violations": sum(p["retry_after_violations"] for p in per),
                "server_seconds": round(sum(p["server_seconds"] for p in per), 6),
                "peak_concurrency": self.peak_concurrency,
                "servers": per,
            }

    def reset_counters(self) -> None:
        """Zero the counters (not the callers' budgets, nor requests in flight)."""
        with self._lock:
            self._servers = {
                i: ServerStats(active=s.active, peak_concurrency=s.active)
                for i, s in self._servers.items()
            }
            self.peak_concurrency = self._active_total


def _whole(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"
