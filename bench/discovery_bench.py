"""Discovery cost: parsing `$metadata` with the streaming parser, cold and from the parsed-model
cache; time, peak traced memory (tracemalloc) and peak RSS growth (a child process each).

Two documents: the real crm_schema.xml (4 MB) and a generated 40 MB CSDL of the same shape (its
entity types repeated under new names), for what a big org with many solutions looks like.

    python -m bench.discovery_bench            # both documents
    python -m bench.discovery_bench --quick    # crm_schema.xml only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
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
GENERATED_MB = 40
ENVIRONMENT = "https://org.crm.dynamics.com"

_ENTITY_RE = re.compile(rb"<EntityType\b[^>]*?(?:/>|>.*?</EntityType>)", re.DOTALL)
_NAME_RE = re.compile(rb'(<EntityType\b[^>]*?\bName=")([^"]+)(")')


def generate_csdl(source: Path, target: Path, megabytes: int = GENERATED_MB) -> int:
    """Write a CSDL of about ``megabytes`` MB: ``source`` with its entity types repeated under new
    names (``account_c1``, ...) in the same schema. Returns the number of entity types added."""
    doc = source.read_bytes()
    types = _ENTITY_RE.findall(doc)
    if not types:
        raise RuntimeError(f"no EntityType in {source}")
    last = doc.rfind(b"</EntityType>")
    insert_at = last + len(b"</EntityType>")
    wanted = megabytes * 2**20 - len(doc)
    added = 0
    copy = 0
    with target.open("wb") as out:
        out.write(doc[:insert_at])
        written = 0
        while written < wanted:
            copy += 1
            for block in types:
                suffix = b"_c%d" % copy

                def rename(m: re.Match[bytes], suffix: bytes = suffix) -> bytes:
                    return m.group(1) + m.group(2) + suffix + m.group(3)

                renamed = _NAME_RE.sub(rename, block, count=1)
                out.write(b"\n" + renamed)
                written += len(renamed) + 1
                added += 1
                if written >= wanted:
                    break
        out.write(doc[insert_at:])
    return added


def _best(fn: Any, rounds: int) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _traced_peak_mb(fn: Any) -> float:
    tracemalloc.start()
    try:
        fn()
        return round(tracemalloc.get_traced_memory()[1] / 2**20, 2)
    finally:
        tracemalloc.stop()


def _rss_growth_mb(what: str, path: Path) -> float:
    """Peak RSS growth of a fresh process that parses ``path`` (``parse``) or loads the cache
    in directory ``path`` (``load``), over its RSS once the package is imported."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.discovery_bench", "--child", what, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def _peak_rss_kib() -> int:
    # VmHWM belongs to this process's own address space; ru_maxrss would carry the parent's
    # peak over fork and exec on Linux.
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _child(what: str, path: Path) -> None:
    before = _peak_rss_kib()
    if what == "parse":
        parse_metadata(path)
    elif MetadataCache(path, 3600).load(ENVIRONMENT, None) is None:
        raise SystemExit(f"no usable cache in {path}")
    print(round((_peak_rss_kib() - before) / 1024, 1))


def _measure(path: Path, cache_dir: Path, rounds: int) -> dict[str, Any]:
    parse_s, model = _best(lambda: parse_metadata(path), rounds)
    cache = MetadataCache(cache_dir, ttl_seconds=3600)
    save_s, _ = _best(lambda: cache.save(ENVIRONMENT, model), 1)
    load_s, loaded = _best(lambda: cache.load(ENVIRONMENT, None), max(rounds, 3))
    if loaded != model:
        raise RuntimeError("the cache did not give back the parsed model")
    return {
        "bytes": path.stat().st_size,
        "entity_types": len(model.entities),
        "properties": sum(len(e.properties) for e in model.entities.values()),
        "parse_all_seconds": round(parse_s, 3),
        "parse_peak_traced_mb": _traced_peak_mb(lambda: parse_metadata(path)),
        "parse_peak_rss_growth_mb": _rss_growth_mb("parse", path),
        "cache_file_bytes": cache.path_for(ENVIRONMENT).stat().st_size,
        "cache_save_seconds": round(save_s, 3),
        "cached_load_seconds": round(load_s, 3),
        "cached_load_peak_traced_mb": _traced_peak_mb(lambda: cache.load(ENVIRONMENT, None)),
        "cached_load_peak_rss_growth_mb": _rss_growth_mb("load", cache_dir),
    }


def bench_discovery(path: Path = CRM_SCHEMA) -> dict[str, Any]:
    """crm_schema.xml: every type, the 11 standard ones, and the cache."""
    subset_s, _ = _best(lambda: parse_metadata(path, STANDARD), 5)
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        out = {"document": path.name, **_measure(path, Path(tmp), 5)}
    out["parse_standard_11_seconds"] = round(subset_s, 3)
    return out


def bench_big_discovery() -> dict[str, Any]:
    """The generated 40 MB CSDL: every type, and the cache."""
    with tempfile.TemporaryDirectory(prefix="bench-csdl-") as tmp_s:
        tmp = Path(tmp_s)
        path = tmp / "generated.xml"
        added = generate_csdl(CRM_SCHEMA, path)
        return {
            "document": "generated from crm_schema.xml",
            "entity_types_added": added,
            **_measure(path, tmp / "cache", 2),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="crm_schema.xml only")
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return 0
    results = {"discovery": bench_discovery()}
    if not args.quick:
        results["discovery_40mb"] = bench_big_discovery()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
