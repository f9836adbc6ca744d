"""The plugins' console entry ends a finished run without the interpreter's teardown
(dynamics_singer.cli.exit_now), and loses nothing by it: output still buffered, atexit callbacks
and the exit status are as with sys.exit. Each case runs a child process (exit_now ends its
caller's process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Output buffered as in a pipeline (PYTHONUNBUFFERED would write every line at once).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}

CHILD = """
import atexit, sys, threading
import click
from dynamics_singer.cli import run_plugin

class Teardown:
    def __del__(self):
        sys.stderr.write("torn down\\n")

kept = Teardown()  # freed only by the interpreter's teardown
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))

@click.command()
@click.option("--status", default="0")
@click.option("--thread", is_flag=True)
@click.option("--short", is_flag=True)
def cli(status, thread, short):
    if short:  # after the parent has closed its end of stdout: a line fits in the buffer
        sys.stdin.readline()
        sys.stdout.write("end\\n")
        sys.exit(0)
    sys.stdout.write("x" * 100_000 + "end\\n")  # partly still in the buffer when it returns
    if thread:
        threading.Thread(target=lambda: __import__("time").sleep(0.2)).start()
    sys.exit(int(status) if status.isdigit() else status)

run_plugin(cli, prog="demo", env_prefix="DEMO_", fast_exit=FAST)
"""


def _run(*args: str, fast: bool = True) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(CHILD).replace("FAST", str(fast))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("args", "status"), [((), 0), (("--status", "3"), 3)])
def test_a_finished_run_leaves_without_teardown_and_loses_nothing(
    args: tuple[str, ...], status: int
) -> None:
    done = _run(*args)
    assert done.returncode == status
    assert done.stdout.endswith("x" * 10 + "end\n") and len(done.stdout) == 100_004
    assert "atexit ran" in done.stderr
    # The interpreter's teardown (freeing module globals) did not run.
    assert "torn down" not in done.stderr


def test_a_message_as_exit_code_goes_to_stderr_with_status_1() -> None:
    done = _run("--status", "the run failed")
    assert done.returncode == 1
    assert "the run failed" in done.stderr and "atexit ran" in done.stderr


def test_without_fast_exit_the_interpreter_tears_down_as_usual() -> None:
    done = _run(fast=False)
    assert done.returncode == 0 and len(done.stdout) == 100_004
    assert "torn down" in done.stderr  # what the test above shows left out


def test_a_thread_still_running_takes_the_interpreters_exit() -> None:
    """A thread that is not a daemon is waited for by the interpreter's own exit."""
    done = _run("--thread")
    assert done.returncode == 0 and len(done.stdout) == 100_004
    assert "torn down" in done.stderr and "atexit ran" in done.stderr


def test_a_reader_gone_away_gives_status_120() -> None:
    code = textwrap.dedent(CHILD).replace("FAST", "True")
    with subprocess.Popen(
        [sys.executable, "-c", code, "--short"],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        child.stdout.close()  # nobody reads the buffered line
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert child.wait(timeout=60) == 120
