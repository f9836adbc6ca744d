"""Where the shared, read-only Dataverse fixtures live: ``../shared/fixtures/dataverse`` beside the
repository (as in CI), or ``$DATAVERSE_FIXTURES``.

In a plain clone without them, the tests that need the real documents are skipped with
:data:`REASON` (mark them with :data:`needs_fixtures`) and every other test runs; when the
environment variable ``CI`` is set, missing fixtures stop the run at once (tests/conftest.py), so CI
never skips them silently.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(
    os.environ.get("DATAVERSE_FIXTURES", ROOT.parent / "shared" / "fixtures" / "dataverse")
)
DOCS = FIXTURES / "powerapps-docs"
REAL = FIXTURES / "simple-odata-client"
CRM_SCHEMA = REAL / "crm_schema.xml"
DYNAMICS_CRM = REAL / "DynamicsCRM.xml"

AVAILABLE = DOCS.is_dir() and REAL.is_dir()
REASON = (
    f"needs the Dataverse fixtures, which are not at {FIXTURES}: set DATAVERSE_FIXTURES or check "
    "out ../shared beside the repository"
)
#: For a test (or, as ``pytestmark``, a module) that reads the real documents.
needs_fixtures = pytest.mark.skipif(not AVAILABLE, reason=REASON)


def doc_json(name: str) -> Any:
    return json.loads((DOCS / name).read_text(encoding="utf-8"))
