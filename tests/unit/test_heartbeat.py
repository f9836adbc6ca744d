"""scripts/heartbeat.py: `make demo`'s set-up is never silent for long, and keeps pip's exit code."""

from __future__ import annotations

import sys

import pytest

from scripts.heartbeat import run


def test_a_silent_command_gets_lines_of_ours_and_its_own_pass_through(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = run(
        [
            sys.executable,
            "-c",
            "import time; print('first', flush=True); time.sleep(1.5); print('last')",
        ],
        quiet_after=0.2,
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.index("first") < out.index("still working") < out.index("last")


def test_the_commands_exit_code_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([sys.executable, "-c", "import sys; print('no'); sys.exit(3)"]) == 3
    assert "still working" not in capsys.readouterr().out
