"""Sign a user in once, for the delegated flow's first refresh token: browser or device code.

Both flows run through msal with the settings the connectors use (``environment_url``,
``client_id``, optional ``client_secret`` or ``client_certificate_path``, ``tenant_id`` or
``organizations``, ``authority_host`` or the environment's cloud) and ask for
``<resource>/user_impersonation`` (msal adds ``openid profile offline_access``):

* **Browser** (default): the authorization code flow with PKCE, answered by msal's redirect
  listener on ``http://localhost:<port>`` (a free port unless ``port`` is given; Entra ID posts the
  answer, ``response_mode=form_post``; the listener checks ``state``, shows the browser a short
  page and keeps waiting after a wrong answer). A public client signs in through
  ``acquire_token_interactive``; a confidential one (a secret or certificate), which msal gives no
  interactive call, through ``initiate_auth_code_flow`` and ``acquire_token_by_auth_code_flow``
  with the same listener. The sign-in URL is always shown (``say``) and opened in a graphical
  browser when asked and one is there (see :class:`_Listener` for why msal does not open it).
* **Device code** (``device_code=True``, public clients): msal's message (a URL and a code to enter
  on any other device) is shown, and the sign-in is polled for.

The tokens go to msal's token cache: with ``token_cache_path`` the file (mode 0600), locked and
re-read only once the answer has arrived, so the lock is never held while the user signs in.
:class:`LoginResult` carries the refresh token for a caller without a cache file to show the user
how to keep it; nothing here shows or logs a token.
"""

from __future__ import annotations

import os
import sys
import time
import webbrowser
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msal
import requests
from msal.oauth2cli import AuthCodeReceiver

from dynamics_api.auth.app import build_app, identity_session
from dynamics_api.auth.cache import TokenCacheFile
from dynamics_api.auth.errors import denied_error, network_error
from dynamics_api.auth.scrub import Scrubber
from dynamics_api.auth.settings import AuthSettings
from dynamics_api.errors import AuthError, ConfigError

__all__ = [
    "DEFAULT_TIMEOUT",
    "FLOW_AUTHORIZATION_CODE",
    "FLOW_DEVICE_CODE",
    "LoginResult",
    "sign_in",
]

FLOW_AUTHORIZATION_CODE = "authorization_code"
FLOW_DEVICE_CODE = "device_code"
#: Seconds to wait for the user to sign in.
DEFAULT_TIMEOUT = 300.0

_RETRYABLE_DEVICE_ERRORS = frozenset({"authorization_pending", "slow_down"})
_DENIED_ERRORS = frozenset({"access_denied", "authorization_declined"})
_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
    "<body style='font-family:sans-serif;margin:3em'><h1>{title}</h1><p>{text}</p></body></html>"
)
#: The listener's pages (msal's templates: ``$name`` is a field of the answer, HTML-escaped).
_PAGES = {
    "success_template": _PAGE.format(
        title="Signed in",
        text="The sign-in was received. You can close this tab and return to the terminal.",
    ),
    "error_template": _PAGE.format(
        title="Sign-in failed",
        text="$error: $error_description Return to the terminal for details.",
    ),
}


@dataclass(frozen=True)
class LoginResult:
    """What a sign-in produced.

    Attributes:
        refresh_token: the user's refresh token; never shown in ``repr``.
        username: the signed-in user's name (``preferred_username``), when the id token gave one.
        token_cache_path: the cache file the token was stored in; ``None`` when there is none.
        flow: :data:`FLOW_AUTHORIZATION_CODE` or :data:`FLOW_DEVICE_CODE`.
    """

    refresh_token: str = field(repr=False)
    username: str | None
    token_cache_path: Path | None
    flow: str


