"""The rules for throttling besides the retry policy (``dynamics_api.retry``): ``Concurrency``,
the requests in flight of the tap's windows and the target's writes (halve on throttling, one
more after as many good answers), and ``Hold``, the Retry-After every thread of a client keeps."""

from __future__ import annotations

import threading

import pytest

from dynamics_api.retry import Concurrency, Hold


def test_halved_on_throttling_never_below_one() -> None:
    c = Concurrency(8)
    assert [c.lower() for _ in range(4)] == [True, True, True, False]
    assert (c.limit, c.lowest) == (1, 1)


def test_one_more_after_as_many_good_answers_as_the_limit_up_to_the_ceiling() -> None:
    c = Concurrency(4)
    c.lower()
    assert c.limit == 2
    assert [c.answered() for _ in range(2)] == [False, True]  # 2 answers at 2: now 3
    assert [c.answered() for _ in range(3)] == [False, False, True]  # 3 at 3: now 4
    assert not any(c.answered() for _ in range(10))  # the ceiling
    assert (c.limit, c.lowest) == (4, 2)


def test_throttling_starts_the_count_of_good_answers_again() -> None:
    c = Concurrency(8)
    c.lower()  # 4
    for _ in range(3):
        c.answered()
    c.lower()  # 2: the three good answers before it do not count
    assert not c.answered()
    assert c.answered() and c.limit == 3


def test_a_lower_ceiling_lowers_the_limit_and_a_higher_one_is_climbed_to() -> None:
    c = Concurrency(8)
    c.cap_at(2)
    assert (c.ceiling, c.limit) == (2, 2)
    c.cap_at(4)
    assert c.limit == 2
    assert not c.answered() and c.answered() and c.limit == 3


def test_a_ceiling_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        Concurrency(0)


def test_a_thread_that_waits_its_own_retry_after_still_waits_a_longer_hold() -> None:
    hold = Hold()
    other = threading.Thread(target=hold.start, args=(30.0,))
    other.start()
    other.join()
    hold.start(0.01)  # this thread's own 429: it sleeps 0.01 s itself, then asks what is left
    assert hold.remaining() > 29  # the other thread's Retry-After holds this thread too
    assert hold.remaining() == 0  # once waited for, not again


def test_a_thread_without_a_429_waits_the_hold() -> None:
    hold = Hold()
    hold.start(30.0)
    waits: list[float] = []
    other = threading.Thread(target=lambda: waits.append(hold.remaining()))
    other.start()
    other.join()
    assert waits[0] > 29


def _no_sleep(seconds: float) -> None:
    """The hold's time is not what these tests are about."""


def test_without_a_429_every_thread_sends_at_once() -> None:
    hold = Hold()
    assert hold.enter(_no_sleep) is False
    assert hold.enter(_no_sleep) is False


def test_after_a_hold_one_request_goes_first_and_the_others_wait_for_its_answer() -> None:
    hold = Hold()
    hold.start(0.0)
    assert hold.enter(_no_sleep) is True  # this thread leads
    entered = threading.Event()

    def send() -> None:
        hold.enter(_no_sleep)
        entered.set()

    others = [threading.Thread(target=send) for _ in range(3)]
    for thread in others:
        thread.start()
    assert not entered.wait(0.2)  # nobody sends while the lead's request is in flight
    hold.answered(True, throttled=False)
    for thread in others:
        thread.join(5)
    assert entered.is_set() and not any(thread.is_alive() for thread in others)
    assert hold.enter(_no_sleep) is False  # no longer throttled: no lead


def test_a_lead_refused_again_holds_the_others_and_the_next_request_leads() -> None:
    hold = Hold()
    hold.start(0.0)
    assert hold.enter(_no_sleep) is True
    slept: list[float] = []
    leads: list[bool] = []
    other = threading.Thread(target=lambda: leads.append(hold.enter(slept.append)))
    other.start()
    hold.start(30.0)  # the lead's 429: a new hold, then its answer is told
    hold.answered(True, throttled=True)
    other.join(5)
    assert leads == [True] and slept and slept[0] > 29  # waited the new hold, then led
