"""Parsing of Web API resource paths and entity keys: ``accounts``, ``accounts(<guid>)``,
``contacts(firstname='Joe',emailaddress1='a@b.c')``, ``accounts/$count``, ``$metadata``, ``$batch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .wire import ODATA_BAD_URL, ODataError

API_PREFIX_RE = re.compile(r"^/api/data/(v9\.[0-2])(?:/|$)")
#: Unbound functions: their parentheses hold parameters, not a key.
FUNCTIONS = frozenset({"WhoAmI", "RetrieveTotalRecordCount"})
GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


@dataclass
class ResourcePath:
    """What a request addresses, below ``/api/data/v9.x/``."""

    version: str
    segment: str  # entity set name, `$metadata`, `$batch`, or "" for the service document
    key: dict[str, Any] | None = None  # property -> raw literal value (str for strings, int, ...)
    key_is_guid: bool = False
    rest: list[str] = field(default_factory=list)  # segments after the entity, e.g. ["$count"]
    args: str | None = None  # a function's parameters, as written between its parentheses


def split_api_path(raw_path: str) -> ResourcePath | None:
    """Split a raw (still percent-encoded) request path; None when it is not a Web API path."""
    m = API_PREFIX_RE.match(raw_path)
    if not m:
        return None
    version = m.group(1)
    rest = raw_path[m.end() :]
    if not rest:
        return ResourcePath(version, "")
    # The key may contain encoded slashes and parentheses; split on the first raw "(" only.
    head, sep, tail = rest.partition("(")
    if not sep:
        parts = rest.split("/")
        return ResourcePath(version, unquote(parts[0]), rest=[unquote(p) for p in parts[1:] if p])
    depth_close = _matching_paren(tail)
    if depth_close < 0:
        raise ODataError(
            400, ODATA_BAD_URL, f"Bad Request - Error in query syntax: '{unquote(rest)}'."
        )
    key_text = unquote(tail[:depth_close])
    after = tail[depth_close + 1 :]
    segments = [unquote(p) for p in after.split("/") if p]
    if unquote(head) in FUNCTIONS:
        return ResourcePath(version, unquote(head), rest=segments, args=key_text)
    key, is_guid = parse_key(key_text)
    return ResourcePath(version, unquote(head), key, is_guid, segments)


def _matching_paren(s: str) -> int:
    """Index of the ")" that closes a key, honouring quoted strings ('' escapes)."""
    i, in_str = 0, False
    while i < len(s):
        ch = s[i]
        if in_str:
            if ch == "'":
                if i + 1 < len(s) and s[i + 1] == "'":
                    i += 2
                    continue
                in_str = False
        elif ch == "'":
            in_str = True
        elif ch == ")":
            return i
        i += 1
    return -1


def parse_key(text: str) -> tuple[dict[str, Any], bool]:
    """Parse the inside of ``(...)``: a bare GUID, or ``name=value`` pairs.

    Values: ``'string'`` (with ``''`` for a quote), integers, decimals, GUIDs, ``true``/``false``,
    ``null``. Returns (key, is_guid).
    """
    t = text.strip()
    if GUID_RE.match(t):
        return {"": t.lower()}, True
    if t.startswith("'") or "=" not in t:
        raise ODataError(
            400,
            ODATA_BAD_URL,
            f"Bad Request - Error in query syntax. The key value '{text}' is not valid.",
        )
    out: dict[str, Any] = {}
    i = 0
    n = len(t)
    while i < n:
        eq = t.find("=", i)
        if eq < 0:
            raise ODataError(
                400, ODATA_BAD_URL, f"Bad Request - Error in query syntax: '({text})'."
            )
        name = t[i:eq].strip()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ODataError(
                400, ODATA_BAD_URL, f"Bad Request - Error in query syntax: '({text})'."
            )
        j = eq + 1
        if j < n and t[j] == "'":
            buf = []
            j += 1
            while True:
                if j >= n:
                    raise ODataError(
                        400,
                        ODATA_BAD_URL,
                        f"There is an unterminated literal at position {eq + 1} in '{text}'.",
                    )
                if t[j] == "'":
                    if j + 1 < n and t[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    j += 1
                    break
                buf.append(t[j])
                j += 1
            value: Any = "".join(buf)
        else:
            comma = t.find(",", j)
            end = n if comma < 0 else comma
            raw = t[j:end].strip()
            j = end
            value = _literal(raw, text)
        if name in out:
            raise ODataError(400, ODATA_BAD_URL, f"Duplicate key property '{name}' in '({text})'.")
        out[name] = value
        while j < n and t[j] == " ":
            j += 1
        if j < n:
            if t[j] != ",":
                raise ODataError(
                    400, ODATA_BAD_URL, f"Bad Request - Error in query syntax: '({text})'."
                )
            j += 1
        i = j
    return out, False


def _literal(raw: str, text: str) -> Any:
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if GUID_RE.match(raw):
        return raw.lower()
    if re.match(r"^-?\d+$", raw):
        return int(raw)
    if re.match(r"^-?\d+\.\d+[mM]?$", raw):
        return float(raw.rstrip("mM"))
    raise ODataError(400, ODATA_BAD_URL, f"Bad Request - Error in query syntax: '({text})'.")


def format_key(key: dict[str, Any]) -> str:
    """Render a key back in URL form (for OData-EntityId)."""
    if list(key) == [""]:
        return str(key[""])
    parts = []
    for k, v in key.items():
        if isinstance(v, str) and not GUID_RE.match(v):
            parts.append(f"{k}='{v.replace(chr(39), chr(39) * 2)}'")
        elif isinstance(v, bool):
            parts.append(f"{k}={'true' if v else 'false'}")
        elif v is None:
            parts.append(f"{k}=null")
        else:
            parts.append(f"{k}={v}")
    return ",".join(parts)
