"""Writes against the emulator: create, update, upsert by key and alternate key, binds, delete,
``$batch`` with change sets and continue-on-error, and their real error bodies."""

from __future__ import annotations

import json
import uuid

import pytest

from dynamics_emulator.multipart import parse_batch_response
from tests.fixtures import DOCS, needs_fixtures
from tests.webapi import WebApi


def _fixture(name: str) -> dict:
    return json.loads((DOCS / name).read_text())


def _one(api: WebApi, path: str) -> dict:
    r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


@needs_fixtures
def test_create_returns_204_and_entity_id(fresh_api: WebApi) -> None:
    body = _fixture("writes/01-create-account.request.json")
    r = fresh_api.request("POST", "accounts", json=body)
    assert r.status_code == 204, r.text
    entity_id = r.headers["OData-EntityId"]
    assert entity_id.startswith(f"{fresh_api.base}/accounts(")
    row = _one(fresh_api, entity_id)
    assert row["name"] == "Sample Account"
    assert row["revenue"] == 5000000
    assert row["creditonhold"] is False
    assert row["_transactioncurrencyid_value"]  # money brought the base currency
    assert row["createdon"] == row["modifiedon"]
    assert row["_ownerid_value"]  # owned by the caller


@needs_fixtures
def test_create_with_representation_is_201(fresh_api: WebApi) -> None:
    real = _fixture("writes/01-create-account-return-representation.response.json")
    body = _fixture("writes/01-create-account.request.json")
    r = fresh_api.request(
        "POST",
        "accounts?$select=name,revenue,creditonhold,description,accountcategorycode,createdon,address1_latitude",
        json=body,
        headers={"Prefer": "return=representation"},
    )
    assert r.status_code == 201
    assert r.headers["Preference-Applied"] == "return=representation"
    assert "OData-EntityId" not in r.headers
    ours = r.json()
    assert set(real) <= set(ours)
    assert ours["@odata.context"].endswith("/$entity")


def test_bind_sets_lookup_and_case_matters(fresh_api: WebApi) -> None:
    contact = fresh_api.emulator.row_ids("contact", 1)[0]
    ok = fresh_api.request(
        "POST",
        "accounts",
        json={"name": "Bound", "primarycontactid@odata.bind": f"/contacts({contact})"},
    )
    assert ok.status_code == 204, ok.text
    row = _one(fresh_api, ok.headers["OData-EntityId"] + "?$select=_primarycontactid_value")
    assert row["_primarycontactid_value"] == contact
    wrong_case = fresh_api.request(
        "POST",
        "accounts",
        json={"name": "Bound", "PrimaryContactId@odata.bind": f"/contacts({contact})"},
    )
    assert wrong_case.status_code == 400
    assert "undeclared property 'PrimaryContactId'" in wrong_case.json()["error"]["message"]


def test_custom_table_nav_name_is_case_sensitive(fresh_api: WebApi) -> None:
    account = fresh_api.emulator.row_ids("account", 1)[0]
    r = fresh_api.request(
        "POST",
        "new_projects",
        json={
            "new_name": "P",
            "new_code": "X-1",
            "new_AccountId@odata.bind": f"accounts({account})",
        },
    )
    assert r.status_code == 204, r.text
    bad = fresh_api.request(
        "POST",
        "new_projects",
        json={
            "new_name": "P",
            "new_code": "X-2",
            "new_accountid@odata.bind": f"accounts({account})",
        },
    )
    assert bad.status_code == 400


