"""RECORD lines cut from a page's bytes, and the links read from its tail."""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import orjson
import pytest

from dynamics_api.errors import ApiError, api_error
from tap_dynamics.lines import Lines
from tap_dynamics.pages import (
    MIN_PAGE_SIZE,
    Column,
    Cut,
    _links,
    first_rows,
    links_in_file,
    links_of,
    rows_of,
    size,
    smaller_page,
)

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ROWS = [
    {
        "@odata.etag": 'W/"1000001"',
        "accountid": "3f0f8a4e-7d4e-ee11-9b1c-000d3a1f2b4c",
        "name": 'Fuji K\u014dgy\u014d "Optics", \\ LLC\n',
        "revenue": Decimal("922337203685477.1234"),
        "numberofemployees": 12,
        "creditonhold": False,
        "description": None,
        "modifiedon": "2026-10-29T20:06:00Z",
    },
    {
        "@odata.etag": 'W/"1000002"',
        "accountid": "4f0f8a4e-7d4e-ee11-9b1c-000d3a1f2b4c",
        "name": "]}{[",
        "revenue": Decimal("1E+2"),
        "numberofemployees": None,
        "creditonhold": True,
        "description": "\u00e9\U0001f600",
        "modifiedon": "2026-10-29T20:06:01Z",
    },
]
COLUMNS = [k for k in ROWS[0] if k != "@odata.etag"]


_service_json = msgspec.json.Encoder(decimal_format="number").encode


def _page(rows: list[dict[str, object]], **links: str) -> bytes:
    body = {"@odata.context": "https://org/api/data/v9.2/$metadata#accounts", "value": rows}
    body.update({f"@odata.{k}": v for k, v in links.items()})
    return _service_json(body)


_exact = msgspec.json.Decoder(float_hook=Decimal).decode


def _records(data: bytes) -> list[dict[str, object]]:
    return [_exact(line) for line in data.split(b"\n") if line]


def test_a_page_becomes_record_messages_with_the_rows_as_sent() -> None:
    page = Lines("account", COLUMNS, "modifiedon").page(_page(ROWS), WHEN)
    assert page is not None
    messages = _records(page.data)
    assert [m["record"] for m in messages] == [
        {k: v for k, v in r.items() if k != "@odata.etag"} for r in ROWS
    ]
    assert all(
        m["type"] == "RECORD"
        and m["stream"] == "account"
        and m["time_extracted"] == "2026-01-02T03:04:05.678901Z"
        and "version" not in m
        for m in messages
    )
    assert (page.records, page.first, page.last) == (
        2,
        ROWS[0]["modifiedon"],
        ROWS[1]["modifiedon"],
    )
    # Numbers keep the service's own text: no float on the way.
    assert b"922337203685477.1234" in page.data and b'"revenue":1E+2' in page.data


def test_the_service_text_is_kept_byte_for_byte() -> None:
    row = b'{"@odata.etag":"W/\\"7\\"","accountid":"a","name":"caf\\u00e9 \\/ x","modifiedon":null}'
    body = b'{"@odata.context":"c","value":[' + row + b"]}"
    page = Lines("account", ["accountid", "name", "modifiedon"], "modifiedon").page(body, WHEN)
    assert page is not None
    assert page.data.startswith(
        b'{"type":"RECORD","stream":"account","record":{"accountid":"a","name":"caf\\u00e9 \\/ x"'
    )
    assert (page.first, page.last) == (None, None)


def test_a_version_and_rows_without_an_etag() -> None:
    rows = [{k: v for k, v in r.items() if k != "@odata.etag"} for r in ROWS]
    page = Lines("account", COLUMNS, None, version=1700000000).page(_page(rows), WHEN)
    assert page is not None and page.first is None
    messages = _records(page.data)
    assert [m["record"] for m in messages] == rows
    assert all(m["version"] == 1700000000 for m in messages)


@pytest.mark.parametrize(
    "row",
    [
        {**ROWS[0], "_transactioncurrencyid_value": None},  # a column the service added
        {k: v for k, v in ROWS[0].items() if k != "name"},  # a selected column missing
        {**ROWS[0], "name@OData.Community.Display.V1.FormattedValue": "x"},  # an annotation
    ],
)
def test_a_page_whose_rows_are_not_the_selected_columns_is_left_to_the_caller(
    row: dict[str, object],
) -> None:
    assert Lines("account", COLUMNS, "modifiedon").page(_page([row]), WHEN) is None


def test_an_empty_page() -> None:
    page = Lines("account", COLUMNS, "modifiedon").page(_page([]), WHEN)
    assert page is not None and (page.data, page.records) == (b"", 0)


def test_records_already_decoded_make_the_same_lines() -> None:
    lines = Lines("account", COLUMNS, "modifiedon")
    rows = [{k: v for k, v in r.items() if k != "@odata.etag"} for r in ROWS]
    cut = lines.page(_page(ROWS), WHEN)
    made = lines.records(rows, WHEN)
    assert cut is not None
    assert _records(made.data) == _records(cut.data)
    assert (made.records, made.first, made.last) == (cut.records, cut.first, cut.last)
    assert lines.records([], WHEN).records == 0


NEXT = "https://org/api/data/v9.2/accounts?$select=name&$skiptoken=%3Ccookie%20pagenumber=%222%22"


@pytest.mark.parametrize(
    "body",
    [
        _page(ROWS, nextLink=NEXT),
        _page(ROWS, deltaLink=NEXT + "]"),
        _page(ROWS),
        _page([]),
        b'{"@odata.nextLink":"' + NEXT.encode() + b'","value":[{"a":"]"}]}',
        b'{ "@odata.context" : "c" , "value" : [ {"a": 1} ] , "@odata.nextLink" : "n]x" }',
        b'{"value":[{"a":"x"}],"@odata.count":3,"@odata.nextLink":"n"}\n',
        b'{"@odata.context":"c"}',
    ],
)
def test_links_from_the_tail_are_the_links_of_the_whole_page(body: bytes) -> None:
    assert links_of(body) == _links(body)


