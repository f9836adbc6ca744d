"""The pure parts of the target's bulk writes, without I/O: the items of a bulk message, what
says a table lacks one, an elastic table's list of failed records, and the flow gate."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamics_api.errors import ApiError, api_error
from dynamics_api.metadata import EntityModel, parse_metadata
from dynamics_emulator.csdl import render_csdl
from dynamics_emulator.model import standard_model
from target_dynamics.bulksend import ERROR_DETAILS, _listed_failures
from target_dynamics.flow import Flow
from target_dynamics.plan import InvalidRecord, StreamOptions, build_plan
from target_dynamics.routes import is_unsupported

MODEL: EntityModel = parse_metadata(render_csdl(standard_model()))
ID = "AAAAAAAA-0000-0000-0000-000000000001"


# -- the items of a bulk message ----------------------------------------------------------------


def test_an_upsert_by_alternate_key_names_its_row_by_odata_id() -> None:
    plan = build_plan("account", StreamOptions(key=("accountnumber",)), MODEL)
    target, key = plan.bulk_target(
        {"accountnumber": "O'Brien/1", "name": "N", "revenue": Decimal("1.50")}
    )
    assert key == {"accountnumber": "O'Brien/1"}
    assert b'"revenue":1.50' in target  # exact, a JSON number
    assert orjson.loads(target) == {
        "@odata.type": "Microsoft.Dynamics.CRM.account",
        "@odata.id": "accounts(accountnumber='O''Brien%2F1')",
        "accountnumber": "O'Brien/1",
        "name": "N",
        "revenue": 1.5,
    }
    assert plan.bulk_message == "UpsertMultiple"
    assert not plan.elastic


def test_the_item_carries_what_the_operation_carries() -> None:
    """One validation: the item's columns and binds are the $batch operation's body."""
    plan = build_plan("account", StreamOptions(), MODEL)
    record = {
        "accountid": ID,
        "name": "N",
        "_primarycontactid_value": "00000000-0000-0000-0000-0000000000c1",
        "parentaccountid": None,
    }
    op, _ = plan.operation(record)
    target, _ = plan.bulk_target(record)
    item = orjson.loads(target)
    assert item.pop("@odata.type") == "Microsoft.Dynamics.CRM.account"
    assert item.pop("@odata.id") == f"accounts({ID.lower()})" == op.url
    assert op.body is not None and item == orjson.loads(op.body)


@pytest.mark.parametrize(
    ("mode", "message"), [("update", "UpdateMultiple"), ("create", "CreateMultiple")]
)
def test_update_and_create_by_primary_id_carry_the_id(mode: str, message: str) -> None:
    plan = build_plan("account", StreamOptions(mode=mode), MODEL)
    target, _ = plan.bulk_target({"accountid": ID, "name": "N"})
    assert orjson.loads(target) == {
        "@odata.type": "Microsoft.Dynamics.CRM.account",
        "accountid": ID.lower(),
        "name": "N",
    }
    assert plan.bulk_message == message


def test_an_update_by_alternate_key_names_its_row_by_odata_id() -> None:
    plan = build_plan("account", StreamOptions(key=("accountnumber",), mode="update"), MODEL)
    item = orjson.loads(plan.bulk_target({"accountnumber": "A-1", "name": "N"})[0])
    assert item["@odata.id"] == "accounts(accountnumber='A-1')"
    create = build_plan("account", StreamOptions(key=("accountnumber",), mode="create"), MODEL)
    item = orjson.loads(create.bulk_target({"accountnumber": "A-1", "name": "N"})[0])
    assert "@odata.id" not in item and item["accountnumber"] == "A-1"


def test_an_elastic_table_is_known_by_its_columns() -> None:
    plan = build_plan(
        "contoso_sensordata",
        StreamOptions(key=("contoso_sensordataid", "partitionid")),
        MODEL,
    )
    assert plan.elastic
    item = orjson.loads(
        plan.bulk_target({"contoso_sensordataid": ID, "partitionid": "p 1", "contoso_value": 2})[0]
    )
    assert (
        item["@odata.id"]
        == f"contoso_sensordatas(contoso_sensordataid={ID.lower()},partitionid='p%201')"
    )


def test_an_invalid_record_is_refused_as_for_batch() -> None:
    plan = build_plan("account", StreamOptions(key=("accountnumber",)), MODEL)
    with pytest.raises(InvalidRecord, match="does not exist"):
        plan.bulk_target({"accountnumber": "A", "nope": 1})
    with pytest.raises(InvalidRecord, match="missing"):
        plan.bulk_target({"name": "no key"})


def test_request_headers_go_with_every_operation() -> None:
    bypass = {"MSCRM.BypassBusinessLogicExecution": "CustomSync"}
    plan = build_plan(
        "account",
        StreamOptions(mode="update", delete_mode="hard"),
        MODEL,
        request_headers=bypass,
    )
    op, _ = plan.operation({"accountid": ID, "name": "N"})
    assert op.headers == {**bypass, "If-Match": "*"}
    delete, _ = plan.delete_operation({"accountid": ID})
    assert delete.headers == bypass


# -- what the service's answers say ----------------------------------------------------------------


def _error(status: int, code: str, message: str, **annotations: str) -> ApiError:
    return api_error(status, "POST", "/x", code=code, message=message, annotations=annotations)


def test_a_table_without_the_message_is_recognised() -> None:
    real = _error(
        400,
        "0x80040800",
        "The 'UpsertMultiple' method does not support entities of type 'lead'. "
        "MessageProcessorCache returned MessageProcessor.Empty.",
    )
    assert is_unsupported(real, "UpsertMultiple")
    segment = _error(
        404,
        "0x8006088a",
        "Resource not found for the segment 'Microsoft.Dynamics.CRM.UpsertMultiple'.",
    )
    assert is_unsupported(segment, "UpsertMultiple")
    assert not is_unsupported(
        _error(400, "0x80044331", "A validation error occurred."), "UpsertMultiple"
    )
    assert not is_unsupported(_error(403, "0x80040800", "no"), "UpsertMultiple")


def test_the_failed_records_of_an_elastic_table_are_read_from_the_answer() -> None:
    details = '[{"RequestIndex":1,"Id":"x","StatusCode":400},{"RequestIndex":4,"Id":"y","StatusCode":404},{"RequestIndex":2,"Id":"z","StatusCode":200}]'
    err = _error(400, "0x1", "m", **{ERROR_DETAILS: details})
    assert _listed_failures(err, 5) == {1: 400, 4: 404}
    assert _listed_failures(_error(400, "0x1", "m"), 5) is None  # a standard table
    assert _listed_failures(_error(400, "0x1", "m", **{ERROR_DETAILS: "not json"}), 5) is None
    outside = '[{"RequestIndex":9,"StatusCode":400}]'
    assert _listed_failures(_error(400, "0x1", "m", **{ERROR_DETAILS: outside}), 5) is None


# -- the flow gate -----------------------------------------------------------------------------------


def test_the_hint_caps_the_requests_in_flight_and_never_passes_the_cap() -> None:
    flow = Flow(4)
    flow.observe("2", 0)
    assert (flow.target, flow.limit) == (2, 2)
    flow.observe("16", 0)
    assert flow.target == 4  # the cap: max_parallel_batches
    flow.observe("nonsense", 0)
    assert flow.target == 4


def test_throttling_halves_the_limit_once_per_wave_and_it_climbs_back() -> None:
    flow = Flow(8)
    flow.observe("8", 0)
    flow.observe(None, 1)  # one 429 seen by the client
    assert flow.limit == 4
    flow.observe(None, 1)  # the same wave, seen by another thread: no further halving
    assert flow.limit == 4
    flow.throttled()  # a throttled $batch part
    assert flow.limit == 2 and flow.lowest == 2
    answers = 0
    while flow.limit < 8:
        flow.observe(None, 1)
        answers += 1
    assert answers == 2 + 3 + 4 + 5 + 6 + 7  # `limit` answers in a row raise it by one


@given(st.lists(st.sampled_from(["ok", "429", "hint1", "hint3"]), max_size=60))
def test_the_limit_stays_between_one_and_the_target(events: list[str]) -> None:
    flow = Flow(6)
    throttles = 0
    for event in events:
        if event == "429":
            throttles += 1
            flow.observe(None, throttles)
        elif event.startswith("hint"):
            flow.observe(event[4:], throttles)
        else:
            flow.observe(None, throttles)
        assert 1 <= flow.limit <= flow.target <= 6


def _hold(flow: Flow, active: list[int], peak: list[int], lock: threading.Lock) -> None:
    with flow.slot():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1


def test_no_more_than_the_limit_is_in_flight() -> None:
    flow = Flow(3)
    active, peak, lock = [0], [0], threading.Lock()
    threads = [threading.Thread(target=_hold, args=(flow, active, peak, lock)) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak[0] == 3


def test_the_first_write_goes_alone_when_asked() -> None:
    flow = Flow(4, first_alone=True)
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def first() -> None:
        with flow.slot():
            first_in.set()
            order.append("first")
            release.wait(5)

    def other() -> None:
        with flow.slot():
            order.append("other")

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_in.wait(5)
    with flow.slot(write=False):  # a read is not held back
        order.append("read")
    others = [threading.Thread(target=other) for _ in range(3)]
    for th in others:
        th.start()
    time.sleep(0.05)
    assert order == ["first", "read"]  # the writes wait for the first one's answer
    release.set()
    for th in [t1, *others]:
        th.join()
    assert order == ["first", "read", "other", "other", "other"]
