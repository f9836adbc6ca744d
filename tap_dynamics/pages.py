"""What a page's bytes say besides its rows: the next and delta links.

A Dataverse page is ``{"@odata.context": ..., "value": [row, ...], "@odata.nextLink": ...}``.
The thread that fetches pages needs only the links, to send the next request at once; the rows
are decoded later by the thread that writes them (``tap_dynamics.lines``).
"""

from __future__ import annotations

import typing as t

import msgspec

__all__ = ["columns_of", "first_rows", "links_of"]


class _Links(msgspec.Struct):
    next: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta: str | None = msgspec.field(default=None, name="@odata.deltaLink")


# Reads just the two links of a page, skipping the rows without building them.
_links = msgspec.json.Decoder(_Links).decode
_VALUE = b'"value":'
_LINK_NAMES = (b'"@odata.nextLink"', b'"@odata.deltaLink"')


def links_of(content: bytes) -> _Links:
    """The page's next and delta links, read from the bytes after the rows when the page has
    the service's shape (context, rows, then the links), so that the fetching thread does not
    scan tens of MB before it sends the next request; otherwise from the whole page."""
    head = content.find(_VALUE, 0, 1 << 16)
    close = content.rfind(b"]")
    if head > 0 and close > head and not any(n in content[:head] for n in _LINK_NAMES):
        try:
            return _links(b'{"_":0' + content[close + 1 :])
        except msgspec.DecodeError:
            pass  # a "]" inside the links themselves: read the whole page
    return _links(content)


class _Rows(msgspec.Struct):
    value: list[msgspec.Raw] = []


_rows = msgspec.json.Decoder(_Rows).decode
_column_decoders: dict[tuple[str, ...], t.Callable[[bytes], t.Any]] = {}


def columns_of(
    content: bytes, *columns: str
) -> tuple[list[msgspec.Raw], tuple[list[str | None], ...]]:
    """The page's rows (as their bytes) and, per column, each row's value of it."""
    decode = _column_decoders.get(columns)
    if decode is None:
        fields = [(c, str | None, None) for c in columns]
        decode = _column_decoders[columns] = msgspec.json.Decoder(
            msgspec.defstruct("Some", fields)
        ).decode
    rows = _rows(content).value
    decoded = [decode(row) for row in rows]
    return rows, tuple([getattr(d, c) for d in decoded] for c in columns)


def first_rows(rows: list[msgspec.Raw], keep: int) -> bytes:
    """A page of the first ``keep`` rows, without links."""
    return b'{"value":[' + b",".join(rows[:keep]) + b"]}"  # one copy: Raw is a buffer
