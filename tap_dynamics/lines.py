"""RECORD lines straight from a page's bytes, for streams written without stream maps.

A Dataverse page is ``{"@odata.context": ..., "value": [row, ...], "@odata.nextLink": ...}`` and
each row is a JSON object with exactly the ``$select``-ed columns (nulls included) after an
``@odata.etag``. With no stream map, flattening or formatted values, a RECORD message carries the
row as it is: so each row's bytes are cut out of the page (``msgspec.Raw``: scanned, not parsed),
its leading ``@odata.etag`` member is dropped, and the row is wrapped in the message's own bytes.
No dict, no message object and no number conversion per record: values keep the service's exact
text (money and decimals stay exact).

A page whose first row does not have exactly the selected columns (a column the service added
on its own, an annotation) is not cut this way: :meth:`Lines.page` returns None and the caller
writes that page through the ordinary path.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from tap_dynamics.pages import Body, rows_of
from tap_dynamics.writer import dumps

__all__ = ["Lines", "PageLines", "Part"]


_object = msgspec.json.Decoder(dict[str, t.Any]).decode
#: The leading ``"@odata.etag":"W/\"123\""`` member of a row, comma included.
_ETAG = re.compile(rb'\{\s*"@odata\.etag"\s*:\s*"(?:[^"\\]|\\.)*"\s*,')


#: A piece of RECORD lines: the lines are the pieces one after the other.
Part = bytes | memoryview


@dataclass
class PageLines:
    """A page as RECORD lines: their pieces in order (:attr:`data` joins them), how many
    records, and the first and last records' replication key values (None without a
    replication key). A page's pieces are the rows' bytes in the page itself, between the
    messages' own bytes: they are written as they are (:meth:`FastWriter.write_parts`),
    without copying a page's lines into one buffer first."""

    parts: list[Part]
    records: int
    first: t.Any = None
    last: t.Any = None

    @property
    def data(self) -> bytes:
        """The lines, joined."""
        return b"".join(self.parts)


class Lines:
    """Cuts pages of one stream into RECORD lines.

    Args:
        stream: the stream name in the messages.
        columns: the selected columns: exactly the members each row must have.
        replication_key: the column whose first and last values are returned, or None.
        version: the stream version for the messages, or None.
    """

    def __init__(
        self,
        stream: str,
        columns: t.Iterable[str],
        replication_key: str | None,
        version: int | None = None,
    ) -> None:
        self.columns = frozenset(columns)
        self.replication_key = replication_key
        self._prefix = b'{"type":"RECORD","stream":' + msgspec.json.encode(stream) + b',"record":{'
        self._version = b"" if version is None else b',"version":' + str(version).encode()

    def _suffix(self, extracted: datetime | None) -> bytes:
        when = (extracted or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return self._version + b',"time_extracted":"' + when.encode() + b'"}\n'

    def records(
        self, records: list[dict[str, t.Any]], extracted: datetime | None = None
    ) -> PageLines:
        """Records already made into dicts, as RECORD lines of the same shape."""
        if not records:
            return PageLines([], 0)
        suffix = self._suffix(extracted)
        prefix = self._prefix[:-1]  # the record's own "{" comes with it
        data: list[Part] = [b"".join(prefix + dumps(r) + suffix for r in records)]
        if self.replication_key is None:
            return PageLines(data, len(records))
        rk = self.replication_key
        return PageLines(data, len(records), records[0].get(rk), records[-1].get(rk))

    def _value(self, row: msgspec.Raw) -> t.Any:
        assert self.replication_key is not None
        return _object(row).get(self.replication_key)

    def page(self, body: Body, extracted: datetime | None = None) -> PageLines | None:
        """The page's RECORD lines, or None when its rows are not exactly the selected columns.

        Args:
            body: the page as the service sent it (or cut to its first rows).
            extracted: ``time_extracted`` for every record of the page (default: now).
        """
        rows = rows_of(body)
        if not rows:
            return PageLines([], 0)
        first = _object(rows[0])
        if set(first) - {"@odata.etag"} != self.columns:
            return None
        suffix = self._suffix(extracted)
        prefix = self._prefix
        match = _ETAG.match
        parts: list[Part] = []
        add = parts.append
        for row in rows:
            view = memoryview(row)
            cut = match(view)
            add(prefix)
            add(view[cut.end() if cut else 1 :])
            add(suffix)
        if self.replication_key is None:
            return PageLines(parts, len(rows))
        return PageLines(
            parts,
            len(rows),
            first.get(self.replication_key),
            self._value(rows[-1]),
        )
