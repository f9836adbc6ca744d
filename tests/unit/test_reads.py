"""How many requests a read keeps in flight (the service's hint per web server seen, capped), and
the opening probes sent side by side."""

from __future__ import annotations

import threading

import pytest

from tap_dynamics.reads import DEFAULT_CEILING, HttpProbes, server_of, side_by_side


def _probes(hint: int | None, servers: int) -> HttpProbes:
    probes = HttpProbes(client=None, entity_set="accounts", key="accountid", entity="account")  # type: ignore[arg-type]
    probes.hint = hint
    probes.servers = {f"{i:064x}" for i in range(servers)}
    return probes


def test_server_of_reads_the_affinity_cookie() -> None:
    cookie = "ARRAffinity=" + "ab" * 32 + "; Path=/; HttpOnly; Secure"
    assert server_of({"Set-Cookie": cookie}) == "ab" * 32
    assert server_of({"Set-Cookie": "other=1; Path=/"}) is None
    assert server_of({}) is None


@pytest.mark.parametrize(
    ("hint", "servers", "setting", "expected"),
    [
        (4, 1, None, 4),  # the hint of one server
        (4, 2, None, 8),  # limits are per server: the hint for each one seen
        (4, 0, None, 4),  # no cookie: one server assumed
        (4, 2, 6, 6),  # max_parallel_requests caps it
        (4, 1, 10, 4),  # and never raises it past the hint
        (20, 2, None, DEFAULT_CEILING),  # the default cap
        (None, 1, 3, 3),  # no hint: the setting
    ],
)
def test_ceiling(hint: int | None, servers: int, setting: int | None, expected: int) -> None:
    assert _probes(hint, servers).ceiling(setting) == expected


def test_side_by_side_gives_both_answers_and_runs_them_at_once() -> None:
    both = threading.Barrier(2, timeout=5)  # each waits for the other: fails if run in turn

    def first() -> str:
        both.wait()
        return "first"

    def second() -> int:
        both.wait()
        return 2

    assert side_by_side(first, second) == ("first", 2)


@pytest.mark.parametrize("failing", ["first", "second"])
def test_side_by_side_raises_what_either_raised(failing: str) -> None:
    def fail() -> str:
        raise ValueError(failing)

    def ok() -> str:
        return "ok"

    with pytest.raises(ValueError, match=failing):
        side_by_side(fail if failing == "first" else ok, fail if failing == "second" else ok)
