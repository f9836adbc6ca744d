"""How many requests a read keeps in flight: the service's hint per web server seen, capped."""

from __future__ import annotations

import pytest

from tap_dynamics.reads import DEFAULT_CEILING, HttpProbes, server_of


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
