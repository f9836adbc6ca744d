"""The emulator and the connectors share no code: neither imports the other (tests may use both).

The emulator is an independent implementation of the service, so a client bug cannot hide behind
the same emulator bug; and users of the connectors never install it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "emulator" / "dynamics_emulator"
CONNECTORS = ("dynamics_api", "dynamics_singer", "tap_dynamics", "target_dynamics")


def _imports(package: Path) -> dict[str, set[str]]:
    """Top-level modules imported by each file of a package (absolute imports only)."""
    out: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = found
    return out


def test_the_emulator_imports_no_connector() -> None:
    imports = _imports(EMULATOR)
    assert len(imports) > 20  # the package was found
    offending = {f: sorted(m & set(CONNECTORS)) for f, m in imports.items() if m & set(CONNECTORS)}
    assert offending == {}


@pytest.mark.parametrize("package", [p for p in CONNECTORS if (ROOT / p).is_dir()])
def test_no_connector_imports_the_emulator(package: str) -> None:
    imports = _imports(ROOT / package)
    assert imports  # the package was found
    offending = [f for f, modules in imports.items() if "dynamics_emulator" in modules]
    assert offending == []
