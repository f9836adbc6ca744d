"""$metadata is fetched at the configured Web API version, by the tap and the target alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics_emulator.server import Emulator
from tap_dynamics.tap import TapDynamics
from target_dynamics.target import TargetDynamics


@pytest.fixture(autouse=True)
def _trust_emulator(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_bundle)


def _metadata_paths(emulator: Emulator, since: int) -> list[str]:
    return [e.path for e in emulator.requests("$metadata")[since:]]


@pytest.mark.parametrize("version", ["9.1", "v9.0"])
def test_tap_and_target_fetch_metadata_at_the_configured_version(
    emulator: Emulator, tmp_path: Path, version: str
) -> None:
    config = emulator.tap_config(api_version=version, metadata_cache_dir=str(tmp_path))
    expected = f"/api/data/v{version.lstrip('v')}/$metadata"

    before = len(emulator.requests("$metadata"))
    tap_model = TapDynamics(config=config).load_metadata(["account"])
    assert _metadata_paths(emulator, before) == [expected]
    assert "account" in tap_model.entities

    before = len(emulator.requests("$metadata"))
    target_model = TargetDynamics(config=config).model()
    # the tap's cache holds only account: the target, needing every table, fetches again
    assert _metadata_paths(emulator, before) == [expected]
    assert target_model.entities["account"] == tap_model.entities["account"]
