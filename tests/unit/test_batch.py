"""The client-side $batch encoder/decoder, cross-checked with the emulator's independent parser."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynamics_api.batch import (
    BatchDecodeError,
    BatchOperation,
    ChangeSet,
    decode_batch_response,
    encode_batch,
)
from dynamics_api.odata import key_segment
from dynamics_emulator import multipart


def test_encode_shape_crlf_relative_urls_and_headers() -> None:
    ops = [
        BatchOperation("PATCH", "accounts(accountnumber='A-1')", {"If-Match": "*"}, b'{"a":1}'),
        BatchOperation("PATCH", "accounts(00000000-0000-0000-0000-000000000001)", {}, b"{}"),
    ]
    enc = encode_batch(ops)
    assert enc.boundary.startswith("batch_")
    assert enc.content_type == f"multipart/mixed; boundary={enc.boundary}"
    text = enc.body.decode()
    assert "\n" not in text.replace("\r\n", "")  # CRLF only
    assert "PATCH /api/data/v9.2/accounts(accountnumber='A-1') HTTP/1.1\r\n" in text
    assert "If-Match: *\r\n" in text
    assert text.count("Content-Type: application/json; type=entry") == 2
    assert text.endswith(f"--{enc.boundary}--\r\n")
    parsed = multipart.parse_batch(enc.body, enc.content_type)
    assert [p.url for p in parsed if isinstance(p, multipart.Operation)] == [
        "/api/data/v9.2/accounts(accountnumber='A-1')",
        "/api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001)",
    ]
    first = parsed[0]
    assert isinstance(first, multipart.Operation)
    assert first.body == b'{"a":1}' and first.headers["If-Match"] == "*"


def test_change_set_gets_content_ids_and_fresh_boundary() -> None:
    cs = ChangeSet(
        [
            BatchOperation("POST", "accounts", body=b'{"name":"x"}'),
            BatchOperation("PATCH", "$1", body=b'{"name":"y"}'),
        ]
    )
    enc = encode_batch([cs, BatchOperation("GET", "WhoAmI")])
    parsed = multipart.parse_batch(enc.body, enc.content_type)
    assert isinstance(parsed[0], multipart.ChangeSet)
    assert [o.content_id for o in parsed[0].operations] == ["1", "2"]
    assert parsed[0].operations[1].url == "$1"
    assert enc.operations == 3


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([], "at least one"),
        ([ChangeSet([BatchOperation("GET", "accounts")])], "GET"),
        ([BatchOperation("PATCH", "accounts(x) HTTP/1.1\r\nX: y")], "percent-encoded"),
        ([BatchOperation("PATCH", "a", {"X": "1\r\nEvil: 2"})], "line break"),
        ([BatchOperation("TRACE", "a")], "not allowed"),
        ([BatchOperation("PATCH", "a", body=b"{}")] * 1001, "at most 1000"),
    ],
)
def test_encode_refuses(parts: list[BatchOperation | ChangeSet], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_batch(parts)


def test_decode_emulator_response_with_changeset_and_errors() -> None:
    err = orjson.dumps({"error": {"code": "0x80044331", "message": "too long"}})
    ctype, body = multipart.render_batch_response(
        [
            multipart.PartResponse(204, [("OData-EntityId", "https://x/accounts(1)")]),
            multipart.PartResponse(400, [("Content-Type", "application/json")], err),
            multipart.ChangeSetResponse(
                [
                    multipart.PartResponse(204, [], b"", "1"),
                    multipart.PartResponse(204, [], b"", "2"),
                ]
            ),
            multipart.PartResponse(429, [("Retry-After", "3")], b""),
        ]
    )
    results = decode_batch_response(body, ctype)
    assert [r.status for r in results] == [204, 400, 204, 204, 429]
    assert results[0].headers["odata-entityid"] == "https://x/accounts(1)"
    assert results[1].error() == ("0x80044331", "too long")
    assert results[1].json()["error"]["code"] == "0x80044331"
    assert [r.changeset for r in results] == [None, None, 0, 0, None]
    assert [r.content_id for r in results[2:4]] == ["1", "2"]
    assert results[4].headers["retry-after"] == "3"


def test_decode_single_part_400_outer() -> None:
    body = (
        b"--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
        b"\r\n\r\nHTTP/1.1 400 Bad Request\r\nREQ_ID: abc\r\nContent-Type: application/json; "
        b'odata.metadata=minimal\r\n\r\n{"error":{"code":"0x80040217","message":"missing"}}\r\n'
        b"--batchresponse_1--\r\n"
    )
    (only,) = decode_batch_response(body, 'multipart/mixed; boundary="batchresponse_1"')
    assert only.status == 400 and only.reason == "Bad Request"
    assert only.error() == ("0x80040217", "missing")


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"{}", "application/json"),
        (b"no delimiter", "multipart/mixed; boundary=b"),
        (
            b"--b\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 OK\r\n\r\n",
            "multipart/mixed; boundary=b",
        ),
        (b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "multipart/mixed; boundary=b"),
        (
            b"--b\r\nContent-Type: application/http\r\n\r\nNOT A STATUS\r\n--b--",
            "multipart/mixed; boundary=b",
        ),
    ],
)
def test_decode_refuses_malformed(body: bytes, ctype: str) -> None:
    with pytest.raises(BatchDecodeError):
        decode_batch_response(body, ctype)


_hostile_text = st.text(
    alphabet=st.sampled_from(list("ab-_\r\n'\"%/()=&?#é中 "))
    | st.characters(exclude_categories=["Cs"]),
    max_size=200,
).map(lambda s: s + "\r\n--batch_" + s + "\r\n--batchresponse_x--\r\n")


@settings(max_examples=150, deadline=None)
@given(st.lists(_hostile_text, min_size=1, max_size=8))
def test_round_trip_through_emulator_parser(texts: list[str]) -> None:
    bodies = [orjson.dumps({"description": t}) for t in texts]
    ops = [
        BatchOperation("PATCH", "accounts" + key_segment({"accountnumber": t}), {}, b)
        for t, b in zip(texts, bodies, strict=True)
    ]
    enc = encode_batch(ops)
    parsed = multipart.parse_batch(enc.body, enc.content_type)
    assert len(parsed) == len(ops)
    for op, got in zip(ops, parsed, strict=True):
        assert isinstance(got, multipart.Operation)
        assert got.body == op.body
        assert got.url == "/api/data/v9.2/" + op.url


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([200, 204, 400, 404, 412, 429, 503]), st.binary(max_size=300)),
        min_size=1,
        max_size=8,
    )
)
def test_decode_round_trip_of_rendered_responses(parts: list[tuple[int, bytes]]) -> None:
    hostile = [b + b"\r\n--batchresponse_" + b + b"\n--changesetresponse_\r\n" for _, b in parts]
    ctype, body = multipart.render_batch_response(
        [
            multipart.PartResponse(s, [("X-N", str(i))], h)
            for i, ((s, _), h) in enumerate(zip(parts, hostile, strict=True))
        ]
    )
    results = decode_batch_response(body, ctype)
    assert [r.status for r in results] == [s for s, _ in parts]
    assert [r.body for r in results] == hostile
    assert [r.headers["x-n"] for r in results] == [str(i) for i in range(len(parts))]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_key_values_never_change_the_request_path(value: str) -> None:
    seg = key_segment({"accountnumber": value}, {"accountnumber": "Edm.String"})
    enc = encode_batch([BatchOperation("PATCH", "accounts" + seg, {}, b"{}")])
    (op,) = multipart.parse_batch(enc.body, enc.content_type)
    assert isinstance(op, multipart.Operation)
    path = op.url
    assert path.startswith("/api/data/v9.2/accounts(accountnumber='") and path.endswith("')")
    inner = path[len("/api/data/v9.2/accounts(") : -1]
    assert "/" not in inner and "?" not in inner and "#" not in inner and " " not in inner
