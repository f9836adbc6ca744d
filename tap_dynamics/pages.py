"""What a page's bytes say besides its rows: the next and delta links, and one column of its
rows.

A Dataverse page is ``{"@odata.context": ..., "value": [row, ...], "@odata.nextLink": ...}``.
The thread that fetches pages needs only the links, to send the next request at once; the rows
are decoded later by the thread that writes them (``tap_dynamics.lines``). Where to split a
window is found by bisection over its page's rows (:class:`Column`): a few rows are decoded of
thousands.
"""

from __future__ import annotations

import tempfile
import typing as t
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from dynamics_api.errors import ApiError

__all__ = [
    "Body",
    "Column",
    "Cut",
    "Spilled",
    "first_rows",
    "links_in_file",
    "links_of",
    "rows_of",
    "size",
    "smaller_page",
    "waiting_size",
    "whole",
]


class _Links(msgspec.Struct):
    next: str | None = msgspec.field(default=None, name="@odata.nextLink")
    delta: str | None = msgspec.field(default=None, name="@odata.deltaLink")


# Reads just the two links of a page, skipping the rows without building them.
_links = msgspec.json.Decoder(_Links).decode
_VALUE = b'"value":'
_LINK_NAMES = (b'"@odata.nextLink"', b'"@odata.deltaLink"')


#: The smallest page asked for when the service finds pages too big (0x80040216).
MIN_PAGE_SIZE = 50
RESPONSE_TOO_BIG = "0x80040216"


