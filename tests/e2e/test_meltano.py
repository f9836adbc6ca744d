"""`meltano run tap-dynamics target-jsonl` for real: Meltano installs the plugins (the target from
PyPI), runs them against the emulator, and the rows that landed are counted (a target that says
it loaded rows is not proof)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[2]
MELTANO = str(Path(sys.executable).parent / "meltano")


def _meltano(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [MELTANO, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def test_meltano_run_lands_every_row(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    out = tmp_path / "jsonl"
    out.mkdir()
    env = {
        **os.environ,
        "REQUESTS_CA_BUNDLE": emu.ca_bundle,
        "TAP_DYNAMICS_ENVIRONMENT_URL": emu.url,
        "TAP_DYNAMICS_AUTHORITY_HOST": emu.authority_host,
        "TAP_DYNAMICS_TENANT_ID": emu.tenant_id,
        "TAP_DYNAMICS_CLIENT_ID": emu.client_id,
        "TAP_DYNAMICS_CLIENT_SECRET": emu.client_secret,
        "TAP_DYNAMICS_METADATA_CACHE_DIR": str(tmp_path / "cache"),
        "TARGET_JSONL_DESTINATION_PATH": str(out),
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    _meltano(["install", "extractor", "tap-dynamics"], env)
    _meltano(["install", "loader", "target-jsonl"], env)
    config = _meltano(["config", "print", "tap-dynamics"], env)
    assert emu.client_secret not in config.stdout  # sensitive settings are redacted
    tested = _meltano(["config", "test", "tap-dynamics"], env)
    assert "Plugin configuration is valid" in tested.stdout
    run = _meltano(["run", "--full-refresh", "tap-dynamics", "target-jsonl"], env)
    assert emu.client_secret not in run.stdout + run.stderr
    for stream in ("account", "contact", "incident", "systemuser", "team"):
        lines = (out / f"{stream}.jsonl").read_text().splitlines()
        assert len(lines) == emu.counts[stream], stream
        first = json.loads(lines[0])
        assert f"{stream}id" in first or "systemuserid" in first or "teamid" in first
