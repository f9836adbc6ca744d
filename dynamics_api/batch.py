"""OData ``$batch`` for the Dataverse Web API: encode a multipart/mixed request, decode the answer.

Pure functions over bytes (no I/O), written from the OData v4 and RFC 2046 texts, independent of the
emulator's own framing code so a bug on one side cannot hide behind the same bug on the other.

Request shape (``encode_batch``):

* a fresh ``batch_<uuid>`` boundary (and ``changeset_<uuid>`` for change sets), checked against
  every body so that no body can contain the delimiter;
* each operation is a part with ``Content-Type: application/http`` and
  ``Content-Transfer-Encoding: binary``, then the HTTP request: a request line whose URL is the
  Web API root path (``/api/data/v9.2/``) plus the operation's relative URL, its own headers
  (``Content-Type: application/json; type=entry``, ``If-Match: *``...), a blank line and the body;
* operations are outside change sets unless grouped in a :class:`ChangeSet`, whose operations carry
  a ``Content-ID`` (unique across the whole batch);
* CRLF everywhere; the line break before a delimiter belongs to the delimiter.

Response shape (``decode_batch_response``): the boundary comes from the response ``Content-Type``;
each part yields an :class:`OperationResult` (status, reason, headers, body, Content-ID, change set
index); change-set responses are nested multiparts whose parts are flattened in place. A batch that
stopped at its first failure (outer status 400, no ``odata.continue-on-error``) has one part and
decodes the same way.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import parse_error_body

__all__ = [
    "MAX_BATCH_OPERATIONS",
    "BatchDecodeError",
    "BatchOperation",
    "ChangeSet",
    "EncodedBatch",
    "OperationResult",
    "decode_batch_response",
    "encode_batch",
]

MAX_BATCH_OPERATIONS = 1000
"""Most operations the service accepts in one ``$batch`` (change-set operations included)."""

CRLF = b"\r\n"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_TOKEN_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# A request-target: no whitespace and no control characters (values were percent-encoded).
_URL_RE = re.compile(r"^[\x21-\x7e]+$")
_STATUS_RE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})(?: (.*))?$")
_BOUNDARY_PARAM_RE = re.compile(r'(?i);\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^;\s]{1,70}))')


class BatchDecodeError(ValueError):
    """A ``$batch`` response is not a well-formed multipart/mixed batch response."""


@dataclass(frozen=True, slots=True)
class BatchOperation:
    """One HTTP request inside a batch.

    Attributes:
        method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
        url: relative to the Web API root (``accounts(accountnumber='A-1')``), already
            percent-encoded; or a Content-ID reference (``$1``) inside a change set.
        headers: the request's own headers (``If-Match: *``); a JSON body gets
            ``Content-Type: application/json; type=entry`` unless given.
        body: the request body (JSON bytes), or None.
        content_id: the part's ``Content-ID`` (required in change sets, set automatically when
            missing).
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """Operations that succeed or fail together (no GET allowed)."""

    operations: Sequence[BatchOperation]


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A ready ``$batch`` request body.

    Attributes:
        content_type: the request's ``Content-Type`` header value.
        body: the multipart body.
        boundary: the outer boundary (``batch_<uuid>``).
        operations: number of operations (change-set operations included).
    """

    content_type: str
    body: bytes
    boundary: str
    operations: int


@dataclass(slots=True)
class OperationResult:
    """The response to one operation of a batch.

    Attributes:
        status: the operation's HTTP status.
        reason: the reason phrase.
        headers: response headers, names lower-cased.
        body: the raw body (may be empty).
        content_id: the echoed ``Content-ID``, if any.
        changeset: for an operation of a change set, the index of the change set among the change
            sets of the response; None for a top-level operation.
    """

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None
    changeset: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the operation succeeded (status below 400)."""
        return self.status < 400

    def json(self) -> Any:
        """The body parsed as JSON (None for an empty body).

        Raises:
            BatchDecodeError: the body is not JSON.
        """
        if not self.body.strip():
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise BatchDecodeError("A batch response part body is not JSON.") from None

    def error(self) -> tuple[str, str]:
        """(Dataverse code, message) of a failed operation; empty strings when absent."""
        return parse_error_body(self.body)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _check_header(name: str, value: str) -> None:
    if not _TOKEN_RE.match(name):
        raise ValueError(f"Invalid header name {name!r} in a batch operation.")
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"The value of header {name!r} contains a line break.")