def test_polymorphic_bind_records_the_table(fresh_api: WebApi) -> None:
    contact = fresh_api.emulator.row_ids("contact", 1)[0]
    r = fresh_api.request(
        "POST",
        "incidents",
        json={"title": "Broken", "customerid_contact@odata.bind": f"/contacts({contact})"},
    )
    assert r.status_code == 204, r.text
    row = fresh_api.get(
        r.headers["OData-EntityId"] + "?$select=_customerid_value",
        headers={"Prefer": 'odata.include-annotations="*"'},
    ).json()
    assert row["_customerid_value"] == contact
    assert row["_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "contact"
    assert row["_customerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == (
        "customerid_contact"
    )


def test_bind_to_missing_row_fails(fresh_api: WebApi) -> None:
    r = fresh_api.request(
        "POST",
        "accounts",
        json={
            "name": "x",
            "primarycontactid@odata.bind": "/contacts(00000000-0000-0000-0000-0000000000aa)",
        },
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "0x80040217"


def test_bind_by_alternate_key_and_clear(fresh_api: WebApi) -> None:
    parent = _one(fresh_api, "accounts?$select=accountnumber&$filter=accountnumber ne null&$top=1")[
        "value"
    ][0]
    child = fresh_api.emulator.row_ids("account", 3)[2]
    r = fresh_api.request(
        "PATCH",
        f"accounts({child})",
        json={"parentaccountid@odata.bind": f"accounts(accountnumber='{parent['accountnumber']}')"},
    )
    assert r.status_code == 204, r.text
    assert (
        _one(fresh_api, f"accounts({child})?$select=_parentaccountid_value")[
            "_parentaccountid_value"
        ]
        == parent["accountid"]
    )
    r = fresh_api.request("PATCH", f"accounts({child})", json={"parentaccountid@odata.bind": None})
    assert r.status_code == 204
    assert (
        _one(fresh_api, f"accounts({child})?$select=_parentaccountid_value")[
            "_parentaccountid_value"
        ]
        is None
    )


def test_update_changes_modifiedon_and_version(fresh_api: WebApi) -> None:
    rid = fresh_api.emulator.row_ids("account", 1)[0]
    before = _one(fresh_api, f"accounts({rid})?$select=name,modifiedon,versionnumber")
    r = fresh_api.request("PATCH", f"accounts({rid})", json={"name": "Renamed Ltd"})
    assert r.status_code == 204
    after = _one(fresh_api, f"accounts({rid})?$select=name,modifiedon,versionnumber")
    assert after["name"] == "Renamed Ltd"
    assert after["versionnumber"] > before["versionnumber"]
    assert after["modifiedon"] > before["modifiedon"]


@needs_fixtures
@pytest.mark.parametrize(
    ("headers", "exists", "status"),
    [
        pytest.param({}, False, 204, id="upsert-creates"),
        pytest.param({}, True, 204, id="upsert-updates"),
        pytest.param({"If-Match": "*"}, False, 404, id="update-only-missing"),
        pytest.param({"If-Match": "*"}, True, 204, id="update-only-exists"),
        pytest.param({"If-None-Match": "*"}, True, 412, id="create-only-exists"),
        pytest.param({"If-None-Match": "*"}, False, 204, id="create-only-missing"),
    ],
)
def test_conditional_upsert(fresh_api: WebApi, headers: dict, exists: bool, status: int) -> None:
    rid = fresh_api.emulator.row_ids("account", 1)[0] if exists else str(uuid.uuid4())
    before = fresh_api.emulator.store.count(fresh_api.emulator.model["account"])  # type: ignore[union-attr]
    r = fresh_api.request("PATCH", f"accounts({rid})", json={"name": "Upserted"}, headers=headers)
    assert r.status_code == status, r.text
    after = fresh_api.emulator.store.count(fresh_api.emulator.model["account"])  # type: ignore[union-attr]
    assert after - before == (1 if status == 204 and not exists else 0)
    if status == 404:
        assert r.json() == {
            "error": {"code": "", "message": f"account With Id = {rid} Does Not Exist"}
        }
    if status == 412:
        assert r.json() == _fixture("errors/02-412-if-none-match-star-exists.json")


@needs_fixtures
def test_etag_mismatch_is_412(fresh_api: WebApi) -> None:
    rid = fresh_api.emulator.row_ids("account", 1)[0]
    r = fresh_api.request(
        "PATCH", f"accounts({rid})", json={"name": "x"}, headers={"If-Match": 'W/"1"'}
    )
    assert r.status_code == 412
    assert r.json() == _fixture("errors/03-412-etag-mismatch.json")


def test_upsert_by_alternate_key(fresh_api: WebApi) -> None:
    r = fresh_api.request(
        "PATCH",
        "accounts(accountnumber='ENR-0001')",
        json={"name": "Enriched", "numberofemployees": 250},
        headers={"Prefer": "return=representation"},
    )
    assert r.status_code == 201  # created; the key from the URL lands in the row
    created = r.json()
    assert created["accountnumber"] == "ENR-0001"
    r2 = fresh_api.request(
        "PATCH",
        "accounts(accountnumber='ENR-0001')",
        json={"numberofemployees": 300, "accountnumber": "IGNORED"},
        headers={"Prefer": "return=representation"},
    )
    assert r2.status_code == 200
    assert r2.json()["accountid"] == created["accountid"]
    assert r2.json()["numberofemployees"] == 300
    assert r2.json()["accountnumber"] == "ENR-0001"  # key columns in the body are ignored
    entity_id = fresh_api.request(
        "PATCH", "accounts(accountnumber='ENR-0001')", json={"fax": "1"}
    ).headers["OData-EntityId"]
    assert entity_id.endswith("/accounts(accountnumber='ENR-0001')")


def test_composite_alternate_key_with_lookup(fresh_api: WebApi) -> None:
    account = fresh_api.emulator.row_ids("account", 1)[0]
    path = f"new_projects(new_code='Q''1/2%',_new_accountid_value={account})"
    r = fresh_api.request("PATCH", path.replace("%", "%25"), json={"new_name": "Quoted"})
    assert r.status_code == 204, r.text
    rows = _one(
        fresh_api, "new_projects?$select=new_code,_new_accountid_value&$filter=new_name eq 'Quoted'"
    )
    assert rows["value"] == [
        {
            "@odata.etag": rows["value"][0]["@odata.etag"],
            "new_code": "Q'1/2%",
            "_new_accountid_value": account,
            "new_projectid": rows["value"][0]["new_projectid"],
        }
    ]


def test_duplicate_alternate_key_is_refused(fresh_api: WebApi) -> None:
    a, b = fresh_api.emulator.row_ids("account", 2)
    number = _one(fresh_api, f"accounts({a})?$select=accountnumber")["accountnumber"]
    r = fresh_api.request("PATCH", f"accounts({b})", json={"accountnumber": number})
    assert r.status_code == 412
    assert r.json()["error"]["code"] == "0x80060892"


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        pytest.param({"nosuch": 1}, "0x80048d19", "does not exist on type", id="unknown-column"),
        pytest.param(
            {"_primarycontactid_value": None}, "0x80048d19", "cannot be written", id="lookup-value"
        ),
        pytest.param({"versionnumber": 5}, "0x80048d19", "read-only", id="read-only"),
        pytest.param({"numberofemployees": "many"}, "0x80048d19", "Edm.Int32", id="wrong-type"),
        pytest.param({"creditonhold": 1}, "0x80048d19", "Edm.Boolean", id="int-for-bool"),
        pytest.param(
            {"lastusedincampaign": "yesterday"}, "0x80048d19", "DateTimeOffset", id="bad-date"
        ),
        pytest.param(
            {"name": "x" * 161}, "0x80044331", "maximum allowed length of '160'", id="too-long"
        ),
        pytest.param(
            {"industrycode": 999}, "0x8004431A", "outside the valid range", id="bad-choice"
        ),
    ],
)
def test_bad_payloads_get_real_errors(
    fresh_api: WebApi, payload: dict, code: str, fragment: str
) -> None:
    rid = fresh_api.emulator.row_ids("account", 1)[0]
    r = fresh_api.request("PATCH", f"accounts({rid})", json=payload)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == code
    assert fragment in err["message"]


