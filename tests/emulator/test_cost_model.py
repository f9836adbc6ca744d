"""The cost model: server time per request (calibrated on the published figures), the scaled wait
before answering, and the modelled seconds counted per web server. No wall-clock assertion: the
tests read the emulator's accounting and the waits it asked for."""

from __future__ import annotations

import pytest

from dynamics_emulator.cost import WRITE_KINDS, CostModel, Work
from tests.emulator._realism import batch_of_creates, frozen, small_api

PAGE = {"Prefer": "odata.maxpagesize=7"}


# -- the model ------------------------------------------------------------------------------------


def test_a_page_of_5000_rows_and_150_columns_takes_about_two_seconds() -> None:
    cost = CostModel()
    assert cost.seconds(Work().read(5000, 150)) == pytest.approx(2.0, abs=0.05)
    # Fewer columns, less time: the part per row and column dominates a full page.
    assert cost.seconds(Work().read(5000, 10)) < 0.5


def test_writes_match_the_published_figures_for_100_records() -> None:
    cost = CostModel()
    one_by_one = 100 * cost.seconds(Work().wrote(1, "single"))
    batch = Work()
    for _ in range(100):
        batch.add_operation(Work().wrote(1, "single"))
    bulk = cost.seconds(Work().wrote(100, "bulk"))
    # Microsoft's sample: one by one 10 s, ExecuteMultiple ($batch-like) 4 s, CreateMultiple 1 s.
    assert one_by_one == pytest.approx(10.0, rel=0.05)
    assert cost.seconds(batch) == pytest.approx(4.0, rel=0.05)
    assert bulk == pytest.approx(1.0, rel=0.1)


def test_the_write_hook_charges_bulk_records_a_fraction_of_an_operation() -> None:
    cost = CostModel(operation_seconds=0.2, bulk_fraction=0.1)
    assert cost.write_seconds(10, "single") == pytest.approx(2.0)
    assert cost.write_seconds(10, "batch-op") == pytest.approx(2.0)
    assert cost.write_seconds(10, "bulk") == pytest.approx(0.2)
    assert set(WRITE_KINDS) == {"single", "batch-op", "bulk"}
    with pytest.raises(ValueError, match="unknown write kind"):
        cost.write_seconds(1, "multiple")
    with pytest.raises(ValueError, match="unknown write kind"):
        Work().wrote(1, "multiple")


def test_a_batch_counts_each_operation_once() -> None:
    work = Work()
    work.add_operation(Work().wrote(1))  # a create inside the batch
    work.add_operation(Work().read(1, 4))  # a GET inside the batch
    work.add_operation(None)  # a failed operation
    assert work.written == {"batch-op": 1}
    cost = CostModel(request_seconds=1, operation_seconds=10, row_seconds=0, cell_seconds=100)
    assert cost.seconds(work) == 1 + 3 * 10 + 4 * 100


@pytest.mark.parametrize(
    "bad",
    [{"time_scale": 0}, {"time_scale": -1}, {"row_seconds": -0.1}, {"bulk_fraction": 2}],
)
def test_nonsense_costs_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="must"):
        CostModel(**bad)


# -- over HTTPS -----------------------------------------------------------------------------------


def test_a_query_is_charged_its_rows_and_columns_and_held_for_the_scaled_time() -> None:
    cost = CostModel(time_scale=0.01)
    with small_api(cost_model=cost) as api:
        _, waits = frozen(api)
        r = api.get("accounts?$select=name,accountnumber", headers=PAGE)
        assert r.status_code == 200 and len(r.json()["value"]) == 7
        (entry,) = api.emulator.requests("/accounts")
    # name, accountnumber and the primary key, always returned.
    expected = cost.seconds(Work().read(7, 3))
    assert entry.server_seconds == pytest.approx(expected)
    assert entry.held_seconds == pytest.approx(expected * 0.01)
    # The answer waited what was left of the scaled time once it was rendered.
    assert len(waits) <= 1 and all(0 < w <= expected * 0.01 for w in waits)


def test_the_wait_is_asked_for_when_the_server_time_is_long() -> None:
    with small_api(cost_model=CostModel(request_seconds=30.0)) as api:
        _, waits = frozen(api)
        assert api.get("WhoAmI").status_code == 200
        (entry,) = api.emulator.requests("/WhoAmI")
    assert entry.server_seconds == pytest.approx(30.0)
    assert len(waits) == 1 and 29.0 < waits[0] <= 30.0


def test_writes_are_charged_per_record_and_per_batch_operation() -> None:
    cost = CostModel(time_scale=0.001)
    with small_api(cost_model=cost) as api:
        frozen(api)
        assert api.request("POST", "accounts", json={"name": "One"}).status_code == 204
        assert batch_of_creates(api, ["A", "B", "C"]) == 200
        single, batch = api.emulator.requests("/api/data/")
        counters = api.emulator.counters()
    assert single.server_seconds == pytest.approx(cost.request_seconds + cost.operation_seconds)
    assert batch.server_seconds == pytest.approx(cost.request_seconds + 3 * cost.operation_seconds)
    charged = [e.server_seconds or 0.0 for e in (single, batch)]
    assert counters["server_seconds"] == pytest.approx(sum(charged))
    assert counters["servers"][0]["server_seconds"] == pytest.approx(counters["server_seconds"])


def test_without_a_cost_model_nothing_waits_and_real_time_is_counted() -> None:
    with small_api() as api:
        _, waits = frozen(api)
        assert api.get("accounts?$select=name").status_code == 200
        (entry,) = api.emulator.requests("/accounts")
    assert waits == []
    assert entry.held_seconds is None
    assert entry.server_seconds is not None and entry.server_seconds >= 0


def test_the_execution_budget_counts_modelled_seconds() -> None:
    # Two requests of 500 modelled seconds use up a budget of 1,000 s; the third is refused.
    cost = CostModel(time_scale=0.001, request_seconds=500.0)
    with small_api(cost_model=cost) as api:
        clock, _ = frozen(api)
        api.emulator.protection.configure(max_execution_seconds=1000.0)
        assert [api.get("WhoAmI").status_code for _ in range(2)] == [200, 200]
        r = api.get("WhoAmI")
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "0x80072321"
        assert (
            "exceeded limit of 1,000,000 milliseconds over time window of 300 seconds"
            in (err["message"])
        )
        # Until the first request's time leaves the 300 s window (in modelled seconds, sent
        # scaled: 300 s at 0.001 is 0.3 real seconds).
        assert r.headers["Retry-After"] == "0.3"
        clock.advance(0.301)  # real seconds: 301 modelled
        assert api.get("WhoAmI").status_code == 200
