"""``$batch`` framing: parse multipart/mixed batch requests and render batch responses.

Pure functions over bytes, with no knowledge of entities or of the store. The shape follows the
captured Dataverse payloads (``fixtures/dataverse/powerapps-docs/batch``) and RFC 2046:

* a batch is a ``multipart/mixed`` body whose parts are either an operation
  (``Content-Type: application/http`` + ``Content-Transfer-Encoding: binary``, then an HTTP request)
  or a change set (``Content-Type: multipart/mixed; boundary=changeset_...``, itself a multipart
  body of operations);
* the line break before a delimiter line belongs to the delimiter, not to the preceding body;
* CRLF and bare LF are both accepted on input; output always uses CRLF.

Parsing is linear in the size of the body: delimiters and line ends are located with
``bytes.find``, never by walking characters in Python.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import TypeAlias

from dynamics_emulator.wire import ODATA_PAYLOAD_ERROR, Response, bad_request

MAX_BATCH_OPERATIONS = 1000
"""Most operations (change-set operations included) a batch may carry."""

CRLF = b"\r\n"
HTTP_VERSION = "HTTP/1.1"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_CHANGESET_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# RFC 2046 §5.1.1: 1 to 70 bchars, the last one not a space.
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# A media-type parameter: token "=" (quoted-string / token-ish value).
_PARAM_RE = re.compile(r';\s*([A-Za-z0-9!#$%&\'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;"]*))')
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_TOKEN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# What may follow ``--boundary`` (or ``--boundary--``) on a delimiter line.
_PADDING_EOL_RE = re.compile(rb"[ \t]*(?:\r\n|\n|\Z)")
_STATUS_LINE_RE = re.compile(r"HTTP/1\.[01] ([0-9]{3})(?: (.*))?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_BLANK_LINE_RE = re.compile(rb"\n\r?\n")

_MESSAGE_EXCERPT = 200


class Headers(Mapping[str, str]):
    """Case-insensitive, order-preserving header mapping.

    ``headers["content-type"]`` finds ``Content-Type``. When a name occurs more than once,
    indexing returns the first value and :meth:`get_all` returns all of them. Iteration yields
    each distinct name once, spelled as first seen.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        self._first: dict[str, tuple[str, str]] = {}
        for name, value in items:
            self._items.append((name, value))
            self._first.setdefault(name.lower(), (name, value))

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._first.values())

    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def pairs(self) -> list[tuple[str, str]]:
        """All headers in order, duplicates included, as ``(name, value)`` pairs."""
        return list(self._items)


@dataclass
class Operation:
    """One HTTP request of a batch.

    Attributes:
        method: ``GET``, ``POST``, ``PUT``, ``PATCH`` or ``DELETE``.
        url: the URL exactly as written on the request line: relative (``/api/data/v9.2/tasks``),
            absolute, bare (``accounts(...)``) or a Content-ID reference (``$1``).
        http_version: ``HTTP/1.1``.
        headers: the request's own headers (not the MIME part headers).
        body: the request body, without the line break preceding the next delimiter.
        content_id: the part's ``Content-ID``, if any.
    """

    method: str
    url: str
    http_version: str
    headers: Headers
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    """An atomic group of operations (``multipart/mixed; boundary=changeset_...``)."""

    boundary: str
    operations: list[Operation]


BatchPart: TypeAlias = Operation | ChangeSet


@dataclass
class PartResponse:
    """The response to one operation, as rendered inside a batch response."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_id: str | None = None

    @classmethod
    def from_response(cls, response: Response, content_id: str | None = None) -> PartResponse:
        return cls(response.status, list(response.headers), response.body, content_id)


@dataclass
class ChangeSetResponse:
    """The responses of a change set, nested in ``boundary=changesetresponse_<uuid>``."""

    parts: list[PartResponse]


@dataclass
class ResponsePart:
    """One decoded part of a batch response (see :func:`parse_batch_response`).

    Attributes:
        changeset: ``None`` for a top-level part; for a part of a change-set response, the index
            (0, 1, ...) of that change set among the change sets of the response.
    """

    status: int
    reason: str
    headers: Headers
    body: bytes
    content_id: str | None = None
    changeset: int | None = None


class _FramingError(ValueError):
    """A malformed multipart body; mapped to ODataError (requests) or ValueError (responses)."""


# --------------------------------------------------------------------------------------------
# Generic multipart helpers
# --------------------------------------------------------------------------------------------


def _excerpt(text: str) -> str:
    return text if len(text) <= _MESSAGE_EXCERPT else text[:_MESSAGE_EXCERPT] + "..."


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _FramingError(f"The {what} in the batch payload is not valid UTF-8.") from exc


def _parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``'multipart/mixed; boundary="x"'`` -> ``('multipart/mixed', {'boundary': 'x'})``."""
    media, sep, rest = value.partition(";")
    params: dict[str, str] = {}
    if sep:
        for m in _PARAM_RE.finditer(";" + rest):
            name = m.group(1).lower()
            if m.group(2) is not None:
                val = _QUOTED_PAIR_RE.sub(r"\1", m.group(2))
            else:
                val = m.group(3).strip()
            params.setdefault(name, val)
    return media.strip().lower(), params


