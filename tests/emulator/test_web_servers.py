"""Simulated web servers: the affinity cookie, routing without it, budgets per server, the
``x-ms-dop-hint`` header and the counters the benchmarks read."""

from __future__ import annotations

import requests

from dynamics_emulator.frontdoor import AFFINITY_COOKIE, WebServers
from dynamics_emulator.server import COUNTERS_PATH
from tests.emulator._realism import frozen, no_cookies, small_api
from tests.webapi import WebApi


def _server_of(r: requests.Response) -> str:
    cookie = r.headers["Set-Cookie"]
    name, _, rest = cookie.partition("=")
    assert name == AFFINITY_COOKIE
    assert "Secure" in cookie and "HttpOnly" in cookie
    return rest.split(";")[0]


def test_every_data_response_carries_the_dop_hint(api: WebApi) -> None:
    assert api.get("accounts?$top=1").headers["x-ms-dop-hint"] == "4"
    assert api.get("nosuchtables").headers["x-ms-dop-hint"] == "4"  # errors too
    anonymous = requests.get(api.url("WhoAmI"), verify=api.emulator.ca_bundle, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["x-ms-dop-hint"] == "4"


def test_the_dop_hint_is_configurable() -> None:
    with small_api(dop_hint=12) as api:
        assert api.get("WhoAmI").headers["x-ms-dop-hint"] == "12"


def test_without_the_cookie_requests_take_turns_and_with_it_they_stay() -> None:
    with small_api(web_servers=2) as api:
        ids = api.emulator.web_servers.ids
        seen = []
        for _ in range(4):
            no_cookies(api)
            seen.append(_server_of(api.get("WhoAmI")))
        # Nothing in flight, so every server is least loaded: they take turns.
        assert seen == [ids[0], ids[1], ids[0], ids[1]]
        no_cookies(api)
        api.session.cookies.set(AFFINITY_COOKIE, ids[1])
        pinned = [_server_of(api.get("WhoAmI")) for _ in range(3)]
        assert pinned == [ids[1]] * 3
        served = [e.server for e in api.emulator.requests("/WhoAmI")]
    assert served == [0, 1, 0, 1, 1, 1, 1]


def test_an_unknown_cookie_is_routed_like_none() -> None:
    with small_api(web_servers=2) as api:
        no_cookies(api)
        api.session.cookies.set(AFFINITY_COOKIE, "0" * 64)
        assert api.get("WhoAmI").status_code == 200
        (entry,) = api.emulator.requests("/WhoAmI")
    assert entry.server == 0


def test_the_least_loaded_server_gets_a_request_without_cookie() -> None:
    servers = WebServers(3)
    load = {0: 2, 1: 0, 2: 1}
    assert servers.route(None, load.__getitem__) == 1
    load[1] = 5
    assert servers.route(None, load.__getitem__) == 2
    assert servers.route(f"x=1; {AFFINITY_COOKIE}={servers.ids[0]}", load.__getitem__) == 0


def test_budgets_are_per_server() -> None:
    with small_api(web_servers=2) as api:
        frozen(api)
        emu = api.emulator
        emu.protection.configure(max_requests=2)
        # The session keeps the cookie of the first answer: every request goes to that server.
        assert [api.get("WhoAmI").status_code for _ in range(3)] == [200, 200, 429]
        first = emu.requests("/WhoAmI")[0].server
        assert first is not None
        other = 1 - first
        no_cookies(api)
        api.session.cookies.set(AFFINITY_COOKIE, emu.web_servers.ids[other])
        # The other server has its own budget for the same caller.
        assert [api.get("WhoAmI").status_code for _ in range(3)] == [200, 200, 429]
        counters = emu.counters()
    per = {s["server"]: s for s in counters["servers"]}
    assert per[first]["requests"] == per[other]["requests"] == 3
    assert per[first]["throttled"] == per[other]["throttled"] == 1
    assert counters["throttled"] == 2


def test_the_counters_are_served_for_other_processes() -> None:
    with small_api(web_servers=2) as api:
        assert api.get("WhoAmI").status_code == 200
        r = requests.get(
            f"{api.emulator.url}{COUNTERS_PATH}", verify=api.emulator.ca_bundle, timeout=30
        )
        assert r.status_code == 200
        body = r.json()
        assert body == api.emulator.counters()
    assert body["requests"] == 1
    assert [s["server"] for s in body["servers"]] == [0, 1]
    assert body["prerender"]["enabled"] is False


def test_counters_can_be_reset() -> None:
    with small_api() as api:
        api.get("WhoAmI")
        api.emulator.reset_counters()
        counters = api.emulator.counters()
    assert (counters["requests"], counters["server_seconds"], counters["peak_concurrency"]) == (
        0,
        0.0,
        0,
    )
