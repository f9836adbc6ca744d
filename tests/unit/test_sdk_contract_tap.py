"""What the tap's page-to-lines path relies on in singer-sdk's private internals.

``DynamicsStream._sync_records`` (SDK-private) is overridden: without stream maps, a page of rows
becomes RECORD lines in one step (tap_dynamics.lines) instead of a message object per record. It
keeps the SDK's own state handling by calling four private Stream methods. Each test here fails
when a singer-sdk release changes what that relies on; the last ones run the real tap in-process
on pages from memory and compare its output with the SDK's own path.

(tests/unit/test_sdk_contract.py, on its way from another branch, holds the inventory of every
override; when both are on main, ``_sync_records`` joins its list.)
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import typing as t
from collections.abc import Iterator
from decimal import Decimal

import msgspec
import pytest
from singer_sdk import Stream
from singer_sdk.exceptions import InvalidStreamSortException

from dynamics_api.http import DataverseClient
from tap_dynamics.client import DynamicsStream
from tap_dynamics.lines import Lines
from tap_dynamics.tap import TapDynamics

#: The private Stream methods the override calls, with the parameters it passes.
CALLED = {
    "_write_starting_replication_value": ["self", "context"],
    "_increment_stream_state": ["self", "latest_record", "context"],
    "_write_state_message": ["self"],
    "_finalize_state": ["self", "state"],
}


def test_sync_records_is_still_what_sync_iterates() -> None:
    # Why: our override replaces the SDK's record loop; it must keep the signature the SDK's own
    # callers use and still be the generator Stream.sync drains.
    params = inspect.signature(Stream._sync_records).parameters
    assert list(params) == ["self", "context", "write_messages"]
    assert params["write_messages"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.isgeneratorfunction(Stream._sync_records)
    tree = ast.parse(textwrap.dedent(inspect.getsource(Stream.sync)))
    calls = [
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert "_sync_records" in calls
    assert "_sync_records" in vars(DynamicsStream)


@pytest.mark.parametrize(("name", "expected"), CALLED.items())
def test_the_private_methods_called_still_take_what_is_passed(
    name: str, expected: list[str]
) -> None:
    # Why: the lines path writes the starting value, moves the bookmark, finalises and writes
    # STATE through the SDK's own methods, so that STATE is exactly the SDK's.
    method = getattr(Stream, name)
    assert [p for p in inspect.signature(method).parameters if p in expected] == expected


def test_state_is_written_only_when_not_flushed() -> None:
    # Why: after writing a page of lines the override sets state_manager.is_flushed = False, as
    # the SDK's _write_record_message does, for _write_state_message to write the next STATE.
    source = inspect.getsource(Stream._write_state_message)
    assert "is_flushed" in source
    assert "is_flushed" in inspect.getsource(Stream._write_record_message)


# -- the real tap on pages from memory -----------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "accountid": {"type": ["string"], "format": "uuid"},
        "name": {"type": ["string", "null"]},
        "revenue": {"type": ["number", "null"]},
        "modifiedon": {"type": ["string", "null"], "format": "date-time"},
    },
}
CONFIG = {
    "environment_url": "https://probe.invalid",
    "client_id": "probe",
    "client_secret": "probe",
    "tenant_id": "probe",
    "page_size": 3,
}
_encode = msgspec.json.Encoder(decimal_format="number").encode


def _catalog() -> dict[str, t.Any]:
    return {
        "streams": [
            {
                "tap_stream_id": "account",
                "stream": "account",
                "table": "accounts",
                "schema": SCHEMA,
                "key_properties": ["accountid"],
                "replication_key": "modifiedon",
                "replication_method": "INCREMENTAL",
                "metadata": [
                    {
                        "breadcrumb": [],
                        "metadata": {
                            "selected": True,
                            "table-key-properties": ["accountid"],
                            "replication-key": "modifiedon",
                        },
                    }
                ],
            }
        ]
    }


def _pages(times: list[list[str]]) -> list[bytes]:
    out, n = [], 0
    for page in times:
        rows = []
        for when in page:
            n += 1
            rows.append(
                {
                    "@odata.etag": f'W/"{n}"',
                    "accountid": f"00000000-0000-0000-0000-{n:012d}",
                    "name": f"a{n}",
                    "revenue": Decimal("922337203685477.1234") if n % 2 else None,
                    "modifiedon": when,
                }
            )
        out.append(_encode({"@odata.context": "c", "value": rows}))
    return out


class _Tokens:
    def token(self, force_refresh: bool = False) -> str:
        return "probe"


def _run(
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
    pages: list[bytes],
    *,
    lines: bool,
) -> list[dict[str, t.Any]]:
    cut: list[int] = []
    original = Lines.page

    def bodies(self: DynamicsStream, context: object) -> Iterator[bytes]:
        yield from pages

    def page(self: Lines, body: bytes, extracted: t.Any = None) -> t.Any:
        cut.append(1)
        return original(self, body, extracted)

    monkeypatch.setattr(Lines, "page", page)

    monkeypatch.setattr(DynamicsStream, "_bodies", bodies)
    monkeypatch.setattr("tap_dynamics.client.total_record_count", lambda *a: None)
    if not lines:
        monkeypatch.setattr(DynamicsStream, "_writes_lines", lambda self, context: False)
    tap = TapDynamics(config=CONFIG, catalog=_catalog(), parse_env_config=False)
    tap._client = DataverseClient("https://probe.invalid", _Tokens())
    capsysbinary.readouterr()
    tap.sync_all()
    out = capsysbinary.readouterr().out
    monkeypatch.undo()
    assert len(cut) == (len(pages) if lines else 0)  # which path ran
    return [json.loads(line) for line in out.splitlines()]


TIMES = [
    ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
    ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"],
    ["2026-01-04T00:00:00Z"],
]


def test_the_lines_path_writes_what_the_sdk_path_writes(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # Why: the whole override; the messages (but time_extracted) and the last STATE match.
    pages = _pages(TIMES)
    fast = _run(monkeypatch, capsysbinary, pages, lines=True)
    sdk = _run(monkeypatch, capsysbinary, pages, lines=False)

    def records(messages: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        return [m["record"] for m in messages if m["type"] == "RECORD"]

    def last_state(messages: list[dict[str, t.Any]]) -> dict[str, t.Any]:
        states = [m["value"] for m in messages if m["type"] == "STATE"]
        bookmark = states[-1]["bookmarks"]["account"]
        bookmark.pop("replication_key_signpost", None)
        return t.cast(dict[str, t.Any], bookmark)

    assert records(fast) == records(sdk) and len(records(fast)) == 6
    assert last_state(fast) == last_state(sdk)
    assert last_state(fast)["replication_key_value"] == "2026-01-04T00:00:00Z"
    assert fast[0]["type"] == "SCHEMA" and fast[-1]["type"] == "STATE"
    assert {k for m in fast if m["type"] == "RECORD" for k in m} == {
        k for m in sdk if m["type"] == "RECORD" for k in m
    }


def test_pages_out_of_order_still_fail_as_the_sdk_would(
    monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    # Why: the SDK's sort check (in _increment_stream_state) guards the lines path too: a page
    # that goes back in modifiedon is an error, never a silently wrong bookmark.
    pages = _pages([TIMES[1], TIMES[0]])
    with pytest.raises(InvalidStreamSortException):
        _run(monkeypatch, capsysbinary, pages, lines=True)
