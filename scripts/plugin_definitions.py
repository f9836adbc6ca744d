"""Meltano Hub plugin definitions of tap-dynamics and target-dynamics, made from what the plugins
themselves print with ``--about --format json``, so that the definitions cannot drift from the
settings the plugins accept.

    python scripts/plugin_definitions.py           # write plugins/ and meltano.yml's two entries
    python scripts/plugin_definitions.py --check   # exit 1, naming the files that would change
    python scripts/plugin_definitions.py --pip-url /path/to/checkout --out DIR
                                                   # the same definitions, installing from there

The project's address is defined once, in pyproject.toml ``[project.urls]``: the docs and repo
URLs, the ``pip_url`` (a git URL) and the variant (the repository's owner) come from it. What
``--about`` cannot say lives here: the ways to sign in (``SIGN_IN_GROUPS``), the ``login``
command, labels of choices.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
MELTANO_YML = ROOT / "meltano.yml"

#: (plugin type directory, plugin name, the module that runs it, namespace).
PLUGINS = (
    ("extractors", "tap-dynamics", "tap_dynamics", "tap_dynamics"),
    ("loaders", "target-dynamics", "target_dynamics", "target_dynamics"),
)
LABEL = "Dynamics 365 / Dataverse"

#: One group per way to sign in: Meltano lists them (``meltano config list <plugin>``) as the
#: combinations of settings one of which is required. Both plugins share them. A new way to sign
#: in (its settings in dynamics_singer/settings.py) adds its group here, one entry each.
SIGN_IN_GROUPS: dict[str, tuple[str, ...]] = {
    "client secret": ("environment_url", "client_id", "client_secret", "tenant_id"),
    "certificate": ("environment_url", "client_id", "client_certificate_path", "tenant_id"),
    "refresh token": ("environment_url", "client_id", "refresh_token"),
    # Signed in with `login` and token_cache_path: the refresh token is in the cache file.
    "token cache": ("environment_url", "client_id", "token_cache_path"),
    "federated token": ("environment_url", "client_id", "federated_token_file", "tenant_id"),
    "managed identity": ("environment_url", "managed_identity"),
}

COMMANDS = {
    "login": {
        "args": "login",
        "description": "Sign in as a user (browser, or --device-code) and keep the refresh "
        "token in token_cache_path (or print it when that is not set).",
    }
}

#: Labels of choices, where the value alone says too little.
OPTION_LABELS = {
    ("delete_mode", "skip"): "Skip (count, write nothing)",
    ("delete_mode", "hard"): "Hard delete",
    ("delete_mode", "deactivate"): "Deactivate (Inactive state)",
    ("write_method", "auto"): "Auto (bulk messages where the table supports them, else $batch)",
    ("write_method", "bulk"): "Bulk messages only",
    ("write_method", "batch"): "$batch only",
    ("bypass_business_logic", "CustomSync"): "Custom synchronous logic",
    ("bypass_business_logic", "CustomAsync"): "Custom asynchronous logic",
    ("bypass_business_logic", "CustomSync,CustomAsync"): "Both",
}

HEADER = (
    "# Made by scripts/plugin_definitions.py from `{name} --about --format json`: do not edit.\n"
    "# meltano add {name} --from-ref <this file>\n"
)

#: Keys of a meltano.yml plugin entry that belong to the project, not to the definition.
PROJECT_KEYS = ("pip_url", "config", "select", "metadata", "schema", "inherit_from")


# -- the project's address -------------------------------------------------------------------------


def project_urls(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """``[project.urls]`` of pyproject.toml."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    urls: dict[str, str] = data["project"]["urls"]
    return urls


def variant_of(repository: str) -> str:
    """The variant name: the repository's owner (``https://github.com/<owner>/<name>``)."""
    parts = urlsplit(repository).path.strip("/").split("/")
    return parts[0]


def git_pip_url(repository: str) -> str:
    """What pip installs the plugins from: the repository (both plugins are one distribution)."""
    return f"git+{repository.rstrip('/')}.git"


# -- settings from --about ------------------------------------------------------------------------


def about(module: str) -> dict[str, Any]:
    """``python -m <module> --about --format json``, parsed."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--about", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


def _types(prop: Mapping[str, Any]) -> list[str]:
    """The JSON types a property allows, ``null`` left out (``type``, ``oneOf``, ``anyOf``)."""
    found: list[str] = []
    declared = prop.get("type")
    if isinstance(declared, str):
        found.append(declared)
    elif isinstance(declared, list):
        found.extend(declared)
    for key in ("oneOf", "anyOf"):
        for alt in prop.get(key) or []:
            if isinstance(alt, dict):
                found.extend(_types(alt))
    return [t for t in dict.fromkeys(found) if t != "null"]


def kind_of(prop: Mapping[str, Any]) -> str:
    """The Meltano setting kind of a JSON Schema property."""
    if "enum" in prop:
        return "options"
    if prop.get("format") == "date-time":
        return "date_iso8601"
    types = _types(prop)
    if "array" in types:
        return "array"
    if "object" in types:
        return "object"
    single = {"boolean": "boolean", "integer": "integer", "number": "decimal"}
    if len(types) == 1 and types[0] in single:
        return single[types[0]]
    return "string"


def _is_group(prop: Mapping[str, Any]) -> bool:
    """A nested object whose keys are all declared (``batch_config``, ``faker_config``): Meltano
    takes it as dotted settings (``batch_config.encoding.format``), as Meltano Hub lists SDK
    plugins. Objects with free keys (``stream_maps``, ``stream_options``) stay one setting."""
    extra = prop.get("additionalProperties", True)
    return bool(prop.get("properties")) and not isinstance(extra, dict)


def _text(value: str) -> str:
    return " ".join(value.split())


def settings_of(properties: Mapping[str, Any], prefix: str = "") -> Iterator[dict[str, Any]]:
    """Meltano settings for JSON Schema properties, in their order."""
    for key, prop in properties.items():
        name = f"{prefix}{key}"
        if _is_group(prop):
            yield from settings_of(prop["properties"], prefix=f"{name}.")
            continue
        kind = kind_of(prop)
        setting: dict[str, Any] = {"name": name, "kind": kind}
        if prop.get("title"):
            setting["label"] = prop["title"]
        if prop.get("description"):
            setting["description"] = _text(prop["description"])
        if "default" in prop:
            setting["value"] = prop["default"]
        if kind == "options":
            setting["options"] = [
                {"label": OPTION_LABELS.get((name, v), str(v)), "value": v} for v in prop["enum"]
            ]
        setting["sensitive"] = bool(prop.get("secret"))
        yield setting


def first_sentence(text: str) -> str:
    """The description's first sentence, on one line."""
    flat = _text(text)
    head, dot, _ = flat.partition(". ")
    return head + "." if dot else flat


