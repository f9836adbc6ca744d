"""The emulator's bulk messages (CreateMultiple, UpdateMultiple, UpsertMultiple), their errors, the
``sdkmessagefilters`` query, an elastic table's partial success, the business-logic bypass headers
and what the cost model charges for them. Real HTTPS, the emulator's own client session."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from dynamics_emulator.cost import CostModel
from dynamics_emulator.multipart import parse_batch_response
from tests.emulator._realism import frozen, small_api
from tests.fixtures import DOCS, needs_fixtures
from tests.webapi import WebApi

ACCOUNT = "Microsoft.Dynamics.CRM.account"
READING = "Microsoft.Dynamics.CRM.contoso_sensordata"
DETAILS = "@Microsoft.PowerApps.CDS.ErrorDetails.Plugin.BulkApiErrorDetails"
READINGS = "contoso_sensordatas?$select=contoso_name&$filter=startswith(contoso_name,'reading ')"


def _bulk(api: WebApi, entity_set: str, message: str, targets: list[dict[str, Any]], **kw: Any):
    return api.request(
        "POST",
        f"{entity_set}/Microsoft.Dynamics.CRM.{message}",
        json={"Targets": targets},
        **kw,
    )


def _accounts(api: WebApi, prefix: str) -> dict[str, Any]:
    rows = api.get_all(f"accounts?$select=accountnumber,name&$filter=startswith(name,'{prefix}')")
    return {r["accountnumber"]: r["name"] for r in rows}


def _logged(api: WebApi, part: str, n: int = 1) -> list[Any]:
    """The request log's entries for ``part`` (the log is written just after the answer)."""
    deadline = time.monotonic() + 10
    while len(entries := api.emulator.requests(part)) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return entries


def _by_number(number: str, name: str) -> dict[str, Any]:
    return {
        "@odata.type": ACCOUNT,
        "@odata.id": f"accounts(accountnumber='{number}')",
        "name": name,
    }


# -- the three messages ---------------------------------------------------------------------------


@needs_fixtures
def test_create_multiple_answers_the_documented_shape(fresh_api: WebApi) -> None:
    """Microsoft's CreateMultiple request (its custom table mapped onto new_project) answers 200
    with the ids in a CreateMultipleResponse, in the order of the targets."""
    real_request = json.loads((DOCS / "writes/05-createmultiple.request.json").read_text())
    real_response = json.loads((DOCS / "writes/05-createmultiple.response.json").read_text())
    targets = [
        {"new_name": t["sample_name"], "@odata.type": "Microsoft.Dynamics.CRM.new_project"}
        for t in real_request["Targets"]
    ]
    r = _bulk(fresh_api, "new_projects", "CreateMultiple", targets)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == set(real_response)
    assert body["@odata.context"] == (
        f"{fresh_api.base}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"
    )
    assert len(body["Ids"]) == 3
    names = [
        fresh_api.get(f"new_projects({i})?$select=new_name").json()["new_name"] for i in body["Ids"]
    ]
    assert names == [t["sample_name"] for t in real_request["Targets"]]


@needs_fixtures
def test_update_multiple_by_primary_id_answers_204(fresh_api: WebApi) -> None:
    real = json.loads((DOCS / "writes/06-updatemultiple.request.json").read_text())
    created = _bulk(
        fresh_api,
        "new_projects",
        "CreateMultiple",
        [{"new_name": "before", "@odata.type": "Microsoft.Dynamics.CRM.new_project"}] * 3,
    ).json()["Ids"]
    targets = [
        {
            "new_name": t["sample_name"],
            "@odata.type": "Microsoft.Dynamics.CRM.new_project",
            "new_projectid": rid,
        }
        for t, rid in zip(real["Targets"], created, strict=True)
    ]
    r = _bulk(fresh_api, "new_projects", "UpdateMultiple", targets)
    assert r.status_code == 204, r.text
    assert r.content == b""
    got = [fresh_api.get(f"new_projects({i})").json()["new_name"] for i in created]
    assert got == [t["sample_name"] for t in real["Targets"]]


def test_upsert_multiple_by_alternate_key_creates_and_updates(fresh_api: WebApi) -> None:
    first = _bulk(
        fresh_api,
        "accounts",
        "UpsertMultiple",
        [_by_number("UM-1", "UM one"), _by_number("UM-2", "UM two")],
    )
    assert first.status_code == 204, first.text
    assert first.content == b""  # no UpsertMultipleResponse body
    again = _bulk(
        fresh_api,
        "accounts",
        "UpsertMultiple",
        [_by_number("UM-2", "UM two, updated"), _by_number("UM-3", "UM three")],
    )
    assert again.status_code == 204, again.text
    assert _accounts(fresh_api, "UM ") == {
        "UM-1": "UM one",
        "UM-2": "UM two, updated",
        "UM-3": "UM three",
    }


