"""Invalid settings as one sentence that names each setting and never echoes a value."""

from __future__ import annotations

import typing as t

import jsonschema
from singer_sdk.exceptions import ConfigValidationError

from dynamics_api.errors import ConfigError

__all__ = ["SentenceConfigErrors"]


def _config_problem(error: jsonschema.ValidationError) -> str:
    """One clause per problem, naming the setting and never echoing its value (it may be a
    secret)."""
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else where
        return f"{missing} is missing"
    name = where or "the configuration"
    rule = error.validator_value
    reasons = {
        "type": f"must be of type {rule}",
        "minimum": f"must be at least {rule}",
        "maximum": f"must be at most {rule}",
        "enum": f"must be one of {rule}",
        "additionalProperties": "has unknown keys",
        "format": f"must be a valid {rule}",
    }
    return f"{name} {reasons.get(str(error.validator), 'is not valid')}"


class SentenceConfigErrors:
    """Mixin for the plugin classes: invalid settings raise a ConfigError whose message is one
    sentence (the SDK would log several lines and exit inside its own command)."""

    config_jsonschema: t.ClassVar[dict[str, t.Any]]
    config: t.Mapping[str, t.Any]

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        # SDK-private override: the one place the SDK validates settings (no public hook); the
        # contract test checks that the constructor still calls it and that it raises the
        # SDK's ConfigValidationError.
        try:
            return super()._validate_config(raise_errors=raise_errors)  # type: ignore[misc]
        except ConfigValidationError:
            validator = jsonschema.Draft202012Validator(self.config_jsonschema)
            problems = [_config_problem(e) for e in validator.iter_errors(dict(self.config))]
            raise ConfigError(
                "The configuration is not valid: "
                + "; ".join(problems or ["it does not match the settings schema"])
                + ". Fix these settings (see --about for the list)."
            ) from None
