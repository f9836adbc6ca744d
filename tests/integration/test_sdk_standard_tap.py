"""The singer-sdk standard tap test suite, against the emulator.

The factory builds the tap (and so runs discovery) while pytest collects this module, so the
emulator starts at import and stops when the session ends.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator

import pytest
from singer_sdk.testing import SuiteConfig, get_tap_test_class

from dynamics_emulator.server import Emulator
from tap_dynamics.tap import TapDynamics

_EMULATOR = Emulator(
    counts={
        "account": 120,
        "contact": 150,
        "incident": 100,
        "email": 60,
        "phonecall": 40,
        "task": 50,
        "opportunity": 40,
        "lead": 40,
        "systemuser": 12,
        "team": 4,
        "transactioncurrency": 4,
        "new_project": 20,
    }
).start()
atexit.register(_EMULATOR.stop)

# The tap trusts the emulator's private CA the standard way (REQUESTS_CA_BUNDLE): set while the
# factory discovers here, and while each test of this module runs (fixture below), not beyond.
_saved = os.environ.get("REQUESTS_CA_BUNDLE")
os.environ["REQUESTS_CA_BUNDLE"] = _EMULATOR.ca_bundle
try:
    TestTapDynamics = get_tap_test_class(
        TapDynamics,
        config=_EMULATOR.tap_config(custom_entities=["new_project"], metadata_cache_ttl=0),
        suite_config=SuiteConfig(max_records_limit=100),
    )
finally:
    if _saved is None:
        del os.environ["REQUESTS_CA_BUNDLE"]
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = _saved


@pytest.fixture(autouse=True, scope="module")
def _trust_emulator() -> Iterator[None]:
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = _EMULATOR.ca_bundle
    yield
    if saved is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = saved