def test_update_multiple_of_a_missing_row_rolls_back_the_whole_request(fresh_api: WebApi) -> None:
    ids = _bulk(
        fresh_api,
        "accounts",
        "CreateMultiple",
        [{"@odata.type": ACCOUNT, "name": "RB kept"}],
    ).json()["Ids"]
    missing = str(uuid.uuid4())
    r = _bulk(
        fresh_api,
        "accounts",
        "UpdateMultiple",
        [
            {"@odata.type": ACCOUNT, "accountid": ids[0], "name": "RB changed"},
            {"@odata.type": ACCOUNT, "accountid": missing, "name": "RB nowhere"},
        ],
    )
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"account With Id = {missing} Does Not Exist"
    # The first target ran, then rolled back with the request.
    assert fresh_api.get(f"accounts({ids[0]})?$select=name").json()["name"] == "RB kept"
    assert fresh_api.get(f"accounts({missing})").status_code == 404


def test_one_bad_row_fails_the_whole_request_on_a_standard_table(fresh_api: WebApi) -> None:
    targets = [_by_number(f"BAD-{i}", f"BAD row {i}") for i in range(5)]
    targets[3]["name"] = "x" * 161  # name holds 160 characters
    r = _bulk(fresh_api, "accounts", "UpsertMultiple", targets)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "0x80044331"
    assert "exceeded the maximum allowed length of '160'" in error["message"]
    assert DETAILS not in error  # a standard table does not say which target failed
    assert _accounts(fresh_api, "BAD row") == {}  # the rows before it rolled back too


def test_a_target_without_its_type_fails_the_request_before_any_write(fresh_api: WebApi) -> None:
    targets = [
        _by_number("NT-1", "NT one"),
        {"@odata.id": "accounts(accountnumber='NT-2')", "name": "NT two"},
    ]
    r = _bulk(fresh_api, "accounts", "UpsertMultiple", targets)
    assert r.status_code == 400
    assert "A resource without a type name was found" in r.json()["error"]["message"]
    assert _accounts(fresh_api, "NT ") == {}
    wrong = _bulk(fresh_api, "accounts", "CreateMultiple", [{"@odata.type": READING, "name": "x"}])
    assert wrong.status_code == 400
    assert "is not 'Microsoft.Dynamics.CRM.account'" in wrong.json()["error"]["message"]


def test_targets_must_be_a_collection_of_objects(fresh_api: WebApi) -> None:
    r = fresh_api.request(
        "POST", "accounts/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": "nope"}
    )
    assert r.status_code == 400
    assert "must be a collection" in r.json()["error"]["message"]
    get = fresh_api.get("accounts/Microsoft.Dynamics.CRM.CreateMultiple")
    assert get.status_code == 405


def test_update_multiple_needs_a_row_for_each_target(fresh_api: WebApi) -> None:
    r = _bulk(fresh_api, "accounts", "UpdateMultiple", [{"@odata.type": ACCOUNT, "name": "n"}])
    assert r.status_code == 400
    assert "names no row" in r.json()["error"]["message"]
    other = _bulk(
        fresh_api,
        "accounts",
        "UpsertMultiple",
        [{"@odata.type": ACCOUNT, "@odata.id": "contacts(emailaddress1='a@b.c')", "name": "n"}],
    )
    assert other.status_code == 400
    assert "does not address a row of 'accounts'" in other.json()["error"]["message"]


# -- which tables have them -----------------------------------------------------------------------


def _filters(api: WebApi, message: str, table: str) -> Any:
    return api.get(
        "sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name eq @message and "
        f"primaryobjecttypecode eq @table&@message='{message}'&@table='{table}'"
    )


