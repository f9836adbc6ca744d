"""singer-sdk's standard target tests against an emulator started at import.

``get_target_test_class`` builds the target at collection time, so the emulator must already run.
The SDK's test streams (``test_camelcase``, ``test_optional_attributes``...) are not Dataverse
tables: each is mapped to ``account`` by stream_options, their records (no ``accountid``, columns
the table lacks) are dead-lettered, never sent, and the run must still finish and relay STATE.
"""

from __future__ import annotations

import atexit
import json
import tempfile
from importlib import resources
from pathlib import Path

import pytest
from singer_sdk.testing import SuiteConfig, get_target_test_class

from dynamics_emulator.server import Emulator
from target_dynamics.target import TargetDynamics

_EMULATOR = Emulator().start()
atexit.register(_EMULATOR.stop)
_TMP = Path(tempfile.mkdtemp(prefix="target-dynamics-sdk-"))


def _sdk_stream_names() -> list[str]:
    names: set[str] = set()
    folder = resources.files("singer_sdk.testing") / "target_test_streams"
    for entry in folder.iterdir():
        if entry.name.endswith(".singer"):
            for line in entry.read_text().splitlines():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and isinstance(msg.get("stream"), str):
                    names.add(msg["stream"])
    return sorted(names)


CONFIG = _EMULATOR.tap_config(
    metadata_cache_ttl=0,
    dead_letter_path=str(_TMP / "dead-letter.jsonl"),
    max_failed_records=1_000_000,
    stream_options={name: {"entity": "account"} for name in _sdk_stream_names()},
)

_StandardTests = get_target_test_class(
    TargetDynamics,
    config=CONFIG,
    suite_config=SuiteConfig(),
    include_target_tests=True,
)


class TestTargetDynamics(_StandardTests):  # type: ignore[misc,valid-type]
    """The standard suite, minus the tests that contradict the target's contract."""

    @pytest.mark.skip(
        reason="by design a record without its key is dead-lettered (nothing lost, the run goes "
        "on), not a MissingKeyPropertiesError that stops the run; see test_target.py"
    )
    def test_target_record_missing_key_property(self) -> None:
        """Excluded by name."""


@pytest.fixture(autouse=True)
def _trust_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The target's sessions trust the CA named by REQUESTS_CA_BUNDLE (the emulator's here)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", _EMULATOR.ca_bundle)
