"""Meltano for real, against the emulator; the rows that landed are counted (a target that says
it loaded rows is not proof).

* A new user's project: `meltano init` in an empty folder, both plugins added from their
  definition files (plugins/, with pip_url pointing at this checkout, as the README says for a
  local checkout), the emulator's settings set with `meltano config ... set`, then
  `meltano run tap-dynamics target-jsonl`, its log read as Meltano's JSON.
* The project's own meltano.yml (the demo's): `meltano run tap-dynamics target-duckdb` into a
  DuckDB file, rows per table counted with duckdb.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import yaml

from dynamics_emulator.server import Emulator

ROOT = Path(__file__).resolve().parents[2]
MELTANO = str(Path(sys.executable).parent / "meltano")
STREAMS = ("account", "contact", "incident", "systemuser", "team")
DEFINITIONS = {
    "tap-dynamics": ROOT / "plugins" / "extractors" / "tap-dynamics--tap-dynamics.yml",
    "target-dynamics": ROOT / "plugins" / "loaders" / "target-dynamics--tap-dynamics.yml",
}
# Meltano Hub is not reachable from CI (PyPI is): target-jsonl comes from its own small definition.
TARGET_JSONL = {
    "name": "target-jsonl",
    "variant": "andyh1203",
    "namespace": "target_jsonl",
    "pip_url": "target-jsonl==0.1.4",
    "executable": "target-jsonl",
    "settings": [
        {"name": "destination_path", "kind": "string"},
        {"name": "do_timestamp_file", "kind": "boolean"},
    ],
}


def _meltano(
    args: list[str], env: dict[str, str], cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [MELTANO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"meltano {args}:\n" + (proc.stdout + proc.stderr)[-4000:]
    return proc


def _base_env(emu: Emulator) -> dict[str, str]:
    return {
        **os.environ,
        "REQUESTS_CA_BUNDLE": emu.ca_bundle,
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def _local_definition(name: str, folder: Path) -> Path:
    """The definition file with pip_url set to this checkout (what the README says to do)."""
    text = DEFINITIONS[name].read_text()
    published = yaml.safe_load(text)["pip_url"]
    assert published.startswith("git+https://")
    out = folder / DEFINITIONS[name].name
    out.write_text(text.replace(f"pip_url: {published}", f"pip_url: {ROOT}"))
    return out


def test_new_project_adds_both_plugins_from_their_definitions(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    env = _base_env(emu)
    _meltano(["init", "project", "--no_usage_stats"], env, cwd=tmp_path)
    project = tmp_path / "project"
    assert not (project / "plugins").exists()  # nothing of this repository but the definitions
    for name in DEFINITIONS:
        added = _meltano(
            ["add", name, "--from-ref", str(_local_definition(name, tmp_path))], env, project
        )
        assert f"Installed {'extractor' if name.startswith('tap') else 'loader'} '{name}'" in (
            added.stdout + added.stderr
        )
    jsonl = tmp_path / "target-jsonl.yml"
    jsonl.write_text(yaml.safe_dump(TARGET_JSONL))
    _meltano(["add", "target-jsonl", "--from-ref", str(jsonl)], env, project)

    settings = emu.tap_config(metadata_cache_dir=str(tmp_path / "cache"))
    for key, value in settings.items():
        _meltano(["config", "set", "tap-dynamics", key, str(value)], env, project)
    out = tmp_path / "jsonl"
    out.mkdir()
    _meltano(["config", "set", "target-jsonl", "destination_path", str(out)], env, project)
    _meltano(["config", "set", "target-jsonl", "do_timestamp_file", "false"], env, project)
    select = json.dumps([f"{stream}.*" for stream in STREAMS])  # `meltano select`, at once
    _meltano(["config", "set", "tap-dynamics", "_select", select], env, project)

    listed = _meltano(["config", "list", "tap-dynamics"], env, project).stdout
    assert "client_id, environment_url, token_cache_path" in listed  # signed in with `login`
    printed = _meltano(["config", "print", "tap-dynamics"], env, project).stdout
    assert emu.client_secret not in printed  # sensitive settings are redacted
    assert emu.client_secret not in (project / "meltano.yml").read_text()  # kept in .env
    tested = _meltano(["config", "test", "tap-dynamics"], env, project)
    assert "Plugin configuration is valid" in tested.stdout
    about = json.loads(
        _meltano(["invoke", "target-dynamics", "--about", "--format", "json"], env, project).stdout
    )
    assert about["name"] == "target-dynamics"

    run = _meltano(["--log-format", "json", "run", "tap-dynamics", "target-jsonl"], env, project)
    assert emu.client_secret not in run.stdout + run.stderr
    for stream in STREAMS:
        lines = (out / f"{stream}.jsonl").read_text().splitlines()
        assert len(lines) == emu.counts[stream], stream
        assert json.loads(lines[0])
    # The tap's progress lines reach Meltano's JSON log as events with their numbers.
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    done = {
        e["progress"]["stream"]: e["progress"]
        for e in events
        if isinstance(e.get("progress"), dict) and e["progress"].get("final")
    }
    assert {s: done[s]["rows"] for s in STREAMS} == {s: emu.counts[s] for s in STREAMS}
    assert all(e.get("level") != "warning" for e in events if e.get("name") == "tap-dynamics")


def _duckdb_counts(path: Path, schema: str) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                [schema],
            ).fetchall()
        ]
        counts: dict[str, int] = {}
        for table in tables:
            row = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()  # noqa: S608
            counts[table] = int(row[0]) if row else -1
        return counts


def test_meltano_run_into_duckdb_lands_every_row(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **_base_env(emu),
        **{
            f"TAP_DYNAMICS_{k.upper()}": str(v)
            for k, v in emu.tap_config(metadata_cache_dir=str(tmp_path / "cache")).items()
        },
        "TARGET_DUCKDB_PATH": str(warehouse),
    }
    config: dict[str, Any] = yaml.safe_load((ROOT / "meltano.yml").read_text())
    duck = next(p for p in config["plugins"]["loaders"] if p["name"] == "target-duckdb")
    assert "duckdb<1.3" in duck["pip_url"]  # 1.3+ loses the rows silently
    schema = duck["config"]["default_target_schema"]
    _meltano(["install", "extractor", "tap-dynamics"], env)
    _meltano(["install", "loader", "target-duckdb"], env)
    run = _meltano(["run", "--full-refresh", "tap-dynamics", "target-duckdb"], env)
    assert emu.client_secret not in run.stdout + run.stderr
    assert _duckdb_counts(warehouse, schema) == {s: emu.counts[s] for s in STREAMS}
