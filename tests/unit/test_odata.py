"""Query building and literal quoting: table-driven cases plus properties over arbitrary text."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamics_api.odata import (
    build_query,
    encode_option,
    entity_url,
    is_guid,
    key_segment,
    literal,
    quote_string,
)

GUID = "5A3B2C1D-0000-4000-8000-00000000ABCD"
BASE = "https://org.crm.dynamics.com/api/data/v9.2"


def unquote_string(lit: str) -> str:
    """Parse an OData string literal per the ABNF: quoted, `''` for a quote, nothing else."""
    assert lit.startswith("'") and lit.endswith("'") and len(lit) >= 2
    inner = lit[1:-1]
    out = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "'":
            assert inner[i + 1 : i + 2] == "'", f"unescaped quote at {i} in {lit!r}"
            out.append("'")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def end_of_literal(text: str, start: int) -> int:
    """Index just after the string literal that opens at ``text[start]`` (honouring `''`)."""
    assert text[start] == "'"
    i = start + 1
    while i < len(text):
        if text[i] == "'":
            if i + 1 < len(text) and text[i + 1] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    raise AssertionError(f"unterminated literal in {text!r}")


# -- quote_string ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "''", id="empty"),
        pytest.param("Joe", "'Joe'", id="plain"),
        pytest.param("O'Brien", "'O''Brien'", id="one-quote"),
        pytest.param("''", "''''''", id="only-quotes"),
        pytest.param("a'b'c", "'a''b''c'", id="two-quotes"),
        pytest.param("Zoë & Co", "'Zoë & Co'", id="unicode-not-encoded-here"),
    ],
)
def test_quote_string(text: str, expected: str) -> None:
    assert quote_string(text) == expected


@given(st.text())
def test_quote_string_round_trips(text: str) -> None:
    assert unquote_string(quote_string(text)) == text


# -- literal -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "edm", "expected"),
    [
        pytest.param(None, None, "null", id="none"),
        pytest.param(None, "Edm.Guid", "null", id="none-typed"),
        pytest.param(True, None, "true", id="true"),
        pytest.param(False, "Edm.Boolean", "false", id="false"),
        pytest.param(0, None, "0", id="zero"),
        pytest.param(-42, "Edm.Int32", "-42", id="negative-int"),
        pytest.param(10**20, "Edm.Int64", "100000000000000000000", id="big-int"),
        pytest.param(Decimal("12.50"), "Edm.Decimal", "12.50", id="decimal-keeps-scale"),
        pytest.param(Decimal("1E+3"), None, "1000", id="decimal-no-exponent"),
        pytest.param(Decimal("-0.0000001"), None, "-0.0000001", id="decimal-small"),
        pytest.param(1.5, None, "1.5", id="float"),
        pytest.param(1e-7, "Edm.Double", "0.0000001", id="float-no-exponent"),
        pytest.param(-0.0, None, "0.0", id="negative-zero"),
        pytest.param(
            datetime(2024, 11, 1, tzinfo=UTC), "Edm.DateTimeOffset", "2024-11-01T00:00:00Z", id="dt"
        ),
        pytest.param(
            datetime(2024, 11, 1, 1, 2, 3, 450000, tzinfo=UTC),
            None,
            "2024-11-01T01:02:03.450000Z",
            id="dt-microseconds-kept",
        ),
        pytest.param(
            datetime(2024, 11, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),
            None,
            "2024-11-01T00:00:00Z",
            id="dt-offset-to-utc",
        ),
        pytest.param(datetime(2024, 11, 1, 8, 30), None, "2024-11-01T08:30:00Z", id="dt-naive-utc"),
        pytest.param(datetime(999, 1, 2, tzinfo=UTC), None, "0999-01-02T00:00:00Z", id="dt-y999"),
        pytest.param(date(2024, 11, 1), "Edm.Date", "2024-11-01", id="date"),
        pytest.param(uuid.UUID(GUID), None, GUID.lower(), id="uuid"),
        pytest.param(GUID, "Edm.Guid", GUID.lower(), id="guid-string-typed"),
        pytest.param(GUID, None, f"'{GUID}'", id="guid-string-untyped-is-a-string"),
        pytest.param(GUID, "Edm.String", f"'{GUID}'", id="guid-string-as-string"),
        pytest.param("O'Brien", None, "'O''Brien'", id="string"),
        pytest.param("O'Brien", "Edm.String", "'O''Brien'", id="string-typed"),
        pytest.param(123, "Edm.String", "'123'", id="int-for-string-column"),
        pytest.param("2024-11-01T02:00:00+02:00", "Edm.DateTimeOffset", "2024-11-01T00:00:00Z"),
        pytest.param("2024-11-01T00:00:00Z", "Edm.DateTimeOffset", "2024-11-01T00:00:00Z"),
        pytest.param("2024-11-01", "Edm.Date", "2024-11-01", id="date-string"),
        pytest.param("2024-11-01T00:00:00Z", "Edm.Date", "2024-11-01", id="date-from-datetime"),
        pytest.param("TRUE", "Edm.Boolean", "true", id="bool-string"),
        pytest.param("42", "Edm.Int32", "42", id="int-string"),
        pytest.param("12.5000", "Edm.Decimal", "12.5000", id="decimal-string"),
    ],
)
def test_literal(value: Any, edm: str | None, expected: str) -> None:
    assert literal(value, edm) == expected


@pytest.mark.parametrize(
    ("value", "edm", "error"),
    [
        pytest.param(float("nan"), None, ValueError, id="nan"),
        pytest.param(float("inf"), None, ValueError, id="inf"),
        pytest.param(Decimal("-Infinity"), None, ValueError, id="decimal-inf"),
        pytest.param(Decimal("NaN"), None, ValueError, id="decimal-nan"),
        pytest.param("not-a-guid", "Edm.Guid", ValueError, id="bad-guid"),
        pytest.param(f"{GUID}') or (1 eq 1", "Edm.Guid", ValueError, id="guid-injection"),
        pytest.param("yesterday", "Edm.DateTimeOffset", ValueError, id="bad-datetime"),
        pytest.param("2024-13-01", "Edm.Date", ValueError, id="bad-date"),
        pytest.param("1 or 1 eq 1", "Edm.Int32", ValueError, id="number-injection"),
        pytest.param("1.5", "Edm.Int32", ValueError, id="fraction-for-int"),
        pytest.param("yes", "Edm.Boolean", ValueError, id="bad-bool"),
        pytest.param([1], None, TypeError, id="list"),
        pytest.param({"a": 1}, None, TypeError, id="dict"),
        pytest.param(b"x", None, TypeError, id="bytes"),
    ],
)
def test_literal_rejects(value: Any, edm: str | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        literal(value, edm)


@given(st.datetimes(timezones=st.just(UTC)))
def test_datetime_literal_parses_back(value: datetime) -> None:
    text = literal(value)
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == value
    assert ("." in text) == bool(value.microsecond)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_decimal_literal_is_plain_digits(value: Decimal) -> None:
    text = literal(value)
    assert re.fullmatch(r"-?\d+(\.\d+)?", text)
    assert Decimal(text) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_literal_is_exact_plain_digits(value: float) -> None:
    text = literal(value)
    assert re.fullmatch(r"-?\d+(\.\d+)?", text)
    assert float(text) == value


def test_is_guid() -> None:
    assert is_guid(GUID) and is_guid(uuid.uuid4())
    assert not is_guid(GUID + "0") and not is_guid("") and not is_guid(12)


# -- key_segment and entity_url ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "types", "expected"),
    [
        pytest.param({"accountid": GUID}, None, f"({GUID.lower()})", id="pk-guid-string"),
        pytest.param({"accountid": uuid.UUID(GUID)}, None, f"({GUID.lower()})", id="pk-uuid"),
        pytest.param(
            {"accountid": GUID}, {"accountid": "Edm.Guid"}, f"({GUID.lower()})", id="pk-typed"
        ),
        pytest.param(
            {"accountnumber": GUID},
            {"accountnumber": "Edm.String"},
            f"(accountnumber='{GUID}')",
            id="string-key-that-looks-like-a-guid",
        ),
        pytest.param(
            {"_primarycontactid_value": GUID},
            None,
            f"(_primarycontactid_value={GUID.lower()})",
            id="lookup-key",
        ),
        pytest.param({"accountnumber": "A-1"}, None, "(accountnumber='A-1')", id="alt-string"),
        pytest.param(
            {"example_key1": 2, "example_key2": 2},
            None,
            "(example_key1=2,example_key2=2)",
            id="alt-numbers",
        ),
        pytest.param(
            {"firstname": "Joe", "emailaddress1": "abc@example.com"},
            None,
            "(firstname='Joe',emailaddress1='abc%40example.com')",
            id="alt-two-strings",
        ),
        pytest.param({"lastname": "O'Brien"}, None, "(lastname='O''Brien')", id="quote"),
        pytest.param({"code": "a/b"}, None, "(code='a%2Fb')", id="slash"),
        pytest.param({"code": "a?b#c"}, None, "(code='a%3Fb%23c')", id="query-and-fragment"),
        pytest.param({"code": "100%"}, None, "(code='100%25')", id="percent"),
        pytest.param({"code": "a&b+c"}, None, "(code='a%26b%2Bc')", id="amp-plus"),
        pytest.param({"code": "x')/y"}, None, "(code='x''%29%2Fy')", id="paren-escape"),
        pytest.param({"code": "a,b=c"}, None, "(code='a%2Cb%3Dc')", id="comma-equals"),
        pytest.param({"code": "l1\r\nl2"}, None, "(code='l1%0D%0Al2')", id="crlf"),
        pytest.param(
            {"code": "Zoë 東京"}, None, "(code='Zo%C3%AB%20%E6%9D%B1%E4%BA%AC')", id="uni"
        ),
        pytest.param({"flag": True, "n": None}, None, "(flag=true,n=null)", id="bool-null"),
        pytest.param(
            {"when": datetime(2024, 1, 1, tzinfo=UTC)},
            None,
            "(when=2024-01-01T00%3A00%3A00Z)",
            id="datetime",
        ),
    ],
)
def test_key_segment(key: dict[str, Any], types: dict[str, str] | None, expected: str) -> None:
    assert key_segment(key, types) == expected


def test_key_segment_very_long_value() -> None:
    value = "ab/'?#%" * 5000
    seg = key_segment({"code": value})
    assert "/" not in seg and "?" not in seg and "#" not in seg
    assert unquote_string(unquote(seg[len("(code=") : -1])) == value


@pytest.mark.parametrize(
    ("key", "error"),
    [
        pytest.param({}, ValueError, id="empty"),
        pytest.param({"a/b": 1}, ValueError, id="bad-name"),
        pytest.param({"a=1)": 1}, ValueError, id="name-injection"),
        pytest.param({"": 1}, ValueError, id="empty-name"),
        pytest.param({"code": [1]}, TypeError, id="bad-value"),
        pytest.param({"id": "nope"}, ValueError, id="bad-typed-value"),
    ],
)
def test_key_segment_rejects(key: dict[str, Any], error: type[Exception]) -> None:
    types = {"id": "Edm.Guid"}
    with pytest.raises(error):
        key_segment(key, types)


_key_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'/?#%&+=,()\r\n ;:@$")),
        st.characters(codec="utf-8"),
    ),
    max_size=60,
)


@given(_key_text, _key_text)
def test_key_segment_never_escapes_its_literals(first: str, second: str) -> None:
    seg = key_segment({"a": first, "b": second})
    # Nothing in the raw segment can end the path segment, start a query or a fragment.
    assert not any(ch in seg for ch in "/?#\r\n ")
    assert seg.isascii()
    assert seg.startswith("(") and seg.endswith(")")
    # Quotes delimit exactly the two literals: each one ends where the key says it does.
    assert seg.startswith("(a='")
    end_a = end_of_literal(seg, len("(a="))
    assert seg[end_a : end_a + 4] == ",b='"
    end_b = end_of_literal(seg, end_a + 3)
    assert end_b == len(seg) - 1
    # Decoding each literal gives back the OData literal, and parsing that the value.
    assert unquote(seg[3:end_a]) == literal(first)
    assert unquote_string(unquote(seg[3:end_a])) == first
    assert unquote_string(unquote(seg[end_a + 3 : end_b])) == second


@given(_key_text)
def test_entity_url_path_is_stable(value: str) -> None:
    url = entity_url(BASE, "contacts", {"lastname": value})
    parts = urlsplit(url)
    assert parts.query == "" and parts.fragment == ""
    assert parts.path.count("/") == len(["api", "data", "v9.2", "contacts(...)"])
    assert parts.path.startswith("/api/data/v9.2/contacts(lastname='")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param(None, f"{BASE}/accounts", id="collection"),
        pytest.param(GUID, f"{BASE}/accounts({GUID.lower()})", id="guid"),
        pytest.param(uuid.UUID(GUID), f"{BASE}/accounts({GUID.lower()})", id="uuid"),
        pytest.param({"accountnumber": "A 1"}, f"{BASE}/accounts(accountnumber='A%201')", id="alt"),
    ],
)
def test_entity_url(key: Any, expected: str) -> None:
    assert entity_url(BASE + "/", "accounts", key) == expected


@pytest.mark.parametrize(
    ("entity_set", "key"),
    [
        pytest.param("accounts/../x", None, id="set-traversal"),
        pytest.param("accounts?x=1", None, id="set-query"),
        pytest.param("accounts", "not-a-guid", id="bad-guid"),
        pytest.param("accounts", f"{GUID})/x", id="guid-injection"),
    ],
)
def test_entity_url_rejects(entity_set: str, key: Any) -> None:
    with pytest.raises(ValueError, match=r"valid|GUID"):
        entity_url(BASE, entity_set, key)


# -- build_query -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, "", id="empty"),
        pytest.param({"select": ["name", "revenue"]}, "$select=name,revenue", id="select-list"),
        pytest.param({"select": "name,revenue"}, "$select=name,revenue", id="select-str"),
        pytest.param({"select": []}, "", id="select-empty"),
        pytest.param(
            {"filter": f"modifiedon ge {literal(datetime(2024, 1, 1, tzinfo=UTC))}"},
            "$filter=modifiedon%20ge%202024-01-01T00:00:00Z",
            id="filter-datetime",
        ),
        pytest.param(
            {"filter": f"lastname eq {literal('O’Brien & Sons+1')}"},
            "$filter=lastname%20eq%20'O%E2%80%99Brien%20%26%20Sons%2B1'",
            id="filter-amp-plus-unicode",
        ),
        pytest.param(
            {"filter": f"name eq {literal('a#b%c=d;e')}"},
            "$filter=name%20eq%20'a%23b%25c%3Dd%3Be'",
            id="filter-hash-percent-equals",
        ),
        pytest.param(
            {"filter": "contains(name,'x') and primarycontactid/fullname eq 'y'"},
            "$filter=contains(name,'x')%20and%20primarycontactid/fullname%20eq%20'y'",
            id="filter-functions-readable",
        ),
        pytest.param(
            {"orderby": ["modifiedon asc", "accountid asc"]},
            "$orderby=modifiedon%20asc,accountid%20asc",
            id="orderby",
        ),
        pytest.param({"top": 10}, "$top=10", id="top"),
        pytest.param({"top": 0}, "$top=0", id="top-zero"),
        pytest.param({"count": True}, "$count=true", id="count"),
        pytest.param(
            {"select": ["name"], "filter": "statecode eq 0", "top": 5, "count": True},
            "$select=name&$filter=statecode%20eq%200&$top=5&$count=true",
            id="order-of-options",
        ),
        pytest.param(
            {"extra": {"$expand": "Account_Tasks($select=subject;$top=1)"}},
            "$expand=Account_Tasks($select%3Dsubject%3B$top%3D1)",
            id="expand-nested",
        ),
        pytest.param(
            {"filter": "name eq @p1", "extra": {"@p1": "it's"}},
            "$filter=name%20eq%20@p1&@p1=it's",
            id="alias-raw-text",
        ),
        pytest.param({"extra": {"@p2": 5}}, "@p2=5", id="alias-literal"),
        pytest.param({"extra": {"@p3": True}}, "@p3=true", id="alias-bool"),
    ],
)
def test_build_query(kwargs: dict[str, Any], expected: str) -> None:
    assert build_query(**kwargs) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"top": -1}, id="negative-top"),
        pytest.param({"top": True}, id="bool-top"),
        pytest.param({"extra": {"a&b": "1"}}, id="name-injection"),
        pytest.param({"extra": {"$filter=x&$top": "1"}}, id="name-with-equals"),
    ],
)
def test_build_query_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"valid|top"):
        build_query(**kwargs)


_any_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'/?#%&+=,()\r\n ;:@$[]\"")), st.characters(codec="utf-8")
    ),
    max_size=80,
)


@given(_any_text, _any_text)
def test_build_query_values_round_trip(name_value: str, alias_value: str) -> None:
    flt = f"name eq {literal(name_value)}"
    query = build_query(select=["name"], filter=flt, extra={"@p1": alias_value})
    assert query.isascii()
    assert not any(ch in query for ch in "#+ \r\n")
    assert query.count("&") == 2  # a value cannot add an option
    decoded = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    assert decoded == [("$select", "name"), ("$filter", flt), ("@p1", alias_value)]


def test_encode_option_long_value() -> None:
    value = "x&y=" * 10000
    assert encode_option("$filter", value) == "$filter=" + "x%26y%3D" * 10000