def test_dateonly_and_datetime_forms(fresh_api: WebApi) -> None:
    rid = fresh_api.emulator.row_ids("contact", 1)[0]
    r = fresh_api.request(
        "PATCH",
        f"contacts({rid})",
        json={"birthdate": "1990-02-28"},
    )
    assert r.status_code == 204
    assert _one(fresh_api, f"contacts({rid})?$select=birthdate")["birthdate"] == "1990-02-28"
    bad = fresh_api.request("PATCH", f"contacts({rid})", json={"birthdate": "1990-02-28T00:00:00Z"})
    assert bad.status_code == 400


def test_delete(fresh_api: WebApi) -> None:
    rid = fresh_api.emulator.row_ids("task", 1)[0]
    assert fresh_api.request("DELETE", f"tasks({rid})").status_code == 204
    assert fresh_api.get(f"tasks({rid})").status_code == 404
    assert fresh_api.request("DELETE", f"tasks({rid})").status_code == 404


# -- $batch -----------------------------------------------------------------------------------------


def _batch(api: WebApi, parts: list[str], boundary: str = "batch_abc", prefer: str | None = None):
    body = "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    headers = {"Content-Type": f'multipart/mixed; boundary="{boundary}"'}
    if prefer:
        headers["Prefer"] = prefer
    r = api.request("POST", "$batch", data=body.encode(), headers=headers)
    if not r.headers["Content-Type"].startswith("multipart/"):
        return r, []  # the batch itself was refused: a plain JSON error
    return r, parse_batch_response(r.content, r.headers["Content-Type"])


