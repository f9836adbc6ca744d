"""Run a command and print its own peak RSS (MB) on the last line of stderr.

    python -m bench.measure <command...>

A child started straight from a big process (the benchmark holds the emulator and its rows)
inherits that process's resident pages until it execs, and Linux counts them in the child's
``ru_maxrss``. Started from this small process instead, the command's peak is its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

PREFIX = "peak_rss_mb="


def main() -> int:
    proc = subprocess.Popen(sys.argv[1:])
    _, status, usage = os.wait4(proc.pid, 0)
    print(f"{PREFIX}{usage.ru_maxrss / 1024:.1f}", file=sys.stderr)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main())