def smaller_page(err: ApiError, rows: int, entity: str) -> int:
    """The page size to ask for after ``err`` refused pages of ``rows``: a quarter of it when the
    service found the page too big (the paging cookie is a position, not a page number, so no
    row is skipped or repeated); ``err`` is raised otherwise, with what to do when even the
    smallest pages are too big."""
    if err.code.lower() != RESPONSE_TOO_BIG:
        raise err
    if rows <= MIN_PAGE_SIZE:
        raise err.with_hint(
            f"Even pages of {MIN_PAGE_SIZE} rows are too big: deselect large columns (notes, "
            "images, descriptions) in the catalog.",
            entity=entity,
        ) from None
    return max(MIN_PAGE_SIZE, rows // 4)


#: Bytes of a page's start where its rows begin, and of its end read for its links.
_EDGE = 1 << 16


def _links_after_rows(head: bytes, tail: bytes, tail_at: int) -> _Links | None:
    """The links after the rows, from the page's first bytes and its last ones (which start at
    ``tail_at``), when the page has the service's shape (context, rows, then the links); None
    when it has not, or a "]" inside the links themselves hides the rows' end."""
    start = head.find(_VALUE, 0, _EDGE)
    close = tail.rfind(b"]")
    if (
        start > 0
        and close >= 0
        and tail_at + close > start
        and not any(n in head[:start] for n in _LINK_NAMES)
    ):
        try:
            return _links(b'{"_":0' + tail[close + 1 :])
        except msgspec.DecodeError:
            pass
    return None


def links_of(content: bytes) -> _Links:
    """The page's next and delta links, read from the bytes after the rows when the page has
    the service's shape, so that the fetching thread does not scan tens of MB before it sends
    the next request; otherwise from the whole page."""
    found = _links_after_rows(content, content, 0)
    return found if found is not None else _links(content)


def links_in_file(file: t.BinaryIO, length: int) -> _Links:
    """The links of a page of ``length`` bytes written to ``file``: from its first and last
    bytes as :func:`links_of` finds them (the whole page is read only when that fails)."""
    if length > 2 * _EDGE:
        file.seek(0)
        head = file.read(_EDGE)
        file.seek(length - _EDGE)
        found = _links_after_rows(head, file.read(_EDGE), length - _EDGE)
        if found is not None:
            return found
    file.seek(0)
    return links_of(file.read(length))


@dataclass(frozen=True, slots=True)
class Cut:
    """A page's first ``rows`` rows: the page as fetched and a count, not a copy of those rows
    (a copy would hold the page and most of it again while it is made, in every thread that
    cuts a page)."""

    page: bytes
    rows: int


#: A page to write: as fetched, or cut to its first rows.
Body = bytes | Cut
#: A page of no rows.
EMPTY = b'{"value":[]}'


def whole(body: Body) -> tuple[bytes, slice]:
    """The page as fetched, and which of its rows are the body's."""
    return (body.page, slice(body.rows)) if isinstance(body, Cut) else (body, slice(None))


def size(body: Body) -> int:
    """The bytes a page holds."""
    return len(body.page) if isinstance(body, Cut) else len(body)


class _Rows(msgspec.Struct):
    value: list[msgspec.Raw] = []


_rows = msgspec.json.Decoder(_Rows).decode
_column_decoders: dict[str, t.Callable[[bytes], t.Any]] = {}
V = t.TypeVar("V")


def rows_of(content: Body) -> list[msgspec.Raw]:
    """The page's rows, as their bytes (of a cut page, its first rows)."""
    page, kept = whole(content)
    return _rows(page).value[kept]


class Column(Sequence[V | None]):
    """One column of a page's rows, each value decoded (and converted) only when asked for:
    a window's page is looked at by bisection, a few rows of thousands.

    Args:
        rows: the page's rows (:func:`rows_of`).
        name: the column.
        convert: applied to a value that is neither null nor empty (those are None).
        start: the first row of the column (a slice to the end).
    """

    def __init__(
        self, rows: list[msgspec.Raw], name: str, convert: t.Callable[[str], V], start: int = 0
    ) -> None:
        decode = _column_decoders.get(name)
        if decode is None:
            struct = msgspec.defstruct("One", [(name, str | None, None)])
            decode = _column_decoders[name] = msgspec.json.Decoder(struct).decode
        self._decode = decode
        self._rows = rows
        self._name = name
        self._convert = convert
        self._start = start
        self._seen: dict[int, V | None] = {}

    def __len__(self) -> int:
        return len(self._rows) - self._start

    @t.overload
    def __getitem__(self, i: int) -> V | None: ...

    @t.overload
    def __getitem__(self, i: slice) -> Column[V]: ...

    def __getitem__(self, i: int | slice) -> V | Column[V] | None:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1 or stop != len(self):
                raise ValueError("a column is sliced to its end only")
            return Column(self._rows, self._name, self._convert, self._start + start)
        at = self._start + (i if i >= 0 else len(self) + i)
        if not self._start <= at < len(self._rows):
            raise IndexError(i)
        if at not in self._seen:
            value = getattr(self._decode(self._rows[at]), self._name)
            self._seen[at] = self._convert(value) if value else None
        return self._seen[at]


def first_rows(page: bytes, keep: int) -> Body:
    """The page's first ``keep`` rows, without its links."""
    return Cut(page, keep) if keep else EMPTY


class Spilled:
    """A page waiting in an unnamed temporary file (``TMPDIR``; readable by this user only, and
    gone when closed or when the process ends, however it ends)."""

    __slots__ = ("file", "rows", "size")

    def __init__(self, file: t.BinaryIO, length: int, rows: int | None = None) -> None:
        self.file = file
        self.size = length
        self.rows = rows  # a cut page's rows kept

    @staticmethod
    def new_file() -> t.BinaryIO:
        """An unnamed temporary file for a page (closed by :meth:`read` or :meth:`close`)."""
        return tempfile.TemporaryFile()

    @classmethod
    def of(cls, body: Body) -> Spilled:
        """``body`` written to a temporary file."""
        file = cls.new_file()
        try:
            file.write(body.page if isinstance(body, Cut) else body)
        except BaseException:
            file.close()
            raise
        return cls(file, size(body), body.rows if isinstance(body, Cut) else None)

    def read(self) -> Body:
        """The page, once (the file is closed)."""
        with self.file:
            self.file.seek(0)
            page = self.file.read()
        return page if self.rows is None else Cut(page, self.rows)

    def close(self) -> None:
        self.file.close()


def waiting_size(page: Body | Spilled) -> int:
    """The bytes a page holds, waiting in memory or in its file."""
    return page.size if isinstance(page, Spilled) else size(page)
