"""Helpers for the tests of the emulator's cost model, service protection and web servers: a small
organisation, a clock the test moves, and the waits the emulator asked for (recorded, not slept)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dynamics_emulator.server import Emulator
from tests.webapi import WebApi

SMALL = {"account": 30, "contact": 12, "systemuser": 3, "transactioncurrency": 2}


class Clock:
    """Real seconds as the test says (service protection reads it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def small_api(**options: Any) -> Iterator[WebApi]:
    """A small organisation with ``options`` (cost model, limits, servers, ...), signed in."""
    with Emulator(counts=SMALL, **options) as emu, WebApi(emu) as api:
        yield api


def frozen(api: WebApi) -> tuple[Clock, list[float]]:
    """Stop the emulator's protection clock, and record its waits instead of sleeping them."""
    clock = Clock()
    waits: list[float] = []
    api.emulator.protection.clock = clock
    api.emulator.front.sleep = waits.append
    return clock, waits


def no_cookies(api: WebApi) -> None:
    """Forget the affinity cookie, so the next request goes to any server."""
    api.session.cookies.clear()


def batch_of_creates(api: WebApi, names: list[str]) -> int:
    """POST one ``$batch`` of account creates; its status."""
    boundary = "batch_cost"
    parts = [
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        "POST /api/data/v9.2/accounts HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\n\r\n" + json.dumps({"name": n}) + "\r\n"
        for n in names
    ]
    body = "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    r = api.request(
        "POST",
        "$batch",
        data=body.encode(),
        headers={"Content-Type": f'multipart/mixed; boundary="{boundary}"'},
    )
    return r.status_code