def _multipart_boundary(content_type: str, what: str) -> str:
    media, params = _parse_media_type(content_type)
    if media != "multipart/mixed" or "boundary" not in params:
        raise _FramingError(
            f"The content type '{_excerpt(content_type)}' of the {what} is invalid: "
            "it must be 'multipart/mixed' with a 'boundary' parameter."
        )
    boundary = params["boundary"]
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise _FramingError(
            f"The boundary delimiter '{_excerpt(boundary)}' of the {what} is invalid: a boundary "
            "must be 1 to 70 characters long and use only letters, digits and '()+_,-./:=? '."
        )
    return boundary


def _find_delimiter(body: bytes, delim: bytes, start: int) -> tuple[int, int, bool] | None:
    """Find the next delimiter line at or after ``start``.

    Returns ``(line_start, next_line_start, is_close)`` or None. A delimiter must begin a line
    and be followed only by transport padding up to the end of its line (or of the body), so
    ``--batch_x`` inside a line, or ``--batch_xy``, are content.
    """
    dlen = len(delim)
    while True:
        idx = body.find(delim, start)
        if idx < 0:
            return None
        start = idx + 1
        if idx > 0 and body[idx - 1] != 0x0A:
            continue
        after = idx + dlen
        is_close = body.startswith(b"--", after)
        m = _PADDING_EOL_RE.match(body, after + 2 if is_close else after)
        if m is None:
            continue
        return idx, m.end(), is_close


def _split_multipart(body: bytes, boundary: str) -> Iterator[bytes]:
    """Yield the raw contents (headers + body) of the parts of a multipart body, lazily.

    The preamble and the epilogue are dropped; the line break preceding each delimiter is
    removed from the preceding part (RFC 2046 §5.1.1).
    """
    delim = b"--" + boundary.encode("ascii")
    found = _find_delimiter(body, delim, 0)
    if found is None:
        raise _FramingError(
            f"The batch payload does not contain the boundary delimiter '--{boundary}'."
        )
    _, content_start, is_close = found
    while not is_close:
        found = _find_delimiter(body, delim, content_start)
        if found is None:
            raise _FramingError(
                f"Unexpected end of the multipart payload: the closing delimiter "
                f"'--{boundary}--' was not found."
            )
        line_start, next_start, is_close = found
        end = line_start
        if end > 0 and body[end - 1] == 0x0A:
            end -= 1
            if end > 0 and body[end - 1] == 0x0D:
                end -= 1
        yield body[content_start : max(end, content_start)]
        content_start = next_start


def _split_headers(data: bytes, start: int = 0) -> tuple[list[tuple[str, str]], bytes]:
    """Parse header lines from ``start`` up to the first empty line; return them and the rest.

    Without an empty line, everything is headers and the rest is empty (Dataverse writes
    ``204`` parts of change-set responses that way). Folded lines are joined.
    """
    if data.startswith(b"\n", start) or data.startswith(b"\r\n", start):
        return [], data[data.index(b"\n", start) + 1 :]
    m = _BLANK_LINE_RE.search(data, start)
    if m is None:
        block, rest = data[start:], b""
    else:
        block, rest = data[start : m.start()], data[m.end() :]
    fields: list[tuple[str, list[str]]] = []  # values as pieces: folded lines join linearly
    for line in _decode(block, "header block").split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:  # only the end of a block that is not followed by an empty line
            continue
        if line[:1] in (" ", "\t") and fields:
            piece = line.strip()
            if piece:
                fields[-1][1].append(piece)
            continue
        name, sep, value = line.partition(":")
        if not sep or not _is_token(name):
            raise _FramingError(
                f"The header line '{_excerpt(line)}' in the batch payload is invalid."
            )
        value = value.strip()
        fields.append((name, [value] if value else []))
    return [(name, " ".join(pieces)) for name, pieces in fields], rest


@lru_cache(maxsize=256)
def _is_token(name: str) -> bool:
    return _TOKEN_RE.fullmatch(name) is not None


def _first_line(data: bytes, what: str) -> tuple[str, int]:
    """The first line of ``data`` (without its line break) and the offset of the next line."""
    nl = data.find(b"\n")
    if nl < 0:
        line, nxt = data, len(data)
    else:
        line, nxt = data[:nl], nl + 1
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line:
        raise _FramingError(f"A batch part is missing its {what}.")
    return _decode(line, what), nxt


