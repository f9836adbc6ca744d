"""``Retry-After`` parsing: seconds, HTTP dates, and everything a server should not send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamics_api.http import parse_retry_after

NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("0", 0.0, id="zero"),
        pytest.param("1", 1.0, id="one"),
        pytest.param("120", 120.0, id="minutes"),
        pytest.param(" 7 ", 7.0, id="whitespace"),
        pytest.param("0.05", 0.05, id="fraction"),
        pytest.param("007", 7.0, id="leading-zeros"),
        pytest.param("86400", 86400.0, id="a-day"),
        pytest.param("999999999999999", 999999999999999.0, id="huge-seconds"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 60.0, id="imf-fixdate"),
        pytest.param("Wednesday, 21-Oct-15 07:28:30 GMT", 90.0, id="rfc850"),
        pytest.param("Wed Oct 21 07:29:00 2015", 120.0, id="asctime"),
        pytest.param("Wed, 21 Oct 2015 07:26:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("Wed, 21 Oct 2015 07:27:00 GMT", 0.0, id="date-now"),
        pytest.param("Wed, 21 Oct 2015 09:27:00 +0200", 0.0, id="date-with-offset"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", None, id="huge-date"),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    if expected is None:
        result = parse_retry_after(value, now=NOW)
        assert result is not None and result > 1e11
        return
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("-1", id="negative"),
        pytest.param("-0.5", id="negative-fraction"),
        pytest.param("+5", id="signed"),
        pytest.param("1e3", id="exponent"),
        pytest.param("inf", id="infinity"),
        pytest.param("nan", id="nan"),
        pytest.param("5 seconds", id="words"),
        pytest.param("1,5", id="comma"),
        pytest.param("0x10", id="hex"),
        pytest.param("soon", id="garbage"),
        pytest.param("Wed, 32 Oct 2015 07:28:00 GMT", id="impossible-date"),
        pytest.param("12345678901234567890", id="absurdly-long-number"),
        pytest.param("\x00", id="control-char"),
    ],
)
def test_parse_retry_after_rejects(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_naive_now_is_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=naive) == 60.0


def test_default_now_is_the_clock() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    value = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    result = parse_retry_after(value)
    assert result is not None and 25 <= result <= 30


@given(st.integers(min_value=0, max_value=10**12))
def test_any_whole_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == float(seconds)


@given(st.text(max_size=40))
def test_never_raises_nor_goes_negative(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0.0


def test_retry_policy_honours_retry_after_exactly_and_caps_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from dynamics_api.retry import RetryPolicy

    slept: list[float] = []
    policy = RetryPolicy(
        max_retries=3, backoff_base=2.0, backoff_max=5.0, jitter=0.1, sleep=slept.append
    )
    assert policy.delay(0, 7.0) == 7.0  # the service's wait, no jitter, even above backoff_max
    assert 2.0 <= policy.delay(0, None) <= 2.2
    assert policy.delay(10, None) == 5.0
    assert policy.exhausted(3) and not policy.exhausted(2)
    assert policy.exhausted(1, limit=1)
    assert policy.too_long(301.0) and not policy.too_long(300.0) and not policy.too_long(None)
    # Why no retry follows, in one sentence; None while retries are left and the wait is fine.
    assert policy.gives_up(2, 3, 300.0) is None and policy.gives_up(0, 3, None) is None
    longer = policy.gives_up(0, 3, 301.0)
    assert longer is not None and "301 s" in longer and "max_retry_after (300 s)" in longer
    assert policy.gives_up(3, 3, None) == (
        "Gave up after 3 retries: the service is throttling or failing; try again later."
    )
    with caplog.at_level("INFO", logger="dynamics_api.http"):
        policy.wait(
            1.5, "Dataverse answered 429 on GET /x: retry 1 of 3", throttled=True, given=True
        )
    assert slept == [1.5]
    (line,) = caplog.records
    assert line.levelname == "INFO"
    assert line.getMessage() == (
        "Dataverse answered 429 on GET /x: retry 1 of 3 in 1.50 s (as Retry-After asks)"
    )
    assert (policy.waits, policy.waited_seconds) == (1, 1.5)
