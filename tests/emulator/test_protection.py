"""Service protection: the three limits per caller over a sliding window, 429s with the real codes,
messages and ``Retry-After``, a longer wait for a caller that keeps sending, and the counters. The
clock is the test's: nothing depends on how fast the machine is."""

from __future__ import annotations

import threading

import pytest

from dynamics_emulator.cost import CostModel
from dynamics_emulator.protection import ServiceLimits, ServiceProtection
from dynamics_emulator.wire import ODataError
from tests.emulator._realism import Clock, frozen, small_api
from tests.webapi import WebApi


def _refused(protection: ServiceProtection, caller: str = "app") -> ODataError:
    with pytest.raises(ODataError) as info:
        protection.enter(caller)
    return info.value


def _retry_after(err: ODataError) -> str:
    return dict(err.headers)["Retry-After"]


def test_the_defaults_are_the_real_service_limits() -> None:
    limits = ServiceLimits()
    assert (limits.max_requests, limits.max_execution_seconds, limits.max_concurrent) == (
        6000,
        1200.0,
        52,
    )
    assert limits.window_seconds == 300.0
    assert ServiceProtection().limits.active is False  # off unless asked for


def test_the_request_budget_slides_with_the_window() -> None:
    clock = Clock()
    p = ServiceProtection(clock)
    p.configure(max_requests=3, window_seconds=300)
    for t in (0, 100, 200):
        clock.now = 1000 + t
        p.enter("app")
        p.leave("app", 0.1)
    clock.now = 1250
    err = _refused(p)
    assert err.status == 429 and err.code == "0x80072322"
    assert err.message == (
        "Number of requests exceeded the limit of 3 over time window of 300 seconds."
    )
    assert _retry_after(err) == "50"  # the first request leaves the window at 1300
    clock.now = 1300.5
    p.enter("app")  # it did: one request may go
    assert p.remaining("app") == 0


def test_each_caller_has_its_own_budget() -> None:
    clock = Clock()
    p = ServiceProtection(clock)
    p.configure(max_requests=1)
    p.enter("app-a")
    _refused(p, "app-a")
    p.enter("app-b")


def test_a_caller_that_keeps_sending_waits_longer_each_time() -> None:
    clock = Clock()
    p = ServiceProtection(clock)
    p.configure(max_requests=1, penalty_seconds=5)
    p.enter("app")
    p.leave("app", 0.1)
    waits = [int(_retry_after(_refused(p))) for _ in range(4)]
    # 300 s to wait; each request before then adds 5, 10, 20 s.
    assert waits == [300, 305, 315, 335]
    assert p.retry_after_violations == 3
    assert p.throttled == 4
    clock.advance(334)
    _refused(p)  # still early: a fourth violation
    assert p.retry_after_violations == 4
    clock.advance(40 + 1)  # past the extended block (335 + 40)
    p.enter("app")


def test_the_penalty_grows_to_one_window_at_most() -> None:
    clock = Clock()
    p = ServiceProtection(clock)
    p.configure(max_requests=1, window_seconds=60, penalty_seconds=50)
    p.enter("app")
    waits = [int(_retry_after(_refused(p))) for _ in range(4)]
    assert waits == [60, 110, 170, 230]


def test_a_caller_that_waits_as_told_is_not_penalised() -> None:
    clock = Clock()
    p = ServiceProtection(clock)
    p.configure(max_requests=2, window_seconds=300)
    p.enter("app")
    clock.advance(150)
    p.enter("app")
    wait = int(_retry_after(_refused(p)))
    assert wait == 150
    clock.advance(wait)
    p.enter("app")
    assert p.retry_after_violations == 0


def test_execution_time_trips_after_the_fact() -> None:
    clock = Clock()
    p = ServiceProtection(clock)
    p.configure(max_execution_seconds=1200)
    p.enter("app")  # admitted: the budget is checked before a request runs, not during it
    p.leave("app", 1500.0)
    clock.advance(10)
    err = _refused(p)
    assert err.code == "0x80072321"
    assert err.message.startswith(
        "Combined execution time of incoming requests exceeded limit of 1,200,000 milliseconds "
        "over time window of 300 seconds."
    )
    assert _retry_after(err) == "290"
    assert p.time_remaining("app") == 0


def test_the_time_scale_shortens_the_window_and_the_retry_after() -> None:
    clock = Clock()
    p = ServiceProtection(clock, time_scale=0.01)
    p.configure(max_requests=1)
    p.enter("app")
    assert _retry_after(_refused(p)) == "3"  # 300 modelled seconds, 3 real ones
    clock.advance(3.0 + 0.05 + 0.1)  # past the first penalty (5 modelled = 0.05 real)
    p.enter("app")