def sign_in(
    config: Mapping[str, Any],
    *,
    device_code: bool = False,
    open_browser: bool = True,
    port: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
    say: Callable[[str], None] | None = None,
) -> LoginResult:
    """Sign a user in and keep their tokens in the token cache (the file, if one is set).

    Args:
        config: the settings (:class:`AuthSettings` reads them); ``refresh_token`` is ignored.
        device_code: use the device code flow instead of the browser (public clients only).
        open_browser: open the sign-in URL in a browser when a graphical one is available.
        port: the redirect listener's port (0: any free port).
        timeout: seconds to wait for the sign-in.
        say: where instructions go (the sign-in URL, the device code); default stderr.

    Returns:
        The result, refresh token included.

    Raises:
        ConfigError: a setting is missing or malformed, the port is taken, or the device code
            flow was asked for a confidential app.
        AuthError: the sign-in was cancelled, denied, timed out, or Entra ID refused it.
    """
    # AZURE_FEDERATED_TOKEN_FILE is for unattended runs: a sign-in uses only what it is given.
    settings = AuthSettings.from_config(config, environ={})
    if settings.managed_identity:
        raise ConfigError(
            "managed_identity is set, and a managed identity needs no sign-in: run the tap or "
            "target itself, or remove managed_identity to sign a user in."
        )
    if device_code and settings.confidential:
        raise ConfigError(
            "The device code sign-in needs a public client app: remove client_secret, "
            "client_certificate_path and federated_token_file (and allow public client flows "
            "in the app registration), or sign in with the browser (without --device-code)."
        )
    store = TokenCacheFile(settings.token_cache_path)
    scrub = Scrubber(*settings.secrets())
    with identity_session() as session:
        app = build_app(settings, store.cache, session, scrub=scrub, refused="the sign-in")
        flows = _Flows(settings, app, store, scrub, say or _to_stderr)
        if device_code:
            result = flows.device_code(timeout)
        else:
            result = flows.browser(open_browser=open_browser, port=port, timeout=timeout)
    token = result.get("refresh_token")
    scrub.add(token if isinstance(token, str) else None)
    if result.get("error") in _DENIED_ERRORS:
        raise denied_error(result, client_id=settings.app_client_id)
    if "access_token" not in result:
        raise settings.auth_error(result, scrub=scrub, refused="the sign-in")
    if not isinstance(token, str) or not token:
        raise AuthError(
            f"Entra ID signed the user in but returned no refresh token for client_id "
            f"'{settings.client_id}': allow the offline_access permission for the app.",
            error="no_refresh_token",
        )
    return LoginResult(
        refresh_token=token,
        username=_username(result),
        token_cache_path=settings.token_cache_path,
        flow=FLOW_DEVICE_CODE if device_code else FLOW_AUTHORIZATION_CODE,
    )


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _username(result: Mapping[str, Any]) -> str | None:
    claims = result.get("id_token_claims")
    if isinstance(claims, Mapping):
        name = claims.get("preferred_username") or claims.get("upn") or claims.get("email")
        if isinstance(name, str) and name:
            return name
    return None


# ------------------------------------------------------------------------------ the listener


class _Listener(AuthCodeReceiver):
    """msal's redirect listener, announcing the sign-in URL our way.

    msal (1.39) opens a browser itself whenever it finds one, with no switch to say no
    (``--no-browser``; tests) and without telling the URL then (``auth_uri_callback`` is only
    called when no browser opened), and it would start a console browser (lynx) in the terminal
    the user reads. So this listener takes the URL out of msal's wait, which then opens nothing,
    hands it to ``announce``, and calls ``on_answer`` once an answer has arrived, before msal
    redeems it. msal takes it through ``acquire_token_interactive(auth_code_receiver=...)``
    (passed on to ``obtain_token_by_browser``); tests/integration/test_login.py fails if that
    changes.

    Raises:
        ConfigError: the port cannot be listened on.
    """

    def __init__(
        self,
        port: int,
        *,
        announce: Callable[[str, str], None],
        on_answer: Callable[[], object],
    ) -> None:
        try:
            super().__init__(port=port)
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen for the sign-in redirect on port {port} "
                f"({exc.strerror or type(exc).__name__}): choose another port with --port, or 0 "
                "for any free port."
            ) from None
        self._announce = announce
        self._on_answer = on_answer

    @property
    def redirect_uri(self) -> str:
        """``http://localhost:<port>``, what the app registration lists (any port)."""
        return f"http://localhost:{self.get_port()}"

    def get_auth_response(self, timeout: float | None = None, **kwargs: Any) -> Any:
        """Announce the URL, wait for the answer (``None`` after ``timeout`` seconds)."""
        auth_uri = kwargs.pop("auth_uri", None)
        if auth_uri:
            self._announce(str(auth_uri), self.redirect_uri)
        answer = super().get_auth_response(timeout=timeout, **kwargs)
        if answer:
            self._on_answer()
        return answer


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


# ------------------------------------------------------------------------------ the flows


