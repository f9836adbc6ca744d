"""Shared fixtures: a running emulator over real HTTPS, and a Web API client with a real token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dynamics_emulator.server import Emulator
from tests.webapi import WebApi


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """One emulator for the read-only tests of a session (do not mutate its rows)."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def fresh_emulator() -> Iterator[Emulator]:
    """A new emulator for a test that writes, injects faults or revokes tokens."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def api(emulator: Emulator) -> Iterator[WebApi]:
    with WebApi(emulator) as client:
        yield client


@pytest.fixture
def fresh_api(fresh_emulator: Emulator) -> Iterator[WebApi]:
    with WebApi(fresh_emulator) as client:
        yield client