@pytest.mark.parametrize(
    ("scale", "seconds", "sent"),
    [
        (1.0, 300, "300"),
        (0.01, 305, "3.05"),
        (0.01, 1, "0.01"),
        (0.001, 7, "0.007"),
        (0.3, 1, "0.3"),
    ],
)
def test_retry_after_is_sent_in_real_seconds(scale: float, seconds: int, sent: str) -> None:
    assert ServiceProtection(time_scale=scale).header_seconds(seconds) == sent


def test_concurrency_is_refused_at_once_without_a_growing_wait() -> None:
    p = ServiceProtection(Clock())
    p.configure(max_concurrent=2)
    p.enter("app")
    p.enter("app")
    errors = [_refused(p) for _ in range(3)]
    assert {e.code for e in errors} == {"0x80072326"}
    assert errors[0].message == "Number of concurrent requests exceeded the limit of 2."
    assert [_retry_after(e) for e in errors] == ["1", "1", "1"]
    p.leave("app", 0.1)
    p.enter("app")
    assert p.peak_concurrency == 2


# -- over HTTPS -----------------------------------------------------------------------------------


def test_the_concurrency_limit_over_https() -> None:
    """One request held inside its server time; a second one at the same time is refused."""
    with small_api(cost_model=CostModel(request_seconds=60.0)) as api:
        emu = api.emulator
        emu.protection.configure(max_concurrent=1)
        inside, release = threading.Event(), threading.Event()

        def hold(seconds: float) -> None:
            inside.set()
            release.wait(30)

        emu.front.sleep = hold
        first: list[int] = []
        other = WebApi(emu)  # the same application, on a session of its own
        worker = threading.Thread(target=lambda: first.append(other.get("WhoAmI").status_code))
        worker.start()
        try:
            assert inside.wait(30)
            second = api.get("WhoAmI")
        finally:
            release.set()
            worker.join(30)
            other.close()
        assert first == [200]
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "0x80072326"
        assert second.headers["Retry-After"] == "1"
        counters = emu.counters()
    assert counters["peak_concurrency"] == 1
    assert counters["throttled"] == 1


def test_429s_past_each_window_limit_over_https() -> None:
    with small_api(cost_model=CostModel(time_scale=0.01, request_seconds=100.0)) as api:
        clock, _ = frozen(api)
        emu = api.emulator
        emu.protection.use(ServiceLimits(max_requests=3, max_execution_seconds=None))
        codes = [api.get("WhoAmI").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        clock.advance(3.1)  # 310 modelled seconds: the window is empty again
        emu.protection.use(ServiceLimits(max_requests=None, max_execution_seconds=150.0))
        assert [api.get("WhoAmI").status_code for _ in range(2)] == [200, 200]
        r = api.get("WhoAmI")
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "0x80072321"
        assert r.headers["Retry-After"] == "3"
        assert "x-ms-ratelimit-time-remaining-xrm-requests" not in r.headers
        counters = emu.counters()
    assert counters["throttled"] == 2
    assert counters["requests"] == 7
    # Throttled requests did not run: only the five admitted ones count server time.
    assert counters["server_seconds"] == pytest.approx(500.0)


def test_sending_before_retry_after_is_counted_and_penalised_over_https() -> None:
    with small_api(cost_model=CostModel(time_scale=0.01)) as api:
        clock, _ = frozen(api)
        emu = api.emulator
        emu.protection.configure(max_requests=1, penalty_seconds=10)
        assert api.get("WhoAmI").status_code == 200
        first = api.get("WhoAmI")
        second = api.get("WhoAmI")
        assert (first.status_code, second.status_code) == (429, 429)
        assert first.headers["Retry-After"] == "3"  # 300 modelled seconds
        assert second.headers["Retry-After"] == "3.1"  # and 10 more for coming back early
        clock.advance(3.2)
        assert api.get("WhoAmI").status_code == 200
        counters = emu.counters()
    assert counters["retry_after_violations"] == 1
    assert counters["throttled"] == 2


def test_rate_limit_headers_show_what_is_left() -> None:
    with small_api(service_protection=ServiceLimits()) as api:
        frozen(api)
        r = api.get("WhoAmI")
    assert r.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "5999"
    remaining_ms = float(r.headers["x-ms-ratelimit-time-remaining-xrm-requests"])
    assert 1_100_000 < remaining_ms < 1_200_000