def _content_id(part_headers: Headers, inner: Headers) -> str | None:
    value = part_headers.get("Content-ID")
    if value is None:
        value = inner.get("Content-ID")
    if value is None:
        return None
    value = value.strip()
    return value or None


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


class _RequestParser:
    def __init__(self) -> None:
        self.count = 0
        self.content_ids: set[str] = set()

    def parse(self, body: bytes, content_type: str) -> list[BatchPart]:
        boundary = _multipart_boundary(content_type, "batch request")
        result: list[BatchPart] = []
        for raw in _split_multipart(body, boundary):
            headers_list, content = _split_headers(raw)
            part_headers = Headers(headers_list)
            ctype = part_headers.get("Content-Type", "")
            if _parse_media_type(ctype)[0] == "multipart/mixed":
                cs_boundary = _multipart_boundary(ctype, "change set")
                ops = []
                for cs_raw in _split_multipart(content, cs_boundary):
                    cs_headers, cs_content = _split_headers(cs_raw)
                    ops.append(self.operation(Headers(cs_headers), cs_content, in_changeset=True))
                result.append(ChangeSet(cs_boundary, ops))
            else:
                result.append(self.operation(part_headers, content, in_changeset=False))
        return result

    def operation(self, part_headers: Headers, content: bytes, *, in_changeset: bool) -> Operation:
        self.count += 1
        if self.count > MAX_BATCH_OPERATIONS:
            raise _FramingError(
                "The current batch message contains too many parts. Only batch messages with a "
                f"maximum number of '{MAX_BATCH_OPERATIONS}' query operations, including "
                "changeset operations, are allowed."
            )
        ctype = part_headers.get("Content-Type")
        if ctype is None:
            raise _FramingError(
                "A batch part is missing the 'Content-Type' header; it must be 'application/http'."
            )
        media = _parse_media_type(ctype)[0]
        if media == "multipart/mixed":
            raise _FramingError(
                "Change sets cannot be nested: a change set may only contain operations."
            )
        if media != "application/http":
            raise _FramingError(
                f"The 'Content-Type' header of a batch part must be 'application/http', "
                f"but was '{_excerpt(ctype)}'."
            )
        line, nxt = _first_line(content, "request line")
        method, url, version = _parse_request_line(line)
        if in_changeset and method not in _CHANGESET_METHODS:
            raise _FramingError(
                f"An invalid HTTP method '{method}' was detected for a request in a change set. "
                "Requests in change sets only support the HTTP methods 'POST', 'PUT', 'DELETE', "
                "and 'PATCH'."
            )
        path = url.split("?", 1)[0].rstrip("/").lower().replace("%24", "$")
        if path.endswith("$batch"):
            raise _FramingError("Batch requests cannot contain other batch requests.")
        inner_list, op_body = _split_headers(content, nxt)
        inner = Headers(inner_list)
        content_id = _content_id(part_headers, inner)
        if content_id is not None:
            if content_id in self.content_ids:
                raise _FramingError(
                    f"The content ID '{_excerpt(content_id)}' was found more than once in the "
                    "same batch request. Content IDs have to be unique across all operations "
                    "of a batch."
                )
            self.content_ids.add(content_id)
        return Operation(method, url, version, inner, op_body, content_id)


def _parse_request_line(line: str) -> tuple[str, str, str]:
    method, _, rest = line.partition(" ")
    url, _, version = rest.rpartition(" ")
    url = url.strip()
    if not method or not url or not version or _CONTROL_RE.search(line):
        raise _FramingError(
            f"The HTTP request line '{_excerpt(line)}' is invalid. It must have the form "
            "'HttpMethod RequestUrl HTTP/1.1'."
        )
    if method not in _METHODS:
        raise _FramingError(
            f"Invalid HTTP method '{_excerpt(method)}' in the batch request line "
            f"'{_excerpt(line)}'."
        )
    if version != HTTP_VERSION:
        raise _FramingError(
            f"The HTTP version '{_excerpt(version)}' used in a batch operation request is not "
            f"valid. The value must be '{HTTP_VERSION}'."
        )
    return method, url, version


def parse_batch(body: bytes, content_type: str) -> list[BatchPart]:
    """Parse a ``$batch`` request body.

    Args:
        body: the raw request body.
        content_type: the request's ``Content-Type`` header
            (``multipart/mixed; boundary="batch_..."``).

    Returns:
        The top-level parts in order: :class:`Operation` or :class:`ChangeSet`.

    Raises:
        ODataError: 400 for any framing error (bad boundary, nested batch or change set, GET in
            a change set, more than 1000 operations, a part that is not ``application/http``,
            a malformed request line or header, a duplicate Content-ID, a truncated body).
    """
    try:
        return _RequestParser().parse(body, content_type)
    except _FramingError as exc:
        raise bad_request(str(exc), ODATA_PAYLOAD_ERROR) from None


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _header_line(name: str, value: str) -> bytes:
    if not _TOKEN_RE.fullmatch(name) or "\r" in value or "\n" in value:
        raise ValueError(f"invalid header for a batch response part: {name!r}: {value!r}")
    return f"{name}: {value}".encode()