class _Flows:
    """The sign-in flows for one app, with its token cache, its scrubber and where instructions
    go."""

    def __init__(
        self,
        settings: AuthSettings,
        app: msal.ClientApplication,
        store: TokenCacheFile,
        scrub: Scrubber,
        say: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.app = app
        self.store = store
        self.scrub = scrub
        self.say = say
        self.scopes = [f"{settings.resource}/user_impersonation"]

    def browser(self, *, open_browser: bool, port: int, timeout: float) -> Mapping[str, Any]:
        """The authorization code flow with PKCE through msal's listener."""

        def announce(url: str, redirect_uri: str) -> None:
            self.say("Sign in to Dataverse with this URL (it is valid once, for this sign-in):")
            self.say(f"  {url}")
            self.say(f"Waiting for the sign-in at {redirect_uri} ...")
            if open_browser:
                self._open_browser(url)

        with ExitStack() as stack:
            # The cache transaction starts when the answer is in and ends after the redemption.
            listener = _Listener(
                port,
                announce=announce,
                on_answer=lambda: stack.enter_context(self.store.transaction()),
            )
            stack.callback(listener.close)
            try:
                if isinstance(self.app, msal.PublicClientApplication):
                    result: Mapping[str, Any] | None = self.app.acquire_token_interactive(
                        self.scopes,
                        port=listener.get_port(),
                        timeout=timeout,
                        auth_code_receiver=listener,
                        **_PAGES,
                    )
                else:
                    result = self._confidential(listener, timeout)
            except msal.BrowserInteractionTimeoutError:
                result = None
            except requests.RequestException as exc:
                raise network_error(self.settings.authority_host, exc) from None
            except ValueError:
                raise AuthError(
                    "The sign-in answer could not be checked against the sign-in that was "
                    "started: run the login command again.",
                    error="invalid_response",
                ) from None
        if result is None:
            raise AuthError(
                "No sign-in arrived before the timeout: run the login command again and finish "
                "the sign-in in the browser (if the browser showed an error, check that the app "
                "registration has the redirect URI http://localhost under 'Mobile and desktop "
                "applications'), or use --device-code.",
                error="timeout",
            )
        return result

    def _confidential(self, listener: _Listener, timeout: float) -> Mapping[str, Any] | None:
        """What ``acquire_token_interactive`` does, for an app that proves itself."""
        flow = self.app.initiate_auth_code_flow(
            self.scopes, redirect_uri=listener.redirect_uri, response_mode="form_post"
        )
        answer = listener.get_auth_response(
            auth_uri=flow["auth_uri"], state=flow["state"], timeout=timeout, **_PAGES
        )
        if answer is None:
            return None
        result: Mapping[str, Any] = self.app.acquire_token_by_auth_code_flow(flow, answer)
        return result

    def _open_browser(self, url: str) -> None:
        if not _browser_available():
            self.say("No browser found here: open the URL above in a browser on this machine.")
            return
        try:
            opened = webbrowser.open(url, new=1, autoraise=True)
        except (webbrowser.Error, OSError):
            opened = False
        if not opened:
            self.say("Could not open a browser: open the URL above in a browser on this machine.")

    def device_code(self, timeout: float) -> Mapping[str, Any]:
        """The device code flow: show msal's message, poll until the user signed in."""
        app = self.app
        assert isinstance(app, msal.PublicClientApplication)
        try:
            flow = app.initiate_device_flow(scopes=self.scopes)
        except requests.RequestException as exc:
            raise network_error(self.settings.authority_host, exc) from None
        if "user_code" not in flow:
            raise self.settings.auth_error(flow, scrub=self.scrub, refused="a device code")
        self.say(str(flow.get("message") or ""))
        self.say("Waiting for the sign-in ...")
        deadline = time.monotonic() + timeout
        while True:
            # One poll per call (the exit condition ends msal's own loop at once), each in a cache
            # transaction: msal writes the new tokens into the cache on success.
            with self.store.transaction():
                try:
                    result: Mapping[str, Any] = app.acquire_token_by_device_flow(
                        flow, exit_condition=lambda _flow: True
                    )
                except requests.RequestException as exc:
                    raise network_error(self.settings.authority_host, exc) from None
            if result.get("error") not in _RETRYABLE_DEVICE_ERRORS:
                break
            pause = max(1.0, float(flow.get("interval") or 5))
            if time.monotonic() + pause > deadline or time.time() + pause > flow["expires_at"]:
                raise AuthError(
                    "No sign-in arrived before the timeout: run the login command again and "
                    "enter the code it prints at the address it shows.",
                    error="timeout",
                )
            time.sleep(pause)
        if result.get("error") in ("expired_token", "code_expired"):
            raise AuthError(
                "The device code expired before the sign-in was finished: run the login command "
                "again and enter the new code.",
                error=str(result.get("error")),
            )
        return result
