"""BATCH files holding exactly what the RECORD messages would: mapped records, same encoding.

singer-sdk writes batch files from the records before stream maps, with its own JSON encoder and
always gzip-compressed. Here each record goes through the stream's map first (so renamed or
dropped columns, filters and aliases hold in files as in RECORD messages), JSON lines are written
by the same encoder as the tap's RECORD output (exact decimals), and ``encoding.compression`` is
honoured. Parquet goes through the SDK's encoder (it needs pyarrow).
"""

from __future__ import annotations

import gzip
import typing as t
from uuid import uuid4

from singer_sdk.batch import Batcher, lazy_chunked_generator

from tap_dynamics.writer import dumps

if t.TYPE_CHECKING:
    # SDK-private module: BatchConfig has no public import path (an annotation only here).
    from singer_sdk.helpers._batch import BatchConfig

__all__ = ["write_batches"]


def write_batches(
    records: t.Iterable[dict[str, t.Any]],
    config: BatchConfig,
    *,
    tap_name: str,
    stream_name: str,
) -> t.Iterator[list[str]]:
    """Write ``records`` into batch files of ``config.batch_size`` records; yield each file's
    manifest (one URL) once the file is complete."""
    if config.encoding.format != "jsonl":
        batcher = Batcher(tap_name=tap_name, stream_name=stream_name, batch_config=config)
        yield from batcher.get_batches(records=iter(records))
        return
    storage = config.storage
    gzipped = config.encoding.compression == "gzip"
    sync_id = f"{tap_name}--{stream_name}-{uuid4()}"
    for i, chunk in enumerate(lazy_chunked_generator(records, config.batch_size), start=1):
        name = f"{storage.prefix or ''}{sync_id}-{i}.jsonl" + (".gz" if gzipped else "")
        with storage.open(name, "wb") as raw:
            out = gzip.GzipFile(fileobj=raw, mode="wb") if gzipped else raw
            try:
                for record in chunk:
                    out.write(dumps(record) + b"\n")
            finally:
                if isinstance(out, gzip.GzipFile):
                    out.close()
        yield [storage.get_url(name)]