def _fresh_boundary(prefix: str, bodies: Sequence[bytes]) -> str:
    while True:
        boundary = f"{prefix}{uuid.uuid4()}"
        delimiter = b"--" + boundary.encode("ascii")
        if not any(delimiter in body for body in bodies):
            return boundary


def _operation_bytes(op: BatchOperation, root: str, content_id: str | None) -> bytes:
    method = op.method.upper()
    if method not in _METHODS:
        raise ValueError(f"Method {op.method!r} is not allowed in a batch.")
    if not _URL_RE.match(op.url):
        raise ValueError("A batch operation URL must be percent-encoded (no spaces or controls).")
    target = op.url if op.url.startswith("$") else root + op.url.lstrip("/")
    lines = [b"Content-Type: application/http", b"Content-Transfer-Encoding: binary"]
    if content_id is not None:
        _check_header("Content-ID", content_id)
        lines.append(b"Content-ID: " + content_id.encode("ascii"))
    lines.append(b"")
    lines.append(f"{method} {target} HTTP/1.1".encode("ascii"))
    headers = dict(op.headers)
    if op.body is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json; type=entry"
    for name, value in headers.items():
        _check_header(name, value)
        lines.append(f"{name}: {value}".encode())
    lines.append(b"")
    return CRLF.join(lines) + CRLF + (op.body or b"")


