"""bench.measure: the command's exit status, wall time and peak RSS, as the benchmarks read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.measure import PREFIX, WALL

ROOT = Path(__file__).resolve().parents[2]


def _measure(code: str) -> tuple[int, float, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.measure", sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    wall, peak = done.stderr.strip().splitlines()[-1].split()
    return done.returncode, float(wall.removeprefix(WALL)), float(peak.removeprefix(PREFIX))


def test_the_last_line_gives_the_commands_wall_time_and_peak() -> None:
    status, wall, peak = _measure("import time; b = b'x' * (64 << 20); time.sleep(0.1)")
    assert status == 0
    assert wall >= 0.1  # at least the time the command slept
    assert peak >= 64  # the 64 MB the command held


def test_the_commands_exit_status_is_passed_on() -> None:
    status, _, _ = _measure("raise SystemExit(3)")
    assert status == 3
