"""Run a command and pass its output through; after 5 s without a line, say it is still working.

``make demo`` sets up .venv through this (standard library only: it runs before the venv exists),
so a first run never leaves the user looking at silence, as pip does while it installs the
packages it has downloaded.

Usage: ``python scripts/heartbeat.py <command> [args...]``; exits with the command's code.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

QUIET_AFTER = 5.0


def run(argv: list[str], quiet_after: float = QUIET_AFTER) -> int:
    """Run ``argv``, print its lines, and one of ours after each ``quiet_after`` of silence."""
    started = time.monotonic()
    last = [started]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(0.5):
            now = time.monotonic()
            if now - last[0] >= quiet_after:
                print(f"  ... still working ({now - started:.0f} s)", flush=True)
                last[0] = now

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        last[0] = time.monotonic()
        sys.stdout.write(line)
        sys.stdout.flush()
    code = proc.wait()
    done.set()
    beater.join()
    return code


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("Usage: python scripts/heartbeat.py <command> [args...]")
    sys.exit(run(sys.argv[1:]))
