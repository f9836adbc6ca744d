"""The console entry shared by tap-dynamics and target-dynamics: `login` goes to the sign-in
command, everything else to the SDK's CLI, and user-facing errors become one sentence on stderr
with exit code 1 (no traceback)."""

from __future__ import annotations

import sys
import typing as t

from singer_sdk.exceptions import ConfigValidationError

from dynamics_api.errors import DynamicsError
from tap_dynamics.login import is_login_command, login_main


def run_plugin(cli: t.Callable[[], t.Any], *, prog: str, env_prefix: str) -> None:
    """Run ``cli`` (a plugin's click command) as the process's main command."""
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
