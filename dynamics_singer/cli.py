"""The console entry shared by tap-dynamics and target-dynamics: `login` goes to the sign-in
command (:mod:`dynamics_singer.login`), everything else to the SDK's CLI, and user-facing errors
become one sentence on stderr with exit code 1 (no traceback).
"""

from __future__ import annotations

import ctypes
import sys
import typing as t

from singer_sdk.exceptions import ConfigValidationError, MappingError

from dynamics_api.errors import DynamicsError
from dynamics_singer.login import is_login_command, login_main

__all__ = ["run_plugin", "steady_large_allocations"]


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
