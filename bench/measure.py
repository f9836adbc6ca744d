"""Run a command; print its wall time and its own peak RSS (MB) on the last line of stderr.

    python -m bench.measure <command...>

A child started straight from a big process (the benchmark holds the emulator and its rows)
inherits that process's resident pages until it execs, and Linux counts them in the child's
``ru_maxrss``. Started from this small process instead, the command's peak is its own.

The wall time is this process's too: from starting the command to its end. The benchmark's own
process, which serves the emulator from its threads, noticed a command's end 0.04-0.5 s late in
most runs (its threads held the interpreter while the command had already ended, measured
against this process's clock), which is neither the command's time nor the service's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

PREFIX = "peak_rss_mb="
WALL = "wall_seconds="


def main() -> int:
    started = time.perf_counter()
    proc = subprocess.Popen(sys.argv[1:])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    print(f"{WALL}{wall:.4f} {PREFIX}{usage.ru_maxrss / 1024:.1f}", file=sys.stderr)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main())
