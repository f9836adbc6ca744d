"""Errors a user can act on: each carries one sentence that says what is wrong and what to do.

Nothing here ever holds a secret or a token: messages are built from the service's error codes and
texts, the request's method and path, and the settings' names (never their values).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# Codes from the official Dataverse error list that decide a hint.
ODATA_BAD_URL = "0x80060888"
PRIVILEGE_DENIED = "0x80040220"
PRINCIPAL_PRIVILEGE_DENIED = "0x80040231"
ACCESS_DENIED = "0x80048405"
ENTITY_NOT_FOUND = "0x80094005"

_SEGMENT_NOT_FOUND = "resource not found for the segment"
_SYNTAX_WORDS = (
    "syntax",
    "unterminated literal",
    "could not find a property",
    "expression expected",
    "unrecognized",
    "not valid at position",
    "is not supported",
    "was specified more than once",
)
_PRIVILEGE_RE = re.compile(r"\bprv(Read|Write|Create|Delete|AppendTo|Append|Assign|Share)(\w+)")
_ENTITY_IN_MESSAGE_RE = re.compile(r"for entity '([^']+)'")


class DynamicsError(Exception):
    """Base class; ``str(err)`` is the one sentence shown to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(DynamicsError):
    """A setting is missing, malformed or inconsistent."""


class AuthError(DynamicsError):
    """Entra ID refused to issue a token (wrong secret, unknown client or tenant, revoked grant).

    Attributes:
        error: the OAuth error (``invalid_client``).
        aadsts: the AADSTS code (``7000215``), when the service gave one.
    """

    def __init__(
        self, message: str, *, error: str | None = None, aadsts: int | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.aadsts = aadsts


class ApiError(DynamicsError):
    """The Web API answered with an error.

    Attributes:
        status: HTTP status (0 when no response arrived).
        code: the Dataverse hex code (``0x80040220``), often empty.
        service_message: the service's own message.
        method, path: the request (path without the query string).
        entity: the table concerned, when known.
        hint: what to do about it.
        request_id: the service's request id, for a support ticket.
        annotations: the error's instance annotations, as the service gave them
            (``@Microsoft.PowerApps.CDS.ErrorDetails.*`` when the request asked for them).
    """

    def __init__(
        self,
        *,
        status: int,
        code: str,
        service_message: str,
        method: str,
        path: str,
        entity: str | None = None,
        hint: str = "",
        request_id: str | None = None,
        annotations: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.annotations = dict(annotations or {})
        self.code = code
        self.service_message = service_message
        self.method = method
        self.path = path
        self.entity = entity
        self.hint = hint
        self.request_id = request_id
        where = f" on table '{entity}'" if entity else ""
        code_txt = f" {code}" if code else ""
        if status == 0:
            text = f"No answer from Dataverse{where} ({method} {path}): {service_message}"
        else:
            text = (
                f"Dataverse answered {status}{code_txt}{where} ({method} {path}): {service_message}"
            )
        text = text.rstrip(". ") + "."
        if hint:
            text += f" {hint}"
        super().__init__(text)

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (throttling or a transient server error)."""
        return self.status in (429, 500, 502, 503, 504)

    def with_hint(self, hint: str, *, entity: str | None = None) -> ApiError:
        """The same error with another hint (and table)."""
        return ApiError(
            status=self.status,
            code=self.code,
            service_message=self.service_message,
            method=self.method,
            path=self.path,
            entity=entity or self.entity,
            hint=hint,
            request_id=self.request_id,
            annotations=self.annotations,
        )


def api_error(
    status: int,
    method: str,
    path: str,
    *,
    code: str = "",
    message: str = "",
    entity: str | None = None,
    hint: str | None = None,
    is_collection: bool = False,
    request_id: str | None = None,
    annotations: dict[str, Any] | None = None,
) -> ApiError:
    """The one way an :class:`ApiError` is made: the hint, unless given, from
    :func:`error_hint` (privileges, unknown tables, malformed queries).

    Args:
        status: HTTP status (0 when no response arrived).
        method: the request's method.
        path: the request's path, without the query string.
        code: the Dataverse hex code.
        message: the service's message (or what went wrong on the wire).
        entity: the table concerned.
        hint: what to do; computed from the rest when None.
        is_collection: the request addressed an entity set (a 404 then means the table).
        request_id: the service's request id.
        annotations: the error's instance annotations (see :class:`ApiError`).
    """
    if hint is None:
        hint = error_hint(
            status, code, message, method=method, entity=entity, is_collection=is_collection
        )
    return ApiError(
        status=status,
        code=code,
        service_message=message,
        method=method,
        path=path,
        entity=entity,
        hint=hint,
        request_id=request_id,
        annotations=annotations,
    )


def parse_error_body(body: bytes) -> tuple[str, str]:
    """(code, message) from a Dataverse error body; tolerant of empty or non-JSON bodies."""
    if not body:
        return "", ""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:300].decode("utf-8", "replace").strip()
        return "", " ".join(text.split())
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("code") or ""), str(err.get("message") or "")
    return "", ""


def parse_error_annotations(body: bytes) -> dict[str, Any]:
    """The instance annotations (``@...`` members) of a Dataverse error body; ``{}`` when there
    are none or the body is not a JSON error."""
    try:
        data: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return {}
    return {k: v for k, v in err.items() if isinstance(k, str) and k.startswith("@")}


def error_hint(
    status: int,
    code: str,
    message: str,
    *,
    method: str,
    entity: str | None,
    is_collection: bool = False,
) -> str:
    """What the user should do about a Web API error, as one sentence (empty when unknown).

    Args:
        status: HTTP status.
        code: the Dataverse hex code (may be empty).
        message: the service's message.
        method: the HTTP method (a write needs a write privilege, a read a read privilege).
        entity: the table or entity set concerned, when known.
        is_collection: the request addressed an entity set (no key), so a 404 means the table.

    Returns:
        The hint, or ``""``.
    """
    low = message.lower()
    code_low = code.lower()
    table = entity or "the table"
    if status == 403 or code_low in (PRIVILEGE_DENIED, PRINCIPAL_PRIVILEGE_DENIED, ACCESS_DENIED):
        found = _ENTITY_IN_MESSAGE_RE.search(message)
        prv = _PRIVILEGE_RE.search(message)
        if found:
            table = found.group(1)
        access = prv.group(1) if prv else ("Read" if method.upper() == "GET" else "Write")
        privilege = prv.group(0) if prv else f"prv{access}{table}"
        kind = "read" if access == "Read" else "write" if access == "Write" else access.lower()
        return (
            f"The user or application user needs a security role with {kind} access to table "
            f"'{table}' ({privilege})."
        )
    if status == 404 and (
        code_low in (ODATA_BAD_URL, ENTITY_NOT_FOUND) or _SEGMENT_NOT_FOUND in low or is_collection
    ):
        return f"Check the table name '{table}' and that the table exists in this environment."
    if status == 400 and (code_low == ODATA_BAD_URL or any(w in low for w in _SYNTAX_WORDS)):
        return (
            "The query is malformed: check the column names and the literals in $select, "
            "$filter and $orderby."
        )
    return ""


def request_id_of(headers: Any) -> str | None:
    """The service's request id from response headers (for a support ticket), if any.

    Args:
        headers: a case-insensitive mapping of response headers.

    Returns:
        The first of ``x-ms-service-request-id``, ``REQ_ID``, ``x-ms-request-id`` present.
    """
    for name in ("x-ms-service-request-id", "REQ_ID", "x-ms-request-id"):
        value = headers.get(name)
        if value:
            return str(value)
    return None