def encode_batch(
    parts: Sequence[BatchOperation | ChangeSet],
    *,
    api_root: str = "/api/data/v9.2/",
) -> EncodedBatch:
    """Encode operations (and change sets) as a ``$batch`` request body.

    Args:
        parts: operations, outside change sets, and :class:`ChangeSet` groups, in order.
        api_root: the Web API root path each relative URL is appended to.

    Returns:
        The body and its ``Content-Type``.

    Raises:
        ValueError: no operation, more than :data:`MAX_BATCH_OPERATIONS`, a GET in a change set,
            a duplicate Content-ID, a method, URL or header that cannot be written.
    """
    if not api_root.startswith("/") or not api_root.endswith("/"):
        raise ValueError("api_root must start and end with '/'.")
    bodies: list[bytes] = []
    count = 0
    for part in parts:
        ops = part.operations if isinstance(part, ChangeSet) else [part]
        if isinstance(part, ChangeSet) and not ops:
            raise ValueError("A change set needs at least one operation.")
        for op in ops:
            count += 1
            if op.body is not None:
                bodies.append(op.body)
    if count == 0:
        raise ValueError("A batch needs at least one operation.")
    if count > MAX_BATCH_OPERATIONS:
        raise ValueError(f"A batch holds at most {MAX_BATCH_OPERATIONS} operations ({count}).")
    boundary = _fresh_boundary("batch_", bodies)
    delim = b"--" + boundary.encode("ascii")
    out: list[bytes] = []
    seen_ids: set[str] = set()
    next_id = 1
    for part in parts:
        out.append(delim + CRLF)
        if isinstance(part, ChangeSet):
            cs_bodies = [op.body for op in part.operations if op.body is not None]
            cs = _fresh_boundary("changeset_", [*cs_bodies, delim])
            cs_delim = b"--" + cs.encode("ascii")
            out.append(b"Content-Type: multipart/mixed; boundary=" + cs.encode("ascii") + CRLF)
            out.append(CRLF)
            for op in part.operations:
                if op.method.upper() == "GET":
                    raise ValueError("A change set cannot contain a GET.")
                cid = op.content_id
                if cid is None:
                    while str(next_id) in seen_ids:
                        next_id += 1
                    cid = str(next_id)
                if cid in seen_ids:
                    raise ValueError(f"Content-ID {cid!r} is used twice in the batch.")
                seen_ids.add(cid)
                out.append(cs_delim + CRLF)
                out.append(_operation_bytes(op, api_root, cid))
                out.append(CRLF)
            out.append(cs_delim + b"--" + CRLF)
        else:
            cid = part.content_id
            if cid is not None:
                if cid in seen_ids:
                    raise ValueError(f"Content-ID {cid!r} is used twice in the batch.")
                seen_ids.add(cid)
            out.append(_operation_bytes(part, api_root, cid))
            out.append(CRLF)
    out.append(delim + b"--" + CRLF)
    return EncodedBatch(
        content_type=f"multipart/mixed; boundary={boundary}",
        body=b"".join(out),
        boundary=boundary,
        operations=count,
    )


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _boundary_of(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "multipart/mixed":
        raise BatchDecodeError(f"A batch response has content type {media!r}, not multipart/mixed.")
    m = _BOUNDARY_PARAM_RE.search(content_type)
    if m is None:
        raise BatchDecodeError("A batch response content type has no boundary.")
    return m.group(1) or m.group(2)


def _delimiter_end(body: bytes, pos: int) -> tuple[int, bool] | None:
    """At ``pos`` (just after ``--boundary``): (start of the next line, closing) or None when
    the bytes there do not end a delimiter line (a longer boundary that merely starts alike)."""
    closing = body.startswith(b"--", pos)
    if closing:
        pos += 2
    n = len(body)
    while pos < n and body[pos] in b" \t":
        pos += 1
    if pos == n:
        return pos, closing
    if body.startswith(b"\r\n", pos):
        return pos + 2, closing
    if body[pos] == 0x0A:
        return pos + 1, closing
    return None


def _split_multipart(body: bytes, boundary: str) -> Iterator[bytes]:
    """The parts of a multipart body (preamble and epilogue dropped)."""
    try:
        delim = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        # RFC 2046 boundaries are ASCII; one that is not cannot delimit anything we sent.
        raise BatchDecodeError("A batch response has a boundary that is not ASCII.") from None
    # Find the first delimiter: at the very start or at the start of a line.
    pos = 0
    start: int | None = None
    while True:
        i = body.find(delim, pos)
        if i < 0:
            raise BatchDecodeError("A batch response has no opening delimiter.")
        if i == 0 or body[i - 1] == 0x0A:
            end = _delimiter_end(body, i + len(delim))
            if end is not None:
                if end[1]:
                    return  # an empty multipart: only the close delimiter
                start = end[0]
                break
        pos = i + 1
    line_delim = b"\n" + delim
    search = start
    while True:
        i = body.find(line_delim, search)
        if i < 0:
            raise BatchDecodeError("A batch response ends before its close delimiter.")
        end = _delimiter_end(body, i + len(line_delim))
        if end is None:
            search = i + 1
            continue
        stop = i - 1 if i > 0 and body[i - 1] == 0x0D else i
        yield body[start:stop]
        if end[1]:
            return
        start = end[0]
        search = start


def _split_head(data: bytes, start: int = 0) -> tuple[dict[str, str], int]:
    """Header lines from ``start`` to the blank line: (headers, offset of what follows)."""
    headers: dict[str, str] = {}
    pos = start
    n = len(data)
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            line, nxt = data[pos:], n
        else:
            line, nxt = data[pos:nl], nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return headers, nxt
        name, sep, value = line.partition(b":")
        if not sep:
            raise BatchDecodeError("A batch response part has a malformed header line.")
        key = name.decode("latin-1").strip().lower()
        if key not in headers:
            headers[key] = value.decode("utf-8", "replace").strip()
        if nxt >= n:
            return headers, n
        pos = nxt


def _operation_result(raw: bytes, changeset: int | None) -> OperationResult:
    mime, pos = _split_head(raw)
    media = mime.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/http":
        raise BatchDecodeError(f"A batch response part has content type {media!r}.")
    nl = raw.find(b"\n", pos)
    line = raw[pos:] if nl < 0 else raw[pos:nl]
    m = _STATUS_RE.match(line.rstrip(b"\r"))
    if m is None:
        raise BatchDecodeError("A batch response part has no valid HTTP status line.")
    headers, body_at = ({}, len(raw)) if nl < 0 else _split_head(raw, nl + 1)
    return OperationResult(
        status=int(m.group(1)),
        reason=(m.group(2) or b"").decode("latin-1"),
        headers=headers,
        body=raw[body_at:],
        content_id=mime.get("content-id") or headers.get("content-id"),
        changeset=changeset,
    )


def decode_batch_response(body: bytes, content_type: str) -> list[OperationResult]:
    """Decode a ``$batch`` response into one result per operation, in order.

    Args:
        body: the response body.
        content_type: the response's ``Content-Type`` (``multipart/mixed; boundary=...``).

    Returns:
        The results; those of change sets flattened in place with ``changeset`` set.

    Raises:
        BatchDecodeError: the body is not a well-formed batch response.
    """
    boundary = _boundary_of(content_type)
    results: list[OperationResult] = []
    changesets = 0
    for raw in _split_multipart(body, boundary):
        mime, pos = _split_head(raw)
        ctype = mime.get("content-type", "")
        if ctype.split(";", 1)[0].strip().lower() == "multipart/mixed":
            inner = _boundary_of(ctype)
            results.extend(
                _operation_result(part, changesets) for part in _split_multipart(raw[pos:], inner)
            )
            changesets += 1
        else:
            results.append(_operation_result(raw, None))
    return results
