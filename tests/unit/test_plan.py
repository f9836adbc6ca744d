"""The target's per-record plan: payload encoding and key quoting, without I/O."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamics_api.errors import ConfigError
from dynamics_api.metadata import EntityModel, parse_metadata
from dynamics_emulator.csdl import render_csdl
from dynamics_emulator.model import standard_model
from target_dynamics.plan import InvalidRecord, StreamOptions, build_plan, parse_stream_options

MODEL: EntityModel = parse_metadata(render_csdl(standard_model()))
BY_NUMBER = build_plan("account", StreamOptions(key=("accountnumber",)), MODEL)


def test_payload_types_and_binds() -> None:
    plan = build_plan("account", StreamOptions(mode="update"), MODEL)
    op, key = plan.operation(
        {
            "accountid": "AAAAAAAA-0000-0000-0000-000000000001",
            "revenue": Decimal("12345678901234.5678"),
            "lastusedincampaign": "2024-01-02T03:04:05+01:00",
            "_primarycontactid_value": "00000000-0000-0000-0000-0000000000c1",
            "parentaccountid": None,
            "_sdc_extracted_at": "x",
            "name@OData.Community.Display.V1.FormattedValue": "ignored",
        }
    )
    assert op.url == "accounts(aaaaaaaa-0000-0000-0000-000000000001)"
    assert op.headers == {"If-Match": "*"}
    assert key == {"accountid": "AAAAAAAA-0000-0000-0000-000000000001"}
    assert op.body is not None
    assert b'"revenue":12345678901234.5678' in op.body  # exact, a JSON number
    body = orjson.loads(op.body)
    assert body == {
        "revenue": 12345678901234.5678,
        "lastusedincampaign": "2024-01-02T02:04:05Z",
        "primarycontactid@odata.bind": "/contacts(00000000-0000-0000-0000-0000000000c1)",
        "parentaccountid@odata.bind": None,
    }


def test_custom_nav_name_case_and_date() -> None:
    plan = build_plan("new_project", StreamOptions(mode="create"), MODEL)
    op, _ = plan.operation(
        {
            "new_projectid": "00000000-0000-0000-0000-000000000009",
            "_new_accountid_value": "00000000-0000-0000-0000-000000000001",
            "new_startdate": "2024-05-06",
        }
    )
    assert op.headers == {"If-None-Match": "*"}
    assert op.body is not None
    body = orjson.loads(op.body)
    assert body["new_AccountId@odata.bind"] == "/accounts(00000000-0000-0000-0000-000000000001)"
    assert body["new_startdate"] == "2024-05-06"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"accountnumber": "A", "nope": 1}, "does not exist"),
        ({"accountnumber": "A", "createdon": "2024-01-01T00:00:00Z"}, "read-only"),
        ({"accountnumber": "A", "numberofemployees": 1.5}, "whole number"),
        ({"accountnumber": "A", "numberofemployees": 2**40}, "out of range"),
        ({"accountnumber": "A", "creditonhold": "yes"}, "true or false"),
        ({"accountnumber": "A", "lastusedincampaign": "soon"}, "date-time"),
        ({"accountnumber": "A", "_primarycontactid_value": "x"}, "GUID"),
        ({"name": "no key"}, "missing"),
    ],
)
def test_invalid_records(record: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        BY_NUMBER.operation(record)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="not an alternate key"):
        build_plan("account", StreamOptions(key=("name",)), MODEL)
    with pytest.raises(ConfigError, match="mode"):
        parse_stream_options({"account": {"mode": "merge"}})
    with pytest.raises(ConfigError, match="unknown option"):
        parse_stream_options({"account": {"keys": ["x"]}})
    with pytest.raises(ConfigError, match="can point at account, contact"):
        build_plan(
            "incident",
            parse_stream_options({"incident": {"lookups": {"customerid": "lead"}}})["incident"],
            MODEL,
        )


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=2000))
def test_alternate_key_values_never_change_the_path(value: str) -> None:
    op, _ = BY_NUMBER.operation({"accountnumber": value, "description": value})
    assert op.url.startswith("accounts(accountnumber='") and op.url.endswith("')")
    inner = op.url[len("accounts(accountnumber=") : -1]
    assert not any(c in inner for c in " \r\n\t")  # percent-encoded, one request line
    assert "/" not in inner and "?" not in inner and "#" not in inner
    assert unquote(inner) == "'" + value.replace("'", "''") + "'"
    assert op.body is not None
    assert orjson.loads(op.body)["description"] == value
