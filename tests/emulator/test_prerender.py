"""Pre-rendered pages: repeated identical GETs answered with the bytes rendered the first time,
charged the same server time, and never stale after a write."""

from __future__ import annotations

import pytest

from dynamics_emulator.cost import CostModel
from tests.emulator._realism import SMALL, frozen, small_api
from tests.webapi import WebApi

QUERY = "accounts?$select=name,accountnumber"
PREFER = "odata.maxpagesize=7"


def _walk(api: WebApi, prefer: str = PREFER) -> list[bytes]:
    pages = []
    url: str | None = api.url(QUERY)
    while url:
        r = api.session.get(url, headers={"Prefer": prefer}, timeout=60)
        assert r.status_code == 200
        pages.append(r.content)
        url = r.json().get("@odata.nextLink")
    return pages


def test_a_second_walk_gets_the_same_bytes_from_the_cache() -> None:
    with small_api(prerender=True) as api:
        first = _walk(api)
        second = _walk(api)
        stats = api.emulator.counters()["prerender"]
    assert len(first) == -(-SMALL["account"] // 7)
    assert second == first
    assert stats["pages"] == len(first)
    assert stats["hits"] == len(first)
    assert stats["bytes"] == sum(len(p) for p in first)


def test_cached_pages_are_charged_like_rendered_ones() -> None:
    with small_api(prerender=True, cost_model=CostModel(time_scale=0.001)) as api:
        frozen(api)
        first = _walk(api)
        _walk(api)
        log = api.emulator.requests("/accounts")
    rendered, cached = log[: len(first)], log[len(first) :]
    assert [e.server_seconds for e in cached] == [e.server_seconds for e in rendered]


def test_another_page_size_is_another_page() -> None:
    with small_api(prerender=True) as api:
        _walk(api)
        other = _walk(api, prefer="odata.maxpagesize=10")
        stats = api.emulator.counters()["prerender"]
    assert stats["hits"] == 0
    assert len(other) == 3


def test_a_write_empties_the_cache() -> None:
    with small_api(prerender=True) as api:
        before = _walk(api)
        row_id = api.emulator.row_ids("account", 1)[0]
        r = api.request("PATCH", f"accounts({row_id})", json={"name": "Renamed by the test"})
        assert r.status_code == 204
        after = _walk(api)
        stats = api.emulator.counters()["prerender"]
    assert after != before
    assert b"Renamed by the test" in b"".join(after)
    assert stats["hits"] == 0


def test_the_emulator_s_own_row_changes_empty_it_too() -> None:
    with small_api(prerender=True) as api:
        _walk(api)
        emu = api.emulator
        emu.update_rows("account", emu.row_ids("account", 1), {"name": "Changed underneath"})
        assert b"Changed underneath" in b"".join(_walk(api))


def test_pages_rendered_ahead_are_served_on_the_first_walk() -> None:
    with small_api() as api:
        emu = api.emulator
        pages = emu.prerender(QUERY, prefer=PREFER)
        walked = _walk(api)
        stats = emu.counters()["prerender"]
    assert pages == len(walked)
    assert stats["hits"] == len(walked)
    assert stats["misses"] == 0


def test_a_full_cache_keeps_what_it_has() -> None:
    with small_api(prerender=True, prerender_max_bytes=1) as api:
        _walk(api)
        stats = api.emulator.counters()["prerender"]
    assert stats["pages"] == 0
    assert stats["rejected"] > 0


def test_prerender_refuses_what_is_not_a_query_of_rows() -> None:
    with small_api() as api, pytest.raises(ValueError, match="not a query of rows"):
        api.emulator.prerender("nosuchtables")


def test_without_prerender_nothing_is_kept() -> None:
    with small_api() as api:
        _walk(api)
        _walk(api)
        stats = api.emulator.counters()["prerender"]
    assert (stats["pages"], stats["hits"]) == (0, 0)
