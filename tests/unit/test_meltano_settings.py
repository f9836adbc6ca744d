"""The Meltano plugin definitions (plugins/) and the project's meltano.yml say exactly what the
plugins accept: made from their `--about --format json` by scripts/plugin_definitions.py, and
regenerated here so that a change to a setting cannot leave them behind (target-postgres
drifted without such a test)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from meltano.core.plugin import PluginType
from meltano.core.plugin.base import PluginDefinition
from meltano.core.setting_definition import SettingKind

from scripts import plugin_definitions as gen

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = {"tap-dynamics": "extractors", "target-dynamics": "loaders"}
PLUGIN_TYPES = {"extractors": PluginType.EXTRACTORS, "loaders": PluginType.LOADERS}
# Meltano's capability names (docs: reference/plugin-definition-syntax, and its JSON schema).
MELTANO_CAPABILITIES = {
    "catalog",
    "discover",
    "state",
    "about",
    "stream-maps",
    "schema-flattening",
    "activate-version",
    "batch",
    "properties",
    "test",
    "log-based",
    "validate-records",
    "soft-delete",
    "hard-delete",
    "datatype-failsafe",
    "record-flattening",
    "target-schema",
    "structured-logging",
}


@functools.cache
def _about(name: str) -> dict[str, Any]:
    module = name.replace("-", "_")
    out = subprocess.run(
        [sys.executable, "-m", module, "--about", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


@functools.cache
def _definition(name: str) -> dict[str, Any]:
    kind = PLUGINS[name]
    files = sorted((ROOT / "plugins" / kind).glob(f"{name}--*.yml"))
    assert len(files) == 1, files
    loaded: dict[str, Any] = yaml.safe_load(files[0].read_text())
    return loaded


def _meltano_yml_entry(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "meltano.yml").read_text())
    entry: dict[str, Any] = next(p for p in doc["plugins"][PLUGINS[name]] if p["name"] == name)
    return entry


def _leaves(properties: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Setting names for JSON Schema properties: objects with only declared keys become dotted
    names (as Meltano Hub lists batch_config.encoding.format), the others stay one setting."""
    out: dict[str, dict[str, Any]] = {}
    for key, prop in properties.items():
        extra = prop.get("additionalProperties", True)
        if prop.get("properties") and not isinstance(extra, dict):
            out.update(_leaves(prop["properties"], f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = prop
    return out


def test_definitions_and_meltano_yml_are_generated() -> None:
    """Regenerate both definition files and meltano.yml's entries: nothing may differ."""
    wanted = gen.wanted_files(ROOT / "plugins", None, ROOT / "meltano.yml")
    assert len(wanted) == 3
    for path, text in wanted.items():
        assert path.exists(), f"{path} is missing: run python scripts/plugin_definitions.py"
        assert path.read_text() == text, (
            f"{path} is out of date: run python scripts/plugin_definitions.py"
        )


@pytest.mark.parametrize("name", PLUGINS)
def test_every_setting_of_about_is_defined(name: str) -> None:
    """Every setting the plugin accepts (the SDK's own included), with its kind, label, default
    and sensitivity, and nothing else."""
    props = _leaves(_about(name)["settings"]["properties"])
    settings = {s["name"]: s for s in _definition(name)["settings"]}
    assert set(settings) == set(props)
    for key in ("stream_maps", "stream_map_config", "flattening_enabled", "progress_interval"):
        assert key in settings, key
    if name == "tap-dynamics":
        assert {"batch_config.encoding.format", "batch_config.storage.root"} <= set(settings)
    simple = {"string": "string", "integer": "integer", "number": "decimal", "boolean": "boolean"}
    for setting_name, prop in props.items():
        setting = settings[setting_name]
        assert setting["sensitive"] is bool(prop.get("secret")), setting_name
        assert setting.get("label") == prop.get("title"), setting_name
        assert ("value" in setting) == ("default" in prop), setting_name
        if "default" in prop:
            assert setting["value"] == prop["default"], setting_name
        types = [t for t in prop.get("type", []) if t != "null"]
        if "enum" in prop:
            assert setting["kind"] == "options"
            assert [o["value"] for o in setting["options"]] == prop["enum"], setting_name
        elif prop.get("format") == "date-time":
            assert setting["kind"] == "date_iso8601", setting_name
        elif types in (["array"], ["object"]):
            assert setting["kind"] == types[0], setting_name
        elif len(types) == 1:
            assert setting["kind"] == simple[types[0]], setting_name


def test_secrets_are_sensitive_and_descriptions_say_the_wildcards() -> None:
    tap = {s["name"]: s for s in _definition("tap-dynamics")["settings"]}
    assert tap["client_secret"]["sensitive"] is True
    assert tap["refresh_token"]["sensitive"] is True
    assert tap["environment_url"]["sensitive"] is False
    assert '"*"' in tap["custom_entities"]["description"]
    assert "new_*" in tap["custom_entities"]["description"]
    assert tap["api_version"]["value"] == "9.2"
    assert tap["page_size"]["value"] == 5000
    target = {s["name"]: s for s in _definition("target-dynamics")["settings"]}
    assert [o["value"] for o in target["delete_mode"]["options"]] == ["skip", "hard", "deactivate"]
    assert target["delete_mode"]["value"] == "skip"


@pytest.mark.parametrize("name", PLUGINS)
def test_sign_in_groups_cover_every_way(name: str) -> None:
    groups = [set(g) for g in _definition(name)["settings_group_validation"]]
    base = {"environment_url", "client_id"}
    assert base | {"client_secret", "tenant_id"} in groups
    assert base | {"client_certificate_path", "tenant_id"} in groups
    assert base | {"refresh_token"} in groups
    # Signed in with `login` into a token cache: no refresh_token setting is needed.
    assert base | {"token_cache_path"} in groups
    assert base | {"federated_token_file", "tenant_id"} in groups
    assert {"environment_url", "managed_identity"} in groups
    names = {s["name"] for s in _definition(name)["settings"]}
    assert set().union(*groups) <= names


@pytest.mark.parametrize("name", PLUGINS)
def test_definition_identity_and_urls(name: str) -> None:
    """Name, variant, namespace, label, URLs from pyproject's [project.urls], no placeholder."""
    plugin = _definition(name)
    urls = gen.project_urls()
    repo = urls["Repository"]
    assert plugin["name"] == name
    assert plugin["namespace"] == name.replace("-", "_")
    assert plugin["executable"] == name
    assert plugin["variant"] == repo.rstrip("/").split("/")[-2]
    assert plugin["repo"] == repo
    assert plugin["docs"].startswith(repo)
    assert plugin["pip_url"] == f"git+{repo}.git"
    assert plugin["label"] and plugin["description"]
    assert plugin["supported_python_versions"] == ["3.11", "3.12", "3.13"]
    assert plugin["commands"]["login"]["args"] == "login"
    text = json.dumps(plugin)
    assert "<" not in plugin["pip_url"] + plugin["repo"] + plugin["docs"]
    assert "<you>" not in text
    path = ROOT / "plugins" / PLUGINS[name] / f"{name}--{plugin['variant']}.yml"
    assert path.exists()


@pytest.mark.parametrize("name", PLUGINS)
def test_meltano_parses_the_definition(name: str) -> None:
    """Meltano's own model reads the file as `meltano add --from-ref` does."""
    raw = _definition(name)
    parsed = PluginDefinition.parse({"plugin_type": PLUGIN_TYPES[PLUGINS[name]], **raw})
    assert parsed.name == name
    assert parsed.namespace == raw["namespace"]
    kinds = {k.value for k in SettingKind}
    for setting in raw["settings"]:
        assert setting["kind"] in kinds - {"password", "hidden"}, setting["name"]


@pytest.mark.parametrize("name", PLUGINS)
def test_meltano_yml_uses_the_definition(name: str) -> None:
    """The project's entry is the definition, plus the project's own keys."""
    entry = _meltano_yml_entry(name)
    plugin = _definition(name)
    project_keys = set(gen.PROJECT_KEYS)
    assert {k: v for k, v in entry.items() if k not in project_keys} == {
        k: v for k, v in plugin.items() if k not in project_keys
    }
    assert entry["pip_url"] == "-e ."


@pytest.mark.parametrize("name", PLUGINS)
def test_capabilities_are_meltano_ones_and_equal_about(name: str) -> None:
    declared = _definition(name)["capabilities"]
    assert set(declared) <= MELTANO_CAPABILITIES
    assert declared == _about(name)["capabilities"]
    assert "structured-logging" in declared
    for plugin in yaml.safe_load((ROOT / "meltano.yml").read_text())["plugins"]["extractors"]:
        assert set(plugin.get("capabilities", [])) <= MELTANO_CAPABILITIES, plugin["name"]


def test_target_about_lists_only_what_it_honours() -> None:
    from target_dynamics.target import TargetDynamics

    about = TargetDynamics.config_jsonschema["properties"]
    for unhonoured in ("add_record_metadata", "load_method", "batch_config", "hard_delete"):
        assert unhonoured not in about
    assert "ACTIVATE_VERSION" in (TargetDynamics.__doc__ or "")
    assert about["delete_mode"]["enum"] == ["skip", "hard", "deactivate"]


@pytest.mark.parametrize(
    ("prop", "kind"),
    [
        pytest.param({"type": ["string", "null"]}, "string", id="string"),
        pytest.param({"type": ["number", "null"]}, "decimal", id="number"),
        pytest.param({"type": ["integer"]}, "integer", id="integer"),
        pytest.param({"type": ["boolean", "null"]}, "boolean", id="boolean"),
        pytest.param({"type": ["string"], "format": "date-time"}, "date_iso8601", id="date"),
        pytest.param({"type": ["string"], "enum": ["a"]}, "options", id="enum"),
        pytest.param({"type": ["array", "null"]}, "array", id="array"),
        pytest.param({"type": ["object"]}, "object", id="object"),
        pytest.param(
            {"oneOf": [{"type": ["string"]}, {"type": "array"}, {"type": "null"}]},
            "array",
            id="string-or-array",
        ),
        pytest.param({"oneOf": [{"type": ["number"]}, {"type": ["string"]}]}, "string", id="mixed"),
    ],
)
def test_kind_of(prop: dict[str, Any], kind: str) -> None:
    assert gen.kind_of(prop) == kind


def test_readme_adds_the_plugins_from_their_definition_files() -> None:
    """The README's `meltano add` lines name the definition files (published and local)."""
    readme = (ROOT / "README.md").read_text()
    repo = gen.project_urls()["Repository"].rstrip("/")
    raw = repo.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    for name, kind in PLUGINS.items():
        path = f"plugins/{kind}/{name}--{_definition(name)['variant']}.yml"
        assert (ROOT / path).exists()
        assert f"meltano add {name} --from-ref {raw}{path}\n" in readme
        assert f"meltano add {name} --from-ref {Path(path).name}\n" in readme
    assert f"pip_url: {_definition('tap-dynamics')['pip_url']}" in readme
    assert "<you>" not in readme
