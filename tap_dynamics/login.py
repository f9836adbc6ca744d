"""``tap-dynamics login``: sign a user in once and keep the refresh token for the delegated flow.

Two ways to sign in, both through msal with the settings the tap uses (``environment_url``,
``client_id``, optional ``client_secret`` or ``client_certificate_path``, ``tenant_id`` or
``organizations``, ``authority_host`` or the environment's cloud):

* **Browser** (default): the authorization code flow with PKCE. A one-shot HTTP listener on
  ``127.0.0.1`` (a free port unless ``--port``) is the redirect URI ``http://localhost:<port>``;
  the sign-in URL is printed and opened in a browser when there is one. Entra ID posts the answer
  back (``response_mode=form_post``); the listener checks ``state``, answers the browser with a
  short page and the code is redeemed.
* **Device code** (``--device-code``): for machines without a browser; msal's message (a URL and a
  code to enter on any other device) is printed, and the command waits for the sign-in.

The refresh token then goes to the token cache file when ``token_cache_path`` is set (msal's
format, mode 0600, under the same lock as :mod:`dynamics_api.auth`, which then finds it without a
``refresh_token`` setting) and is not shown; otherwise the command to store it in Meltano is
printed to stdout, the only place a token is ever written. Nothing here logs a token.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import socketserver
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import msal
import requests

from dynamics_api.auth import (
    HTTP_TIMEOUT,
    ClientCertificate,
    auth_error,
    discovery_error,
    load_token_cache,
    network_error,
    save_token_cache,
    token_cache_lock,
    uses_instance_discovery,
)
from dynamics_api.cloud import normalize_environment_url, resolve_authority_host, resource_for
from dynamics_api.errors import AuthError, ConfigError, DynamicsError
from dynamics_api.session_base import VerifiedSession

__all__ = [
    "FLOW_AUTHORIZATION_CODE",
    "FLOW_DEVICE_CODE",
    "LOGIN_SETTINGS",
    "LoginResult",
    "is_login_command",
    "login_main",
    "run_login",
]

FLOW_AUTHORIZATION_CODE = "authorization_code"
FLOW_DEVICE_CODE = "device_code"

#: The settings ``login`` reads, from ``--config`` files and ``<PREFIX><NAME>`` variables.
LOGIN_SETTINGS = (
    "environment_url",
    "client_id",
    "client_secret",
    "tenant_id",
    "authority_host",
    "token_cache_path",
    "client_certificate_path",
    "client_certificate_thumbprint",
)

#: Seconds the listener waits for one connection's request line before dropping it (a browser's
#: speculative pre-connection must not block the real redirect).
_CONNECTION_TIMEOUT = 10.0
_RETRYABLE_DEVICE_ERRORS = frozenset({"authorization_pending", "slow_down"})
#: Options of the singer-sdk CLI (and Meltano's invocation) that take a value.
_VALUE_OPTIONS = frozenset({"--config", "--catalog", "--state", "--properties", "--format"})

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)


@dataclass(frozen=True)
class LoginResult:
    """What a sign-in produced.

    Attributes:
        refresh_token: the user's refresh token; never shown in ``repr``.
        username: the signed-in user's name (``preferred_username``), when the id token gave one.
        token_cache_path: the cache file the token was stored in; ``None`` when it was printed.
        flow: :data:`FLOW_AUTHORIZATION_CODE` or :data:`FLOW_DEVICE_CODE`.
    """

    refresh_token: str = field(repr=False)
    username: str | None
    token_cache_path: Path | None
    flow: str


# ------------------------------------------------------------------------------ settings


def _setting(config: Mapping[str, Any], name: str) -> str | None:
    value = config.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"The setting {name} must be text, not {type(value).__name__}.")
    return value.strip() or None


@dataclass
class _Settings:
    environment_url: str
    resource: str
    client_id: str
    tenant_id: str | None
    authority_host: str
    authority: str
    client_secret: str | None = field(repr=False)
    certificate: ClientCertificate | None
    token_cache_path: Path | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _Settings:
        environment_url = _setting(config, "environment_url")
        if environment_url is None:
            raise ConfigError(
                "The setting environment_url is required to sign in: set it to the environment's "
                "URL, for example https://yourorg.crm.dynamics.com."
            )
        client_id = _setting(config, "client_id")
        if client_id is None:
            raise ConfigError(
                "The setting client_id is required to sign in: set the application (client) id "
                "of the Entra ID app registration."
            )
        url = normalize_environment_url(environment_url)
        host = resolve_authority_host(url, _setting(config, "authority_host"))
        tenant_id = _setting(config, "tenant_id")
        secret = _setting(config, "client_secret")
        cert_path = _setting(config, "client_certificate_path")
        thumbprint = _setting(config, "client_certificate_thumbprint")
        if secret and cert_path:
            raise ConfigError(
                "Both client_secret and client_certificate_path are set: keep only the "
                "credential the app registration should use."
            )
        certificate = ClientCertificate.load(cert_path, thumbprint) if cert_path else None
        cache = _setting(config, "token_cache_path")
        return cls(
            environment_url=url,
            resource=resource_for(url),
            client_id=client_id,
            tenant_id=tenant_id,
            authority_host=host,
            authority=f"{host}/{tenant_id or 'organizations'}",
            client_secret=secret,
            certificate=certificate,
            token_cache_path=Path(cache).expanduser() if cache else None,
        )

    @property
    def confidential(self) -> bool:
        return bool(self.client_secret) or self.certificate is not None

    def error(self, result: Mapping[str, Any], refused: str = "the sign-in") -> AuthError:
        never_show = [s for s in (self.client_secret, result.get("refresh_token")) if s]

        def scrub(text: str) -> str:
            for secret in never_show:
                if isinstance(secret, str) and len(secret) >= 4:
                    text = text.replace(secret, "********")
            return text

        return auth_error(
            result,
            client_id=self.client_id,
            tenant_id=self.tenant_id,
            resource=self.resource,
            certificate_thumbprint=self.certificate.thumbprint if self.certificate else None,
            refused=refused,
            scrub=scrub,
        )


# ------------------------------------------------------------------------------ the redirect


@dataclass
class _Redirect:
    """The one answer the listener waits for."""

    params: dict[str, str] | None = None


class _RedirectServer(HTTPServer):
    expected_state: str
    captured: _Redirect

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address (slow on some hosts)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = "localhost"
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken browser connection is not worth a traceback on stderr."""


