"""Records from the files a Singer BATCH message names, read one at a time.

singer-sdk taps write BATCH files as JSON lines (one record per line, gzip-compressed unless
the tap's ``batch_config`` says otherwise) or, with ``pyarrow`` installed, as Parquet; the manifest
lists them as ``file://`` URLs. Each record read here goes through the same path as a RECORD message
(stream maps, validation, deletes, dead letters), so nothing in a file is written differently.
"""

from __future__ import annotations

import gzip
import importlib.util
import typing as t
from decimal import Decimal
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from dynamics_api.errors import DynamicsError

__all__ = ["BatchFileError", "batch_file_path", "read_batch_file"]

_decode = msgspec.json.Decoder(float_hook=Decimal).decode
_GZIP_MAGIC = b"\x1f\x8b"


class BatchFileError(DynamicsError):
    """A file named by a BATCH manifest cannot be read; the run stops before any STATE past it."""


def batch_file_path(url: str) -> Path:
    """The local path of a manifest entry (``file://`` URL or a plain path).

    Raises:
        BatchFileError: any other scheme.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        if parts.netloc not in ("", "localhost"):
            raise BatchFileError(
                f"The BATCH manifest names {url}, on host '{parts.netloc}'; target-dynamics "
                "reads local files only: write the batch files to a local folder (the tap's "
                "batch_config storage root as a file:// URL)."
            )
        return Path(unquote(parts.path) if parts.scheme else url)
    raise BatchFileError(
        f"The BATCH manifest names {url}; target-dynamics reads file:// manifests only: set the "
        "tap's batch_config storage root to a local file:// folder."
    )


def read_batch_file(
    url: str, encoding_format: str, compression: str | None
) -> t.Iterator[dict[str, t.Any]]:
    """The records of one batch file, in file order, read lazily.

    Raises:
        BatchFileError: the file is missing, unreadable, not in the announced format or
            encoding, or holds a line that is not a JSON object.
    """
    path = batch_file_path(url)
    try:
        if encoding_format == "jsonl":
            yield from _jsonl(path, compression)
        elif encoding_format == "parquet":
            yield from _parquet(path)
        else:
            raise BatchFileError(
                f"The BATCH file {path} is in the {encoding_format!r} format, which "
                "target-dynamics does not read; use jsonl (or parquet with pyarrow installed)."
            )
    except BatchFileError:
        raise
    except FileNotFoundError:
        raise BatchFileError(
            f"The BATCH file {path} does not exist; the tap's batch files must be on a disk "
            "the target can read, and kept until the target has read them."
        ) from None
    except (OSError, EOFError, ValueError, msgspec.DecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BatchFileError(
            f"The BATCH file {path} cannot be read ({reason}); check that the tap finished "
            "writing it and that it is in the format its BATCH message announces."
        ) from None


def _jsonl(path: Path, compression: str | None) -> t.Iterator[dict[str, t.Any]]:
    with path.open("rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if compression == "gzip" and not gzipped:
            raise ValueError("the BATCH message says gzip, but the file is not gzip-compressed")
        stream: t.Iterable[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            record = _decode(line)
            if not isinstance(record, dict):
                raise ValueError(f"line {number} is not a JSON object")
            yield record


def _parquet(path: Path) -> t.Iterator[dict[str, t.Any]]:
    if importlib.util.find_spec("pyarrow") is None:
        raise BatchFileError(
            f"The BATCH file {path} is Parquet, which needs pyarrow: install "
            "`tap-dynamics[parquet]` (or pyarrow) beside target-dynamics, or have the tap write "
            "jsonl."
        )
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(path)
    for batch in pq.ParquetFile(path).iter_batches():
        yield from batch.to_pylist()
