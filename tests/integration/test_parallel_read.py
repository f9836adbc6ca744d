"""Reading a table in windows side by side, against the emulator with its cost model (at a small
time scale, so that requests really overlap): the same rows as one chain, in modifiedon order,
with at most the allowed requests in flight; windows taken from the data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from dynamics_emulator.cost import CostModel
from dynamics_emulator.protection import ServiceLimits
from dynamics_emulator.server import Emulator, LogEntry
from tests.tapharness import TapRun, discover, page_requests, run_tap, select

ROWS = 3000
PAGE = 200
SMALL = {"systemuser": 5, "team": 2, "transactioncurrency": 4}


@pytest.fixture(scope="module")
def emu() -> Any:
    # 3,000 accounts: 15 pages of 200, with the seed's bulk-update seconds of several hundred
    # rows each (more than a page: they are split on createdon).
    with Emulator(counts={**SMALL, "account": ROWS}, cost_model=CostModel(time_scale=0.002)) as e:
        yield e


@pytest.fixture(scope="module")
def catalog(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return select(discover(emu, tmp_path_factory.mktemp("d")), ["account"])


@pytest.fixture(scope="module")
def chain_run(
    emu: Emulator, catalog: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> TapRun:
    run = run_tap(
        emu,
        tmp_path_factory.mktemp("chain"),
        catalog=catalog,
        config={"page_size": PAGE, "max_parallel_requests": 1},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _read(
    emu: Emulator, tmp: Path, catalog: dict[str, Any], **config: Any
) -> tuple[TapRun, list[LogEntry]]:
    emu.clear_log()
    emu.reset_counters()
    run = run_tap(emu, tmp, catalog=catalog, config={"page_size": PAGE, **config})
    assert run.returncode == 0, run.stderr[-3000:]
    return run, emu.requests("/api/data/v9.2/accounts")


def test_one_chain_sends_no_probe(emu: Emulator, chain_run: TapRun) -> None:
    rows = chain_run.records("account")
    assert len(rows) == ROWS == len({r["accountid"] for r in rows})
    assert "as one chain of pages: max_parallel_requests is 1" in chain_run.stderr


def test_windows_side_by_side_read_the_same_rows_in_order(
    emu: Emulator, catalog: dict[str, Any], chain_run: TapRun, tmp_path: Path
) -> None:
    run, log = _read(emu, tmp_path, catalog)
    rows = run.records("account")
    expected = {r["accountid"]: r for r in chain_run.records("account")}
    assert len(rows) == ROWS and {r["accountid"]: r for r in rows} == expected
    times = [r["modifiedon"] for r in rows]
    assert times == sorted(times)
    # The same bookmark as one chain.
    assert run.last_state == chain_run.last_state
    # Side by side: more than one request at a time, never more than the service's hint (4).
    assert 1 < emu.counters()["peak_concurrency"] <= 4
    assert "in windows of modifiedon side by side, up to 4 requests at a time" in run.stderr
    # At the table's end, windows whose first page was awaited were halved (a slot was free):
    # their pages were cut at the new bound, and still every row came once, in order.
    early = re.search(r"split after their first page, (\d+) while it was awaited", run.stderr)
    assert early is not None and int(early.group(1)) >= 1
    # And the last window with a request to make was halved before it was asked for, while the
    # others were in flight (its halves then shared the slots freeing after them).
    divided = re.search(r"(\d+) halved before it was asked for", run.stderr)
    assert divided is not None and int(divided.group(1)) >= 1
    pages = page_requests(log)
    windows = {parse_qs(p.query)["$filter"][0] for p in pages if "$skiptoken" not in p.query}
    assert len(windows) > ROWS // PAGE // 2
    for page in pages:
        query = parse_qs(page.query)
        assert len(query["$select"]) == 1  # $select once, on next links too
        assert page.headers["prefer"] == f"odata.maxpagesize={PAGE}"
        assert query["$orderby"][0].startswith("modifiedon asc")
    # Probes: $count or $top, never a page size.
    probes = [e for e in log if e not in pages]
    assert probes and all("$count=true" in p.query or "$top=" in p.query for p in probes)


def test_seconds_holding_more_than_a_page_are_split_on_createdon(
    emu: Emulator, catalog: dict[str, Any], tmp_path: Path
) -> None:
    run, log = _read(emu, tmp_path, catalog)
    inner = [
        parse_qs(p.query)
        for p in page_requests(log)
        if "createdon" in parse_qs(p.query).get("$filter", [""])[0]
    ]
    assert inner, "no bulk second was split"
    assert all(
        q["$orderby"][0].startswith("modifiedon asc,createdon asc,accountid asc") for q in inner
    )
    rows = run.records("account")
    # Inside one such second, rows come by createdon.
    bulk = max(
        {r["modifiedon"] for r in rows}, key=lambda m: sum(r["modifiedon"] == m for r in rows)
    )
    same = [r["createdon"] for r in rows if r["modifiedon"] == bulk]
    assert len(same) > PAGE and same == sorted(same)


def test_max_parallel_requests_caps_the_hint(
    emu: Emulator, catalog: dict[str, Any], tmp_path: Path
) -> None:
    run, _ = _read(emu, tmp_path, catalog, max_parallel_requests=2)
    assert len(run.records("account")) == ROWS
    assert emu.counters()["peak_concurrency"] <= 2
    assert "up to 2 requests at a time" in run.stderr


def test_a_bookmark_reads_from_it_on_in_windows(
    emu: Emulator, catalog: dict[str, Any], chain_run: TapRun, tmp_path: Path
) -> None:
    rows = chain_run.records("account")
    bookmark = rows[ROWS // 3]["modifiedon"]
    state = {
        "bookmarks": {
            "account": {"replication_key": "modifiedon", "replication_key_value": bookmark}
        }
    }
    emu.clear_log()
    run = run_tap(emu, tmp_path, catalog=catalog, state=state, config={"page_size": PAGE})
    assert run.returncode == 0, run.stderr[-3000:]
    got = {r["accountid"] for r in run.records("account")}
    assert got == {r["accountid"] for r in rows if r["modifiedon"] >= bookmark}
    assert "side by side" in run.stderr


def test_a_full_table_stream_is_split_on_createdon(
    emu: Emulator, catalog: dict[str, Any], tmp_path: Path
) -> None:
    # The catalog without modifiedon: the stream is full-table, and createdon orders its windows.
    full = select(catalog, ["account"])
    for entry in full["streams"]:
        entry["schema"]["properties"].pop("modifiedon", None)
        entry.pop("replication_key", None)
        entry["replication_method"] = "FULL_TABLE"
        for md in entry["metadata"]:
            md["metadata"].pop("replication-key", None)
            if md["breadcrumb"] == ["properties", "modifiedon"]:
                md["metadata"]["selected"] = False
    run, _ = _read(emu, tmp_path, full)
    rows = run.records("account")
    assert len(rows) == ROWS == len({r["accountid"] for r in rows})
    assert "in windows of createdon side by side" in run.stderr
    created = [r["createdon"] for r in rows]
    assert created == sorted(created)


def test_one_page_of_rows_is_read_as_one_chain(
    emu: Emulator, catalog: dict[str, Any], tmp_path: Path
) -> None:
    run, log = _read(emu, tmp_path, catalog, page_size=5000)
    assert len(run.records("account")) == ROWS
    assert "as one chain of pages: the rows to read fit in one page" in run.stderr
    assert len(log) == 2  # the count, then the page


def test_the_service_hint_of_one_reads_one_chain(tmp_path: Path) -> None:
    with Emulator(counts={**SMALL, "account": 500}, dop_hint=1) as emu:
        cat = select(discover(emu, tmp_path / "d"), ["account"])
        run = run_tap(emu, tmp_path / "r", catalog=cat, config={"page_size": 100})
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(run.records("account")) == 500
        assert "the service recommends one request at a time" in run.stderr
        assert emu.counters()["peak_concurrency"] == 1


def test_throttled_for_concurrency_the_read_slows_down_and_completes(
    emu: Emulator, catalog: dict[str, Any], chain_run: TapRun, tmp_path: Path
) -> None:
    # The service allows 2 requests at a time while recommending 4: the excess is answered 429
    # (Retry-After: 1 modelled second); the tap honours it, halves its requests in flight and
    # still reads every row.
    emu.protection.use(
        ServiceLimits(max_requests=None, max_execution_seconds=None, max_concurrent=2)
    )
    try:
        run, _ = _read(emu, tmp_path, catalog, max_retries=20)
        counters = emu.counters()
    finally:
        emu.protection.use(None)
    rows = run.records("account")
    assert {r["accountid"] for r in rows} == {r["accountid"] for r in chain_run.records("account")}
    assert len(rows) == ROWS
    assert counters["throttled"] > 0
    assert "throttled periods" in run.stderr and "(lowest 4 " not in run.stderr


def test_two_web_servers_take_the_hint_for_each(tmp_path: Path) -> None:
    # The service's limits are per web server: the tap, which does not send the affinity cookie
    # back, sees two servers answer its probes and keeps the hint (2) for each in flight.
    with Emulator(
        counts={**SMALL, "account": 2000},
        cost_model=CostModel(time_scale=0.002),
        web_servers=2,
        dop_hint=2,
    ) as emu:
        cat = select(discover(emu, tmp_path / "d"), ["account"])
        emu.reset_counters()
        run = run_tap(emu, tmp_path / "r", catalog=cat, config={"page_size": PAGE})
        counters = emu.counters()
    assert run.returncode == 0, run.stderr[-3000:]
    rows = run.records("account")
    assert len(rows) == len({r["accountid"] for r in rows}) == 2000
    assert "the limit was 4 " in run.stderr
    assert 2 < counters["peak_concurrency"] <= 4
    assert all(s["requests"] > 0 for s in counters["servers"])
