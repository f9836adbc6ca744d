"""OData query building and literal quoting for the Dataverse Web API: where values meet URLs.

Every value that ends up in a URL goes through :func:`literal` (OData syntax) and then through
percent-encoding (URL syntax), so no value can end a string literal early, add a path segment or a
query option, or cut the URL with a fragment. Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

_GUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
# OData simple identifiers as Dataverse uses them: table, entity set and column names.
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A query option name: `$select`, a parameter alias `@p1`, or a custom option such as `fetchXml`.
_OPTION_RE = re.compile(r"^[$@]?[A-Za-z_][A-Za-z0-9_.]*$")
_LOOKUP_VALUE_RE = re.compile(r"^_[A-Za-z0-9_]+_value$")

# Characters left readable in a query option value: OData punctuation that has no meaning in the
# query-string syntax itself. `&`, `=`, `+`, `#`, `%`, `;`, space and everything non-ASCII are
# encoded (`+` would otherwise be read as a space; the service wants it as %2B).
_QUERY_SAFE = "$,':()/@*"
# In a key segment only the quotes stay readable (they delimit string literals and are doubled
# inside them); `/`, `(`, `)`, `,`, `=`, `?`, `#` and `%` inside values are always encoded.
_KEY_SAFE = "'"

_NUMERIC_TYPES = {
    "Edm.Int16",
    "Edm.Int32",
    "Edm.Int64",
    "Edm.Byte",
    "Edm.SByte",
    "Edm.Decimal",
    "Edm.Double",
    "Edm.Single",
}


def is_guid(value: object) -> bool:
    """Whether ``value`` is a UUID or a string in the 8-4-4-4-12 hex form.

    Args:
        value: anything.

    Returns:
        True for ``uuid.UUID`` instances and GUID-shaped strings.
    """
    if isinstance(value, uuid.UUID):
        return True
    return isinstance(value, str) and _GUID_RE.match(value) is not None


def quote_string(s: str) -> str:
    """An OData string literal: single quotes around ``s``, each ``'`` inside doubled.

    Args:
        s: the text.

    Returns:
        ``'O''Brien'`` for ``O'Brien``. The result is OData syntax, not yet URL-encoded.
    """
    return "'" + s.replace("'", "''") + "'"


def literal(value: Any, edm_type: str | None = None) -> str:
    """The OData literal for a Python value, as used in ``$filter`` and entity keys.

    Args:
        value: None, bool, int, Decimal, float (finite), datetime, date, uuid.UUID or str.
        edm_type: the column's Edm type when known (``Edm.Guid``, ``Edm.DateTimeOffset``,
            ``Edm.Date``, ``Edm.Int32``, ``Edm.Decimal``, ``Edm.Boolean``, ``Edm.String``...);
            it decides how a string is written (a GUID string is unquoted only for Edm.Guid).

    Returns:
        The literal: ``null``, ``true``, ``42``, ``12.50``, ``2024-11-01T00:00:00Z``,
        ``2024-11-01``, ``00000000-0000-0000-0000-000000000001``, ``'O''Brien'``. Datetimes are
        converted to UTC (a naive datetime is taken as UTC) and keep their microseconds only
        when they are not zero. The result is not URL-encoded.

    Raises:
        ValueError: a non-finite number, or a string that is not valid for ``edm_type``.
        TypeError: a value of a type with no OData literal (list, dict, bytes...).
    """
    if value is None:
        return "null"
    if edm_type == "Edm.String" and not isinstance(value, str):
        value = str(value).lower() if isinstance(value, uuid.UUID) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} has no OData literal (only finite numbers do).")
        # repr() is the shortest exact form; going through Decimal avoids exponent notation.
        return _decimal_text(Decimal(repr(value)))
    if isinstance(value, datetime):
        return _datetime_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value).lower()
    if isinstance(value, str):
        return _string_literal(value, edm_type)
    raise TypeError(f"A {type(value).__name__} value has no OData literal.")


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value!r} has no OData literal (only finite numbers do).")
    if value.is_zero():
        value = abs(value)  # no "-0"
    return format(value, "f")


def _datetime_text(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    # strftime pads years < 1000 inconsistently across platforms; format the year ourselves.
    return f"{value.year:04d}" + value.strftime(spec[2:])


def _string_literal(value: str, edm_type: str | None) -> str:
    if edm_type == "Edm.Guid":
        if not is_guid(value):
            raise ValueError("The value is not a GUID (expected 8-4-4-4-12 hex digits).")
        return value.lower()
    if edm_type == "Edm.DateTimeOffset":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("The value is not an ISO 8601 date-time.") from None
        return _datetime_text(parsed)
    if edm_type == "Edm.Date":
        try:
            return date.fromisoformat(value[:10] if "T" in value else value).isoformat()
        except ValueError:
            raise ValueError("The value is not an ISO 8601 date.") from None
    if edm_type == "Edm.Boolean":
        low = value.strip().lower()
        if low not in ("true", "false"):
            raise ValueError("The value is not a boolean (expected true or false).")
        return low
    if edm_type in _NUMERIC_TYPES:
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"The value is not a number (for {edm_type}).") from None
        if edm_type in ("Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Byte", "Edm.SByte") and (
            number != number.to_integral_value()
        ):
            raise ValueError(f"The value is not a whole number (for {edm_type}).")
        return _decimal_text(number)
    return quote_string(value)


def _encode(text: str, safe: str) -> str:
    return quote(text, safe=safe, encoding="utf-8", errors="strict")


def _check_identifier(name: str, what: str) -> None:
    if not isinstance(name, str) or not _IDENTIFIER_RE.match(name):
        raise ValueError(f"{what} {name!r} is not a valid name (letters, digits and _ only).")


def key_segment(key: Mapping[str, Any], edm_types: Mapping[str, str] | None = None) -> str:
    """The key part of an entity URL, percent-encoded: ``(<guid>)`` or ``(name=literal,...)``.

    A single column whose value is a GUID (a ``uuid.UUID``, a GUID string whose type is
    ``Edm.Guid`` or not given) is written bare, as a primary key: ``(00000000-...)``. A lookup
    value property (``_x_value``), several columns, or any other type use the named form
    (alternate keys): ``(firstname='Joe',emailaddress1='a%40b.c')``.

    Args:
        key: column name -> value.
        edm_types: column name -> Edm type, from the metadata; decides how strings are written.

    Returns:
        The segment, safe to append to an entity set path: no value can add a ``/``, ``?`` or
        ``#``, or end a string literal early.

    Raises:
        ValueError: an empty key, a column name that is not an identifier, or a bad value.
    """
    if not key:
        raise ValueError("An entity key needs at least one column.")
    types = edm_types or {}
    for name in key:
        _check_identifier(name, "Key column")
    if len(key) == 1:
        ((name, value),) = key.items()
        edm = types.get(name)
        if (
            not _LOOKUP_VALUE_RE.match(name)
            and is_guid(value)
            and (isinstance(value, uuid.UUID) or edm in (None, "Edm.Guid"))
        ):
            return "(" + str(value).lower() + ")"
    parts = []
    for name, value in key.items():
        edm = types.get(name)
        if edm is None and _LOOKUP_VALUE_RE.match(name) and is_guid(value):
            edm = "Edm.Guid"
        parts.append(name + "=" + _encode(literal(value, edm), _KEY_SAFE))
    return "(" + ",".join(parts) + ")"


def entity_url(
    base: str,
    entity_set: str,
    key: Mapping[str, Any] | uuid.UUID | str | None = None,
    *,
    edm_types: Mapping[str, str] | None = None,
) -> str:
    """The URL of an entity set, or of one row when ``key`` is given.

    Args:
        base: the Web API root, ``https://org.crm.dynamics.com/api/data/v9.2``.
        entity_set: the entity set name (``accounts``).
        key: a primary key GUID (``uuid.UUID`` or string), or a mapping for :func:`key_segment`.
        edm_types: passed to :func:`key_segment`.

    Returns:
        ``<base>/accounts`` or ``<base>/accounts(<guid>)``.

    Raises:
        ValueError: an entity set name that is not an identifier, or a bad key.
    """
    _check_identifier(entity_set, "Entity set")
    url = base.rstrip("/") + "/" + entity_set
    if key is None:
        return url
    if isinstance(key, uuid.UUID | str):
        if not is_guid(key):
            raise ValueError("A primary key must be a GUID; pass a mapping for an alternate key.")
        return url + "(" + str(key).lower() + ")"
    return url + key_segment(key, edm_types)


def _join(value: str | Iterable[str]) -> str:
    if isinstance(value, str):
        return value
    return ",".join(value)


def encode_option(name: str, value: str) -> str:
    """One ``name=value`` query option, percent-encoded (``+`` as %2B, space as %20).

    Args:
        name: the option name (``$filter``, ``@p1``, ``fetchXml``).
        value: its raw OData text.

    Returns:
        The encoded pair.

    Raises:
        ValueError: an option name that is not ``$name``, ``@alias`` or an identifier.
    """
    if not _OPTION_RE.match(name):
        raise ValueError(f"Query option name {name!r} is not valid.")
    return name + "=" + _encode(value, _QUERY_SAFE)


def build_query(
    *,
    select: str | Iterable[str] | None = None,
    filter: str | None = None,  # the OData option's own name
    orderby: str | Iterable[str] | None = None,
    top: int | None = None,
    count: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A Web API query string (without the leading ``?``), percent-encoded.

    Args:
        select: column names, or an already joined ``a,b``.
        filter: a ``$filter`` expression whose literals came from :func:`literal`.
        orderby: ``modifiedon asc`` items, or an already joined string.
        top: ``$top``.
        count: add ``$count=true``.
        extra: more options (``$expand``, ``$apply``, parameter aliases ``@p1``, ``fetchXml``);
            values that are not strings go through :func:`literal`, except bools which are
            written ``true``/``false``.

    Returns:
        For example ``$select=name,revenue&$filter=modifiedon%20ge%202024-01-01T00:00:00Z``.

    Raises:
        ValueError: a negative ``top`` or an invalid option name.
    """
    pairs: list[str] = []
    if select is not None:
        joined = _join(select)
        if joined:
            pairs.append(encode_option("$select", joined))
    if filter:
        pairs.append(encode_option("$filter", filter))
    if orderby is not None:
        joined = _join(orderby)
        if joined:
            pairs.append(encode_option("$orderby", joined))
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ValueError("$top must be a non-negative integer.")
        pairs.append(f"$top={top}")
    if count:
        pairs.append("$count=true")
    for name, value in (extra or {}).items():
        text = value if isinstance(value, str) else literal(value)
        pairs.append(encode_option(name, text))
    return "&".join(pairs)