def test_sdkmessagefilters_says_which_tables_have_a_message(fresh_api: WebApi) -> None:
    fresh_api.emulator.service.settings.bulk_unsupported.add("lead")  # type: ignore[union-attr]
    has = _filters(fresh_api, "UpsertMultiple", "account")
    assert has.status_code == 200, has.text
    body = has.json()
    assert (
        body["@odata.context"]
        == f"{fresh_api.base}/$metadata#sdkmessagefilters(sdkmessagefilterid)"
    )
    assert len(body["value"]) == 1
    assert uuid.UUID(body["value"][0]["sdkmessagefilterid"])
    assert _filters(fresh_api, "UpsertMultiple", "lead").json()["value"] == []
    assert _filters(fresh_api, "Create", "lead").json()["value"] != []
    assert _filters(fresh_api, "CreateMultiple", "activitypointer").json()["value"] == []
    assert _filters(fresh_api, "DeleteMultiple", "account").json()["value"] == []
    assert _filters(fresh_api, "DeleteMultiple", "contoso_sensordata").json()["value"] != []
    assert _filters(fresh_api, "CreateMultiple", "nosuchtable").json()["value"] == []
    inline = fresh_api.get(
        "sdkmessagefilters?$filter=primaryobjecttypecode eq 'account' and sdkmessageid/name eq "
        "'CreateMultiple'"
    )
    assert len(inline.json()["value"]) == 1
    other = fresh_api.get("sdkmessagefilters?$filter=name eq 'x'")
    assert other.status_code == 400


def test_a_table_without_the_messages_answers_their_real_error(fresh_api: WebApi) -> None:
    fresh_api.emulator.service.settings.bulk_unsupported.add("lead")  # type: ignore[union-attr]
    r = _bulk(
        fresh_api,
        "leads",
        "CreateMultiple",
        [{"@odata.type": "Microsoft.Dynamics.CRM.lead", "subject": "s"}],
    )
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "0x80040800",
        "message": "The 'CreateMultiple' method does not support entities of type 'lead'. "
        "MessageProcessorCache returned MessageProcessor.Empty.",
    }
    delete = _bulk(fresh_api, "accounts", "DeleteMultiple", [])
    assert delete.status_code == 400
    assert delete.json()["error"]["message"] == "DeleteMultiple has not yet been implemented."


def test_reading_sdkmessagefilters_needs_its_privilege(fresh_api: WebApi) -> None:
    fresh_api.emulator.service.settings.denied_tables["*"] = {"sdkmessagefilter"}  # type: ignore[union-attr]
    r = _filters(fresh_api, "CreateMultiple", "account")
    assert r.status_code == 403
    assert "prvReadsdkmessagefilter" in r.json()["error"]["message"]


# -- an elastic table -------------------------------------------------------------------------------


def _reading(i: int, **extra: Any) -> dict[str, Any]:
    rid = str(uuid.UUID(int=i + 1))
    return {
        "@odata.type": READING,
        "@odata.id": f"contoso_sensordatas(contoso_sensordataid={rid},partitionid='dev-{i % 2}')",
        "contoso_sensordataid": rid,
        "contoso_name": f"reading {i}",
        "contoso_value": i * 1.5,
        **extra,
    }


