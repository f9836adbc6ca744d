"""The parsed entity model on disk, one file per environment, with a TTL (never the XML).

File layout (format 2)::

    b"dynamics-api/metadata-cache\\n"    signature
    uint32 big-endian                    format version (2)
    frame: the header                    environment, saved_at, document facts, entity names
    frame: one per entity type           in the order of the header's names

A frame is a big-endian uint32 length and that many bytes of MessagePack, encoded and decoded by
msgspec into typed structures: `Property` and `Lookup` decode straight into the model's own
classes, the rest through the `_Header` and `_Entity` structs below. The header alone answers
"is this file usable" (environment, age, wanted types), so a stale file is refused without
decoding the model, and entity types are decoded one frame at a time, so loading never holds
more than the model and one frame.

Format 1 was one JSON document of dicts and lists (``metadata-<digest>.json``); such a file is
never read (a new name) and is removed when the environment's cache is next saved.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import msgspec

from dynamics_api.metadata.model import EntityModel, EntityType, Lookup, Property, wanted_names

logger = logging.getLogger(__name__)

__all__ = ["MetadataCache", "normalize_environment"]

_SIGNATURE = b"dynamics-api/metadata-cache\n"
_FORMAT = 2
_UINT32 = struct.Struct(">I")


class _Header(msgspec.Struct, array_like=True, frozen=True):
    environment: str
    saved_at: float
    source_bytes: int
    parse_seconds: float
    complete: bool
    base_types: dict[str, str | None]
    abstract_types: frozenset[str]
    entities: list[str]


class _Entity(msgspec.Struct, array_like=True):
    """An `EntityType` with its properties and lookups as lists (the dict keys are their names)."""

    name: str
    entity_set: str | None
    key: list[str]
    base_type: str | None
    abstract: bool
    properties: list[Property]
    lookups: list[Lookup]
    navigation: dict[str, str]
    alternate_keys: list[list[str]]
    change_tracking: bool | None
    is_custom: bool
    description: str | None


_HEADER_DECODER = msgspec.msgpack.Decoder(_Header)
_ENTITY_DECODER = msgspec.msgpack.Decoder(_Entity)


class _StaleFormatError(Exception):
    """The file was written in another format (an older or newer version of this package)."""


def normalize_environment(url: str) -> str:
    """``HTTPS://Org.crm.dynamics.com:443/`` -> ``https://org.crm.dynamics.com``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = (
        host
        if port is None or (scheme, port) in {("https", 443), ("http", 80)}
        else f"{host}:{port}"
    )
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def _frames(environment: str, model: EntityModel, saved_at: float) -> Iterator[bytes]:
    """The file's content after the signature and format: the header, then one frame per type."""
    encoder = msgspec.msgpack.Encoder()
    header = _Header(
        environment=environment,
        saved_at=saved_at,
        source_bytes=model.source_bytes,
        parse_seconds=model.parse_seconds,
        complete=model.complete,
        base_types=model.base_types,
        abstract_types=model.abstract_types,
        entities=list(model.entities),
    )
    yield encoder.encode(header)
    for e in model.entities.values():
        yield encoder.encode(
            _Entity(
                name=e.name,
                entity_set=e.entity_set,
                key=e.key,
                base_type=e.base_type,
                abstract=e.abstract,
                properties=list(e.properties.values()),
                lookups=list(e.lookups.values()),
                navigation=e.navigation,
                alternate_keys=e.alternate_keys,
                change_tracking=e.change_tracking,
                is_custom=e.is_custom,
                description=e.description,
            )
        )


def _read_frame(handle: IO[bytes], file_size: int) -> bytes:
    prefix = handle.read(_UINT32.size)
    if len(prefix) != _UINT32.size:
        raise ValueError("the file is truncated")
    (size,) = _UINT32.unpack(prefix)
    if size > file_size:  # a damaged length: never allocate for it
        raise ValueError("the file is truncated")
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("the file is truncated")
    return data