def _render_part(part: PartResponse) -> bytes:
    if not 100 <= part.status <= 599:
        raise ValueError(f"invalid HTTP status for a batch response part: {part.status}")
    lines = [b"Content-Type: application/http", b"Content-Transfer-Encoding: binary"]
    if part.content_id is not None:
        lines.append(_header_line("Content-ID", part.content_id))
    lines.append(b"")
    lines.append(f"{HTTP_VERSION} {part.status} {_reason(part.status)}".encode())
    lines.extend(_header_line(k, v) for k, v in part.headers)
    lines.append(b"")
    return CRLF.join(lines) + CRLF + part.body


def _fresh_boundary(prefix: str, bodies: list[bytes]) -> bytes:
    while True:
        boundary = f"{prefix}{uuid.uuid4()}".encode("ascii")
        delim = b"--" + boundary
        if not any(delim in b for b in bodies):
            return boundary


def render_batch_response(parts: list[PartResponse | ChangeSetResponse]) -> tuple[str, bytes]:
    """Render the parts of a batch response.

    Returns:
        ``(content_type, body)``: the outer ``multipart/mixed; boundary=batchresponse_<uuid>``
        and the CRLF-delimited body, change-set responses nested under
        ``boundary=changesetresponse_<uuid>``.

    Raises:
        ValueError: a status outside 100-599, or a header name/value that cannot be written.
    """
    bodies = [q.body for p in parts for q in (p.parts if isinstance(p, ChangeSetResponse) else [p])]
    boundary = _fresh_boundary("batchresponse_", bodies)
    out: list[bytes] = []
    for part in parts:
        out.append(b"--" + boundary + CRLF)
        if isinstance(part, ChangeSetResponse):
            cs = _fresh_boundary("changesetresponse_", [q.body for q in part.parts])
            out.append(b"Content-Type: multipart/mixed; boundary=" + cs + CRLF + CRLF)
            for q in part.parts:
                out.append(b"--" + cs + CRLF)
                out.append(_render_part(q))
                out.append(CRLF)
            out.append(b"--" + cs + b"--" + CRLF)
        else:
            out.append(_render_part(part))
            out.append(CRLF)
    out.append(b"--" + boundary + b"--" + CRLF)
    return f"multipart/mixed; boundary={boundary.decode('ascii')}", b"".join(out)


def _parse_response_part(raw: bytes, changeset: int | None) -> ResponsePart:
    headers_list, content = _split_headers(raw)
    part_headers = Headers(headers_list)
    media = _parse_media_type(part_headers.get("Content-Type", ""))[0]
    if media != "application/http":
        raise _FramingError(f"A batch response part has content type {media!r}.")
    line, nxt = _first_line(content, "status line")
    m = _STATUS_LINE_RE.fullmatch(line)
    if m is None:
        raise _FramingError(f"Invalid status line {_excerpt(line)!r} in a batch response.")
    inner_list, body = _split_headers(content, nxt)
    inner = Headers(inner_list)
    return ResponsePart(
        status=int(m.group(1)),
        reason=m.group(2) or "",
        headers=inner,
        body=body,
        content_id=_content_id(part_headers, inner),
        changeset=changeset,
    )


def parse_batch_response(body: bytes, content_type: str) -> list[ResponsePart]:
    """Decode a batch response (for tests): every operation response, in order.

    Change-set responses are flattened: their parts appear in place, each with ``changeset``
    set to the index of its change set.

    Raises:
        ValueError: the body is not a well-formed batch response.
    """
    try:
        boundary = _multipart_boundary(content_type, "batch response")
        result: list[ResponsePart] = []
        changesets = 0
        for raw in _split_multipart(body, boundary):
            headers_list, content = _split_headers(raw)
            ctype = Headers(headers_list).get("Content-Type", "")
            if _parse_media_type(ctype)[0] == "multipart/mixed":
                cs_boundary = _multipart_boundary(ctype, "change set response")
                result.extend(
                    _parse_response_part(cs_raw, changesets)
                    for cs_raw in _split_multipart(content, cs_boundary)
                )
                changesets += 1
            else:
                result.append(_parse_response_part(raw, None))
        return result
    except _FramingError as exc:
        raise ValueError(str(exc)) from None


__all__ = [
    "MAX_BATCH_OPERATIONS",
    "BatchPart",
    "ChangeSet",
    "ChangeSetResponse",
    "Headers",
    "Operation",
    "PartResponse",
    "ResponsePart",
    "parse_batch",
    "parse_batch_response",
    "render_batch_response",
]
