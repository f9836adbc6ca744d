"""meltano.yml declares exactly the settings the plugins accept, with the right kinds, and marks
every secret sensitive (target-postgres drifted without such a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tap_dynamics.tap import TapDynamics

ROOT = Path(__file__).resolve().parents[2]
SDK_BUILTINS = {
    "stream_maps",
    "stream_map_config",
    "faker_config",
    "flattening_enabled",
    "flattening_max_depth",
    "flattening_max_key_length",
    "flattening_separator",
    "batch_config",
    "add_record_metadata",
    "load_method",
    "validate_records",
    "batch_size_rows",
    "process_activate_version_messages",
    "hard_delete",
    "default_target_schema",
}
KINDS = {
    "string": "string",
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


def _plugins() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((ROOT / "meltano.yml").read_text())
    out = {}
    for group in doc["plugins"].values():
        for plugin in group:
            out[plugin["name"]] = plugin
    return out


def _plugin_classes() -> list[Any]:
    classes: list[Any] = [pytest.param(TapDynamics, id="tap-dynamics")]
    try:
        from target_dynamics.target import TargetDynamics
    except ImportError:
        return classes
    classes.append(pytest.param(TargetDynamics, id="target-dynamics"))
    return classes


@pytest.mark.parametrize("plugin_class", _plugin_classes())
def test_meltano_settings_equal_the_config_schema(plugin_class: Any) -> None:
    plugin = _plugins()[plugin_class.name]
    schema = plugin_class.config_jsonschema["properties"]
    ours = {k: v for k, v in schema.items() if k not in SDK_BUILTINS}
    declared = {s["name"]: s for s in plugin["settings"]}
    assert set(declared) - SDK_BUILTINS == set(ours)
    for name, prop in ours.items():
        setting = declared[name]
        jtype = prop.get("type")
        jtype = next(t for t in jtype if t != "null") if isinstance(jtype, list) else jtype
        kind = "date_iso8601" if prop.get("format") == "date-time" else KINDS[jtype]
        if "enum" in prop:
            kind = "options"
            assert [o["value"] for o in setting["options"]] == prop["enum"], name
        assert setting.get("kind", "string") == kind, name
        assert bool(setting.get("sensitive")) == bool(prop.get("secret")), name


def test_auth_groups_cover_both_flows() -> None:
    groups = [set(g) for g in _plugins()["tap-dynamics"]["settings_group_validation"]]
    assert {"environment_url", "client_id", "client_secret", "tenant_id"} in groups
    assert {"environment_url", "client_id", "refresh_token"} in groups


def test_capabilities_are_meltano_ones() -> None:
    known = {
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
    for plugin in _plugins().values():
        assert set(plugin.get("capabilities", [])) <= known, plugin["name"]


@pytest.mark.parametrize("plugin_class", _plugin_classes())
def test_meltano_capabilities_equal_about(plugin_class: Any) -> None:
    declared = set(_plugins()[plugin_class.name]["capabilities"])
    assert declared == {str(c) for c in plugin_class.capabilities}


def test_target_about_lists_only_what_it_honours() -> None:
    from target_dynamics.target import TargetDynamics

    about = TargetDynamics.config_jsonschema["properties"]
    for unhonoured in ("add_record_metadata", "load_method", "batch_config", "hard_delete"):
        assert unhonoured not in about
    assert "ACTIVATE_VERSION" in (TargetDynamics.__doc__ or "")
    assert about["delete_mode"]["enum"] == ["skip", "hard", "deactivate"]
