"""The ``login`` command of both plugins: ``<prog> [--config FILE] login [--device-code]
[--no-browser] [--port N]``.

It reads the auth settings from ``--config`` files and the ``<PREFIX><NAME>`` variables Meltano
sets, signs the user in through :func:`dynamics_api.auth.sign_in` (which keeps the tokens in the
token cache), and says where the refresh token went: the cache file (not shown), or, without
``token_cache_path``, the ``meltano config set <prog> refresh_token '...'`` command on stdout, the
only place a token is ever written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing as t
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from dynamics_api.auth import AUTH_SETTINGS, LoginResult, sign_in
from dynamics_api.errors import ConfigError, DynamicsError

__all__ = ["is_login_command", "login_main", "run_login"]

#: Options of the singer-sdk CLI (and Meltano's invocation) that take a value.
_VALUE_OPTIONS = frozenset({"--config", "--catalog", "--state", "--properties", "--format"})


def _say(out: t.TextIO, text: str) -> None:
    print(text, file=out)
    out.flush()


def _meltano_command(plugin: str, token: str) -> str:
    quoted = "'" + token.replace("'", "'\"'\"'") + "'"
    return f"meltano config set {plugin} refresh_token {quoted}"


def run_login(
    config: Mapping[str, t.Any],
    *,
    device_code: bool = False,
    open_browser: bool = True,
    port: int = 0,
    out: t.TextIO = sys.stderr,
    timeout: float = 300,
    plugin: str = "tap-dynamics",
) -> LoginResult:
    """Sign a user in and say where the refresh token went.

    Args:
        config: the auth settings (see :func:`dynamics_api.auth.sign_in`).
        device_code, open_browser, port, timeout: how to sign in (see ``sign_in``).
        out: where instructions and the outcome go.
        plugin: the Meltano plugin named in the printed ``meltano config`` command.

    Returns:
        The result; with ``token_cache_path`` the token is in that file (mode 0600), otherwise
        the ``meltano config set <plugin> refresh_token '...'`` command was printed to stdout.

    Raises:
        ConfigError, AuthError: as ``sign_in``.
    """
    result = sign_in(
        config,
        device_code=device_code,
        open_browser=open_browser,
        port=port,
        timeout=timeout,
        say=lambda text: _say(out, text),
    )
    who = f" as {result.username}" if result.username else ""
    if result.token_cache_path is not None:
        _say(
            out,
            f"Signed in{who}. The refresh token is stored in the token cache "
            f"{result.token_cache_path} (readable by you only); runs with this "
            "token_cache_path use it and need no refresh_token setting.",
        )
        return result
    _say(
        out,
        f"Signed in{who}. No token_cache_path is set, so here is the command that stores the "
        "refresh token in Meltano (it is a secret: do not share it; or put it in the "
        "refresh_token setting of your config file):",
    )
    _say(sys.stdout, _meltano_command(plugin, result.refresh_token))
    return result


def _login_index(argv: Sequence[str]) -> int | None:
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if arg.startswith("-"):
            skip = arg in _VALUE_OPTIONS
            continue
        return index if arg == "login" else None
    return None


def is_login_command(argv: Sequence[str]) -> bool:
    """Whether a command line (without the program name) asks for ``login``.

    The first argument that is neither an option nor an option's value decides, so both
    ``tap-dynamics login ...`` and Meltano's ``tap-dynamics --config FILE login`` (what
    ``meltano invoke tap-dynamics login`` runs) are recognised. The singer-sdk command takes no
    positional argument, so nothing else is taken away from it.
    """
    return _login_index(argv) is not None


def _login_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{prog} login",
        description=(
            "Sign in as a user and store the refresh token in the token cache "
            "(token_cache_path), or print the Meltano command that stores it."
        ),
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSON config file (repeatable; ENV: only the environment variables)",
    )
    parser.add_argument(
        "--device-code",
        action="store_true",
        help="sign in on another device with a code (for machines without a browser)",
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="print the sign-in URL without opening it"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port of the local redirect listener (default: any free port)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds to wait for the sign-in"
    )
    for name in ("--catalog", "--state", "--properties"):  # passed by Meltano; not used here
        parser.add_argument(name, help=argparse.SUPPRESS)
    return parser


def _load_login_config(files: Sequence[str], env_prefix: str) -> dict[str, t.Any]:
    """Auth settings from ``<env_prefix><NAME>`` variables, overridden by the ``--config`` files."""
    config: dict[str, t.Any] = {}
    for name in AUTH_SETTINGS:
        value = os.environ.get(f"{env_prefix}{name.upper()}")
        if value:
            config[name] = value
    for file in files:
        if file == "ENV":
            continue
        try:
            data = json.loads(Path(file).expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"The config file {file!r} cannot be read ({exc.strerror or type(exc).__name__})."
            ) from None
        except ValueError:
            raise ConfigError(f"The config file {file!r} is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ConfigError(f"The config file {file!r} must hold a JSON object.")
        config.update({k: v for k, v in data.items() if v not in (None, "")})
    return config


def login_main(
    argv: Sequence[str],
    *,
    prog: str = "tap-dynamics",
    env_prefix: str = "TAP_DYNAMICS_",
    stderr: t.TextIO | None = None,
    run: Callable[..., LoginResult] = run_login,
) -> int:
    """The ``login`` command: ``<prog> [--config FILE] login [--device-code] [--no-browser]
    [--port N]``.

    Args:
        argv: the arguments after the program name (``login`` among them).
        prog: the command's name, used in messages and in the printed Meltano command.
        env_prefix: prefix of the environment variables holding settings (Meltano sets them).
        stderr: where messages go (default ``sys.stderr``).
        run: the sign-in function (for tests).

    Returns:
        The exit status: 0 signed in, 1 a user-facing error (one sentence on stderr), 130
        interrupted.
    """
    err = stderr if stderr is not None else sys.stderr
    args_list = list(argv)
    index = _login_index(args_list)
    if index is not None:
        del args_list[index]
    args = _login_parser(prog).parse_args(args_list)
    try:
        config = _load_login_config(args.config, env_prefix)
        run(
            config,
            device_code=args.device_code,
            open_browser=not args.no_browser,
            port=args.port,
            out=err,
            timeout=args.timeout,
            plugin=prog,
        )
    except DynamicsError as exc:
        print(f"{prog}: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: the sign-in was interrupted.", file=err)
        return 130
    return 0