def _op(method: str, url: str, body: dict | None = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    req = f"{method} {url} HTTP/1.1\r\n"
    if body is not None:
        req += "Content-Type: application/json; type=entry\r\n\r\n" + json.dumps(body) + "\r\n"
    else:
        req += "\r\n"
    return head + "\r\n" + req


def test_batch_of_upserts_and_get(fresh_api: WebApi) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    parts = [
        _op("PATCH", f"/api/data/v9.2/accounts({i})", {"name": f"B{n}"}) for n, i in enumerate(ids)
    ]
    parts.append(_op("GET", f"/api/data/v9.2/accounts({ids[0]})?$select=name"))
    r, results = _batch(fresh_api, parts)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("multipart/mixed; boundary=batchresponse_")
    assert [p.status for p in results] == [204, 204, 204, 200]
    assert results[0].headers["OData-EntityId"].endswith(f"/accounts({ids[0]})")
    assert json.loads(results[3].body)["name"] == "B0"


def test_batch_stops_at_first_error_without_continue_on_error(fresh_api: WebApi) -> None:
    good = [str(uuid.uuid4()) for _ in range(2)]
    parts = [
        _op("PATCH", f"/api/data/v9.2/accounts({good[0]})", {"name": "ok"}),
        _op("PATCH", f"/api/data/v9.2/accounts({uuid.uuid4()})", {"name": "x" * 500}),
        _op("PATCH", f"/api/data/v9.2/accounts({good[1]})", {"name": "never"}),
    ]
    r, results = _batch(fresh_api, parts)
    assert r.status_code == 400
    assert [p.status for p in results] == [400]
    assert json.loads(results[0].body)["error"]["code"] == "0x80044331"
    assert fresh_api.get(f"accounts({good[1]})").status_code == 404


def test_batch_continue_on_error_isolates_the_bad_record(fresh_api: WebApi) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    parts = [
        _op("PATCH", f"/api/data/v9.2/accounts({ids[0]})", {"name": "ok"}),
        _op("PATCH", f"/api/data/v9.2/accounts({ids[1]})", {"name": "x" * 500}),
        _op("PATCH", f"/api/data/v9.2/accounts({ids[2]})", {"name": "also ok"}),
    ]
    r, results = _batch(fresh_api, parts, prefer="odata.continue-on-error")
    assert r.status_code == 200
    assert [p.status for p in results] == [204, 400, 204]
    assert fresh_api.get(f"accounts({ids[2]})").status_code == 200


def test_change_set_is_atomic_with_content_id_references(fresh_api: WebApi) -> None:
    cs = "changeset_1"
    inner = (
        f"--{cs}\r\n"
        + _op("POST", "/api/data/v9.2/contacts", {"firstname": "Ada", "lastname": "L"}, "1")
        + f"--{cs}\r\n"
        + _op(
            "POST",
            "/api/data/v9.2/accounts",
            {"name": "Refs", "primarycontactid@odata.bind": "$1"},
            "2",
        )
        + f"--{cs}--\r\n"
    )
    part = f'Content-Type: multipart/mixed; boundary="{cs}"\r\n\r\n' + inner
    r, results = _batch(fresh_api, [part])
    assert r.status_code == 200
    assert [(p.status, p.content_id, p.changeset) for p in results] == [
        (204, "1", 0),
        (204, "2", 0),
    ]
    account = fresh_api.get(
        results[1].headers["OData-EntityId"] + "?$select=_primarycontactid_value"
    )
    assert account.json()["_primarycontactid_value"] in results[0].headers["OData-EntityId"]
    # A failing change set rolls back every operation in it.
    before = fresh_api.emulator.store.count(fresh_api.emulator.model["contact"])  # type: ignore[union-attr]
    inner_bad = (
        f"--{cs}\r\n"
        + _op("POST", "/api/data/v9.2/contacts", {"firstname": "Gone"}, "1")
        + f"--{cs}\r\n"
        + _op("POST", "/api/data/v9.2/accounts", {"name": "y" * 500}, "2")
        + f"--{cs}--\r\n"
    )
    r, results = _batch(
        fresh_api, [f'Content-Type: multipart/mixed; boundary="{cs}"\r\n\r\n' + inner_bad]
    )
    assert r.status_code == 400
    after = fresh_api.emulator.store.count(fresh_api.emulator.model["contact"])  # type: ignore[union-attr]
    assert after == before


def test_batch_limit_is_1000_operations(fresh_api: WebApi) -> None:
    parts = [_op("GET", "/api/data/v9.2/WhoAmI")] * 1001
    r, _ = _batch(fresh_api, parts)
    assert r.status_code == 400
    assert "maximum number of '1000'" in r.json()["error"]["message"]


@needs_fixtures
def test_batch_request_fixture_executes(fresh_api: WebApi) -> None:
    # The docs' request, with its account id pointed at a real row, answers like the docs' response.
    raw = (DOCS / "batch" / "01-batch-request-no-changeset.http").read_text()
    head, _, body = raw.partition("\n\n")
    boundary = head.split('boundary="')[1].split('"')[0]
    account = fresh_api.emulator.row_ids("account", 1)[0]
    body = body.replace("00000000-0000-0000-0000-000000000001", account).replace("\n", "\r\n")
    r = fresh_api.request(
        "POST",
        "$batch",
        data=body.encode(),
        headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
    )
    results = parse_batch_response(r.content, r.headers["Content-Type"])
    # The three creates run; the collection-navigation GET is not emulated and fails, and without
    # continue-on-error the service answers 400 with the failing part alone (fixture 05).
    assert r.status_code == 400
    assert [p.status for p in results] == [400]
    assert "Account_Tasks" in json.loads(results[0].body)["error"]["message"]
    tasks = fresh_api.get_all(
        f"tasks?$select=subject&$filter=_regardingobjectid_value eq {account}"
    )
    assert {"Task 1 in batch", "Task 2 in batch", "Task 3 in batch"} <= {
        t["subject"] for t in tasks
    }