@pytest.mark.parametrize("filler", [0, 70_000, 300_000])
@pytest.mark.parametrize(
    "links",
    [
        {"nextLink": NEXT},
        {"deltaLink": NEXT + "]"},
        {},
        {"nextLink": "x" * 100_000},  # links longer than the tail read: the whole page is
    ],
)
def test_links_in_a_file_are_the_links_of_the_whole_page(
    filler: int, links: dict[str, str], tmp_path: Path
) -> None:
    # Pages small and big (their first and last bytes are read, not the rows between).
    rows: list[dict[str, object]] = [*ROWS, {"name": "]" * filler}] if filler else ROWS
    body = _page(rows, **links)
    with (tmp_path / "page").open("w+b") as file:
        file.write(body)
        assert links_in_file(file, len(body)) == _links(body)
    head_first = b'{"@odata.nextLink":"n","value":[{"a":"' + b"]" * 200_000 + b'"}]}'
    with (tmp_path / "other").open("w+b") as file:
        file.write(head_first)
        assert links_in_file(file, len(head_first)).next == "n"


def test_links_are_found_without_reading_the_rows() -> None:
    # Rows that are not JSON at all: only the tail is read.
    body = b'{"@odata.context":"c","value":[' + b"x" * 1000 + b'],"@odata.nextLink":"n"}'
    assert links_of(body).next == "n"
    assert (
        orjson.loads(_page(ROWS, nextLink=NEXT))["@odata.nextLink"]
        == links_of(_page(ROWS, nextLink=NEXT)).next
    )


def test_a_page_too_big_is_asked_for_a_quarter_as_big_down_to_the_smallest() -> None:
    too_big = api_error(400, "GET", "/accounts", code="0x80040216", message="too big")
    assert smaller_page(too_big, 5000, "account") == 1250
    assert smaller_page(too_big, 120, "account") == MIN_PAGE_SIZE
    with pytest.raises(ApiError) as info:
        smaller_page(too_big, MIN_PAGE_SIZE, "account")
    assert f"Even pages of {MIN_PAGE_SIZE} rows are too big" in str(info.value)
    other = api_error(400, "GET", "/accounts", code="0x80060888", message="bad query")
    with pytest.raises(ApiError) as info:
        smaller_page(other, 5000, "account")
    assert info.value is other


def test_a_page_cut_keeps_its_first_rows_as_they_were_sent() -> None:
    page = orjson.dumps(
        {
            "@odata.context": "ctx",
            "value": [
                {"modifiedon": "2024-01-01T00:00:01Z", "name": "a,]}"},
                {"modifiedon": None, "nested": {"x": [1, 2]}},
                {"name": "no modifiedon"},
            ],
            "@odata.nextLink": "https://x/next",
        }
    )
    rows = rows_of(page)
    assert list(Column(rows, "modifiedon", str)) == ["2024-01-01T00:00:01Z", None, None]
    cut = first_rows(page, 2)
    assert isinstance(cut, Cut) and cut.page is page  # the page itself, not a copy of its rows
    assert [msgspec.json.decode(r) for r in rows_of(cut)] == orjson.loads(page)["value"][:2]
    assert rows_of(first_rows(page, 0)) == []
    assert size(cut) == len(page)  # it holds the whole page while it waits


def test_a_cut_page_becomes_the_lines_of_its_first_rows() -> None:
    body = _page(ROWS, nextLink=NEXT)
    lines = Lines("account", COLUMNS, "modifiedon")
    page = lines.page(first_rows(body, 1), WHEN)
    assert page is not None and (page.records, page.first, page.last) == (
        1,
        ROWS[0]["modifiedon"],
        ROWS[0]["modifiedon"],
    )
    assert [m["record"] for m in _records(page.data)] == [
        {k: v for k, v in ROWS[0].items() if k != "@odata.etag"}
    ]
    none = lines.page(first_rows(body, 0), WHEN)
    assert none is not None and none.records == 0


def test_a_column_decodes_only_the_rows_asked_for() -> None:
    """A window's page is looked at by bisection: of thousands of rows, a few are decoded."""
    stamps = [None, None, *(f"2024-01-01T00:00:{s:02d}Z" for s in range(40))]
    page = orjson.dumps({"value": [{"a": "x" * 50, "modifiedon": m} for m in stamps]})
    converted: list[str] = []

    def convert(value: str) -> int:
        converted.append(value)
        return int(value[-3:-1])

    column = Column(rows_of(page), "modifiedon", convert)
    assert len(column) == 42
    assert column[0] is None and column[-1] == 39 and column[2] == 0
    assert bisect.bisect_left(column, 20, key=lambda s: -1 if s is None else s) == 22
    assert len(converted) < 10  # by bisection, not every row
    assert column[-1] == 39 and converted.count("2024-01-01T00:00:39Z") == 1  # decoded once
    rest = column[30:]
    assert len(rest) == 12 and rest[0] == 28 and list(rest)[-1] == 39
    with pytest.raises(IndexError):
        column[42]
    with pytest.raises(ValueError, match="to its end"):
        column[:5]
    # No value and an empty one are alike (not converted), as a missing member is.
    empty = orjson.dumps({"value": [{"modifiedon": ""}, {"modifiedon": None}, {}]})
    assert list(Column(rows_of(empty), "modifiedon", convert)) == [None, None, None]
