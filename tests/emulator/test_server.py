"""The emulator over real HTTPS, with a real msal token: queries, paging, annotations, errors."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from dynamics_emulator.server import Emulator
from tests.fixtures import DOCS, needs_fixtures
from tests.webapi import WebApi


def _fixture(name: str) -> dict:
    return json.loads((DOCS / name).read_text())


# -- transport and auth ---------------------------------------------------------------------------


def test_https_is_trusted_only_through_the_ca_bundle(emulator: Emulator) -> None:
    url = f"{emulator.url}/api/data/v9.2/"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(
            url, timeout=10, verify=True
        )  # the system trust store does not know the private CA
    r = requests.get(url, timeout=10, verify=emulator.ca_bundle)
    assert r.status_code == 401  # trusted, and now the service asks for a token


def test_missing_token_gets_the_bearer_challenge(emulator: Emulator) -> None:
    r = requests.get(
        f"{emulator.url}/api/data/v9.2/accounts", verify=emulator.ca_bundle, timeout=10
    )
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization_uri=")
    assert f"resource_id={emulator.url}/" in challenge
    assert f"/{emulator.tenant_id}/oauth2/authorize" in challenge


def test_bad_token_is_refused(emulator: Emulator) -> None:
    r = requests.get(
        f"{emulator.url}/api/data/v9.2/accounts",
        verify=emulator.ca_bundle,
        headers={"Authorization": "Bearer not-a-token"},
        timeout=10,
    )
    assert r.status_code == 401


def test_revoked_tokens_get_401_until_reacquired(fresh_api: WebApi) -> None:
    assert fresh_api.get("accounts?$top=1").status_code == 200
    fresh_api.emulator.revoke_all_tokens()
    assert fresh_api.get("accounts?$top=1").status_code == 401
    fresh_api.refresh_token()  # a client that handles 401 by re-acquiring recovers
    assert fresh_api.get("accounts?$top=1").status_code == 200


# -- service document, metadata ------------------------------------------------------------------


def test_service_document_lists_entity_sets(api: WebApi) -> None:
    r = api.get("")
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"].endswith("/api/data/v9.2/$metadata")
    names = {v["name"] for v in body["value"]}
    assert {
        "accounts",
        "contacts",
        "incidents",
        "activitypointers",
        "emails",
        "new_projects",
    } <= names
    assert all(v["kind"] == "EntitySet" for v in body["value"])


def test_metadata_is_csdl(api: WebApi) -> None:
    r = api.get("$metadata")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/xml")
    assert b'Namespace="Microsoft.Dynamics.CRM"' in r.content
    assert b'<EntitySet Name="accounts"' in r.content


@pytest.mark.parametrize("version", ["v9.0", "v9.1", "v9.2"])
def test_version_is_echoed_in_links(api: WebApi, version: str) -> None:
    r = api.get(
        f"{api.emulator.url}/api/data/{version}/accounts?$select=name",
        headers={"Prefer": "odata.maxpagesize=2"},
    )
    body = r.json()
    assert (
        body["@odata.context"] == f"{api.emulator.url}/api/data/{version}/$metadata#accounts(name)"
    )
    assert body["@odata.nextLink"].startswith(f"{api.emulator.url}/api/data/{version}/accounts?")


# -- query shape ----------------------------------------------------------------------------------


@needs_fixtures
def test_collection_shape_matches_the_real_capture(api: WebApi) -> None:
    real = _fixture("query/01-paging-contacts-page1.json")
    r = api.get("contacts?$select=fullname", headers={"Prefer": "odata.maxpagesize=2"})
    assert r.status_code == 200
    assert r.headers["OData-Version"] == "4.0"
    assert r.headers["Content-Type"].startswith("application/json; odata.metadata=minimal")
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=2"
    ours = r.json()
    assert set(ours) == set(real)
    assert [set(v) for v in ours["value"]] == [set(v) for v in real["value"]]
    assert ours["value"][0]["@odata.etag"].startswith('W/"')


def _cookie_shape(next_link: str) -> tuple[str, str]:
    token = parse_qs(urlsplit(next_link).query)["$skiptoken"][0]
    return token, unquote(token.split('pagingcookie="')[1].split('"')[0])


@needs_fixtures
def test_paging_cookie_has_the_real_shape(api: WebApi) -> None:
    real = _fixture("query/01-paging-contacts-page1.json")["@odata.nextLink"]
    r = api.get("contacts?$select=fullname", headers={"Prefer": "odata.maxpagesize=2"})
    ours = r.json()["@odata.nextLink"]
    # Both: an outer <cookie pagenumber=.. pagingcookie=.. istracking=..> whose inner cookie is
    # URL-encoded once more, holding the key's last and first values as upper-case braced GUIDs.
    assert "$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie" in real
    assert "$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22%253ccookie" in ours
    _, inner = _cookie_shape(ours)
    assert inner.startswith('<cookie page="1"><contactid last="{')
    assert ours.startswith(api.url("contacts?$select=fullname&$skiptoken="))


def test_primary_key_and_etag_always_returned(api: WebApi) -> None:
    row = api.get("accounts?$select=name&$top=1").json()["value"][0]
    assert set(row) == {"@odata.etag", "name", "accountid"}
    full = api.get(f"accounts({row['accountid']})").json()
    assert row["@odata.etag"] == f'W/"{full["versionnumber"]}"'


def test_money_brings_currency_and_four_decimals(api: WebApi) -> None:
    r = api.get("accounts?$select=revenue&$filter=revenue ne null&$top=1")
    row = r.json()["value"][0]
    assert set(row) == {"@odata.etag", "revenue", "_transactioncurrencyid_value", "accountid"}
    raw = r.text
    assert f'"revenue":{row["revenue"]:.4f}' in raw


def test_no_select_returns_every_column_with_explicit_nulls(api: WebApi) -> None:
    row = api.get("accounts?$top=1").json()["value"][0]
    props = api.emulator.model["account"].by_property()
    assert set(props) <= set(row)
    assert any(v is None for v in row.values())


def test_all_rows_page_by_page_without_loss_or_duplicates(api: WebApi) -> None:
    expected = api.emulator.counts["account"]
    rows = api.get_all("accounts?$select=accountid", page_size=37)
    ids = [r["accountid"] for r in rows]
    assert len(ids) == expected
    assert len(set(ids)) == expected


def test_incremental_order_pages_through_shared_timestamps(api: WebApi) -> None:
    # Order by modifiedon then key, the way the tap pages; many rows share one second.
    rows = api.get_all(
        "contacts?$select=modifiedon&$orderby=modifiedon asc,contactid asc", page_size=50
    )
    keys = [(r["modifiedon"], r["contactid"]) for r in rows]
    assert keys == sorted(keys)
    assert len(set(keys)) == api.emulator.counts["contact"]
    seconds: dict[str, int] = {}
    for m, _ in keys:
        seconds[m] = seconds.get(m, 0) + 1
    assert max(seconds.values()) > 50  # the seed makes pages end inside a shared second


def test_orderby_descending_and_nulls(api: WebApi) -> None:
    rows = api.get_all("accounts?$select=revenue&$orderby=revenue desc,name asc", page_size=40)
    revenues = [r["revenue"] for r in rows]
    non_null = [r for r in revenues if r is not None]
    assert non_null == sorted(non_null, reverse=True)
    # SQL Server (and so Dataverse) sorts nulls first ascending, last descending.
    assert revenues[len(non_null) :] == [None] * (len(revenues) - len(non_null))
    assert len(rows) == api.emulator.counts["account"]


def test_top_and_count(api: WebApi) -> None:
    body = api.get("accounts?$select=name&$top=3&$count=true").json()
    assert len(body["value"]) == 3
    assert "@odata.nextLink" not in body
    assert body["@odata.count"] == min(api.emulator.counts["account"], 5000)
    n = api.get("accounts/$count")
    assert n.headers["Content-Type"].startswith("text/plain")
    assert int(n.text) == min(api.emulator.counts["account"], 5000)


def test_maxpagesize_is_clamped_to_5000(api: WebApi) -> None:
    r = api.get("accounts?$select=name", headers={"Prefer": "odata.maxpagesize=20000"})
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=5000"


def test_filter_with_guid_datetime_and_functions(api: WebApi) -> None:
    some = api.get(
        "contacts?$select=_parentcustomerid_value,lastname,createdon"
        "&$filter=_parentcustomerid_value ne null&$top=1"
    ).json()["value"][0]
    pid = some["_parentcustomerid_value"]
    for f in (f"_parentcustomerid_value eq {pid}", f"_parentcustomerid_value eq '{pid}'"):
        rows = api.get_all(f"contacts?$select=contactid&$filter={f}")
        assert some["contactid"] in {r["contactid"] for r in rows}
    created = some["createdon"]
    rows = api.get_all(f"contacts?$select=createdon&$filter=createdon ge {created}")
    assert rows and all(r["createdon"] >= created for r in rows)
    prefix = some["lastname"][:3]
    rows = api.get_all(f"contacts?$select=lastname&$filter=startswith(lastname,'{prefix.upper()}')")
    assert rows and all(r["lastname"].lower().startswith(prefix.lower()) for r in rows)


def test_unsupported_query_answers_400_never_a_wrong_result(api: WebApi) -> None:
    for q in (
        "accounts?$filter=primarycontactid/fullname eq 'x'",
        "accounts?$filter=Microsoft.Dynamics.CRM.LastXDays(PropertyName='modifiedon',PropertyValue=3)",
        "accounts?$skip=10",
        "accounts?$expand=primarycontactid",
        "accounts?$select=nosuchcolumn",
        "accounts?$filter=name eq 'unterminated",
    ):
        r = api.get(q)
        assert r.status_code == 400, q
        err = r.json()["error"]
        assert set(err) >= {"code", "message"} and err["message"], q


def test_unknown_entity_set_is_404(api: WebApi) -> None:
    r = api.get("nosuchthings")
    assert r.status_code == 404
    assert "nosuchthings" in r.json()["error"]["message"]


def test_bad_paging_cookie_is_refused(api: WebApi) -> None:
    r = api.get("accounts?$skiptoken=garbage")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "0x8004112A"


# -- annotations -----------------------------------------------------------------------------------


@needs_fixtures
def test_formatted_values_and_lookup_annotations(api: WebApi) -> None:
    real = _fixture("query/03-accounts-formatted-values.json")["value"][0]
    r = api.get(
        "accounts?$select=name,revenue,_primarycontactid_value,customertypecode,modifiedon,_ownerid_value"
        "&$filter=revenue ne null and _primarycontactid_value ne null"
        " and customertypecode ne null&$top=1",
        headers={"Prefer": 'odata.include-annotations="*"'},
    )
    assert r.status_code == 200
    row = r.json()["value"][0]
    fv = "@OData.Community.Display.V1.FormattedValue"
    for key in real:
        if key.endswith(fv):
            assert key in row, key
    labels = api.emulator.model["account"].attributes["customertypecode"].options or {}
    assert row[f"customertypecode{fv}"] in labels.values()
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] in {"systemuser", "team"}
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == "ownerid"
    # Annotations come before the value they annotate, as on the wire.
    keys = list(row)
    assert keys.index(f"revenue{fv}") < keys.index("revenue")


def test_annotations_on_every_page(api: WebApi) -> None:
    headers = {
        "Prefer": 'odata.include-annotations="OData.Community.Display.V1.FormattedValue",'
        "odata.maxpagesize=5"
    }
    body = api.get("accounts?$select=statuscode", headers=headers).json()
    body2 = api.get(body["@odata.nextLink"], headers=headers).json()
    for b in (body, body2):
        assert all("statuscode@OData.Community.Display.V1.FormattedValue" in v for v in b["value"])


# -- single entity ---------------------------------------------------------------------------------


def test_retrieve_by_id_and_alternate_key(api: WebApi) -> None:
    row = api.get("accounts?$select=accountnumber&$filter=accountnumber ne null&$top=1").json()[
        "value"
    ][0]
    by_id = api.get(f"accounts({row['accountid']})?$select=accountnumber")
    assert by_id.status_code == 200
    assert by_id.json()["@odata.context"].endswith("$metadata#accounts(accountnumber)/$entity")
    assert by_id.headers["ETag"].startswith('W/"')
    by_key = api.get(f"accounts(accountnumber='{row['accountnumber']}')?$select=accountnumber")
    assert by_key.json()["accountid"] == row["accountid"]


@needs_fixtures
def test_missing_row_is_404_like_the_service(api: WebApi) -> None:
    real = _fixture("errors/01-404-if-match-star-not-found.json")
    r = api.get("accounts(00000000-0000-0000-0000-000000000001)")
    assert r.status_code == 404
    assert r.json() == real


def test_undeclared_alternate_key_is_400(api: WebApi) -> None:
    r = api.get("accounts(name='Contoso')")
    assert r.status_code == 400


def test_activitypointer_unions_activity_tables(api: WebApi) -> None:
    rows = api.get_all("activitypointers?$select=activitytypecode")
    kinds = {r["activitytypecode"] for r in rows}
    assert kinds == {"email", "phonecall", "task"}
    expected = sum(api.emulator.counts[t] for t in ("email", "phonecall", "task"))
    assert len(rows) == expected


def test_request_log_keeps_no_authorization(api: WebApi) -> None:
    api.emulator.clear_log()
    api.get("accounts?$top=1", headers={"Prefer": "odata.maxpagesize=1"})
    entries = api.emulator.requests("/api/data/v9.2/accounts")
    assert entries and entries[-1].status == 200
    assert "authorization" not in entries[-1].headers
    assert entries[-1].headers["prefer"] == "odata.maxpagesize=1"
    assert entries[-1].query == "$top=1"


@needs_fixtures
def test_serves_a_real_csdl_with_rows_that_fit() -> None:
    from tests.fixtures import CRM_SCHEMA

    with Emulator(csdl_path=CRM_SCHEMA) as emu, WebApi(emu) as client:
        meta = client.get("$metadata")
        assert meta.content == CRM_SCHEMA.read_bytes()
        assert len(emu.counts) > 150  # every concrete table of the real org has rows
        rows = client.get_all("accounts?$select=name,_parentaccountid_value,createdon")
        assert len(rows) == emu.counts["account"] > 0
        custom = client.get_all("he_employees")
        assert len(custom) == emu.counts["he_employee"]
        props = emu.model["he_employee"].by_property()
        assert set(props) <= set(custom[0])


def test_msal_authorization_code_flow_against_the_running_emulator(
    fresh_emulator: Emulator,
) -> None:
    """The delegated flow end to end on the real server: authorize, redeem with PKCE, call the API
    as the user, refresh with a rotated refresh token after the access token expires."""
    import msal

    from dynamics_emulator.harness import PinnedSession
    from tests.emulator.test_identity import _HiddenInputs

    emu = fresh_emulator
    http = PinnedSession(emu.ca_bundle)
    app = msal.PublicClientApplication(
        emu.public_client_id, authority=emu.authority, instance_discovery=False, http_client=http
    )
    flow = app.initiate_auth_code_flow(
        [f"{emu.url}/user_impersonation"],
        redirect_uri="http://localhost:8400",
        response_mode="form_post",
    )
    page = http.get(flow["auth_uri"], allow_redirects=False, timeout=10)
    assert page.status_code == 200
    form = _HiddenInputs()
    form.feed(page.text)
    result = app.acquire_token_by_auth_code_flow(flow, form.fields)
    assert "access_token" in result, result.get("error_description")
    assert "refresh_token" in result
    me = http.get(
        f"{emu.url}/api/data/v9.2/WhoAmI",
        headers={"Authorization": f"Bearer {result['access_token']}"},
        timeout=10,
    ).json()
    users = emu.row_ids("systemuser", 50)
    assert me["UserId"] in users
    assert me["UserId"] != users[0]  # a signed-in user, not the application user
    emu.expire_access_tokens()
    (account,) = app.get_accounts()
    refreshed = app.acquire_token_silent(
        [f"{emu.url}/user_impersonation"], account=account, force_refresh=True
    )
    assert refreshed is not None and "access_token" in refreshed
    assert refreshed["refresh_token"] != result["refresh_token"]  # rotated
    stale = app.acquire_token_by_refresh_token(
        result["refresh_token"], scopes=[f"{emu.url}/user_impersonation"]
    )
    assert stale.get("error") == "invalid_grant"


def test_default_page_is_5000_rows_without_prefer() -> None:
    counts = {"account": 5003, "transactioncurrency": 4, "systemuser": 3}
    with Emulator(counts=counts) as emu, WebApi(emu) as client:
        body = client.get("accounts?$select=name").json()
        assert len(body["value"]) == 5000
        rest = client.get(body["@odata.nextLink"]).json()
        assert len(rest["value"]) == 3
        assert "@odata.nextLink" not in rest
        top = client.get("accounts?$select=name&$top=7").json()
        assert len(top["value"]) == 7


def test_entitydefinitions_string_lengths(api: WebApi) -> None:
    path = (
        "EntityDefinitions(LogicalName='account')/Attributes/"
        "Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=LogicalName,MaxLength"
    )
    body = api.get(path).json()
    lengths = {v["LogicalName"]: v["MaxLength"] for v in body["value"]}
    assert lengths["name"] == 160
    assert lengths["accountnumber"] == 20
    memo = api.get(path.replace("StringAttributeMetadata", "MemoAttributeMetadata")).json()
    assert {v["LogicalName"] for v in memo["value"]} >= {"description"}
    assert (
        api.get(
            "EntityDefinitions(LogicalName='nosuch')/Attributes/"
            "Microsoft.Dynamics.CRM.StringAttributeMetadata"
        ).status_code
        == 404
    )
    assert api.get("EntityDefinitions").status_code == 400  # not emulated: a clear 400


def test_entitydefinitions_states(api: WebApi) -> None:
    """StateAttributeMetadata: each state with its default status, as the service answers it."""
    path = (
        "EntityDefinitions(LogicalName='{}')/Attributes/Microsoft.Dynamics.CRM."
        "StateAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)"
    )
    body = api.get(path.format("account")).json()
    assert [v["LogicalName"] for v in body["value"]] == ["statecode"]
    options = {o["Value"]: o for o in body["value"][0]["OptionSet"]["Options"]}
    assert options[0]["InvariantName"] == "Active" and options[0]["DefaultStatus"] == 1
    assert options[1]["InvariantName"] == "Inactive" and options[1]["DefaultStatus"] == 2
    assert options[1]["Label"]["UserLocalizedLabel"]["Label"] == "Inactive"
    cases = api.get(path.format("incident")).json()["value"][0]["OptionSet"]["Options"]
    assert [(o["InvariantName"], o["DefaultStatus"]) for o in cases] == [
        ("Active", 1),
        ("Resolved", 5),
        ("Cancelled", 6),
    ]
    # A table without statecode answers an empty list, as the service does.
    assert api.get(path.format("team")).json()["value"] == []
