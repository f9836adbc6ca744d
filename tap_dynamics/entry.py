"""The console entry shared by tap-dynamics and target-dynamics: `login` goes to the sign-in
command, everything else to the SDK's CLI, and user-facing errors become one sentence on stderr
with exit code 1 (no traceback)."""

from __future__ import annotations

import ctypes
import sys
import typing as t

import jsonschema
from singer_sdk.exceptions import ConfigValidationError, MappingError

from dynamics_api.errors import ConfigError, DynamicsError
from tap_dynamics.login import is_login_command, login_main


def steady_large_allocations() -> None:
    """Keep big buffers (a 5,000-row page is about 17 MB) out of the heap on glibc.

    glibc raises its mmap threshold after each large free, so later page buffers come from the
    heap and fragment it: peak RSS then creeps up with the number of pages. A fixed threshold
    keeps every large buffer mmapped and returned whole. No effect elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: 1 MiB, fixed
    except (OSError, AttributeError):
        return


def run_plugin(cli: t.Callable[[], t.Any], *, prog: str, env_prefix: str) -> None:
    """Run ``cli`` (a plugin's click command) as the process's main command."""
    steady_large_allocations()
    if is_login_command(sys.argv[1:]):
        sys.exit(login_main(sys.argv[1:], prog=prog, env_prefix=env_prefix))
    try:
        cli()
    except DynamicsError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)
    except ConfigValidationError as err:
        details = "; ".join(err.errors) if getattr(err, "errors", None) else str(err)
        print(f"{prog}: the configuration is not valid: {details}", file=sys.stderr)
        sys.exit(1)
    except MappingError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        print(
            f"{prog}: a stream map cannot be applied ({first}); fix stream_maps.", file=sys.stderr
        )
        sys.exit(1)


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
    _config: dict[str, t.Any]

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        try:
            return super()._validate_config(raise_errors=raise_errors)  # type: ignore[misc]
        except ConfigValidationError:
            validator = jsonschema.Draft202012Validator(self.config_jsonschema)
            problems = [_config_problem(e) for e in validator.iter_errors(self._config)]
            raise ConfigError(
                "The configuration is not valid: "
                + "; ".join(problems or ["it does not match the settings schema"])
                + ". Fix these settings (see --about for the list)."
            ) from None
