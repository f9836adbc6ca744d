"""One converter per writable column, chosen once from its Edm type: a value the column cannot
take raises :class:`InvalidRecord` with the reason, before anything is sent."""

from __future__ import annotations

import base64
import binascii
import math
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from dynamics_api.metadata import Property
from dynamics_api.odata import is_guid, literal

__all__ = ["Converter", "InvalidRecord", "converter"]

_INT_RANGES = {
    "Edm.Byte": (0, 255),
    "Edm.SByte": (-128, 127),
    "Edm.Int16": (-(2**15), 2**15 - 1),
    "Edm.Int32": (-(2**31), 2**31 - 1),
    "Edm.Int64": (-(2**63), 2**63 - 1),
}
_UTC_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,7})?Z$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidRecord(Exception):  # noqa: N818 - a reason, not an error of the program
    """A record that must not reach the service; ``str()`` is the reason."""


Converter = Callable[[Any], Any]


def _type_name(v: Any) -> str:
    return type(v).__name__ if v is not None else "null"


def _string(prop: Property) -> Converter:
    limit = prop.max_length

    def conv(v: Any) -> Any:
        if not isinstance(v, str):
            raise InvalidRecord(f"column '{prop.name}' expects a string, not {_type_name(v)}")
        if limit is not None and len(v) > limit:
            raise InvalidRecord(f"column '{prop.name}' is longer than {limit} characters")
        return v

    return conv


def _integer(prop: Property) -> Converter:
    low, high = _INT_RANGES.get(prop.edm_type, _INT_RANGES["Edm.Int64"])

    def conv(v: Any) -> Any:
        if isinstance(v, Decimal) and v.is_finite() and v == v.to_integral_value():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRecord(
                f"column '{prop.name}' expects a whole number ({prop.edm_type}), not "
                f"{_type_name(v)}"
            )
        if not low <= v <= high:
            raise InvalidRecord(f"column '{prop.name}' is out of range for {prop.edm_type}")
        return v

    return conv


def _number(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float | Decimal):
            raise InvalidRecord(
                f"column '{prop.name}' expects a number ({prop.edm_type}), not {_type_name(v)}"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidRecord(f"column '{prop.name}' is not a finite number")
        if isinstance(v, Decimal) and not v.is_finite():
            raise InvalidRecord(f"column '{prop.name}' is not a finite number")
        return v

    return conv


def _boolean(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        if not isinstance(v, bool):
            raise InvalidRecord(f"column '{prop.name}' expects true or false, not {_type_name(v)}")
        return v

    return conv


def _datetime(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        if isinstance(v, str) and _UTC_DATETIME_RE.match(v):
            return v  # already ISO UTC: no parsing on the hot path
        if isinstance(v, str | datetime | date):
            try:
                return literal(v, "Edm.DateTimeOffset") if isinstance(v, str) else literal(v)
            except ValueError:
                pass
        raise InvalidRecord(f"column '{prop.name}' expects an ISO 8601 date-time")

    return conv


def _date(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        if isinstance(v, str) and _DATE_RE.match(v):
            try:
                return date.fromisoformat(v).isoformat()
            except ValueError:
                pass
        elif isinstance(v, datetime):
            return v.date().isoformat()
        elif isinstance(v, date):
            return v.isoformat()
        elif isinstance(v, str):
            try:
                return literal(v, "Edm.Date")
            except ValueError:
                pass
        raise InvalidRecord(f"column '{prop.name}' expects a date (YYYY-MM-DD)")

    return conv


def _guid(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        if isinstance(v, uuid.UUID):
            return str(v)
        if not is_guid(v):
            raise InvalidRecord(f"column '{prop.name}' expects a GUID")
        return str(v).lower()

    return conv


def _binary(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        if not isinstance(v, str):
            raise InvalidRecord(f"column '{prop.name}' expects base64 text")
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRecord(f"column '{prop.name}' is not valid base64") from None
        return v

    return conv


def _anything(prop: Property) -> Converter:
    def conv(v: Any) -> Any:
        return v

    return conv


_BY_TYPE: dict[str, Callable[[Property], Converter]] = {
    "Edm.String": _string,
    "Edm.Int16": _integer,
    "Edm.Int32": _integer,
    "Edm.Int64": _integer,
    "Edm.Byte": _integer,
    "Edm.SByte": _integer,
    "Edm.Decimal": _number,
    "Edm.Double": _number,
    "Edm.Single": _number,
    "Edm.Boolean": _boolean,
    "Edm.DateTimeOffset": _datetime,
    "Edm.Date": _date,
    "Edm.Guid": _guid,
    "Edm.Binary": _binary,
}


def converter(prop: Property) -> Converter:
    base = _BY_TYPE.get(prop.edm_type, _anything)(prop)

    def conv(v: Any) -> Any:
        return None if v is None else base(v)

    return conv
