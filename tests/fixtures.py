"""Where the shared, read-only Dataverse fixtures live: ``../shared/fixtures/dataverse`` beside the
repository (as in CI), or ``$DATAVERSE_FIXTURES``. A missing directory is an error, not a skip."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(
    os.environ.get("DATAVERSE_FIXTURES", ROOT.parent / "shared" / "fixtures" / "dataverse")
)
DOCS = FIXTURES / "powerapps-docs"
REAL = FIXTURES / "simple-odata-client"
CRM_SCHEMA = REAL / "crm_schema.xml"
DYNAMICS_CRM = REAL / "DynamicsCRM.xml"

if not (DOCS.is_dir() and REAL.is_dir()):
    raise RuntimeError(
        f"The Dataverse fixtures are not at {FIXTURES}; check out ../shared beside the repository "
        "or set DATAVERSE_FIXTURES."
    )


def doc_json(name: str) -> Any:
    return json.loads((DOCS / name).read_text(encoding="utf-8"))
