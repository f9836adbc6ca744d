"""How many requests a read keeps in flight (the service's hint per web server seen, capped), and
the opening probes sent side by side."""

from __future__ import annotations

import json
import threading
import typing as t

import pytest

from tap_dynamics.reads import (
    DEFAULT_CEILING,
    HttpProbes,
    choose,
    server_of,
    side_by_side,
    window_job,
)
from tap_dynamics.windows import Window


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


class _Answer:
    def __init__(self, body: dict[str, t.Any]) -> None:
        self.headers = {"x-ms-dop-hint": "4"}
        self.content = json.dumps(body).encode()


class _Service:
    """Answers the probes' queries; ``together`` requests must be in flight at once (each waits
    for the others), so that asking them one after the other fails."""

    def __init__(self, together: int) -> None:
        self.queries: list[str] = []
        self.together = threading.Barrier(together, timeout=5) if together > 1 else None

    def request(self, method: str, path: str, *, params: str, entity: str) -> _Answer:
        self.queries.append(params)
        if self.together is not None:
            self.together.wait()
        if "$count=true" in params:
            return _Answer({"@odata.count": 7, "value": [{"accountid": "a"}]})
        column = "createdon" if "createdon" in params.split("$select=")[1] else "modifiedon"
        last = "desc" in params
        return _Answer(
            {"value": [{column: "2026-10-29T20:06:00Z" if last else "2024-01-01T00:00:00Z"}]}
        )


def _probes_of(service: _Service) -> HttpProbes:
    return HttpProbes(client=service, entity_set="accounts", key="accountid", entity="account")  # type: ignore[arg-type]


def test_a_crowded_second_is_counted_and_its_last_createdon_asked_at_once() -> None:
    service = _Service(together=2)
    flt = "modifiedon ge 2026-10-29T20:06:00Z and modifiedon lt 2026-10-29T20:06:01Z"
    assert _probes_of(service).crowd(flt) == (7, "2026-10-29T20:06:00Z")
    assert len(service.queries) == 2


def test_a_whole_table_known_big_asks_its_edges_side_by_side_and_no_count() -> None:
    service = _Service(together=2)
    probes = _probes_of(service)
    plan = choose(
        probes, column="modifiedon", start=None, page=5000, max_parallel=None, total=200_000
    )
    assert plan.parallel and plan.ceiling == 4  # the hint came with the edges
    assert plan.edges == ("2024-01-01T00:00:00Z", "2026-10-29T20:06:00Z")
    assert not [q for q in service.queries if "$count" in q]


@pytest.mark.parametrize(("start", "total"), [(None, 4000), (None, None), ("2026-01-01", 10**6)])
def test_a_bookmark_or_a_small_or_unknown_table_is_counted_first(
    start: str | None, total: int | None
) -> None:
    service = _Service(together=1)
    plan = choose(
        _probes_of(service),
        column="modifiedon",
        start=start,
        page=5000,
        max_parallel=None,
        total=total,
    )
    assert len(service.queries) == 1 and "$count=true" in service.queries[0]
    assert plan.edges is None and not plan.parallel  # 7 rows: one chain


def test_windows_that_may_turn_out_big_are_scouts() -> None:
    def scout(window: Window) -> bool:
        return window_job(window, "accounts", select="accountid", keys=["accountid"]).scout

    second = ("modifiedon", 1_800_000_000)
    assert scout(Window("modifiedon", 1_700_000_000, 1_700_086_400))  # may hide a crowded second
    assert not scout(Window("modifiedon", 1_700_000_000, None))  # rows written since the plan
    assert not scout(Window("createdon", 1_600_000_000, 1_600_086_400, within=second))
    # The last piece of a crowded second holds what is left of it: maybe more than a page.
    assert scout(Window("createdon", 1_600_000_000, None, within=second))
