"""Fault injection and service protection limits, as the real service and networks misbehave."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .wire import THROTTLE_CONCURRENCY, THROTTLE_REQUESTS, THROTTLE_TIME, ODataError

FAULT_KINDS = ("status", "reset", "truncate", "slow")


@dataclass(frozen=True)
class Fault:
    """One injected failure.

    Attributes:
        kind: ``status`` (an error response), ``reset`` (the connection is reset before any
            response), ``truncate`` (headers and half the body, then the connection drops) or
            ``slow`` (the response is delayed by ``delay`` seconds).
        status: for ``status``: 429, 500, 502, 503, 504, ...
        retry_after: for 429: the ``Retry-After`` seconds; None sends no header.
        delay: for ``slow``.
    """

    kind: str
    status: int = 503
    retry_after: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def error(self) -> ODataError:
        headers = []
        if self.retry_after is not None:
            headers.append(("Retry-After", _retry_after_text(self.retry_after)))
        if self.status == 429:
            return ODataError(
                429,
                THROTTLE_REQUESTS,
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
                headers,
            )
        messages = {
            500: ("0x80040216", "An unexpected error occurred."),
            502: ("", "Bad Gateway"),
            503: ("", "The service is temporarily unavailable. Try again later."),
            504: ("", "The request timed out at the gateway."),
        }
        code, msg = messages.get(self.status, ("", "Injected failure."))
        return ODataError(self.status, code, msg, headers)


def _retry_after_text(seconds: float) -> str:
    # The service sends whole seconds; keep sub-second values for fast tests.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


@dataclass
class _Rule:
    fault: Fault
    path_contains: str | None
    method: str | None
    remaining: int


class FaultInjector:
    """Decides, per data-API request, whether to inject a fault. Thread-safe.

    Three ways to ask for faults, checked in this order:
    - ``script([...])``: the next requests get these faults in order (``None`` lets one pass);
    - ``add(fault, times=N, path_contains=..., method=...)``: the next N matching requests;
    - ``randomly(rate, faults, seed)``: each request fails with probability ``rate``, picking one
      of ``faults``, from a seeded generator (reproducible runs).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault | None] = deque()
        self._rules: list[_Rule] = []
        self._rng: random.Random | None = None
        self._rate = 0.0
        self._choices: list[Fault] = []
        self.injected: list[tuple[str, str, Fault]] = []

    def script(self, faults: list[Fault | None]) -> None:
        with self._lock:
            self._script.extend(faults)

    def add(
        self,
        fault: Fault,
        *,
        times: int = 1,
        path_contains: str | None = None,
        method: str | None = None,
    ) -> None:
        with self._lock:
            self._rules.append(_Rule(fault, path_contains, method, times))

    def randomly(self, rate: float, faults: list[Fault], seed: int = 0) -> None:
        with self._lock:
            self._rate = rate
            self._choices = list(faults)
            self._rng = random.Random(seed)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._rules.clear()
            self._rng = None
            self._rate = 0.0

    def next_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            fault: Fault | None = None
            if self._script:
                fault = self._script.popleft()
            else:
                for rule in self._rules:
                    if rule.remaining <= 0:
                        continue
                    if rule.method is not None and rule.method != method:
                        continue
                    if rule.path_contains is not None and rule.path_contains not in path:
                        continue
                    rule.remaining -= 1
                    fault = rule.fault
                    break
                self._rules = [r for r in self._rules if r.remaining > 0]
                if (
                    fault is None
                    and self._rng is not None
                    and self._choices
                    and self._rng.random() < self._rate
                ):
                    fault = self._rng.choice(self._choices)
            if fault is not None:
                self.injected.append((method, path, fault))
            return fault


@dataclass
class ServiceProtection:
    """Dataverse's service protection limits, per caller, over a sliding window.

    Defaults are off (None); the real service allows 6,000 requests and 1,200 s of execution per
    300 s and 52 concurrent requests.
    """

    max_requests: int | None = None
    window_seconds: float = 300.0
    max_concurrent: int | None = None
    max_execution_seconds: float | None = None
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _starts: dict[str, deque[float]] = field(default_factory=dict)
    _exec: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    _active: dict[str, int] = field(default_factory=dict)
    throttled: int = 0

    def configure(
        self,
        *,
        max_requests: int | None = None,
        window_seconds: float | None = None,
        max_concurrent: int | None = None,
        max_execution_seconds: float | None = None,
    ) -> None:
        with self._lock:
            self.max_requests = max_requests
            if window_seconds is not None:
                self.window_seconds = window_seconds
            self.max_concurrent = max_concurrent
            self.max_execution_seconds = max_execution_seconds
            self._starts.clear()
            self._exec.clear()

    def enter(self, caller: str) -> None:
        """Count a request in, or raise the 429 the service would answer."""
        now = self.clock()
        with self._lock:
            starts = self._starts.setdefault(caller, deque())
            while starts and starts[0] <= now - self.window_seconds:
                starts.popleft()
            if (
                self.max_concurrent is not None
                and self._active.get(caller, 0) >= self.max_concurrent
            ):
                self.throttled += 1
                raise ODataError(
                    429,
                    THROTTLE_CONCURRENCY,
                    f"Number of concurrent requests exceeded the limit of {self.max_concurrent}.",
                    [("Retry-After", "1")],
                )
            if self.max_requests is not None and len(starts) >= self.max_requests:
                self.throttled += 1
                wait = max(1, math.ceil(starts[0] + self.window_seconds - now))
                raise ODataError(
                    429,
                    THROTTLE_REQUESTS,
                    f"Number of requests exceeded the limit of {self.max_requests} over time "
                    f"window of {int(self.window_seconds)} seconds.",
                    [("Retry-After", str(wait))],
                )
            if self.max_execution_seconds is not None:
                spent = self._exec.setdefault(caller, deque())
                while spent and spent[0][0] <= now - self.window_seconds:
                    spent.popleft()
                if sum(d for _, d in spent) >= self.max_execution_seconds:
                    self.throttled += 1
                    wait = max(1, math.ceil(spent[0][0] + self.window_seconds - now))
                    raise ODataError(
                        429,
                        THROTTLE_TIME,
                        "Combined execution time of incoming requests exceeded limit of "
                        f"{int(self.max_execution_seconds * 1000):,} milliseconds over time window "
                        f"of {int(self.window_seconds)} seconds. Decrease number of concurrent "
                        "requests or reduce the duration of requests and try again later.",
                        [("Retry-After", str(wait))],
                    )
            starts.append(now)
            self._active[caller] = self._active.get(caller, 0) + 1

    def leave(self, caller: str, duration: float) -> None:
        with self._lock:
            self._active[caller] = max(0, self._active.get(caller, 0) - 1)
            if self.max_execution_seconds is not None:
                self._exec.setdefault(caller, deque()).append((self.clock(), duration))

    def remaining(self, caller: str) -> int | None:
        if self.max_requests is None:
            return None
        with self._lock:
            return max(0, self.max_requests - len(self._starts.get(caller, ())))
