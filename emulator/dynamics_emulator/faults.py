"""Fault injection: failures as the real service and networks produce them (service protection's
own 429s are in ``protection``)."""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass

from .wire import THROTTLE_REQUESTS, ODataError

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
