"""Discovery cost: parsing a real `$metadata` (crm_schema.xml, 4 MB) with the tap's streaming
parser, cold and from the parsed-model cache; time and peak traced memory.

    python -m bench.discovery_bench
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from dynamics_api.metadata import MetadataCache, parse_metadata

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(
    os.environ.get("DATAVERSE_FIXTURES", ROOT.parent / "shared" / "fixtures" / "dataverse")
)
CRM_SCHEMA = FIXTURES / "simple-odata-client" / "crm_schema.xml"
STANDARD = [
    "account",
    "contact",
    "incident",
    "activitypointer",
    "email",
    "phonecall",
    "task",
    "opportunity",
    "lead",
    "systemuser",
    "team",
]


def _best(fn: Any, rounds: int = 5) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_discovery(path: Path = CRM_SCHEMA) -> dict[str, Any]:
    full_s, model = _best(lambda: parse_metadata(path))
    subset_s, _ = _best(lambda: parse_metadata(path, STANDARD))
    tracemalloc.start()
    parse_metadata(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        cache = MetadataCache(Path(tmp), ttl_seconds=3600)
        cache.save("https://org.crm.dynamics.com", model)
        cached_s, _ = _best(lambda: cache.load("https://org.crm.dynamics.com", None))
    return {
        "document": path.name,
        "bytes": path.stat().st_size,
        "entity_types": len(model.entities),
        "parse_all_seconds": round(full_s, 3),
        "parse_standard_11_seconds": round(subset_s, 3),
        "parse_peak_traced_mb": round(peak / 2**20, 2),
        "cached_load_seconds": round(cached_s, 3),
    }


if __name__ == "__main__":
    print(json.dumps(bench_discovery(), indent=2))
