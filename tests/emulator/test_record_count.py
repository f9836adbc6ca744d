"""``RetrieveTotalRecordCount``: a recent snapshot of row counts per table, in the service's
``EntityRecordCountCollection`` shape (parallel ``Keys`` and ``Values``)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.emulator._realism import SMALL, small_api
from tests.webapi import WebApi

ALIAS = 'RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account","contact"]'


def test_counts_with_a_parameter_alias(api: WebApi) -> None:
    r = api.get(ALIAS)
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"] == (
        f"{api.base}/$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse"
    )
    counts = api.emulator.counts
    assert body["EntityRecordCountCollection"] == {
        "Count": 2,
        "IsReadOnly": False,
        "Keys": ["account", "contact"],
        "Values": [counts["account"], counts["contact"]],
    }


@pytest.mark.parametrize(
    "path",
    [
        'RetrieveTotalRecordCount(EntityNames=["contact"])',
        "RetrieveTotalRecordCount(EntityNames=['contact'])",
        "RetrieveTotalRecordCount(EntityNames=@tables)?@tables=" + quote('["contact"]'),
    ],
)
def test_inline_and_encoded_forms(api: WebApi, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 200, r.text
    collection = r.json()["EntityRecordCountCollection"]
    assert collection["Keys"] == ["contact"]
    assert collection["Values"] == [api.emulator.counts["contact"]]


def test_the_count_is_a_snapshot_that_lags_writes() -> None:
    with small_api() as api:
        first = api.get(ALIAS).json()["EntityRecordCountCollection"]["Values"]
        assert (
            api.request("POST", "accounts", json={"name": "After the snapshot"}).status_code == 204
        )
        assert api.get(ALIAS).json()["EntityRecordCountCollection"]["Values"] == first
        api.emulator.snapshot_record_counts()
        again = api.get(ALIAS).json()["EntityRecordCountCollection"]["Values"]
    assert first == [SMALL["account"], SMALL["contact"]]
    assert again == [SMALL["account"] + 1, SMALL["contact"]]


def test_beyond_the_5000_cap_of_count() -> None:
    with small_api(rows={"account": 5003}) as api:
        assert api.get("accounts/$count").text == "5000"
        r = api.get('RetrieveTotalRecordCount(EntityNames=["account"])')
    assert r.json()["EntityRecordCountCollection"]["Values"] == [5003]


def test_an_unknown_table_is_an_error(api: WebApi) -> None:
    r = api.get('RetrieveTotalRecordCount(EntityNames=["account","nosuchtable"])')
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "0x80094005"
    assert "nosuchtable" in err["message"]


@pytest.mark.parametrize(
    "path",
    [
        "RetrieveTotalRecordCount()",
        "RetrieveTotalRecordCount(EntityNames=@p1)",
        'RetrieveTotalRecordCount(EntityNames="account")',
        "RetrieveTotalRecordCount(EntityNames=[])",
    ],
)
def test_a_missing_or_malformed_parameter_is_a_bad_request(api: WebApi, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x80060888"


def test_whoami_with_parentheses(api: WebApi) -> None:
    assert api.get("WhoAmI()").json()["UserId"] == api.get("WhoAmI").json()["UserId"]
