"""What crosses the wire and what goes wrong there: reading a response's body, which exceptions
mean a failed exchange, whether the request reached the service, and a short reason to show (no
URL, no query string)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import BinaryIO

import requests
import requests.exceptions as rex
import urllib3.exceptions

__all__ = [
    "NETWORK_ERRORS",
    "describe",
    "is_certificate_failure",
    "is_connect_failure",
    "log_path",
    "read_body",
    "read_body_into",
    "read_error_body",
    "read_into",
]

_REASON_MAX = 200
_LOG_PATH_MAX = 200
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # refused, reset, DNS, TLS (SSLError), read timeouts while streaming
    rex.Timeout,  # connect and read timeouts
    rex.ChunkedEncodingError,  # a body cut off before its announced length
    urllib3.exceptions.HTTPError,  # IncompleteRead/ProtocolError that requests did not wrap
    http.client.HTTPException,
    ConnectionError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and every exception it wraps (args, reason, cause, context)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
        stack.extend(a for a in current.args if isinstance(a, BaseException))
        if current.__cause__ is not None:
            stack.append(current.__cause__)
        if current.__context__ is not None:
            stack.append(current.__context__)


def is_connect_failure(exc: BaseException) -> bool:
    """Whether the request never reached the service (so re-sending it is always safe)."""
    if isinstance(exc, rex.ConnectTimeout):
        return True
    return any(
        isinstance(
            e, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        )
        for e in _chain(exc)
    )


def is_certificate_failure(exc: BaseException) -> bool:
    """Whether TLS verification failed (a configuration problem, not worth retrying)."""
    if not isinstance(exc, rex.SSLError):
        return False
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return "certificate" in text or "hostname" in text


def describe(exc: BaseException) -> str:
    """A short reason for a failed exchange, without URLs or query strings."""
    if is_certificate_failure(exc):
        return "TLS certificate verification failed"
    if isinstance(exc, rex.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, rex.ReadTimeout):
        return "read timed out"
    if isinstance(exc, rex.ChunkedEncodingError | http.client.IncompleteRead):
        return "the response was cut off"
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, urllib3.exceptions.NameResolutionError):
            return "host name not resolved"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if isinstance(e, urllib3.exceptions.ReadTimeoutError):
            return "read timed out"
        if (
            isinstance(e, urllib3.exceptions.IncompleteRead | urllib3.exceptions.ProtocolError)
            and "incomplete" in str(e).lower()
        ):
            return "the response was cut off"
    text = " ".join(str(e) for e in chain).lower()
    for needle, reason in (
        ("refused", "connection refused"),
        ("reset", "connection reset"),
        ("aborted", "connection aborted"),
        ("remote end closed", "connection closed by the server"),
        ("timed out", "timed out"),
        ("ssl", "TLS error"),
    ):
        if needle in text:
            return reason
    return type(exc).__name__[:_REASON_MAX]


def read_body(response: requests.Response) -> bytes:
    """The whole body in one read: ``response.content`` reads 10 KB at a time through several
    layers of Python, which for a page of tens of MB costs milliseconds per MB on the thread
    that should send the next request. The response is then as if ``content`` had been read."""
    body: bytes = response.raw.read(decode_content=True)
    response._content = body  # what requests itself sets when it reads a body
    response._content_consumed = True  # type: ignore[attr-defined]
    response.raw.release_conn()
    return body


#: Bytes per read when a body is written to a file as it comes.
INTO_CHUNK = 1 << 20


def read_body_into(response: requests.Response, into: BinaryIO) -> int:
    """Write the whole body to ``into`` as it comes (from where the file stands), a megabyte at
    a time, so that a page of tens of MB is never whole in memory; returns the bytes written.
    The response is then as if its ``content`` had been read, and was empty."""
    written = 0
    for chunk in response.raw.stream(INTO_CHUNK, decode_content=True):
        into.write(chunk)
        written += len(chunk)
    response._content = b""  # what requests itself sets when it reads a body
    response._content_consumed = True  # type: ignore[attr-defined]
    response.raw.release_conn()
    return written


def read_into(response: requests.Response, into: BinaryIO | None) -> None:
    """A successful response's body read: in memory (its ``content``), or written to ``into``
    from the file's start (a body cut off and asked for again replaces what was written)."""
    if into is None:
        read_body(response)
        return
    into.seek(0)
    into.truncate()
    read_body_into(response, into)


def read_error_body(response: requests.Response) -> bytes:
    """The (small) body of an error response; empty when it cannot be read."""
    try:
        return response.content[:65536]
    except NETWORK_ERRORS:
        return b""
    finally:
        response.close()


def log_path(path: str) -> str:
    """A request's path as a log line shows it (cut after 200 characters)."""
    return path if len(path) <= _LOG_PATH_MAX else path[:_LOG_PATH_MAX] + "..."
