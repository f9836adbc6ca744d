"""Run the real tap-dynamics command against an emulator and collect what it printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynamics_emulator.server import Emulator, LogEntry

ROOT = Path(__file__).resolve().parents[1]
TAP = [sys.executable, "-m", "tap_dynamics"]


@dataclass
class TapRun:
    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def records(self, stream: str) -> list[dict[str, Any]]:
        return [
            m["record"] for m in self.messages if m["type"] == "RECORD" and m["stream"] == stream
        ]

    def schemas(self) -> dict[str, dict[str, Any]]:
        return {m["stream"]: m["schema"] for m in self.messages if m["type"] == "SCHEMA"}

    @property
    def last_state(self) -> dict[str, Any] | None:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return states[-1] if states else None


def run_tap(
    emulator: Emulator,
    tmp: Path,
    *,
    config: dict[str, Any] | None = None,
    catalog: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> TapRun:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = emulator.tap_config(metadata_cache_dir=str(tmp / "metadata-cache"))
    cfg.update(config or {})
    cfg_path = tmp / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    cmd = [*TAP, "--config", str(cfg_path)]
    if catalog is not None:
        (tmp / "catalog.json").write_text(json.dumps(catalog))
        cmd += ["--catalog", str(tmp / "catalog.json")]
    if state is not None:
        (tmp / "state.json").write_text(json.dumps(state))
        cmd += ["--state", str(tmp / "state.json")]
    cmd += args or []
    run_env = {**os.environ, "REQUESTS_CA_BUNDLE": emulator.ca_bundle, **(env or {})}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    messages = []
    if "--discover" not in cmd and "--about" not in cmd:
        messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return TapRun(proc.returncode, proc.stdout, proc.stderr, messages)


def page_requests(entries: list[LogEntry]) -> list[LogEntry]:
    """The requests for pages of rows (they carry ``Prefer: odata.maxpagesize``), without the
    planner's probes (``$count``, ``$top``) of a read in windows."""
    return [e for e in entries if "odata.maxpagesize" in e.headers.get("prefer", "")]


def discover(emulator: Emulator, tmp: Path, **config: Any) -> dict[str, Any]:
    run = run_tap(emulator, tmp, config=config, args=["--discover"])
    assert run.returncode == 0, run.stderr[-3000:]
    catalog: dict[str, Any] = json.loads(run.stdout)
    return catalog


def select(
    catalog: dict[str, Any], streams: list[str], columns: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """Select ``streams`` (all their columns, or only ``columns[stream]``)."""
    out = json.loads(json.dumps(catalog))
    for entry in out["streams"]:
        chosen = entry["tap_stream_id"] in streams
        only = (columns or {}).get(entry["tap_stream_id"])
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = chosen
            elif only is not None and md["breadcrumb"][0] == "properties":
                md["metadata"]["selected"] = md["breadcrumb"][1] in only
    return out
