"""The console entry shared by tap-dynamics and target-dynamics: `login` goes to the sign-in
command (:mod:`dynamics_singer.login`), everything else to the SDK's CLI, and user-facing errors
become one sentence on stderr with exit code 1 (no traceback).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import threading
import typing as t

from singer_sdk.exceptions import ConfigValidationError, MappingError

from dynamics_api.errors import DynamicsError
from dynamics_singer.login import is_login_command, login_main

__all__ = ["exit_now", "run_plugin", "steady_large_allocations"]


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


def _exit_status(code: str | int | None) -> int:
    """The status ``sys.exit(code)`` would end the process with (a message goes to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: str | int | None = 0) -> t.NoReturn:
    """End the process as ``sys.exit(code)`` would, without the interpreter's teardown.

    What the end of a run needs is done first: ``atexit`` callbacks run (logging's flush among
    them), then stdout and stderr are flushed (a reader gone away gives status 120, as at the
    interpreter's own exit). Left out is freeing every object and module one by one, which the
    kernel does at once: after a run's last message it took 0.1-0.35 s, during which a target
    reading the output waits for its end. While a thread that is not a daemon still runs, the
    interpreter's own exit is taken (it stops such threads' pools and waits for them). Only for
    the process's own command: it ends the process, whoever called it.
    """
    current = threading.current_thread()
    if any(th is not current and not th.daemon for th in threading.enumerate()):
        sys.exit(code)
    status = _exit_status(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            status = status or 120
    os._exit(status)


def run_plugin(
    cli: t.Callable[[], t.Any], *, prog: str, env_prefix: str, fast_exit: bool = False
) -> None:
    """Run ``cli`` (a plugin's click command) as the process's main command; with ``fast_exit``
    a run that ends (with any status) leaves through :func:`exit_now`."""
    steady_large_allocations()
    if is_login_command(sys.argv[1:]):
        sys.exit(login_main(sys.argv[1:], prog=prog, env_prefix=env_prefix))
    try:
        cli()
    except SystemExit as done:
        if not fast_exit:
            raise
        exit_now(done.code)
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
