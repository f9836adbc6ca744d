"""A fast Singer message writer: msgspec serialisation, decimals as JSON numbers, buffered output.

singer-sdk's default writer serialises with simplejson and flushes after every message. Here each
message is encoded once by msgspec (decimals stay exact numbers) into stdout's buffer, which is
flushed at every STATE message (so a STATE never overtakes the records before it) and at exit.
"""

from __future__ import annotations

import errno
import io
import os
import sys
import typing as t
from collections.abc import Sequence
from decimal import Decimal

import msgspec
from singer_sdk.singerlib.encoding.base import GenericSingerWriter, SingerMessageType
from singer_sdk.singerlib.messages import Message

_encoder = msgspec.json.Encoder(decimal_format="number")


def _default(value: t.Any) -> t.Any:
    if isinstance(value, Decimal):
        return value
    return str(value)


_fallback = msgspec.json.Encoder(decimal_format="number", enc_hook=_default)
#: Pieces one ``writev`` call takes at most (the system's limit, 1024 on Linux).
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def writev_all(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write every piece to ``fd``, in order: ``IOV_MAX`` pieces per system call, going on
    where a call stopped (a call may write fewer bytes than given)."""
    i = 0
    while i < len(parts):
        chunk = parts[i : i + IOV_MAX]
        written = os.writev(fd, chunk)
        if written == 0 and any(len(part) for part in chunk):
            raise OSError(errno.EIO, "the output accepted no bytes")
        for part in chunk:
            size = len(part)
            if written < size:
                parts[i] = memoryview(part)[written:]
                break
            written -= size
            i += 1


def _fileno(out: t.BinaryIO) -> int | None:
    """The file descriptor under ``out`` when pieces can be written to it directly."""
    if not hasattr(os, "writev"):
        return None
    try:
        return out.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def dumps(data: t.Any) -> bytes:
    """One JSON document, as every message and batch file line is written."""
    try:
        return _encoder.encode(data)
    except TypeError:
        return _fallback.encode(data)


class FastWriter(GenericSingerWriter[bytes, Message]):
    """Writes Singer messages as JSON lines."""

    def serialize_message(self, message: Message) -> bytes:
        return dumps(message.to_dict()) + b"\n"

    def write_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """Write already serialised lines given as pieces (the RECORD messages of a page), in
        order with the messages written before and after them: straight to stdout's file, a
        system call per ``IOV_MAX`` pieces, once what stdout holds is flushed (joining a page's
        pieces into one buffer first took 10-15 ms per 5,000-row page, and its 11 MB); through
        stdout's buffer where it has no file (a test's capture)."""
        out = sys.stdout.buffer
        fd = _fileno(out)
        if fd is None:
            out.write(b"".join(parts))
            return
        sys.stdout.flush()
        writev_all(fd, list(parts))

    def write_message(self, message: Message) -> None:
        out = sys.stdout.buffer
        out.write(self.serialize_message(message))
        if message.type != SingerMessageType.RECORD:
            out.flush()