class _RedirectHandler(BaseHTTPRequestHandler):
    server: _RedirectServer
    timeout = _CONNECTION_TIMEOUT
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self._receive(parse_qs(urlsplit(self.path).query))

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(min(length, 1_000_000)).decode("utf-8", "replace")
        self._receive(parse_qs(body) | parse_qs(urlsplit(self.path).query))

    def _receive(self, raw: dict[str, list[str]]) -> None:
        params = {k: v[0] for k, v in raw.items() if v}
        if urlsplit(self.path).path not in ("", "/") or not ("code" in params or "error" in params):
            # A favicon request, or someone opening the listener's address by hand.
            self._page(404, "Not found", "This address only receives the sign-in answer.")
            return
        if self.server.captured.params is not None:
            self._page(409, "Already answered", "The sign-in has already been answered.")
            return
        if params.get("state") != self.server.expected_state:
            self.server.captured.params = {"error": "state_mismatch"}
            self._page(
                400,
                "Sign-in rejected",
                "This answer does not belong to the sign-in that was started (state mismatch). "
                "Run the login command again.",
            )
            return
        self.server.captured.params = params
        if "error" in params:
            self._page(
                400,
                "Sign-in failed",
                f"{params.get('error_description') or params['error']} "
                "Return to the terminal for details.",
            )
        else:
            self._page(
                200,
                "Signed in",
                "tap-dynamics received the sign-in. You can close this tab and return to the "
                "terminal.",
            )

    def _page(self, status: int, title: str, text: str) -> None:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a request line may carry the authorization code."""


def _open_listener(port: int) -> _RedirectServer:
    try:
        return _RedirectServer(("127.0.0.1", port), _RedirectHandler)
    except OSError as exc:
        raise ConfigError(
            f"Cannot listen for the sign-in redirect on 127.0.0.1 port {port} "
            f"({exc.strerror or type(exc).__name__}): choose another port with --port, or 0 for "
            "any free port."
        ) from None


def _wait_for_redirect(server: _RedirectServer, deadline: float) -> dict[str, str]:
    while server.captured.params is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AuthError(
                "No sign-in arrived before the timeout: run the login command again and finish "
                "the sign-in in the browser (if the browser showed an error, check that the app "
                "registration has the redirect URI http://localhost under 'Mobile and desktop "
                "applications'), or use --device-code.",
                error="timeout",
            )
        server.timeout = min(remaining, 1.0)
        server.handle_request()
    return server.captured.params


# ------------------------------------------------------------------------------ browser


def _browser_available() -> bool:
    """A graphical browser (or one the user named in ``BROWSER``) is there to open."""
    if os.environ.get("BROWSER"):
        return True
    try:
        browser = webbrowser.get()
    except webbrowser.Error:
        return False
    # Console browsers (lynx, w3m, ...) are plain GenericBrowser: they would take over the
    # terminal the user reads the URL in.
    return not (
        type(browser) is webbrowser.GenericBrowser
        and not isinstance(browser, webbrowser.BackgroundBrowser)
    )


def _open_browser(url: str, out: TextIO) -> None:
    if not _browser_available():
        _say(out, "No browser found here: open the URL above in a browser on this machine.")
        return
    try:
        opened = webbrowser.open(url, new=1, autoraise=True)
    except (webbrowser.Error, OSError):
        opened = False
    if not opened:
        _say(out, "Could not open a browser: open the URL above in a browser on this machine.")


# ------------------------------------------------------------------------------ the flows


def _say(out: TextIO, text: str) -> None:
    print(text, file=out)
    out.flush()


def _username(result: Mapping[str, Any]) -> str | None:
    claims = result.get("id_token_claims")
    if isinstance(claims, Mapping):
        name = claims.get("preferred_username") or claims.get("upn") or claims.get("email")
        if isinstance(name, str) and name:
            return name
    return None


def _cache_lock(settings: _Settings) -> AbstractContextManager[None]:
    return (
        token_cache_lock(settings.token_cache_path)
        if settings.token_cache_path is not None
        else nullcontext()
    )


@contextmanager
def _cache_transaction(settings: _Settings, cache: msal.SerializableTokenCache) -> Iterator[None]:
    """Under the file lock: read the cache file, run the token request, write the file back."""
    path = settings.token_cache_path
    with _cache_lock(settings):
        if path is not None:
            load_token_cache(cache, path)
        yield
        if path is not None:
            save_token_cache(cache, path)


def _build_app(
    settings: _Settings, cache: msal.SerializableTokenCache, session: requests.Session
) -> msal.ClientApplication:
    kwargs: dict[str, Any] = {
        "authority": settings.authority,
        "token_cache": cache,
        "http_client": session,
    }
    if not uses_instance_discovery(settings.authority_host):
        kwargs["instance_discovery"] = False
    try:
        if settings.certificate is not None:
            return msal.ConfidentialClientApplication(
                settings.client_id,
                client_credential=settings.certificate.msal_credential(),
                **kwargs,
            )
        if settings.client_secret:
            return msal.ConfidentialClientApplication(
                settings.client_id, client_credential=settings.client_secret, **kwargs
            )
        return msal.PublicClientApplication(settings.client_id, **kwargs)
    except requests.RequestException as exc:
        raise network_error(settings.authority_host, exc) from None
    except ValueError:
        raise discovery_error(
            session,
            authority=settings.authority,
            authority_host=settings.authority_host,
            tenant_id=settings.tenant_id,
            on_error=settings.error,
        ) from None


def _denied(settings: _Settings, result: Mapping[str, Any]) -> AuthError:
    code = result.get("error_codes")
    tag = str(result.get("error"))
    described = str(result.get("error_description") or "")
    if "AADSTS" in described:
        tag += ", " + described.split(":", 1)[0].strip()
    elif isinstance(code, list) and code:
        tag += f", AADSTS{code[0]}"
    return AuthError(
        f"The sign-in was cancelled or access was denied ({tag}): run the login command again "
        f"and accept the request for client_id '{settings.client_id}' (an administrator may "
        "have to grant consent first).",
        error=str(result.get("error")),
    )


def _auth_code_flow(
    settings: _Settings,
    app: msal.ClientApplication,
    cache: msal.SerializableTokenCache,
    *,
    open_browser: bool,
    port: int,
    out: TextIO,
    timeout: float,
) -> Mapping[str, Any]:
    deadline = time.monotonic() + timeout
    server = _open_listener(port)
    try:
        redirect_uri = f"http://localhost:{server.server_address[1]}"
        try:
            flow = app.initiate_auth_code_flow(
                scopes=[f"{settings.resource}/user_impersonation"],
                redirect_uri=redirect_uri,
                response_mode="form_post",
            )
        except requests.RequestException as exc:
            raise network_error(settings.authority_host, exc) from None
        server.expected_state = str(flow["state"])
        server.captured = _Redirect()
        _say(out, "Sign in to Dataverse with this URL (it is valid once, for this sign-in):")
        _say(out, f"  {flow['auth_uri']}")
        _say(out, f"Waiting for the sign-in at {redirect_uri} ...")
        if open_browser:
            _open_browser(str(flow["auth_uri"]), out)
        params = _wait_for_redirect(server, deadline)
    finally:
        server.server_close()
    if params.get("error") == "state_mismatch":
        raise AuthError(
            "The sign-in answer did not match the sign-in that was started (state mismatch), so "
            "it was rejected: run the login command again and use only the URL it prints.",
            error="state_mismatch",
        )
    if params.get("error") == "access_denied":
        raise _denied(settings, params)
    if "error" in params:
        raise settings.error(params)
    with _cache_transaction(settings, cache):
        try:
            result: Mapping[str, Any] = app.acquire_token_by_auth_code_flow(flow, params)
        except requests.RequestException as exc:
            raise network_error(settings.authority_host, exc) from None
        except ValueError:
            raise AuthError(
                "The sign-in answer could not be checked against the sign-in that was started: "
                "run the login command again.",
                error="invalid_response",
            ) from None
    return result


def _device_code_flow(
    settings: _Settings,
    app: msal.ClientApplication,
    cache: msal.SerializableTokenCache,
    *,
    out: TextIO,
    timeout: float,
) -> Mapping[str, Any]:
    assert isinstance(app, msal.PublicClientApplication)
    try:
        flow = app.initiate_device_flow(scopes=[f"{settings.resource}/user_impersonation"])
    except requests.RequestException as exc:
        raise network_error(settings.authority_host, exc) from None
    if "user_code" not in flow:
        raise settings.error(flow, refused="a device code")
    _say(out, str(flow.get("message") or ""))
    _say(out, "Waiting for the sign-in ...")
    deadline = time.monotonic() + timeout
    while True:
        # One poll per call (the exit condition ends msal's own loop at once), each under the
        # cache file lock: msal writes the new tokens into the cache on success.
        with _cache_transaction(settings, cache):
            try:
                result: Mapping[str, Any] = app.acquire_token_by_device_flow(
                    flow, exit_condition=lambda _flow: True
                )
            except requests.RequestException as exc:
                raise network_error(settings.authority_host, exc) from None
        error = result.get("error")
        if error not in _RETRYABLE_DEVICE_ERRORS:
            break
        pause = max(1.0, float(flow.get("interval") or 5))
        if time.monotonic() + pause > deadline or time.time() + pause > flow["expires_at"]:
            raise AuthError(
                "No sign-in arrived before the timeout: run the login command again and enter the "
                "code it prints at the address it shows.",
                error="timeout",
            )
        time.sleep(pause)
    if result.get("error") in ("authorization_declined", "access_denied"):
        raise _denied(settings, result)
    if result.get("error") in ("expired_token", "code_expired"):
        raise AuthError(
            "The device code expired before the sign-in was finished: run the login command "
            "again and enter the new code.",
            error=str(result.get("error")),
        )
    return result


def _meltano_command(plugin: str, token: str) -> str:
    quoted = "'" + token.replace("'", "'\"'\"'") + "'"
    return f"meltano config {plugin} set refresh_token {quoted}"


def run_login(
    config: Mapping[str, Any],
    *,
    device_code: bool = False,
    open_browser: bool = True,
    port: int = 0,
    out: TextIO = sys.stderr,
    timeout: float = 300,
    plugin: str = "tap-dynamics",
) -> LoginResult:
    """Sign a user in and keep (or print the command to keep) their refresh token.

    Args:
        config: the tap's (or target's) settings: ``environment_url`` and ``client_id``
            (required), ``client_secret`` or ``client_certificate_path`` for a confidential
            app, ``tenant_id`` (default ``organizations``), ``authority_host``,
            ``token_cache_path``.
        device_code: use the device code flow instead of a browser redirect (public clients).
        open_browser: open the sign-in URL in a browser when one is available.
        port: the local redirect listener's port (0: any free port); the redirect URI is
            ``http://localhost:<port>``.
        out: where instructions go (the sign-in URL, the device code, the outcome).
        timeout: seconds to wait for the sign-in.
        plugin: the Meltano plugin named in the printed ``meltano config`` command.

    Returns:
        The result; with ``token_cache_path`` the token is in that file (mode 0600), otherwise
        the ``meltano config <plugin> set refresh_token '...'`` command was printed to stdout.

    Raises:
        ConfigError: a required setting is missing or malformed, the port is taken, or the
            device code flow was asked for a confidential app.
        AuthError: the sign-in was cancelled, denied, timed out, or Entra ID refused it.
    """
    settings = _Settings.from_config(config)
    if device_code and settings.confidential:
        raise ConfigError(
            "The device code sign-in needs a public client app: remove client_secret and "
            "client_certificate_path (and allow public client flows in the app registration), "
            "or sign in with the browser (without --device-code)."
        )
    cache = msal.SerializableTokenCache()
    with VerifiedSession(timeout=HTTP_TIMEOUT) as session:
        app = _build_app(settings, cache, session)
        if device_code:
            result = _device_code_flow(settings, app, cache, out=out, timeout=timeout)
        else:
            result = _auth_code_flow(
                settings,
                app,
                cache,
                open_browser=open_browser,
                port=port,
                out=out,
                timeout=timeout,
            )
    if "access_token" not in result:
        raise settings.error(result)
    token = result.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise AuthError(
            f"Entra ID signed the user in but returned no refresh token for client_id "
            f"'{settings.client_id}': allow the offline_access permission for the app.",
            error="no_refresh_token",
        )
    username = _username(result)
    who = f" as {username}" if username else ""
    flow = FLOW_DEVICE_CODE if device_code else FLOW_AUTHORIZATION_CODE
    if settings.token_cache_path is not None:
        _say(
            out,
            f"Signed in{who}. The refresh token is stored in the token cache "
            f"{settings.token_cache_path} (readable by you only); runs with this "
            "token_cache_path use it and need no refresh_token setting.",
        )
        return LoginResult(token, username, settings.token_cache_path, flow)
    _say(
        out,
        f"Signed in{who}. No token_cache_path is set, so here is the command that stores the "
        "refresh token in Meltano (it is a secret: do not share it; or put it in the "
        "refresh_token setting of your config file):",
    )
    stdout = sys.stdout
    print(_meltano_command(plugin, token), file=stdout)
    stdout.flush()
    return LoginResult(token, username, None, flow)


# ------------------------------------------------------------------------------ the command


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


def _parser(prog: str) -> argparse.ArgumentParser:
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


def _load_config(files: Sequence[str], env_prefix: str) -> dict[str, Any]:
    """Settings from ``<env_prefix><NAME>`` variables, overridden by the ``--config`` files."""
    config: dict[str, Any] = {}
    for name in LOGIN_SETTINGS:
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
    stderr: TextIO | None = None,
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
    args = _parser(prog).parse_args(args_list)
    try:
        config = _load_config(args.config, env_prefix)
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
