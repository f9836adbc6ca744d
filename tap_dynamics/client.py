"""DynamicsStream: one Dataverse table as a Singer stream.

Paging follows ``@odata.nextLink`` exactly as given (it already carries ``$select``, ``$filter``
and the ``$skiptoken`` paging cookie), with the same ``Prefer`` header on every page. HTTP,
retries, throttling and re-authentication live in ``dynamics_api.http`` (one retry policy for the
tap and the target), which is why this is a plain ``Stream`` rather than the SDK's ``RESTStream``.
"""

from __future__ import annotations

import queue
import threading
import typing as t
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import singer_sdk.singerlib as singer
from singer_sdk import Stream
from singer_sdk.helpers._util import utc_now
from singer_sdk.helpers.conform import TypeConformanceLevel
from singer_sdk.singerlib import CatalogEntry

from dynamics_api.http import DataverseClient
from dynamics_api.odata import build_query

if t.TYPE_CHECKING:
    from singer_sdk import Tap

# Dataverse returns JSON numbers for Edm.Decimal and money; parsing them as Decimal keeps them
# exact (a float would round 922337203685477.1234).
_decode = msgspec.json.Decoder(float_hook=Decimal).decode

#: Pages fetched ahead while the current one is being written (network overlaps with output).
PREFETCH_PAGES = 2


def odata_datetime(value: datetime) -> str:
    """An unquoted DateTimeOffset literal in UTC (fractions kept exactly when present)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class DynamicsStream(Stream):
    """A Dataverse table.

    Subclasses (see ``streams.py``) declare ``name`` (the table's logical name), ``entity_set``,
    ``primary_keys`` and ``replication_key``; the schema comes from ``$metadata`` or the catalog.
    """

    entity_set: str = ""
    #: Records match the schema exactly (generated from $metadata, parsed with exact types): the
    #: SDK's per-record type conformance would only cost time. tests/unit/test_conformance.py
    #: proves the premise over every Edm type.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(
        self,
        tap: Tap,
        *,
        schema: dict[str, t.Any],
        client: DataverseClient | None,
        name: str | None = None,
        entity_set: str | None = None,
        primary_keys: t.Sequence[str] | None = None,
    ) -> None:
        super().__init__(tap, schema=schema, name=name or self.name)
        if entity_set:
            self.entity_set = entity_set
        if not self.entity_set:
            self.entity_set = f"{self.name}s"
        if primary_keys:
            self.primary_keys = list(primary_keys)
        props = schema.get("properties", {})
        # Incremental on modifiedon where the table has it; full-table otherwise.
        if "modifiedon" in props and not self.replication_key:
            self.replication_key = "modifiedon"
        elif self.replication_key and self.replication_key not in props:
            self.replication_key = None
        self._client = client

    # -- catalog --------------------------------------------------------------------------------

    @property
    def is_sorted(self) -> bool:
        """Rows come ordered by ``modifiedon``, then the key: a stream can resume mid-way."""
        return bool(self.replication_key)

    @property
    def _singer_catalog_entry(self) -> CatalogEntry:
        entry = super()._singer_catalog_entry
        # The entity set travels in the catalog, so that a run with --catalog needs no $metadata.
        entry.table = self.entity_set
        return entry

    # -- sync -----------------------------------------------------------------------------------

    @property
    def client(self) -> DataverseClient:
        if self._client is None:
            self._client = self._tap.client  # type: ignore[attr-defined]
        return self._client

    def selected_properties(self) -> list[str]:
        """The columns to ``$select``: exactly the selected ones, and always the key."""
        mask = self.mask
        cols = [
            p
            for p in self.schema.get("properties", {})
            if mask.get(("properties", p), True) or p in self.primary_keys
        ]
        if self.replication_key and self.replication_key not in cols:
            cols.append(self.replication_key)
        return cols

    def build_first_query(self, context: t.Mapping[str, t.Any] | None) -> str:
        select = self.selected_properties()
        flt = None
        orderby = None
        if self.replication_key:
            start = self.get_starting_timestamp(context)
            if start is not None:
                # `ge`, never `gt`: rows sharing the bookmark's second are read again rather than
                # lost (at-least-once); the target deduplicates on the key.
                flt = f"{self.replication_key} ge {odata_datetime(start)}"
            pk = ",".join(f"{k} asc" for k in self.primary_keys)
            orderby = f"{self.replication_key} asc" + (f",{pk}" if pk else "")
        return build_query(select=select, filter=flt, orderby=orderby)

    def prefer_header(self) -> str:
        size = int(self.config.get("page_size") or 5000)
        return f"odata.maxpagesize={size}"

    def _pages(self, first_url: str, params: str | None) -> Iterator[list[dict[str, t.Any]]]:
        """Pages of rows; the next page is fetched while the caller works on this one."""
        headers = {"Prefer": self.prefer_header()}
        client = self.client
        entity = self.name

        def fetch(url: str, p: str | None) -> tuple[list[dict[str, t.Any]], str | None]:
            resp = client.request("GET", url, params=p, headers=headers, entity=entity)
            body = _decode(resp.content)
            return body.get("value", []), body.get("@odata.nextLink")

        results: queue.Queue[tuple[str, t.Any]] = queue.Queue(maxsize=PREFETCH_PAGES)
        stop = threading.Event()

        def producer() -> None:
            url: str | None = first_url
            p = params
            try:
                while url and not stop.is_set():
                    rows, nxt = fetch(url, p)
                    results.put(("page", rows))
                    url, p = nxt, None  # the next link is used as given
                results.put(("done", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
                results.put(("error", exc))

        worker = threading.Thread(target=producer, name=f"fetch-{entity}", daemon=True)
        worker.start()
        try:
            while True:
                kind, item = results.get()
                if kind == "page":
                    yield item
                elif kind == "done":
                    return
                else:
                    raise item
        finally:
            stop.set()
            # Unblock a producer waiting on a full queue, then let it finish.
            while worker.is_alive():
                try:
                    results.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)

    def get_records(self, context: t.Mapping[str, t.Any] | None) -> Iterable[dict[str, t.Any]]:
        query = self.build_first_query(context)
        wanted = set(self.selected_properties())
        n = len(wanted)
        for rows in self._pages(f"{self.entity_set}", query):
            for row in rows:
                row.pop("@odata.etag", None)
                if len(row) != n:
                    # Drop annotations and columns the service adds on its own (the currency
                    # with a money column) that were not selected.
                    for k in [k for k in row if k not in wanted]:
                        del row[k]
                yield row

    def _generate_record_messages(
        self, record: dict[str, t.Any]
    ) -> t.Generator[singer.RecordMessage, None, None]:
        """As the SDK's, without its per-record selection pass and type conformance: records
        hold exactly the selected columns (``$select`` plus the filter in ``get_records``) with
        the schema's types, and those two steps cost more than everything else per record."""
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield singer.RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=utc_now(),
                )