def _read_header(handle: IO[bytes], file_size: int) -> _Header:
    start = handle.read(len(_SIGNATURE) + _UINT32.size)
    if not start.startswith(_SIGNATURE):
        if start.lstrip().startswith(b"{"):
            raise _StaleFormatError("format 1, JSON")
        raise ValueError("not a metadata cache file")
    if len(start) != len(_SIGNATURE) + _UINT32.size:
        raise ValueError("the file is truncated")
    (version,) = _UINT32.unpack(start[len(_SIGNATURE) :])
    if version != _FORMAT:
        raise _StaleFormatError(f"format {version}")
    return _HEADER_DECODER.decode(_read_frame(handle, file_size))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    # Decoding allocates some 10^5 container objects and no cycles; the cyclic collector would
    # walk the growing model again and again (it doubles the load time). It is switched back on
    # afterwards only if it was on.
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_model(handle: IO[bytes], file_size: int, header: _Header) -> EntityModel:
    entities: dict[str, EntityType] = {}
    decode = _ENTITY_DECODER.decode
    with _collector_paused():
        for expected in header.entities:
            e = decode(_read_frame(handle, file_size))
            if e.name != expected:
                raise ValueError(f"entity type {e.name!r} where {expected!r} was announced")
            entities[e.name] = EntityType(
                name=e.name,
                entity_set=e.entity_set,
                key=e.key,
                base_type=e.base_type,
                abstract=e.abstract,
                properties={p.name: p for p in e.properties},
                lookups={lk.property: lk for lk in e.lookups},
                navigation=e.navigation,
                alternate_keys=e.alternate_keys,
                change_tracking=e.change_tracking,
                is_custom=e.is_custom,
                description=e.description,
            )
    if handle.read(1):
        raise ValueError("data after the last entity type")
    return EntityModel(
        entities=entities,
        source_bytes=header.source_bytes,
        parse_seconds=header.parse_seconds,
        complete=header.complete,
        base_types=header.base_types,
        abstract_types=header.abstract_types,
    )


class MetadataCache:
    """The parsed entity model of each environment as a file (never the XML).

    One file per environment, named by the SHA-256 of the normalized environment URL, written
    atomically (temporary file + ``os.replace``) with mode 0600 in a 0700 directory. A file
    older than the TTL, unreadable, corrupt, written in another format, or lacking a wanted
    entity type is ignored (a corrupt one with a warning), and the caller fetches ``$metadata``
    again.

    Args:
        directory: where the files live (created when saving).
        ttl_seconds: how long a saved model is used.
        clock: the time source (seconds since the epoch), for tests.
    """

    def __init__(
        self, directory: Path, ttl_seconds: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def _digest(self, environment_url: str) -> str:
        return hashlib.sha256(normalize_environment(environment_url).encode("utf-8")).hexdigest()

    def path_for(self, environment_url: str) -> Path:
        """The cache file of an environment."""
        return self.directory / f"metadata-{self._digest(environment_url)}.bin"

    def load(self, environment_url: str, wanted: Iterable[str] | None = None) -> EntityModel | None:
        """The cached model, or None when it is missing, expired, corrupt, written in another
        format, or lacks a wanted type.

        Args:
            environment_url: the environment.
            wanted: the entity types the caller needs; None needs a complete model.
        """
        path = self.path_for(environment_url)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            logger.debug("No metadata cache at %s", path)
            return None
        except OSError as exc:
            logger.warning("Ignoring unreadable metadata cache %s: %s", path, exc)
            return None
        with handle:
            try:
                file_size = os.fstat(handle.fileno()).st_size
                header = _read_header(handle, file_size)
                if header.environment != normalize_environment(environment_url):
                    raise ValueError("the file belongs to another environment")
                age = self._clock() - header.saved_at
                if not self._usable(path, header, age, wanted):
                    return None
                model = _read_model(handle, file_size, header)
            except _StaleFormatError as exc:
                logger.info(
                    "Metadata cache %s was written by another version (%s); fetching $metadata "
                    "again",
                    path,
                    exc,
                )
                return None
            except (ValueError, OSError, msgspec.DecodeError) as exc:
                logger.warning(
                    "Ignoring corrupt metadata cache %s (%s); fetching $metadata again", path, exc
                )
                return None
        logger.info("Using the metadata cache %s (%.0f s old)", path, age)
        return model

    def _usable(
        self, path: Path, header: _Header, age: float, wanted: Iterable[str] | None
    ) -> bool:
        if age > self.ttl_seconds or age < -60:
            logger.info(
                "Metadata cache %s is %.0f s old (TTL %.0f s); refreshing",
                path,
                age,
                self.ttl_seconds,
            )
            return False
        names = wanted_names(wanted)
        if names is None:
            if not header.complete:
                logger.info("Metadata cache %s holds only some tables; refreshing", path)
                return False
            return True
        missing = sorted(names.difference(header.entities))
        if missing:
            logger.info("Metadata cache %s lacks %s; refreshing", path, ", ".join(missing))
            return False
        return True

    def save(self, environment_url: str, model: EntityModel) -> None:
        """Writes the model atomically; a failure is logged, never raised."""
        path = self.path_for(environment_url)
        tmp_name: str | None = None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".metadata-", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(_SIGNATURE + _UINT32.pack(_FORMAT))
                frames = _frames(normalize_environment(environment_url), model, self._clock())
                for frame in frames:
                    handle.write(_UINT32.pack(len(frame)))
                    handle.write(frame)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
            logger.debug("Saved the metadata cache %s", path)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"metadata-{self._digest(environment_url)}.json").unlink()
        except OSError as exc:
            logger.warning("Could not save the metadata cache %s: %s", path, exc)
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
