"""Run the real target-dynamics command against an emulator, feeding it Singer messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[1]
TARGET = [sys.executable, "-m", "target_dynamics"]
SINGER_FIXTURES = ROOT / "tests" / "fixtures" / "singer"


@dataclass
class TargetRun:
    returncode: int
    stdout: str
    stderr: str
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def states(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


def fixture_lines(name: str) -> str:
    """The text of a ``.singer`` fixture file."""
    return (SINGER_FIXTURES / name).read_text()


def messages_text(messages: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(m) + "\n" for m in messages)


def schema_message(stream: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": properties or {}},
        "key_properties": [],
    }


def record_message(stream: str, record: dict[str, Any]) -> dict[str, Any]:
    return {"type": "RECORD", "stream": stream, "record": record}


def run_target(
    emulator: Emulator,
    tmp: Path,
    input_text: str,
    *,
    config: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
    timeout: float = 300,
    background: bool = False,
) -> TargetRun:
    """Run ``target-dynamics`` with ``input_text`` on stdin; collect stdout, stderr, dead letters."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = emulator.tap_config(
        metadata_cache_ttl=0,
        dead_letter_path=str(tmp / "dead-letter.jsonl"),
        batch_size_rows=50,
        max_parallel_batches=2,
    )
    cfg.update(config or {})
    cfg_path = tmp / "target-config.json"
    cfg_path.write_text(json.dumps(cfg))
    cmd = [*TARGET, "--config", str(cfg_path), *(args or [])]
    run_env = {**os.environ, "REQUESTS_CA_BUNDLE": emulator.ca_bundle, **(env or {})}
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=run_env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    dl_path = Path(cfg["dead_letter_path"])
    dead = []
    if dl_path.exists():
        dead = [json.loads(line) for line in dl_path.read_text().splitlines() if line]
    return TargetRun(proc.returncode, proc.stdout, proc.stderr, dead)