# -- definitions ----------------------------------------------------------------------------------


def definition(
    name: str, namespace: str, info: Mapping[str, Any], urls: Mapping[str, str], pip_url: str
) -> dict[str, Any]:
    """A plugin definition in Meltano Hub's format."""
    repository = urls["Repository"]
    settings = list(settings_of(info["settings"]["properties"]))
    known = {s["name"] for s in settings}
    groups = []
    for way, group in SIGN_IN_GROUPS.items():
        missing = [s for s in group if s not in known]
        if missing:
            raise SystemExit(f"{name}: the '{way}' sign-in group names unknown {missing}.")
        groups.append(list(group))
    return {
        "name": name,
        "variant": variant_of(repository),
        "namespace": namespace,
        "label": LABEL,
        "description": first_sentence(info["description"]),
        "docs": f"{repository.rstrip('/')}#{name}",
        "repo": repository,
        "pip_url": pip_url,
        "executable": name,
        "capabilities": list(info["capabilities"]),
        "supported_python_versions": list(info["supported_python_versions"]),
        "settings_group_validation": groups,
        "commands": copy.deepcopy(COMMANDS),
        "settings": settings,
    }


def definitions(pip_url: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Both definitions by (type directory, name); ``pip_url`` defaults to the git URL."""
    urls = project_urls()
    url = pip_url or git_pip_url(urls["Repository"])
    return {
        (kind, name): definition(name, namespace, about(module), urls, url)
        for kind, name, module, namespace in PLUGINS
    }


def definition_path(out: Path, kind: str, name: str, variant: str) -> Path:
    """``plugins/<type>/<name>--<variant>.yml``."""
    return out / kind / f"{name}--{variant}.yml"


def render_definition(kind: str, plugin: Mapping[str, Any]) -> str:
    """The YAML text of a definition file."""
    header = HEADER.format(name=plugin["name"])
    body = yaml.safe_dump(dict(plugin), sort_keys=False, width=100, allow_unicode=True)
    return header + body


# -- the project's meltano.yml --------------------------------------------------------------------


def render_meltano_yml(text: str, plugins: Mapping[tuple[str, str], Mapping[str, Any]]) -> str:
    """meltano.yml with the two plugins' entries made of their definitions (comments, the other
    plugins and the project keys ``pip_url``, ``config``, ``select``... kept)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096  # one line per value: ruamel leaves a trailing space where it folds
    rt.indent(mapping=2, sequence=2, offset=0)
    doc = rt.load(text)
    for (kind, name), plugin in plugins.items():
        entries = doc["plugins"][kind]
        entry = next(e for e in entries if e["name"] == name)
        kept = {k: entry[k] for k in PROJECT_KEYS if k in entry}
        for key in list(entry):
            if key != "name":
                del entry[key]
        for key, value in plugin.items():
            if key == "name":
                continue
            if key == "pip_url" and "pip_url" in kept:
                value = kept.pop("pip_url")
            entry[key] = value
        for key, value in kept.items():
            entry[key] = value
    out = io.StringIO()
    rt.dump(doc, out)
    return out.getvalue()


def wanted_files(out: Path, pip_url: str | None, meltano_yml: Path | None) -> dict[Path, str]:
    """Every generated file and its text."""
    plugins = definitions(pip_url)
    files = {
        definition_path(out, kind, name, plugin["variant"]): render_definition(kind, plugin)
        for (kind, name), plugin in plugins.items()
    }
    if meltano_yml is not None:
        files[meltano_yml] = render_meltano_yml(meltano_yml.read_text(encoding="utf-8"), plugins)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on a change")
    parser.add_argument("--pip-url", help="install from here instead of the git URL")
    parser.add_argument("--out", type=Path, help="directory for plugins/ (default: the repo's)")
    args = parser.parse_args(argv)
    custom = args.pip_url is not None or args.out is not None
    out = args.out or ROOT / "plugins"
    files = wanted_files(out, args.pip_url, None if custom else MELTANO_YML)
    stale = [p for p, text in files.items() if not p.exists() or p.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python scripts/plugin_definitions.py")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
