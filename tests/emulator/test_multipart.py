"""Tests of the emulator's ``$batch`` framing (``dynamics_emulator.multipart``)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamics_emulator.multipart import (
    MAX_BATCH_OPERATIONS,
    ChangeSet,
    ChangeSetResponse,
    Headers,
    Operation,
    PartResponse,
    ResponsePart,
    parse_batch,
    parse_batch_response,
    render_batch_response,
)
from dynamics_emulator.wire import ODATA_PAYLOAD_ERROR, ODataError, Response
from tests.fixtures import DOCS, needs_fixtures

FIXTURES = DOCS / "batch"

ORG = "[Organization Uri]"
ACCOUNT_BIND = "accounts(00000000-0000-0000-0000-000000000001)"
GET_TASKS = (
    "/api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001)/Account_Tasks?$select=subject"
)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load_request(name: str, *, crlf: bool = True) -> tuple[str, bytes]:
    """(Content-Type, body) of a request fixture; the body in wire CRLF form by default."""
    raw = _fixture(name)
    head, _, body = raw.partition(b"\n\n")
    content_type = next(
        line.split(":", 1)[1].strip()
        for line in head.decode().split("\n")
        if line.lower().startswith("content-type:")
    )
    return content_type, body.replace(b"\n", b"\r\n") if crlf else body


def load_response(name: str, *, crlf: bool = True) -> tuple[str, str, bytes]:
    """(status line, Content-Type, body) of a response fixture.

    The fixtures omit the outer Content-Type; it is rebuilt from the first delimiter line.
    """
    raw = _fixture(name)
    head, _, body = raw.partition(b"\n\n")
    first = body.split(b"\n", 1)[0].decode()
    assert first.startswith("--batchresponse_")
    content_type = f"multipart/mixed; boundary={first[2:]}"
    status_line = head.decode().split("\n", 1)[0]
    return status_line, content_type, body.replace(b"\n", b"\r\n") if crlf else body


def operations(parts: list[ChangeSet | Operation]) -> list[Operation]:
    out: list[Operation] = []
    for p in parts:
        out.extend(p.operations if isinstance(p, ChangeSet) else [p])
    return out


OpSpec = tuple[str, str, list[tuple[str, str]], bytes, str | None]


def _op_bytes(spec: OpSpec, eol: bytes) -> bytes:
    method, url, headers, body, content_id = spec
    lines = [b"Content-Type: application/http", b"Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}".encode())
    lines += [b"", f"{method} {url} HTTP/1.1".encode()]
    lines += [f"{k}: {v}".encode() for k, v in headers]
    lines.append(b"")
    return eol.join(lines) + eol + body


def build_batch(
    parts: list[OpSpec | list[OpSpec]],
    boundary: str = "batch_x",
    eol: bytes = b"\r\n",
    changeset_boundary: str = "changeset_y",
) -> bytes:
    """A batch request body, built the way clients build them (a change set is a list)."""
    out: list[bytes] = []
    for part in parts:
        out.append(f"--{boundary}".encode() + eol)
        if isinstance(part, list):
            out.append(
                f"Content-Type: multipart/mixed; boundary={changeset_boundary}".encode() + eol + eol
            )
            for spec in part:
                out.append(f"--{changeset_boundary}".encode() + eol + _op_bytes(spec, eol) + eol)
            out.append(f"--{changeset_boundary}--".encode() + eol)
        else:
            out.append(_op_bytes(part, eol) + eol)
    out.append(f"--{boundary}--".encode() + eol)
    return b"".join(out)


CT = "multipart/mixed; boundary=batch_x"
JSON_HDR = [("Content-Type", "application/json")]


def post(body: bytes = b"{}", content_id: str | None = None, url: str = "/t") -> OpSpec:
    return ("POST", url, JSON_HDR, body, content_id)


def assert_bad_request(body: bytes, content_type: str, match: str) -> ODataError:
    with pytest.raises(ODataError) as info:
        parse_batch(body, content_type)
    err = info.value
    assert err.status == 400
    assert err.code == ODATA_PAYLOAD_ERROR
    assert re.search(match, err.message), err.message
    assert err.body() == {"error": {"code": ODATA_PAYLOAD_ERROR, "message": err.message}}
    return err


# --------------------------------------------------------------------------------------------
# Request fixtures
# --------------------------------------------------------------------------------------------


@needs_fixtures
def test_fixture_01_no_changeset() -> None:
    content_type, body = load_request("01-batch-request-no-changeset.http")
    parts = parse_batch(body, content_type)
    assert [type(p) for p in parts] == [Operation] * 4
    ops = operations(parts)
    assert [(o.method, o.url, o.http_version) for o in ops] == [
        ("POST", "/api/data/v9.2/tasks", "HTTP/1.1"),
        ("POST", "/api/data/v9.2/tasks", "HTTP/1.1"),
        ("POST", "/api/data/v9.2/tasks", "HTTP/1.1"),
        ("GET", GET_TASKS, "HTTP/1.1"),
    ]
    for i, op in enumerate(ops[:3], 1):
        assert op.headers["content-type"] == "application/json; type=entry"
        assert dict(op.headers) == {"Content-Type": "application/json; type=entry"}
        assert json.loads(op.body) == {
            "subject": f"Task {i} in batch",
            "regardingobjectid_account_task@odata.bind": ACCOUNT_BIND,
        }
        assert op.content_id is None
        assert not op.body.endswith(b"\n")  # the CRLF before the delimiter is not body
    assert len(ops[3].headers) == 0
    assert ops[3].body == b""


@needs_fixtures
def test_fixture_03_changeset() -> None:
    content_type, body = load_request("03-batch-request-changeset.http")
    parts = parse_batch(body, content_type)
    assert len(parts) == 2
    changeset, get = parts
    assert isinstance(changeset, ChangeSet)
    assert changeset.boundary == "changeset_246e6bfe-89a4-4c77-b293-7a433f082e8a"
    assert [o.content_id for o in changeset.operations] == ["1", "2", "3"]
    for i, op in enumerate(changeset.operations, 1):
        assert (op.method, op.url) == ("POST", "/api/data/v9.2/tasks")
        assert op.headers["Content-Type"] == "application/json; type=entry"
        assert json.loads(op.body)["subject"] == f"Task {i} in batch"
    assert isinstance(get, Operation)
    assert (get.method, get.url, get.body, get.content_id) == ("GET", GET_TASKS, b"", None)


@needs_fixtures
def test_fixture_07_content_id_references() -> None:
    content_type, body = load_request("07-batch-request-changeset-content-id-refs.http")
    assert content_type == "multipart/mixed;boundary=batch_AAA123"  # no space, as captured
    parts = parse_batch(body, content_type)
    assert len(parts) == 1
    changeset = parts[0]
    assert isinstance(changeset, ChangeSet)
    assert changeset.boundary == "changeset_dd81ccab-11ce-4d57-b91d-12c4e25c3cab"
    ops = changeset.operations
    assert [(o.method, o.url, o.content_id) for o in ops] == [
        ("POST", "[Organization URI]/api/data/v9.2/leads", "1"),
        ("POST", "[Organization URI]/api/data/v9.2/contacts", "2"),
        ("POST", "[Organization URI]/api/data/v9.2/accounts", "3"),
    ]
    assert all(o.headers["Content-Type"] == "application/json" for o in ops)
    assert [json.loads(o.body) for o in ops] == [
        {"firstname": "first name", "lastname": "last name"},
        {"firstname": "first name"},
        {
            "name": "IcM Account",
            "originatingleadid@odata.bind": "$1",
            "primarycontactid@odata.bind": "$2",
        },
    ]
    # The fixture has a blank line before each delimiter: that line is part of the body.
    assert ops[1].body == b'{"firstname":"first name"}\r\n'


@needs_fixtures
@pytest.mark.parametrize(
    "name",
    [
        "01-batch-request-no-changeset.http",
        "03-batch-request-changeset.http",
        "07-batch-request-changeset-content-id-refs.http",
    ],
)
def test_crlf_and_lf_are_equivalent(name: str) -> None:
    content_type, crlf = load_request(name, crlf=True)
    _, lf = load_request(name, crlf=False)
    assert b"\r\n" in crlf
    assert b"\r" not in lf
    a = operations(parse_batch(crlf, content_type))
    b = operations(parse_batch(lf, content_type))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x.method, x.url, x.http_version, x.content_id) == (
            y.method,
            y.url,
            y.http_version,
            y.content_id,
        )
        assert x.headers.pairs() == y.headers.pairs()
        assert x.body.replace(b"\r\n", b"\n") == y.body
    # Mixed line endings in a single body parse too.
    mixed = crlf.replace(b"binary\r\n", b"binary\n")
    assert len(operations(parse_batch(mixed, content_type))) == len(a)


# --------------------------------------------------------------------------------------------
# Response fixtures
# --------------------------------------------------------------------------------------------


def _location(part: ResponsePart) -> str:
    return part.headers["Location"]


@needs_fixtures
def test_response_fixture_02() -> None:
    status_line, content_type, body = load_response("02-batch-response-no-changeset.http")
    assert status_line == "HTTP/1.1 200 OK"
    parts = parse_batch_response(body, content_type)
    assert [(p.status, p.reason) for p in parts] == [(204, "No Content")] * 3 + [(200, "OK")]
    assert [_location(p) for p in parts[:3]] == [
        f"{ORG}/api/data/v9.2/tasks(d31ba648-c592-ed11-aad1-000d3a993550)",
        f"{ORG}/api/data/v9.2/tasks(d41ba648-c592-ed11-aad1-000d3a993550)",
        f"{ORG}/api/data/v9.2/tasks(d51ba648-c592-ed11-aad1-000d3a993550)",
    ]
    assert all(p.headers["OData-EntityId"] == _location(p) for p in parts[:3])
    assert all(p.body == b"" and p.changeset is None for p in parts[:3])
    assert parts[3].headers["Content-Type"] == (
        "application/json; odata.metadata=minimal; odata.streaming=true"
    )
    payload = json.loads(parts[3].body)
    assert [v["subject"] for v in payload["value"]] == [f"Task {i} in batch" for i in (1, 2, 3)]


@needs_fixtures
def test_response_fixture_04_changeset() -> None:
    _, content_type, body = load_response("04-batch-response-changeset.http")
    parts = parse_batch_response(body, content_type)
    assert [(p.status, p.content_id, p.changeset) for p in parts] == [
        (204, "1", 0),
        (204, "2", 0),
        (204, "3", 0),
        (200, None, None),
    ]
    assert _location(parts[0]).endswith("tasks(e73ffc82-e292-ed11-aad1-000d3a9933c9)")
    assert _location(parts[2]).endswith("tasks(e93ffc82-e292-ed11-aad1-000d3a9933c9)")
    assert len(json.loads(parts[3].body)["value"]) == 3


@needs_fixtures
def test_response_fixture_05_error() -> None:
    status_line, content_type, body = load_response(
        "05-batch-response-error-without-continue-on-error.http"
    )
    assert status_line == "HTTP/1.1 400 BadRequest"
    parts = parse_batch_response(body, content_type)
    assert len(parts) == 1
    assert (parts[0].status, parts[0].reason) == (400, "Bad Request")
    assert json.loads(parts[0].body)["error"]["code"] == "0x80044331"


@needs_fixtures
def test_response_fixture_06_continue_on_error() -> None:
    _, content_type, body = load_response("06-batch-response-continue-on-error.http")
    parts = parse_batch_response(body, content_type)
    assert [p.status for p in parts] == [400, 204, 204]
    assert parts[0].headers["REQ_ID"] == "de4c5227-4a28-4ebd-8ced-3392ece1697b"
    assert json.loads(parts[0].body)["error"]["code"] == "0x80044331"
    assert _location(parts[1]).endswith("tasks(aed2ae8b-3c94-ed11-aad1-000d3a9933c9)")
    assert _location(parts[2]).endswith("tasks(b181a991-3c94-ed11-aad1-000d3a9933c9)")


@needs_fixtures
@pytest.mark.parametrize("crlf", [True, False])
def test_response_fixture_08_no_blank_line_after_headers(crlf: bool) -> None:
    # 08 writes the 204 parts without the empty line ending the headers.
    _, content_type, body = load_response(
        "08-batch-response-changeset-content-id-refs.http", crlf=crlf
    )
    parts = parse_batch_response(body, content_type)
    assert [(p.status, p.content_id, p.changeset, p.body) for p in parts] == [
        (204, "1", 0, b""),
        (204, "2", 0, b""),
        (204, "3", 0, b""),
    ]
    assert [_location(p).rsplit("/", 1)[1] for p in parts] == [
        "leads(425195a4-7a75-e911-a97a-000d3a34a1bd)",
        "contacts(495195a4-7a75-e911-a97a-000d3a34a1bd)",
        "accounts(4f5195a4-7a75-e911-a97a-000d3a34a1bd)",
    ]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _to_render(parts: list[ResponsePart]) -> list[PartResponse | ChangeSetResponse]:
    out: list[PartResponse | ChangeSetResponse] = []
    current: int | None = None
    for p in parts:
        rp = PartResponse(p.status, p.headers.pairs(), p.body, p.content_id)
        if p.changeset is None:
            out.append(rp)
        elif p.changeset == current:
            last = out[-1]
            assert isinstance(last, ChangeSetResponse)
            last.parts.append(rp)
        else:
            current = p.changeset
            out.append(ChangeSetResponse([rp]))
    return out


def _normalise_boundaries(body: bytes) -> bytes:
    body = re.sub(rb"batchresponse_[0-9a-f-]{36}", b"batchresponse_B", body)
    return re.sub(rb"changesetresponse_[0-9a-f-]{36}", b"changesetresponse_C", body)


@needs_fixtures
@pytest.mark.parametrize(
    "name",
    [
        "02-batch-response-no-changeset.http",
        "04-batch-response-changeset.http",
        "05-batch-response-error-without-continue-on-error.http",
        "06-batch-response-continue-on-error.http",
    ],
)
def test_render_reproduces_captured_responses(name: str) -> None:
    """Decoding a captured response and rendering it again gives the same bytes."""
    _, content_type, body = load_response(name)
    content_type_out, rendered = render_batch_response(
        _to_render(parse_batch_response(body, content_type))
    )
    assert re.fullmatch(r"multipart/mixed; boundary=batchresponse_[0-9a-f-]{36}", content_type_out)
    assert _normalise_boundaries(rendered) == _normalise_boundaries(body)


def test_render_then_parse_round_trip() -> None:
    parts: list[PartResponse | ChangeSetResponse] = [
        PartResponse(204, [("OData-Version", "4.0"), ("Location", "https://x/tasks(1)")]),
        ChangeSetResponse(
            [
                PartResponse(204, [("OData-EntityId", "https://x/a(1)")], content_id="1"),
                PartResponse(201, [("Content-Type", "application/json")], b'{"a":1}', "2"),
            ]
        ),
        PartResponse(412, [("Content-Type", "application/json")], b'{"error":{}}'),
        PartResponse(429, [("Retry-After", "5")], b"\r\n--batch\r\n", content_id="7"),
        ChangeSetResponse([PartResponse(404, body=b"x")]),
        PartResponse(200, body=b"no headers\n"),
    ]
    content_type, body = render_batch_response(parts)
    assert b"\n" not in body.replace(b"\r\n", b"").replace(b"no headers\n", b"")
    decoded = parse_batch_response(body, content_type)
    assert [(p.status, p.reason, p.content_id, p.changeset) for p in decoded] == [
        (204, "No Content", None, None),
        (204, "No Content", "1", 0),
        (201, "Created", "2", 0),
        (412, "Precondition Failed", None, None),
        (429, "Too Many Requests", "7", None),
        (404, "Not Found", None, 1),
        (200, "OK", None, None),
    ]
    flat = [q for p in parts for q in (p.parts if isinstance(p, ChangeSetResponse) else [p])]
    for got, want in zip(decoded, flat, strict=True):
        assert got.headers.pairs() == want.headers
        assert got.body == want.body


def test_render_shape() -> None:
    content_type, body = render_batch_response(
        [
            PartResponse(400, [("Content-Type", "application/json")], b"{}"),
            ChangeSetResponse([PartResponse(204, [], b"", "1")]),
        ]
    )
    b = content_type.split("boundary=")[1]
    cs = re.search(rb"boundary=(changesetresponse_[0-9a-f-]{36})", body)
    assert cs is not None
    c = cs.group(1).decode()
    assert body.decode() == (
        f"--{b}\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "\r\n"
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: application/json\r\n"
        "\r\n"
        "{}\r\n"
        f"--{b}\r\n"
        f"Content-Type: multipart/mixed; boundary={c}\r\n"
        "\r\n"
        f"--{c}\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 1\r\n"
        "\r\n"
        "HTTP/1.1 204 No Content\r\n"
        "\r\n"
        "\r\n"
        f"--{c}--\r\n"
        f"--{b}--\r\n"
    )


def test_render_uses_fresh_boundaries_and_handles_empty() -> None:
    ct1, body1 = render_batch_response([])
    ct2, _ = render_batch_response([])
    assert ct1 != ct2
    assert parse_batch_response(body1, ct1) == []


def test_part_response_from_wire_response() -> None:
    resp = Response(204, b"", [("OData-EntityId", "https://x/a(1)")])
    part = PartResponse.from_response(resp, "3")
    assert part == PartResponse(204, [("OData-EntityId", "https://x/a(1)")], b"", "3")


@pytest.mark.parametrize(
    "part",
    [
        PartResponse(204, [("Location", "x\r\nInjected: 1")]),
        PartResponse(204, [("Bad Name", "x")]),
        PartResponse(204, content_id="1\n2"),
        PartResponse(99),
        PartResponse(600),
    ],
)
def test_render_rejects_unwritable_parts(part: PartResponse) -> None:
    with pytest.raises(ValueError, match="invalid"):
        render_batch_response([part])


def test_unknown_status_reason() -> None:
    _, body = render_batch_response([PartResponse(599)])
    assert b"HTTP/1.1 599 Unknown\r\n" in body


def test_parse_batch_response_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="boundary"):
        parse_batch_response(b"", "application/json")
    with pytest.raises(ValueError, match="status line"):
        parse_batch_response(
            b"--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 OK\r\n\r\n--b--",
            "multipart/mixed; boundary=b",
        )


# --------------------------------------------------------------------------------------------
# Request framing details
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/mixed; boundary="batch_x"',
        "multipart/mixed; boundary=batch_x",
        "multipart/mixed;boundary=batch_x",
        "  multipart/mixed;   boundary = batch_x  ",
        "Multipart/Mixed; Boundary=batch_x",
        'multipart/mixed; charset=utf-8; boundary="batch_x"; foo=bar',
    ],
)
def test_boundary_forms(content_type: str) -> None:
    parts = parse_batch(build_batch([post()]), content_type)
    assert len(parts) == 1


def test_quoted_boundary_with_special_characters() -> None:
    boundary = "b'()+_,-./:=? z"
    body = build_batch([post()], boundary=boundary)
    assert len(parse_batch(body, f'multipart/mixed; boundary="{boundary}"')) == 1


def test_preamble_epilogue_and_padding() -> None:
    body = build_batch([post(b'{"a":1}'), post(b'{"b":2}')])
    body = b"preamble line\r\n\r\n" + body.replace(b"--batch_x\r\n", b"--batch_x \t\r\n", 1)
    body += b"epilogue --batch_x\r\n--batch_x\r\n"
    ops = operations(parse_batch(body, CT))
    assert [o.body for o in ops] == [b'{"a":1}', b'{"b":2}']


def test_lookalike_delimiters_are_content() -> None:
    payload = (
        b"--batch_xy\r\n"  # longer boundary: not ours
        b"text --batch_x in the middle of a line\r\n"
        b"--batch_x-- trailing text on a close lookalike\r\n"
        b"--batch_"
    )
    ops = operations(parse_batch(build_batch([post(payload)]), CT))
    assert ops[0].body == payload


def test_body_line_break_semantics() -> None:
    # The CRLF before a delimiter belongs to the delimiter; any earlier one to the body.
    for body in (b"", b"abc", b"abc\r\n", b"abc\r\n\r\n", b"\r\n", b"abc\n", b"abc\r"):
        ops = operations(parse_batch(build_batch([post(body)]), CT))
        assert ops[0].body == body


def test_top_level_content_id_and_header_folding() -> None:
    body = build_batch([("PATCH", "accounts(1)", [("X-A", "one")], b"{}", "abc")])
    body = body.replace(b"X-A: one\r\n", b"X-A: one\r\n two\r\nIf-Match: *\r\n")
    [op] = operations(parse_batch(body, CT))
    assert (op.method, op.url, op.content_id) == ("PATCH", "accounts(1)", "abc")
    assert op.headers["x-a"] == "one two"
    assert op.headers["IF-MATCH"] == "*"


def test_all_methods_and_url_forms() -> None:
    specs: list[OpSpec | list[OpSpec]] = [
        ("GET", "https://org.crm.dynamics.com/api/data/v9.2/accounts?$top=1", [], b"", None),
        ("DELETE", "/api/data/v9.2/accounts(1)", [], b"", None),
        [
            ("POST", "/api/data/v9.2/leads", JSON_HDR, b"{}", "1"),
            ("PUT", "$1/lastname", JSON_HDR, b'{"value":"x"}', "2"),
            ("PATCH", "$1", JSON_HDR, b"{}", "3"),
            ("DELETE", "accounts(2)", [], b"", "4"),
        ],
    ]
    parts = parse_batch(build_batch(specs), CT)
    assert [(o.method, o.url) for o in operations(parts)] == [
        ("GET", "https://org.crm.dynamics.com/api/data/v9.2/accounts?$top=1"),
        ("DELETE", "/api/data/v9.2/accounts(1)"),
        ("POST", "/api/data/v9.2/leads"),
        ("PUT", "$1/lastname"),
        ("PATCH", "$1"),
        ("DELETE", "accounts(2)"),
    ]


def test_empty_batch_and_empty_changeset() -> None:
    assert parse_batch(b"--batch_x--\r\n", CT) == []
    parts = parse_batch(build_batch([[]]), CT)
    assert parts == [ChangeSet("changeset_y", [])]


def test_thousand_operations_accepted() -> None:
    body_1k = b'{"subject":"' + b"s" * 1000 + b'"}'
    specs: list[OpSpec | list[OpSpec]] = [post(body_1k, str(i)) for i in range(500)]
    specs.append([post(body_1k, f"c{i}") for i in range(MAX_BATCH_OPERATIONS - 500)])
    parts = parse_batch(build_batch(specs), CT)
    ops = operations(parts)
    assert len(ops) == MAX_BATCH_OPERATIONS
    assert all(o.body == body_1k for o in ops)


def test_headers_mapping() -> None:
    h = Headers([("Content-Type", "a"), ("X-Dup", "1"), ("x-dup", "2")])
    assert h["content-type"] == "a"
    assert "CONTENT-TYPE" in h
    assert 3 not in h
    assert h.get("missing") is None
    assert list(h) == ["Content-Type", "X-Dup"]
    assert len(h) == 2
    assert h["X-DUP"] == "1"
    assert h.get_all("x-dup") == ["1", "2"]
    assert h.pairs() == [("Content-Type", "a"), ("X-Dup", "1"), ("x-dup", "2")]


# --------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "",
        "application/json",
        "multipart/mixed",
        "multipart/mixed; boundary=",
        'multipart/mixed; boundary=""',
        "multipart/related; boundary=batch_x",
        "multipart/mixed; boundary=" + "b" * 71,
        'multipart/mixed; boundary="ends with space "',
        "multipart/mixed; boundary=bad{char}",
    ],
)
def test_reject_missing_or_invalid_boundary(content_type: str) -> None:
    assert_bad_request(build_batch([post()]), content_type, "boundary")


def test_reject_body_without_delimiter_or_close() -> None:
    assert_bad_request(b"", CT, "does not contain the boundary")
    assert_bad_request(b"x--batch_x\r\n", CT, "does not contain the boundary")
    truncated = build_batch([post()]).replace(b"--batch_x--\r\n", b"")
    assert_bad_request(truncated, CT, "closing delimiter")


def test_reject_nested_batch() -> None:
    nested_changeset = build_batch([[post()]]).replace(
        b"--changeset_y\r\nContent-Type: application/http",
        b"--changeset_y\r\nContent-Type: multipart/mixed; boundary=inner",
        1,
    )
    assert_bad_request(nested_changeset, CT, "cannot be nested")
    batch_in_batch = build_batch([post(url="/api/data/v9.2/$batch")])
    assert_bad_request(batch_in_batch, CT, "cannot contain other batch requests")
    in_changeset = build_batch([[post(url="/api/data/v9.2/%24batch?x=1", content_id="1")]])
    assert_bad_request(in_changeset, CT, "cannot contain other batch requests")


def test_reject_get_in_changeset() -> None:
    body = build_batch([[post(content_id="1"), ("GET", "/api/data/v9.2/accounts", [], b"", "2")]])
    err = assert_bad_request(body, CT, "invalid HTTP method 'GET'")
    assert "change set" in err.message


def test_reject_more_than_1000_operations() -> None:
    specs: list[OpSpec | list[OpSpec]] = [post() for _ in range(600)]
    specs.append([post() for _ in range(MAX_BATCH_OPERATIONS - 600 + 1)])
    assert_bad_request(build_batch(specs), CT, "maximum number of '1000'")
    assert_bad_request(
        build_batch([post() for _ in range(MAX_BATCH_OPERATIONS + 1)]), CT, "too many parts"
    )


def test_reject_part_without_application_http() -> None:
    missing = build_batch([post()]).replace(b"Content-Type: application/http\r\n", b"")
    assert_bad_request(missing, CT, "missing the 'Content-Type' header")
    wrong = build_batch([post()]).replace(b"application/http", b"application/json")
    assert_bad_request(wrong, CT, "must be 'application/http'")
    in_changeset = build_batch([[post()]]).replace(b"application/http", b"text/plain")
    assert_bad_request(in_changeset, CT, "must be 'application/http'")


@pytest.mark.parametrize(
    ("request_line", "match"),
    [
        (b"POST", "request line"),
        (b"POST /x", "request line"),
        (b"POST  HTTP/1.1", "request line"),
        (b" /x HTTP/1.1", "request line"),
        (b"POST /x\x00y HTTP/1.1", "request line"),
        (b"FETCH /x HTTP/1.1", "Invalid HTTP method 'FETCH'"),
        (b"post /x HTTP/1.1", "Invalid HTTP method 'post'"),
        (b"POST /x HTTP/2", "HTTP version 'HTTP/2'"),
        (b"POST /x http/1.1", "HTTP version"),
        (b"", "missing its request line"),
        (b"POST /\xff HTTP/1.1", "not valid UTF-8"),
    ],
)
def test_reject_malformed_request_line(request_line: bytes, match: str) -> None:
    body = build_batch([post()]).replace(b"POST /t HTTP/1.1", request_line)
    assert_bad_request(body, CT, match)


def test_reject_part_without_request() -> None:
    body = b"--batch_x\r\nContent-Type: application/http\r\n--batch_x--\r\n"
    assert_bad_request(body, CT, "missing its request line")


def test_reject_malformed_header() -> None:
    body = build_batch([post()]).replace(b"Content-Type: application/json", b"NoColonHere")
    assert_bad_request(body, CT, "header line 'NoColonHere'")
    body = build_batch([post()]).replace(b"Content-Transfer-Encoding:", b"Bad Name:")
    assert_bad_request(body, CT, "header line")


@pytest.mark.parametrize(
    "specs",
    [
        [[post(content_id="1"), post(content_id="1")]],
        [[post(content_id="1")], [post(content_id="1")]],
        [post(content_id="1"), [post(content_id="1")]],
        [post(content_id="a"), post(content_id="a")],
    ],
)
def test_reject_duplicate_content_id(specs: list[OpSpec | list[OpSpec]]) -> None:
    # Two change sets may share a boundary: each is split separately.
    assert_bad_request(build_batch(specs), CT, "content ID '(1|a)' was found more than once")


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

LOOKALIKES = [
    "--batch_x",
    "--batch_x--",
    "\r\n--batch_x\r\n",
    "--changeset_y",
    "--batchresponse_",
    "\n--changesetresponse_",
    "\r",
    "\n",
    "\r\n\r\n",
    "Content-Type: application/http",
    "HTTP/1.1 200 OK",
]

json_text = (
    st.text(max_size=30)
    | st.sampled_from(LOOKALIKES)
    | st.builds(
        lambda a, b, c: a + b + c,
        st.text(max_size=5),
        st.sampled_from(LOOKALIKES),
        st.text(max_size=5),
    )
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_text, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    value = draw(json_values)
    indent = draw(st.sampled_from([None, 2, 4]))
    return json.dumps(value, indent=indent, ensure_ascii=draw(st.booleans())).encode()


response_parts = st.builds(
    PartResponse,
    status=st.sampled_from([200, 201, 204, 400, 404, 412, 429, 500]),
    headers=st.just([("Content-Type", "application/json; odata.metadata=minimal")]),
    body=json_bodies(),
    content_id=st.none() | st.integers(1, 10**6).map(str),
)


@given(
    st.lists(
        response_parts | st.builds(ChangeSetResponse, st.lists(response_parts, max_size=4)),
        max_size=6,
    )
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_property_json_bodies_survive_render_parse(
    parts: list[PartResponse | ChangeSetResponse],
) -> None:
    content_type, body = render_batch_response(parts)
    decoded = parse_batch_response(body, content_type)
    flat = [
        (q, i if isinstance(p, ChangeSetResponse) else None)
        for i, p in enumerate(parts)
        for q in (p.parts if isinstance(p, ChangeSetResponse) else [p])
    ]
    assert len(decoded) == len(flat)
    changeset_indexes = [i for i, p in enumerate(parts) if isinstance(p, ChangeSetResponse)]
    for got, (want, cs) in zip(decoded, flat, strict=True):
        assert got.status == want.status
        assert got.body == want.body
        assert json.loads(got.body) == json.loads(want.body)
        assert got.headers.pairs() == want.headers
        assert got.content_id == want.content_id
        assert got.changeset == (None if cs is None else changeset_indexes.index(cs))


@given(
    st.lists(st.tuples(json_bodies(), st.booleans()), max_size=8),
    st.sampled_from([b"\r\n", b"\n"]),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_property_json_request_bodies_survive_parse(
    bodies: list[tuple[bytes, bool]], eol: bytes
) -> None:
    specs: list[OpSpec | list[OpSpec]] = []
    for i, (body, in_changeset) in enumerate(bodies):
        spec = post(body, content_id=str(i))
        specs.append([spec] if in_changeset else spec)
    ops = operations(parse_batch(build_batch(specs, eol=eol), CT))
    assert [o.body for o in ops] == [b for b, _ in bodies]
    assert [o.content_id for o in ops] == [str(i) for i in range(len(bodies))]


FRAGMENTS = [
    b"--batch_x",
    b"--batch_x--",
    b"--changeset_y",
    b"--changeset_y--",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"Content-Type: application/http",
    b"Content-Type: multipart/mixed; boundary=changeset_y",
    b"Content-Type: multipart/mixed",
    b"Content-ID: 1",
    b"GET /x HTTP/1.1",
    b"POST /api/data/v9.2/$batch HTTP/1.1",
    b"PATCH $1 HTTP/1.1",
    b"{}",
    b"\xff\xfe",
]


def _parse_or_odata_error(body: bytes, content_type: str) -> None:
    try:
        result = parse_batch(body, content_type)
    except ODataError as exc:
        error = exc
    else:
        assert isinstance(result, list)
        return
    assert error.status == 400
    assert error.message


@given(st.binary(max_size=400), st.sampled_from([CT, "multipart/mixed; boundary=b", ""]))
@settings(max_examples=300)
def test_property_random_bytes_raise_only_odata_error(body: bytes, content_type: str) -> None:
    _parse_or_odata_error(body, content_type)


@given(st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=60))
@settings(max_examples=500)
def test_property_structured_garbage_raises_only_odata_error(chunks: list[bytes]) -> None:
    _parse_or_odata_error(b"".join(chunks), CT)


@given(st.text(max_size=80))
@settings(max_examples=200)
def test_property_random_content_type_raises_only_odata_error(content_type: str) -> None:
    _parse_or_odata_error(build_batch([post()]), content_type)
