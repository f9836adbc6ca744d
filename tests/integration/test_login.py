"""`tap-dynamics login` end to end against the emulator's Entra ID (authorize, token, device code).

The test plays the browser: it reads the sign-in URL the command prints, asks the emulator's
authorize endpoint (which signs the default user in at once) and delivers the answer to msal's
local redirect listener, as a browser would. These tests also fail when msal stops taking the
listener `dynamics_api.auth.login` hands to `acquire_token_interactive` (no URL is printed then).
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from dynamics_api.auth import (
    FLOW_AUTHORIZATION_CODE,
    FLOW_DEVICE_CODE,
    FLOW_REFRESH_TOKEN,
    LoginResult,
    TokenProvider,
)
from dynamics_api.errors import AuthError, ConfigError
from dynamics_api.session_base import VerifiedSession
from dynamics_emulator.identity import GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE
from dynamics_emulator.server import Emulator
from dynamics_singer.login import is_login_command, login_main, run_login

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator) -> Emulator:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fresh_emulator.ca_bundle)
    assert fresh_emulator.identity is not None
    fresh_emulator.identity.device_code_interval = 1  # poll every second, not every five
    return fresh_emulator


def public_config(emu: Emulator, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "environment_url": emu.url,
        "client_id": emu.public_client_id,
        "tenant_id": emu.tenant_id,
        "authority_host": emu.authority_host,
    }
    cfg.update(overrides)
    return cfg


class Login:
    """`run_login` in a thread, with its instructions in a buffer."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        self.out = io.StringIO()
        self.result: LoginResult | None = None
        self.error: BaseException | None = None
        kwargs.setdefault("open_browser", False)
        kwargs.setdefault("timeout", WAIT)
        self._thread = threading.Thread(target=self._run, args=(config, kwargs), daemon=True)
        self._thread.start()

    def _run(self, config: dict[str, Any], kwargs: dict[str, Any]) -> None:
        try:
            self.result = run_login(config, out=self.out, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            match = re.search(pattern, self.out.getvalue())
            if match:
                return match
            if not self._thread.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not printed; got: {self.out.getvalue()!r}")

    def sign_in_url(self) -> str:
        return self.wait_for(r"(https://\S+/oauth2/v2\.0/authorize\?\S+)").group(1)

    def join(self) -> LoginResult:
        self._thread.join(WAIT + 10)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values.get("action")
        elif tag == "input" and values.get("type") == "hidden":
            self.fields[values["name"]] = values.get("value", "")


class Browser:
    """What a browser does with the sign-in URL: the emulator answers at once (the default user
    is signed in) with a redirect (query) or an auto-submitting form (form_post)."""

    def __init__(self, emu: Emulator) -> None:
        self.session = requests.Session()
        self.session.trust_env = False  # the listener is plain http on localhost: no proxy
        self.ca_bundle = emu.ca_bundle

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def authorize(self, url: str) -> requests.Response:
        return self.session.get(url, allow_redirects=False, verify=self.ca_bundle, timeout=30)

    def form(self, resp: requests.Response) -> tuple[str, dict[str, str]]:
        assert resp.status_code == 200
        parser = _FormParser()
        parser.feed(resp.text)
        assert parser.action, resp.text
        return parser.action, parser.fields

    def post(self, action: str, fields: dict[str, str]) -> requests.Response:
        return self.session.post(action, data=fields, timeout=30)

    def follow(self, resp: requests.Response) -> requests.Response:
        assert resp.status_code == 302, resp.text
        return self.session.get(resp.headers["Location"], timeout=30)

    def sign_in(self, url: str) -> requests.Response:
        """The whole round trip in form_post mode (what msal asks for)."""
        action, fields = self.form(self.authorize(url))
        return self.post(action, fields)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | params
    return urlunsplit(parts._replace(query=urlencode(query)))


def assert_owner_only(path: Path) -> None:
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def assert_token_works(emu: Emulator, cache_path: Path, **config: Any) -> None:
    """A provider with only the cache (no refresh_token setting) signs in as the user."""
    cfg = public_config(emu, token_cache_path=str(cache_path), **config)
    cfg.pop("refresh_token", None)
    with TokenProvider.from_config(cfg) as provider:
        assert provider.flow == FLOW_REFRESH_TOKEN
        token = provider.token()
    assert emu.identity is not None
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None
    assert info.user_object_id is not None
    assert info.scopes == ("user_impersonation",)
    with VerifiedSession(emu.ca_bundle) as s:
        resp = s.get(
            f"{emu.url}/api/data/v9.2/WhoAmI",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=30,
        )
    assert resp.status_code == 200, resp.text


# ------------------------------------------------------------------------------ browser flow


def test_browser_login_stores_the_refresh_token_in_the_cache(
    emu: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "tokens" / "cache.json"
    login = Login(public_config(emu, token_cache_path=str(cache)))
    url = login.sign_in_url()
    assert url.startswith(f"{emu.authority}/oauth2/v2.0/authorize?")
    query = parse_qs(urlsplit(url).query)
    assert query["redirect_uri"][0].startswith("http://localhost:")
    assert query["code_challenge_method"] == ["S256"]
    assert query["response_mode"] == ["form_post"]
    assert f"{emu.url}/user_impersonation" in query["scope"][0].split()
    assert "offline_access" in query["scope"][0].split()
    with Browser(emu) as browser:
        page = browser.sign_in(url)
    assert page.status_code == 200
    assert "close this tab" in page.text
    result = login.join()
    assert result.flow == FLOW_AUTHORIZATION_CODE
    assert result.token_cache_path == cache
    assert result.username
    assert result.refresh_token not in repr(result)
    assert_owner_only(cache)
    assert result.refresh_token in cache.read_text()
    assert emu.identity is not None
    assert emu.identity.issued[GRANT_AUTHORIZATION_CODE] == 1
    # Stored, so never shown.
    captured = capsys.readouterr()
    assert captured.out == ""
    assert result.refresh_token not in captured.err
    assert result.refresh_token not in login.out.getvalue()
    assert str(cache) in login.out.getvalue()
    assert_token_works(emu, cache)


def test_the_cache_file_is_not_locked_while_the_user_signs_in(
    emu: Emulator, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.json"
    login = Login(public_config(emu, token_cache_path=str(cache)))
    url = login.sign_in_url()
    # A scheduled run sharing the cache can take the lock while the browser is open.
    fd = os.open(f"{cache}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError when held
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    with Browser(emu) as browser:
        browser.sign_in(url)
    assert login.join().refresh_token in cache.read_text()


def test_a_second_login_replaces_the_account_in_an_existing_cache(
    emu: Emulator, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.json"
    results = []
    for _ in range(2):
        login = Login(public_config(emu, token_cache_path=str(cache)))
        with Browser(emu) as browser:
            browser.sign_in(login.sign_in_url())
        results.append(login.join())
    text = cache.read_text()
    assert results[1].refresh_token in text
    assert results[0].refresh_token not in text  # same user and client: one refresh token
    assert len(json.loads(text)["RefreshToken"]) == 1
    assert_token_works(emu, cache)


def test_browser_login_without_a_cache_prints_the_meltano_command(
    emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    config = emu.tap_config()  # the confidential app: client_secret set
    login = Login(config)
    with Browser(emu) as browser:
        page = browser.sign_in(login.sign_in_url())
    assert page.status_code == 200
    result = login.join()
    assert result.token_cache_path is None
    captured = capsys.readouterr()
    assert captured.out == (
        f"meltano config set tap-dynamics refresh_token '{result.refresh_token}'\n"
    )
    instructions = login.out.getvalue()
    assert result.refresh_token not in instructions
    for text in (captured.err, instructions, captured.out):
        assert emu.client_secret not in text
    # The printed token is the user's and works with the confidential app.
    with TokenProvider.from_config(emu.tap_config(refresh_token=result.refresh_token)) as p:
        assert p.flow == FLOW_REFRESH_TOKEN
        token = p.token()
    assert emu.identity is not None
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None and info.user_object_id is not None


@pytest.mark.parametrize("client", ["public", "confidential"])
def test_browser_login_logs_no_code_secret_or_token(
    emu: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    client: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("msal", "msal.application", "msal.oauth2cli.authcode", "msal.token_cache"):
        caplog.set_level(logging.DEBUG, logger=name)
    cache = tmp_path / "cache.json"
    config = (
        public_config(emu, token_cache_path=str(cache))
        if client == "public"
        else emu.tap_config(token_cache_path=str(cache))
    )
    login = Login(config)
    with Browser(emu) as browser:
        action, fields = browser.form(browser.authorize(login.sign_in_url()))
        assert browser.post(action, fields).status_code == 200
    result = login.join()
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "Got auth response" in text  # msal's listener logged the answer ...
    assert fields["code"] not in text  # ... without the code
    for secret in (result.refresh_token, emu.client_secret):
        assert secret not in text
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", text)


def test_the_target_prints_its_own_meltano_command(
    emu: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    login = Login(public_config(emu), plugin="target-dynamics")
    with Browser(emu) as browser:
        browser.sign_in(login.sign_in_url())
    result = login.join()
    out = capsys.readouterr().out
    assert out.startswith(
        f"meltano config set target-dynamics refresh_token '{result.refresh_token}'"
    )


def test_access_denied_is_one_clear_sentence(emu: Emulator, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    login = Login(public_config(emu, token_cache_path=str(cache)))
    url = login.sign_in_url()
    state = parse_qs(urlsplit(url).query)["state"][0]
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    with Browser(emu) as browser:
        page = browser.post(
            redirect_uri,
            {
                "error": "access_denied",
                "error_description": "AADSTS65004: User declined to consent to access the app."
                "\r\nTrace ID: 1\r\nCorrelation ID: 2",
                "state": state,
            },
        )
    assert "Sign-in failed" in page.text
    assert "User declined to consent" in page.text
    with pytest.raises(AuthError) as info:
        login.join()
    message = str(info.value)
    assert info.value.error == "access_denied"
    assert "cancelled or access was denied" in message
    assert "AADSTS65004" in message
    assert "\n" not in message
    assert not cache.exists()


def test_a_state_mismatch_is_rejected_and_the_wait_goes_on(emu: Emulator, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    login = Login(public_config(emu, token_cache_path=str(cache)))
    assert emu.identity is not None
    with Browser(emu) as browser:
        action, fields = browser.form(browser.authorize(login.sign_in_url()))
        forged = browser.post(action, fields | {"state": "forged-state"})
        assert forged.status_code == 400
        assert "State mismatch" in forged.text
        # The forged answer was not taken: its code was never redeemed, nothing was stored.
        assert emu.identity.issued[GRANT_AUTHORIZATION_CODE] == 0
        assert not cache.exists()
        assert login.result is None and login.error is None
        # The sign-in that was started still completes.
        assert browser.post(action, fields).status_code == 200
    result = login.join()
    assert emu.identity.issued[GRANT_AUTHORIZATION_CODE] == 1
    assert result.refresh_token in cache.read_text()


def test_a_query_mode_answer_is_refused(emu: Emulator) -> None:
    """The code must come back in a POST body (form_post), never in a URL a browser keeps."""
    login = Login(public_config(emu))
    url = login.sign_in_url()
    assert emu.identity is not None
    with Browser(emu) as browser:
        page = browser.follow(browser.authorize(with_query(url, response_mode="query")))
        assert page.status_code == 400
        assert emu.identity.issued[GRANT_AUTHORIZATION_CODE] == 0
        assert browser.sign_in(url).status_code == 200
    assert login.join().refresh_token
    assert emu.identity.issued[GRANT_AUTHORIZATION_CODE] == 1


def test_other_requests_to_the_listener_do_not_end_the_wait(emu: Emulator) -> None:
    login = Login(public_config(emu))
    url = login.sign_in_url()
    redirect_uri = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    with Browser(emu) as browser:
        assert browser.session.get(f"{redirect_uri}/favicon.ico", timeout=30).status_code == 400
        assert browser.session.get(redirect_uri, timeout=30).status_code == 400
        assert browser.session.post(redirect_uri, data={"x": "1"}, timeout=30).status_code == 400
        assert browser.sign_in(url).status_code == 200
    assert login.join().refresh_token


def test_an_error_redirect_uses_the_aadsts_explanations(emu: Emulator) -> None:
    login = Login(public_config(emu))
    url = login.sign_in_url()
    query = parse_qs(urlsplit(url).query)
    with Browser(emu) as browser:
        browser.post(
            query["redirect_uri"][0],
            {
                "error": "consent_required",
                "error_description": "AADSTS65001: The user or administrator has not consented.",
                "state": query["state"][0],
            },
        )
    with pytest.raises(AuthError) as info:
        login.join()
    assert info.value.aadsts == 65001
    assert "consent" in str(info.value)


def test_no_redirect_before_the_timeout(emu: Emulator) -> None:
    login = Login(public_config(emu), timeout=1)
    login.sign_in_url()
    with pytest.raises(AuthError) as info:
        login.join()
    assert info.value.error == "timeout"
    assert "--device-code" in str(info.value)


def test_a_taken_port_is_a_config_error(emu: Emulator) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port}"):
            run_login(public_config(emu), port=port, open_browser=False, out=io.StringIO())


@pytest.mark.parametrize("missing", ["client_id", "environment_url"])
def test_required_settings(emu: Emulator, missing: str) -> None:
    config = public_config(emu)
    del config[missing]
    with pytest.raises(ConfigError, match=f"setting {missing} is required"):
        run_login(config, open_browser=False, out=io.StringIO())


def test_an_error_page_in_the_browser_ends_in_a_timeout_with_a_hint(emu: Emulator) -> None:
    login = Login(public_config(emu, client_id="00000000-1111-4222-8333-444444444444"), timeout=2)
    with Browser(emu) as browser:
        page = browser.authorize(login.sign_in_url())
    # Entra ID shows an unknown client on its own error page and never calls back.
    assert page.status_code == 400
    with pytest.raises(AuthError) as info:
        login.join()
    assert info.value.error == "timeout"
    assert "redirect URI http://localhost" in str(info.value)


# ------------------------------------------------------------------------------ device code


def test_device_code_login(emu: Emulator, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    login = Login(public_config(emu, token_cache_path=str(cache)), device_code=True)
    user_code = login.wait_for(r"enter the code (\w+)").group(1)
    assert emu.identity is not None
    emu.identity.approve_device_code(user_code)
    result = login.join()
    assert result.flow == FLOW_DEVICE_CODE
    assert emu.identity.issued[GRANT_DEVICE_CODE] == 1
    assert_owner_only(cache)
    assert result.refresh_token in cache.read_text()
    assert_token_works(emu, cache)


def test_device_code_timeout(emu: Emulator) -> None:
    login = Login(public_config(emu), device_code=True, timeout=1.5)
    login.wait_for(r"enter the code (\w+)")
    with pytest.raises(AuthError) as info:
        login.join()
    assert info.value.error == "timeout"


def test_device_code_needs_a_public_client(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="public client"):
        run_login(emu.tap_config(), device_code=True, out=io.StringIO())


# ------------------------------------------------------------------------------ the command


def test_login_is_recognised_before_the_sdk_command() -> None:
    assert is_login_command(["login"])
    assert is_login_command(["login", "--device-code"])
    assert is_login_command(["--config", "c.json", "login"])  # meltano invoke tap-dynamics login
    assert is_login_command(["--config", "c.json", "--state", "s.json", "login", "--no-browser"])
    assert not is_login_command([])
    assert not is_login_command(["--config", "login"])  # a config file named "login"
    assert not is_login_command(["--discover", "--config", "c.json"])
    assert not is_login_command(["--about"])


def test_login_main_reads_the_config_file_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"client_id": "from-file", "tenant_id": ""}))
    monkeypatch.setenv("TAP_DYNAMICS_ENVIRONMENT_URL", "https://org.crm.dynamics.com")
    monkeypatch.setenv("TAP_DYNAMICS_CLIENT_ID", "from-env")
    monkeypatch.setenv("TAP_DYNAMICS_TENANT_ID", "contoso.onmicrosoft.com")
    monkeypatch.setenv("TAP_DYNAMICS_TOKEN_CACHE_PATH", str(tmp_path / "c.json"))
    seen: dict[str, Any] = {}

    def fake_run(config: dict[str, Any], **kwargs: Any) -> LoginResult:
        seen.update(config=config, **kwargs)
        return LoginResult("rt", None, None, FLOW_AUTHORIZATION_CODE)

    argv = ["--config", str(config_file), "login", "--no-browser", "--port", "8400"]
    assert login_main(argv, run=fake_run) == 0
    assert seen["config"] == {
        "environment_url": "https://org.crm.dynamics.com",
        "client_id": "from-file",
        "tenant_id": "contoso.onmicrosoft.com",
        "token_cache_path": str(tmp_path / "c.json"),
    }
    assert seen["open_browser"] is False
    assert seen["port"] == 8400
    assert seen["device_code"] is False
    assert seen["plugin"] == "tap-dynamics"

    seen.clear()
    monkeypatch.setenv("TARGET_DYNAMICS_CLIENT_ID", "target-app")
    code = login_main(
        ["login", "--device-code"],
        prog="target-dynamics",
        env_prefix="TARGET_DYNAMICS_",
        run=fake_run,
    )
    assert code == 0
    assert seen["config"] == {"client_id": "target-app"}
    assert seen["device_code"] is True
    assert seen["plugin"] == "target-dynamics"


def test_login_main_prints_errors_as_one_sentence(tmp_path: Path) -> None:
    err = io.StringIO()
    assert login_main(["login", "--config", str(tmp_path / "absent.json")], stderr=err) == 1
    assert err.getvalue().startswith("tap-dynamics: The config file")
    assert err.getvalue().count("\n") == 1


def _cli(
    args: list[str], emu: Emulator, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TAP_DYNAMICS_")}
    environ.update(env or {})
    environ["REQUESTS_CA_BUNDLE"] = emu.ca_bundle
    environ["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "tap_dynamics", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_lines(stream: Any, lines: list[str]) -> Callable[[], None]:
    def pump() -> None:
        for line in stream:
            lines.append(line)

    return pump


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class CliLogin:
    """`tap-dynamics login` in a subprocess, its stdout and stderr read as they come."""

    def __init__(self, args: list[str], emu: Emulator, reaper: list[subprocess.Popen[str]]) -> None:
        self.proc = _cli(args, emu)
        reaper.append(self.proc)
        self.err: list[str] = []
        self.out: list[str] = []
        self._pumps = [
            threading.Thread(target=_read_lines(self.proc.stderr, self.err), daemon=True),
            threading.Thread(target=_read_lines(self.proc.stdout, self.out), daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and self.proc.poll() is None:
            match = re.search(pattern, "".join(self.err))
            if match:
                return match
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not printed; got: {''.join(self.err)!r}")

    def finish(self) -> tuple[int, str, str]:
        """(exit code, stdout, stderr)."""
        code = self.proc.wait(WAIT)
        for pump in self._pumps:
            pump.join(10)
        return code, "".join(self.out), "".join(self.err)


def test_cli_device_code_login(
    emu: Emulator, tmp_path: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    cache = tmp_path / "cache.json"
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(public_config(emu, token_cache_path=str(cache))))
    cli = CliLogin(["login", "--device-code", "--config", str(config_file)], emu, reaper)
    user_code = cli.wait_for(r"enter the code (\w+)").group(1)
    assert emu.identity is not None
    emu.identity.approve_device_code(user_code)
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    assert stdout == ""
    assert "Signed in" in stderr and str(cache) in stderr
    assert_owner_only(cache)
    refresh_tokens = json.loads(cache.read_text())["RefreshToken"]
    assert len(refresh_tokens) == 1
    rt = next(iter(refresh_tokens.values()))["secret"]
    assert rt not in stderr
    assert_token_works(emu, cache)


def test_cli_browser_login_prints_the_meltano_command(
    emu: Emulator, tmp_path: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(public_config(emu)))
    cli = CliLogin(["--config", str(config_file), "login", "--no-browser"], emu, reaper)
    url = cli.wait_for(r"(https://\S+/oauth2/v2\.0/authorize\?\S+)").group(1)
    with Browser(emu) as browser:
        assert browser.sign_in(url).status_code == 200
    code, stdout, stderr = cli.finish()
    assert code == 0, stderr
    match = re.fullmatch(r"meltano config set tap-dynamics refresh_token '([^']+)'\n", stdout)
    assert match, stdout
    assert match.group(1) not in stderr
    assert "Signed in" in stderr
    with TokenProvider.from_config(public_config(emu, refresh_token=match.group(1))) as p:
        assert p.flow == FLOW_REFRESH_TOKEN
        assert emu.identity is not None
        assert emu.identity.validate_access_token(p.token(), resource=emu.url) is not None


def test_cli_errors_show_no_secret(
    emu: Emulator, tmp_path: Path, reaper: list[subprocess.Popen[str]]
) -> None:
    # Meltano's order (`tap-dynamics --config FILE login`), settings partly from its variables.
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"client_secret": emu.client_secret}))
    env = {
        "TAP_DYNAMICS_ENVIRONMENT_URL": emu.url,
        "TAP_DYNAMICS_CLIENT_ID": emu.client_id,
        "TAP_DYNAMICS_TENANT_ID": emu.tenant_id,
        "TAP_DYNAMICS_AUTHORITY_HOST": emu.authority_host,
    }
    proc = _cli(["--config", str(config_file), "login", "--device-code"], emu, env)
    reaper.append(proc)
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    assert stdout == ""
    assert stderr.startswith("tap-dynamics: The device code sign-in needs a public client")
    assert stderr.count("\n") == 1
    assert emu.client_secret not in stderr
