"""The house's import rules, read from the source with ``ast`` (not grep):

- imports go down only: ``tap_dynamics``, ``target_dynamics`` -> ``dynamics_singer`` ->
  ``dynamics_api``; the tap and the target never import each other;
- ``dynamics_api`` knows nothing of singer-sdk (it is a plain Dataverse client);
- the emulator and the connectors share no code (the emulator is an independent implementation
  of the service, so a client bug cannot hide behind the same emulator bug; and users of the
  connectors never install it). Tests may use both;
- starting the tap or the target imports no certificate code (``cryptography``): only a
  certificate sign-in needs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "dynamics_api": ROOT / "dynamics_api",
    "dynamics_singer": ROOT / "dynamics_singer",
    "tap_dynamics": ROOT / "tap_dynamics",
    "target_dynamics": ROOT / "target_dynamics",
    "dynamics_emulator": ROOT / "emulator" / "dynamics_emulator",
}
CONNECTORS = {"dynamics_api", "dynamics_singer", "tap_dynamics", "target_dynamics"}
FORBIDDEN = {
    "dynamics_api": {"singer_sdk", "dynamics_singer", "tap_dynamics", "target_dynamics"},
    "dynamics_singer": {"tap_dynamics", "target_dynamics"},
    "tap_dynamics": {"target_dynamics"},
    "target_dynamics": {"tap_dynamics"},
    "dynamics_emulator": CONNECTORS,
}


def _imports(package: Path, base: Path = ROOT) -> dict[str, set[str]]:
    """Top-level modules each file of a package imports (relative imports stay inside it)."""
    out: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
        out[str(path.relative_to(base))] = found
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_down_only(package: str) -> None:
    imports = _imports(PACKAGES[package])
    assert len(imports) >= 3  # the package was found
    offending = {
        f: sorted(modules & FORBIDDEN[package])
        for f, modules in imports.items()
        if modules & FORBIDDEN[package]
    }
    assert offending == {}


@pytest.mark.parametrize("package", sorted(CONNECTORS))
def test_no_connector_imports_the_emulator(package: str) -> None:
    offending = [f for f, m in _imports(PACKAGES[package]).items() if "dynamics_emulator" in m]
    assert offending == []


def test_the_reader_sees_imports_inside_functions(tmp_path: Path) -> None:
    """Imports anywhere in a module count (inside functions too), so the rules above cannot pass
    by not looking."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "from . import b\n"
        "def f():\n    from target_dynamics.plan import x\n    import singer_sdk.typing\n"
    )
    assert _imports(package, tmp_path) == {"pkg/a.py": {"target_dynamics", "singer_sdk"}}


@pytest.mark.parametrize("module", ["tap_dynamics.tap", "target_dynamics.target"])
def test_starting_a_connector_does_not_import_the_certificate_code(module: str) -> None:
    # cryptography's x509 takes about 45 ms to import, at every start of the tap and the target;
    # only a certificate sign-in needs it (dynamics_api/auth/certificate.py imports it then).
    code = f"import sys, {module}; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
