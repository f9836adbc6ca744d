"""Shared fixtures: a running emulator over real HTTPS, and a Web API client with a real token."""

from __future__ import annotations

import os
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


def pytest_configure(config: pytest.Config) -> None:
    """In CI the fixtures must be there: stop at once rather than skip their tests."""
    from tests.fixtures import AVAILABLE, FIXTURES

    if not AVAILABLE and os.environ.get("CI"):
        pytest.exit(
            f"The Dataverse fixtures are not at {FIXTURES} and CI is set: check out ../shared "
            "beside the repository or set DATAVERSE_FIXTURES (CI never skips the fixture tests).",
            returncode=3,
        )
