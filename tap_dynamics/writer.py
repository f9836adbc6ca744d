"""A fast Singer message writer: msgspec serialisation, decimals as JSON numbers, buffered output.

singer-sdk's default writer serialises with simplejson and flushes after every message. Here each
message is encoded once by msgspec (decimals stay exact numbers) into stdout's buffer, which is
flushed at every STATE message (so a STATE never overtakes the records before it) and at exit.
"""

from __future__ import annotations

import sys
import typing as t
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

    def write_lines(self, data: bytes) -> None:
        """Write already serialised lines (RECORD messages of a page), in order with the
        messages written before and after them."""
        sys.stdout.buffer.write(data)

    def write_message(self, message: Message) -> None:
        out = sys.stdout.buffer
        out.write(self.serialize_message(message))
        if message.type != SingerMessageType.RECORD:
            out.flush()
