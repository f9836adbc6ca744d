"""The connectors' distribution declares exactly the third-party packages its code imports (no
unused dependency, none missing), and supports the Python versions CI tests."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dynamics_api", "dynamics_singer", "tap_dynamics", "target_dynamics")
#: Imports guarded for optional extras, and the distribution of a module named otherwise.
OPTIONAL = {"pyarrow"}
DISTRIBUTION = {"singer_sdk": "singer-sdk"}


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    ours = set(PACKAGES)
    return {m for m in found if m not in sys.stdlib_module_names and m not in ours}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_dependencies_are_exactly_what_the_code_imports() -> None:
    declared = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0] for d in _project()["dependencies"]}
    imported = {DISTRIBUTION.get(m, m) for m in _third_party_imports() - OPTIONAL}
    assert declared == imported


def test_optional_imports_have_their_extra() -> None:
    extras = _project()["optional-dependencies"]
    assert _third_party_imports() & OPTIONAL == {"pyarrow"}
    assert any(d.startswith("pyarrow") for d in extras["parquet"])


def test_python_versions_agree() -> None:
    classifiers = {
        c.rsplit(" ", 1)[-1]
        for c in _project()["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    matrix = re.search(r"python-version: \[([^\]]+)\]", workflow)
    assert matrix is not None
    assert classifiers == {v.strip(" '\"") for v in matrix.group(1).split(",")}
    assert classifiers == {"3.11", "3.12", "3.13"}
    assert _project()["requires-python"] == ">=3.11"
