"""Change tracking, service protection, scripted faults and the request log."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from dynamics_emulator.faults import Fault
from tests.fixtures import DOCS, needs_fixtures
from tests.webapi import WebApi

TRACK = {"Prefer": "odata.track-changes"}


def _delta_token(link: str) -> str:
    return parse_qs(urlsplit(link).query)["$deltatoken"][0]


@needs_fixtures
def test_initial_sync_ends_with_a_delta_link(fresh_api: WebApi) -> None:
    real = json.loads((DOCS / "change-tracking" / "01-initial-response.json").read_text())
    r = fresh_api.get("accounts?$select=name,accountnumber,telephone1,fax", headers=TRACK)
    assert r.status_code == 200
    assert "odata.track-changes" in r.headers["Preference-Applied"]
    body = r.json()
    assert set(body) == set(real)
    assert len(body["value"]) == fresh_api.emulator.counts["account"]
    token = _delta_token(body["@odata.deltaLink"])
    version, stamp = token.split("!")
    assert version.isdigit()
    assert len(stamp) == len("08/22/2017 08:10:44")
    assert body["@odata.deltaLink"].startswith(
        f"{fresh_api.base}/accounts?$select=name,accountnumber,telephone1,fax&$deltatoken="
    )


def test_delta_returns_changes_and_deletions(fresh_api: WebApi) -> None:
    emu = fresh_api.emulator
    first = fresh_api.get("accounts?$select=name", headers=TRACK).json()
    a, b, c = emu.row_ids("account", 3)
    assert fresh_api.request("PATCH", f"accounts({a})", json={"name": "Changed"}).status_code == 204
    assert fresh_api.request("DELETE", f"accounts({b})").status_code == 204
    created = fresh_api.request("POST", "accounts", json={"name": "Brand new"})
    delta = fresh_api.get(first["@odata.deltaLink"], headers=TRACK).json()
    assert delta["@odata.context"].endswith("$metadata#accounts(name)/$delta")
    changed = [v for v in delta["value"] if "reason" not in v]
    deleted = [v for v in delta["value"] if v.get("reason") == "deleted"]
    assert {v["accountid"] for v in changed} == {a, created.headers["OData-EntityId"][-37:-1]}
    assert deleted == [
        {
            "@odata.context": f"{fresh_api.base}/$metadata#accounts/$deletedEntity",
            "id": b,
            "reason": "deleted",
        }
    ]
    assert c not in {v.get("accountid") for v in delta["value"]}
    again = fresh_api.get(delta["@odata.deltaLink"], headers=TRACK).json()
    assert again["value"] == []


def test_delta_pages_when_many_changed(fresh_api: WebApi) -> None:
    emu = fresh_api.emulator
    first = fresh_api.get("contacts?$select=lastname", headers=TRACK).json()
    ids = emu.row_ids("contact", 120)
    emu.update_rows("contact", ids, {"jobtitle": "Changed"})
    seen: list[str] = []
    url: str | None = first["@odata.deltaLink"]
    links = 0
    headers = {"Prefer": "odata.track-changes,odata.maxpagesize=50"}
    while url:
        body = fresh_api.get(url, headers=headers).json()
        seen += [v["contactid"] for v in body["value"]]
        url = body.get("@odata.nextLink")
        links += 1
        if "@odata.deltaLink" in body:
            assert url is None
    assert links == 3
    assert sorted(seen) == sorted(ids)


def test_track_changes_refuses_filter_and_untracked_tables(api: WebApi) -> None:
    r = api.get("accounts?$select=name&$filter=name ne null", headers=TRACK)
    assert r.status_code == 400
    assert "isn't supported when Change Tracking is enabled" in r.json()["error"]["message"]
    r = api.get("new_projects?$select=new_name", headers=TRACK)
    assert r.status_code == 400
    assert "Change tracking is not enabled" in r.json()["error"]["message"]


def test_expired_delta_token(fresh_api: WebApi) -> None:
    first = fresh_api.get("accounts?$select=name", headers=TRACK).json()
    fresh_api.emulator.expire_delta_tokens()
    r = fresh_api.get(first["@odata.deltaLink"], headers=TRACK)
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "0x80044352",
        "message": "Version stamp associated with the client has expired. Please perform a full sync.",
    }


def test_old_delta_token_expires_by_retention(fresh_api: WebApi) -> None:
    old = "1000!01/01/2020 00:00:00"
    r = fresh_api.get(f"accounts?$select=name&$deltatoken={old}", headers=TRACK)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x80044352"


# -- service protection and faults -------------------------------------------------------------


def test_request_budget_answers_429_with_retry_after(fresh_api: WebApi) -> None:
    fresh_api.emulator.protection.configure(max_requests=3, window_seconds=60)
    responses = [fresh_api.get("accounts?$top=1") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    first = int(responses[-1].headers["Retry-After"])
    assert 1 <= first <= 60
    r = fresh_api.get("accounts?$top=1")  # before the Retry-After passed: the wait grows
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > first
    assert r.json()["error"]["code"] == "0x80072322"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_scripted_status_faults(fresh_api: WebApi, status: int) -> None:
    retry = 2 if status == 429 else None
    fresh_api.emulator.faults.script([None, Fault("status", status=status, retry_after=retry)])
    assert fresh_api.get("accounts?$top=1").status_code == 200
    r = fresh_api.get("accounts?$top=1")
    assert r.status_code == status
    assert "error" in r.json()
    if retry:
        assert r.headers["Retry-After"] == "2"
    assert fresh_api.get("accounts?$top=1").status_code == 200
    log = fresh_api.emulator.requests("/accounts")
    assert [e.fault for e in log[-3:]] == [None, "status", None]


def test_connection_reset_fault(fresh_api: WebApi) -> None:
    fresh_api.emulator.faults.add(Fault("reset"), path_contains="/accounts")
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh_api.get("accounts?$top=1")
    assert fresh_api.get("accounts?$top=1").status_code == 200


def test_truncated_body_fault(fresh_api: WebApi) -> None:
    fresh_api.emulator.faults.add(Fault("truncate"))
    # requests sees fewer bytes than Content-Length announced and raises.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        fresh_api.get("accounts?$select=name")


def test_slow_response_fault_trips_a_client_timeout(fresh_api: WebApi) -> None:
    fresh_api.emulator.faults.add(Fault("slow", delay=1.5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        fresh_api.session.get(fresh_api.url("accounts?$top=1"), timeout=0.5)


def test_random_faults_are_reproducible(fresh_api: WebApi) -> None:
    emu = fresh_api.emulator
    kinds = [Fault("status", status=503), Fault("status", status=429, retry_after=1)]

    def run() -> list[int]:
        emu.faults.clear()
        emu.faults.randomly(0.3, kinds, seed=7)
        return [fresh_api.get("WhoAmI").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {503, 429, 200} <= set(first)


def test_privilege_denied_is_403(fresh_api: WebApi) -> None:
    fresh_api.emulator.service.settings.denied_tables["*"] = {"lead"}  # type: ignore[union-attr]
    r = fresh_api.get("leads?$top=1")
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "0x80040220"
    assert "prvReadlead" in err["message"]


def test_whoami_maps_app_to_application_user(api: WebApi) -> None:
    body = api.get("WhoAmI").json()
    assert body["UserId"] == api.emulator.row_ids("systemuser", 1)[0]


def test_skiptoken_survives_url_decoding(api: WebApi) -> None:
    body = api.get("accounts?$select=name", headers={"Prefer": "odata.maxpagesize=3"}).json()
    link = body["@odata.nextLink"]
    token = parse_qs(urlsplit(link).query)["$skiptoken"][0]
    assert token.startswith('<cookie pagenumber="2" pagingcookie="%3ccookie')
    assert "page%3d%221%22" in token
    assert unquote(token) != token
