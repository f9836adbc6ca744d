"""Small wire-level types shared by the emulator's handlers: responses and OData errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .cost import Work

JSON_CONTENT_TYPE = "application/json; odata.metadata=minimal"


@dataclass
class Response:
    """An HTTP response, produced by a handler and written by the server."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: What answering took, for the cost model (None: nothing beyond the request's fixed part).
    work: Work | None = None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    hdrs = [("Content-Type", JSON_CONTENT_TYPE), ("OData-Version", "4.0")]
    if headers:
        hdrs.extend(headers)
    return Response(status, orjson.dumps(payload), hdrs)


class ODataError(Exception):
    """A Dataverse-style error: ``{"error": {"code": "0x...", "message": "..."}}``.

    Attributes:
        status: the HTTP status.
        code: the Dataverse hex code (may be empty, as the real service's often is).
        message: the message text.
        headers: extra response headers (``Retry-After`` for 429).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def to_response(self) -> Response:
        return json_response(self.status, self.body(), self.headers)


# Codes used across the emulator (from the official error code list).
OBJECT_DOES_NOT_EXIST = "0x80040217"
PRIVILEGE_DENIED = "0x80040220"
ODATA_BAD_URL = "0x80060888"
ODATA_PAYLOAD_ERROR = "0x80048d19"
LENGTH_VALIDATION = "0x80044331"
EXPIRED_VERSION_STAMP = "0x80044352"
NOT_SUPPORTED = "0x80040315"
INVALID_PAGING_COOKIE = "0x8004112A"
DUPLICATE_KEY = "0x80060892"
PICKLIST_OUT_OF_RANGE = "0x8004431A"
ENTITY_NOT_FOUND = "0x80094005"
THROTTLE_REQUESTS = "0x80072322"
THROTTLE_TIME = "0x80072321"
THROTTLE_CONCURRENCY = "0x80072326"
RESPONSE_TOO_BIG = "0x80040216"


def bad_request(message: str, code: str = ODATA_BAD_URL) -> ODataError:
    return ODataError(400, code, message)
