"""RECORD lines written as pieces (FastWriter.write_parts): straight to stdout's file with
writev, in order with the messages around them, whole when a call writes only part of them."""

from __future__ import annotations

import io
import os
import sys
import typing as t
from pathlib import Path

import pytest
from singer_sdk.singerlib.messages import RecordMessage, StateMessage

from tap_dynamics import writer as writer_module
from tap_dynamics.writer import IOV_MAX, FastWriter, writev_all


def _pieces(n: int) -> list[bytes | memoryview]:
    page = b"".join(b'{"n":%d}' % i for i in range(n))
    view = memoryview(page)
    out: list[bytes | memoryview] = []
    at = 0
    for i in range(n):
        size = len(b'{"n":%d}' % i)
        out += [b"[", view[at : at + size], b"]\n"]
        at += size
    return out


def test_writev_all_goes_on_where_a_call_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _pieces(3 * IOV_MAX)  # several calls' worth of pieces
    expected = b"".join(parts)
    real = os.writev
    calls = []

    def short(fd: int, buffers: t.Sequence[bytes | memoryview]) -> int:
        # At most 1,000 bytes a call, often ending inside a piece.
        calls.append(len(buffers))
        assert len(buffers) <= IOV_MAX
        return os.write(fd, b"".join(buffers)[:1000])

    monkeypatch.setattr(os, "writev", short)
    with (tmp_path / "out").open("wb") as f:
        writev_all(f.fileno(), list(parts))
    monkeypatch.setattr(os, "writev", real)
    assert (tmp_path / "out").read_bytes() == expected
    assert len(calls) > len(expected) // 1000


def test_writev_all_stops_when_nothing_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "writev", lambda fd, buffers: 0)
    with pytest.raises(OSError, match="accepted no bytes"):
        writev_all(1, [b"x"])


def _stdout_on(monkeypatch: pytest.MonkeyPatch, binary: t.BinaryIO) -> io.TextIOWrapper:
    text = io.TextIOWrapper(t.cast(t.Any, binary), encoding="utf-8", write_through=False)
    monkeypatch.setattr(sys, "stdout", text)
    return text


@pytest.mark.parametrize("where", ["file", "no file"])
def test_pieces_come_in_order_with_the_messages_around_them(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _pieces(500)
    state = StateMessage(value={"bookmarks": {}})
    record = RecordMessage(stream="s", record={"n": -1})
    w = FastWriter()
    used: list[int] = []
    real = os.writev

    def counted(fd: int, buffers: t.Sequence[bytes | memoryview]) -> int:
        used.append(fd)
        return real(fd, buffers)

    monkeypatch.setattr(os, "writev", counted)
    path = tmp_path / "out"
    binary: t.BinaryIO = path.open("wb", buffering=1 << 16) if where == "file" else io.BytesIO()
    text = _stdout_on(monkeypatch, binary)
    w.write_message(record)  # a RECORD stays in stdout's buffer until the next flush
    w.write_parts(parts)
    w.write_message(state)
    text.flush()
    got = path.read_bytes() if where == "file" else t.cast(io.BytesIO, binary).getvalue()
    binary.close()
    assert got == w.serialize_message(record) + b"".join(parts) + w.serialize_message(state)
    # Straight to the file where there is one; through the buffer where there is none.
    assert bool(used) == (where == "file")


def test_without_writev_the_pieces_go_through_stdouts_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without os.writev (Windows), the pieces go through stdout's buffer."""
    monkeypatch.delattr(os, "writev")
    binary = io.BytesIO()
    text = _stdout_on(monkeypatch, binary)
    assert writer_module._fileno(sys.stdout.buffer) is None
    FastWriter().write_parts([b"a", memoryview(b"bc"), b"\n"])
    text.flush()
    assert binary.getvalue() == b"abc\n"