def test_an_elastic_table_keeps_the_good_rows_and_lists_the_failed_ones(fresh_api: WebApi) -> None:
    targets = [_reading(i) for i in range(6)]
    targets[2]["contoso_name"] = "n" * 101
    targets[4]["contoso_value"] = "not a number"
    r = _bulk(
        fresh_api,
        "contoso_sensordatas",
        "UpsertMultiple",
        targets,
        headers={"Prefer": 'odata.include-annotations="Microsoft.PowerApps.CDS.ErrorDetails.*"'},
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "0x80044331"  # the first failure's error
    details = json.loads(error[DETAILS])
    assert [(d["RequestIndex"], d["StatusCode"]) for d in details] == [(2, 400), (4, 400)]
    assert details[0]["Id"] == targets[2]["contoso_sensordataid"]
    rows = fresh_api.get_all(READINGS)
    assert sorted(r["contoso_name"] for r in rows) == [
        "reading 0",
        "reading 1",
        "reading 3",
        "reading 5",
    ]
    # Partitioned rows keep their partition.
    one = fresh_api.get(f"contoso_sensordatas({targets[1]['contoso_sensordataid']})").json()
    assert one["partitionid"] == "dev-1"


def test_without_the_annotation_the_failed_rows_are_not_listed(fresh_api: WebApi) -> None:
    targets = [_reading(i) for i in range(3)]
    targets[1]["contoso_value"] = "bad"
    r = _bulk(fresh_api, "contoso_sensordatas", "CreateMultiple", targets)
    assert r.status_code == 400
    assert DETAILS not in r.json()["error"]
    assert len(fresh_api.get_all(READINGS)) == 2


# -- business logic bypass ----------------------------------------------------------------------------

BYPASS = {"MSCRM.BypassBusinessLogicExecution": "CustomSync,CustomAsync"}


def test_bypass_headers_are_accepted_from_a_user_with_the_privilege(fresh_api: WebApi) -> None:
    headers = {**BYPASS, "MSCRM.SuppressCallbackRegistrationExpanderJob": "true"}
    r = _bulk(
        fresh_api, "accounts", "UpsertMultiple", [_by_number("BP-1", "BP one")], headers=headers
    )
    assert r.status_code == 204, r.text
    logged = _logged(fresh_api, "UpsertMultiple")[-1].headers
    assert logged["mscrm.bypassbusinesslogicexecution"] == "CustomSync,CustomAsync"


def test_bypass_without_the_privilege_is_refused_before_any_write(fresh_api: WebApi) -> None:
    emu = fresh_api.emulator
    emu.service.settings.no_bypass_privilege.add(emu.client_id)  # type: ignore[union-attr]
    r = _bulk(
        fresh_api, "accounts", "UpsertMultiple", [_by_number("NP-1", "NP one")], headers=BYPASS
    )
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "0x80040220"
    assert "is missing prvBypassCustomBusinessLogic privilege" in error["message"]
    single = fresh_api.request(
        "PATCH", "accounts(accountnumber='NP-2')", json={"name": "NP two"}, headers=BYPASS
    )
    assert single.status_code == 403
    assert _accounts(fresh_api, "NP ") == {}
    # Without the header the same user writes.
    assert (
        _bulk(fresh_api, "accounts", "UpsertMultiple", [_by_number("NP-3", "NP three")]).status_code
        == 204
    )


def test_a_batch_part_asking_for_bypass_without_the_privilege_fails_alone(
    fresh_api: WebApi,
) -> None:
    emu = fresh_api.emulator
    emu.service.settings.no_bypass_privilege.add("*")  # type: ignore[union-attr]
    boundary = "batch_bypass"
    parts = []
    for number, extra in (
        ("BB-1", "MSCRM.BypassBusinessLogicExecution: CustomSync\r\n"),
        ("BB-2", ""),
    ):
        parts.append(
            "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"PATCH /api/data/v9.2/accounts(accountnumber='{number}') HTTP/1.1\r\n"
            f"Content-Type: application/json; type=entry\r\n{extra}\r\n"
            + json.dumps({"name": f"BB {number}"})
            + "\r\n"
        )
    body = "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    r = fresh_api.request(
        "POST",
        "$batch",
        data=body.encode(),
        headers={
            "Content-Type": f'multipart/mixed; boundary="{boundary}"',
            "Prefer": "odata.continue-on-error",
        },
    )
    assert r.status_code == 200
    statuses = [p.status for p in parse_batch_response(r.content, r.headers["Content-Type"])]
    assert statuses == [403, 204]
    assert _accounts(fresh_api, "BB ") == {"BB-2": "BB BB-2"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MSCRM.BypassBusinessLogicExecution", "Everything"),
        ("MSCRM.BypassBusinessLogicExecution", ""),
        ("MSCRM.SuppressCallbackRegistrationExpanderJob", "yes"),
    ],
)
def test_malformed_bypass_headers_are_refused(fresh_api: WebApi, name: str, value: str) -> None:
    r = _bulk(
        fresh_api, "accounts", "UpsertMultiple", [_by_number("MB-1", "MB")], headers={name: value}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x80040203"
    assert name in r.json()["error"]["message"]


# -- what they cost ---------------------------------------------------------------------------------


def test_a_bulk_record_costs_a_quarter_of_a_batch_operation() -> None:
    cost = CostModel(time_scale=0.001)
    with small_api(cost_model=cost) as api:
        frozen(api)
        ok = _bulk(
            api, "accounts", "UpsertMultiple", [_by_number(f"C-{i}", f"C {i}") for i in range(40)]
        )
        assert ok.status_code == 204
        bad = [_by_number(f"D-{i}", f"D {i}") for i in range(40)]
        bad[9]["name"] = "y" * 200
        assert _bulk(api, "accounts", "UpsertMultiple", bad).status_code == 400
        good, failed = _logged(api, "Multiple", 2)
    per_record = cost.operation_seconds * cost.bulk_fraction
    assert good.server_seconds == pytest.approx(cost.request_seconds + 40 * per_record)
    # A failed request on a standard table ran its targets up to the bad one, then rolled back.
    assert failed.server_seconds == pytest.approx(cost.request_seconds + 10 * per_record)
