"""The resilience suites' shared pieces: the fault matrix, recorded to bench/fault-matrix.json."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The matrix goes to the working tree only when asked for (FAULT_MATRIX_OUT=bench/fault-matrix.json),
# so a test run never changes a tracked file; otherwise to the build directory.
MATRIX_PATH = Path(os.environ.get("FAULT_MATRIX_OUT") or ROOT / "build" / "fault-matrix.json")


@dataclass
class MatrixRow:
    """One fault case: what was injected, how many runs, rows compared and rows lost."""

    component: str  # tap or target
    case: str
    faults_injected: int
    runs: int
    rows_compared: int
    rows_lost: int
    rows_different: int = 0


class FaultMatrix:
    def __init__(self) -> None:
        self.rows: list[MatrixRow] = []
        self._lock = threading.Lock()

    def record(self, row: MatrixRow) -> None:
        with self._lock:
            self.rows.append(row)

    def as_json(self) -> dict[str, object]:
        rows = sorted(self.rows, key=lambda r: (r.component, r.case))
        return {
            "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cases": len(rows),
            "faults_injected": sum(r.faults_injected for r in rows),
            "runs": sum(r.runs for r in rows),
            "rows_compared": sum(r.rows_compared for r in rows),
            "rows_lost": sum(r.rows_lost for r in rows),
            "rows_different": sum(r.rows_different for r in rows),
            "matrix": [asdict(r) for r in rows],
        }


@pytest.fixture(scope="session")
def fault_matrix() -> Iterator[FaultMatrix]:
    matrix = FaultMatrix()
    yield matrix
    if matrix.rows:
        MATRIX_PATH.parent.mkdir(parents=True, exist_ok=True)
        MATRIX_PATH.write_text(json.dumps(matrix.as_json(), indent=2) + "\n")


def when_seen(
    seen: Callable[[], bool], action: Callable[[], None], *, timeout: float = 60
) -> threading.Thread:
    """Call ``action`` (in a thread) as soon as ``seen()`` holds, polling every 2 ms; give up
    after ``timeout`` seconds (the test then finds its fault not injected)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if seen():
                action()
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
