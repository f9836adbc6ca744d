"""TokenProvider against the emulator's Entra ID over real HTTPS, with the real msal."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import certifi
import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import dynamics_api.auth.providers as providers_module
from dynamics_api.auth import (
    FLOW_CLIENT_CREDENTIALS,
    FLOW_REFRESH_TOKEN,
    ClientCertificate,
    TokenProvider,
)
from dynamics_api.errors import AuthError, ConfigError
from dynamics_api.session_base import VerifiedSession, ca_verify
from dynamics_emulator.identity import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    ClientApp,
)
from dynamics_emulator.server import Emulator

CERT_CLIENT_ID = "6c0f5d3e-8a1b-4c2d-9e3f-4a5b6c7d8e9f"
UNKNOWN_CLIENT_ID = "00000000-1111-4222-8333-444444444444"
REDIRECT = "http://localhost"


# ------------------------------------------------------------------------------ fixtures/helpers


@pytest.fixture(autouse=True)
def _trust_emulator_ca(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    # The shared emulator's CA; tests on another emulator call `trust` for theirs.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_bundle)


def trust(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle)


def provider(emu: Emulator, **overrides: Any) -> TokenProvider:
    return TokenProvider.from_config(emu.tap_config(**overrides))


def who_am_i(emu: Emulator, token: str) -> requests.Response:
    with VerifiedSession(emu.ca_bundle) as s:
        return s.get(
            f"{emu.url}/api/data/v9.2/WhoAmI",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=30,
        )


def first_refresh_token(
    emu: Emulator, client_id: str | None = None, client_secret: str | None = None
) -> str:
    """Sign in as the emulator's default user: authorize (PKCE) then redeem the code."""
    client_id = client_id or emu.public_client_id
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    scope = f"openid offline_access {emu.url}/user_impersonation"
    resp = requests.get(
        f"{emu.authority}/oauth2/v2.0/authorize",
        params={
            "client_id": client_id,
            "response_type": "code",
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "s1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        verify=emu.ca_bundle,
        timeout=30,
    )
    assert resp.status_code == 302, resp.text
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["state"] == ["s1"]
    form = {
        "client_id": client_id,
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "scope": scope,
    }
    if client_secret:
        form["client_secret"] = client_secret
    token = requests.post(
        f"{emu.authority}/oauth2/v2.0/token", data=form, verify=emu.ca_bundle, timeout=30
    )
    assert token.status_code == 200, token.text
    rt = token.json()["refresh_token"]
    assert isinstance(rt, str)
    return rt


def redeem_refresh_token(emu: Emulator, rt: str, client_id: str | None = None) -> dict[str, Any]:
    """What the emulator says about a refresh token (this also rotates it when it is good)."""
    resp = requests.post(
        f"{emu.authority}/oauth2/v2.0/token",
        data={
            "client_id": client_id or emu.public_client_id,
            "grant_type": "refresh_token",
            "refresh_token": rt,
            "scope": f"{emu.url}/user_impersonation",
        },
        verify=emu.ca_bundle,
        timeout=30,
    )
    body = resp.json()
    assert isinstance(body, dict)
    return body


def delegated(emu: Emulator, rt: str, **overrides: Any) -> TokenProvider:
    cfg = emu.tap_config(client_id=emu.public_client_id, refresh_token=rt, **overrides)
    cfg.pop("client_secret")
    return TokenProvider.from_config(cfg)


def cached_refresh_tokens(path: Path) -> list[str]:
    state = json.loads(path.read_text())
    return [e["secret"] for e in state.get("RefreshToken", {}).values()]


@pytest.fixture(scope="module")
def cert_material(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(PEM file with key and certificate, the certificate PEM, its SHA-1 hex)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tap-dynamics-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path_factory.mktemp("cert") / "client.pem"
    path.write_text(key_pem + cert_pem)
    path.chmod(0o600)
    return path, cert_pem, cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303


@pytest.fixture(scope="module")
def cert_emulator(cert_material: tuple[Path, str, str]) -> Iterator[Emulator]:
    app = ClientApp(CERT_CLIENT_ID, certificates=(cert_material[1],), display_name="cert app")
    with Emulator(extra_clients=(app,)) as emu:
        yield emu


# ------------------------------------------------------------------------------ session_base


def test_ca_verify_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/a.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/b.pem")
    assert ca_verify() == "/a.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    assert ca_verify() == "/b.pem"
    monkeypatch.delenv("CURL_CA_BUNDLE")
    assert ca_verify() is True
    with pytest.raises(ValueError, match="cannot be switched off"):
        VerifiedSession(verify=False)


def test_verified_session_pins_its_ca(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    session = VerifiedSession()
    assert session.verify == emulator.ca_bundle
    # A later CURL/REQUESTS_CA_BUNDLE pointing at the system store must not win over the pin.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    with session:
        resp = session.get(f"{emulator.authority}/v2.0/.well-known/openid-configuration")
    assert resp.status_code == 200


# ------------------------------------------------------------------------------ client credentials


def test_client_credentials_token_works_and_is_cached(emulator: Emulator) -> None:
    assert emulator.identity is not None
    p = provider(emulator)
    assert p.flow == FLOW_CLIENT_CREDENTIALS
    assert p.scopes == [f"{emulator.url}/.default"]
    before = emulator.identity.issued[GRANT_CLIENT_CREDENTIALS]
    token = p.token()
    assert p.token() == token
    assert p.token() == token
    assert emulator.identity.issued[GRANT_CLIENT_CREDENTIALS] == before + 1
    info = emulator.identity.validate_access_token(token, resource=emulator.url)
    assert info is not None
    assert info.client_id == emulator.client_id
    assert info.user_object_id is None
    assert who_am_i(emulator, token).status_code == 200
    p.close()


def test_force_refresh_after_revocation(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    with provider(emu) as p:
        old = p.token()
        emu.revoke_all_tokens()
        assert emu.identity.validate_access_token(old) is None
        assert who_am_i(emu, old).status_code == 401
        assert p.token() == old  # still held: only a 401 tells
        new = p.token(force_refresh=True)
        assert new != old
        assert emu.identity.validate_access_token(new, resource=emu.url) is not None
        assert who_am_i(emu, new).status_code == 200
        assert emu.identity.issued[GRANT_CLIENT_CREDENTIALS] == 2


def test_force_refresh_with_rejected_token_refreshes_once(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    p = provider(emu)
    old = p.token()
    emu.expire_access_tokens()
    new = p.token(force_refresh=True, rejected_token=old)
    # A second thread that saw the same 401 gets the replacement, not a third token.
    assert p.token(force_refresh=True, rejected_token=old) == new
    assert emu.identity.issued[GRANT_CLIENT_CREDENTIALS] == 2
    assert emu.identity.validate_access_token(new) is not None


def test_concurrent_token_calls_make_one_acquisition(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    p = provider(emu)
    barrier = threading.Barrier(8)
    tokens: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            tokens.append(p.token())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert emu.identity.issued[GRANT_CLIENT_CREDENTIALS] == 1


def test_short_lived_tokens_are_renewed_before_the_last_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Emulator(access_token_lifetime=200) as emu:
        trust(monkeypatch, emu)
        assert emu.identity is not None
        p = provider(emu)
        first = p.token()
        assert p.token() == first  # 200 s left: held (margin is half the lifetime, 100 s)
        assert emu.identity.issued[GRANT_CLIENT_CREDENTIALS] == 1
        start = time.time()
        monkeypatch.setattr(providers_module, "time", SimpleNamespace(time=lambda: start + 150))
        second = p.token()  # 50 s left: never served
        assert second != first
        assert emu.identity.issued[GRANT_CLIENT_CREDENTIALS] == 2


def test_wrong_secret(emulator: Emulator) -> None:
    wrong = "Wr0ng~" + secrets.token_urlsafe(24)
    p = provider(emulator, client_secret=wrong)
    with pytest.raises(AuthError) as info:
        p.token()
    err = info.value
    assert err.aadsts == 7000215
    assert err.error == "invalid_client"
    text = str(err)
    assert "AADSTS7000215" in text
    assert f"client_id '{emulator.client_id}'" in text
    assert "Check client_secret" in text
    assert wrong not in text and wrong not in repr(err) and wrong not in repr(p)
    assert emulator.client_secret not in text


def test_unknown_tenant(emulator: Emulator) -> None:
    p = provider(emulator, tenant_id="no-such-tenant.example")
    with pytest.raises(AuthError) as info:
        p.token()
    assert info.value.aadsts == 90002
    assert "tenant 'no-such-tenant.example'" in str(info.value)
    assert "Check tenant_id" in str(info.value)
    assert emulator.client_secret not in str(info.value)


def test_unknown_client(emulator: Emulator) -> None:
    p = provider(emulator, client_id=UNKNOWN_CLIENT_ID)
    with pytest.raises(AuthError) as info:
        p.token()
    assert info.value.aadsts == 700016
    assert UNKNOWN_CLIENT_ID in str(info.value)
    assert "Check client_id and tenant_id" in str(info.value)


def test_unknown_aadsts_code_keeps_first_sentence(emulator: Emulator) -> None:
    # A scope without /.default: the emulator answers invalid_scope AADSTS1002012.
    p = provider(emulator)
    p.scopes = ["not-a-resource/"]
    with pytest.raises(AuthError) as info:
        p.token()
    text = str(info.value)
    assert info.value.aadsts == 1002012
    assert info.value.error == "invalid_scope"
    assert text == (
        f"Entra ID refused a token for client_id '{emulator.client_id}' (AADSTS1002012): "
        "The provided value for scope not-a-resource/ is not valid."
    )


def test_untrusted_ca_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, emulator: Emulator) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    p = provider(emulator)
    with pytest.raises(AuthError) as info:
        p.token()
    text = str(info.value)
    assert "TLS certificate verification failed" in text
    assert urlsplit(emulator.url).netloc in text
    assert "REQUESTS_CA_BUNDLE" in text


def test_unreachable_authority(emulator: Emulator) -> None:
    port = closed_port()
    p = provider(emulator, authority_host=f"https://127.0.0.1:{port}")
    with pytest.raises(AuthError) as info:
        p.token()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "Could not connect" in str(info.value)
    assert "REQUESTS_CA_BUNDLE" in str(info.value)


def closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert isinstance(port, int)
    return port


def test_token_cache_for_client_credentials(
    tmp_path: Path, fresh_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    path = tmp_path / "cache.json"
    first = provider(emu, token_cache_path=str(path)).token()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # A second run reuses the cached token: no new issuance.
    assert provider(emu, token_cache_path=str(path)).token() == first
    assert emu.identity.issued[GRANT_CLIENT_CREDENTIALS] == 1


# ------------------------------------------------------------------------------ certificate


def test_certificate_credential(
    monkeypatch: pytest.MonkeyPatch,
    cert_emulator: Emulator,
    cert_material: tuple[Path, str, str],
) -> None:
    emu = cert_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    path, _, sha1 = cert_material
    cfg = emu.tap_config(client_id=CERT_CLIENT_ID, client_certificate_path=str(path))
    cfg.pop("client_secret")
    p = TokenProvider.from_config(cfg)
    assert p.credential_kind == "certificate"
    token = p.token()
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None and info.client_id == CERT_CLIENT_ID
    # The thumbprint given explicitly (upper case with colons, as portals show it) works too.
    pretty = ":".join(sha1[i : i + 2] for i in range(0, 40, 2)).upper()
    p2 = TokenProvider.from_config(cfg | {"client_certificate_thumbprint": pretty})
    assert emu.identity.validate_access_token(p2.token(force_refresh=True)) is not None
    key_pem = path.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    assert key_pem.strip() not in repr(p)


def test_certificate_thumbprint_mismatch(cert_material: tuple[Path, str, str]) -> None:
    path, _, _ = cert_material
    with pytest.raises(ConfigError, match="does not match"):
        ClientCertificate.load(str(path), "00" * 20)
    with pytest.raises(ConfigError, match="40 hexadecimal digits"):
        ClientCertificate.load(str(path), "abc")


def test_certificate_files_checked(tmp_path: Path, cert_material: tuple[Path, str, str]) -> None:
    path, cert_pem, sha1 = cert_material
    only_cert = tmp_path / "cert.pem"
    only_cert.write_text(cert_pem)
    with pytest.raises(ConfigError, match="holds no PEM private key"):
        ClientCertificate.load(str(only_cert))
    only_key = tmp_path / "key.pem"
    only_key.write_text(path.read_text().split("-----BEGIN CERTIFICATE-----")[0])
    with pytest.raises(ConfigError, match="holds no certificate"):
        ClientCertificate.load(str(only_key))
    assert ClientCertificate.load(str(only_key), sha1).thumbprint == sha1
    with pytest.raises(ConfigError, match="cannot be read"):
        ClientCertificate.load(str(tmp_path / "missing.pem"))


def test_wrong_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator, cert_material: tuple[Path, str, str]
) -> None:
    # The confidential emulator app has no certificate registered.
    cfg = emulator.tap_config(client_certificate_path=str(cert_material[0]))
    cfg.pop("client_secret")
    with pytest.raises(AuthError) as info:
        TokenProvider.from_config(cfg).token()
    assert info.value.aadsts == 700027
    assert "client_certificate_path" in str(info.value)


# ------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("overrides", "drop", "fragment"),
    [
        ({"tenant_id": ""}, (), "tenant_id is required"),
        ({"tenant_id": "organizations"}, (), "cannot use"),
        ({}, ("client_secret",), "No credential is set"),
        ({"environment_url": ""}, (), "environment_url is required"),
        ({"client_id": " "}, (), "client_id is required"),
        ({"authority_host": None, "environment_url": "https://127.0.0.1:1"}, (), "authority_host"),
        ({"client_certificate_thumbprint": "ab" * 20}, (), "without client_certificate_path"),
        ({"environment_url": "http://contoso.crm.dynamics.com"}, (), "use an https:// URL"),
        ({"client_secret": 12345}, (), "must be text"),
    ],
)
def test_config_errors(
    emulator: Emulator, overrides: dict[str, Any], drop: tuple[str, ...], fragment: str
) -> None:
    cfg = emulator.tap_config(**overrides)
    for name in drop:
        cfg.pop(name)
    with pytest.raises(ConfigError) as info:
        TokenProvider.from_config(cfg)
    assert fragment in str(info.value)
    assert emulator.client_secret not in str(info.value)


def test_secret_and_certificate_together(
    emulator: Emulator, cert_material: tuple[Path, str, str]
) -> None:
    cfg = emulator.tap_config(client_certificate_path=str(cert_material[0]))
    with pytest.raises(ConfigError, match="Both client_secret and client_certificate_path"):
        TokenProvider.from_config(cfg)


def test_public_cloud_defaults_without_network() -> None:
    p = TokenProvider.from_config(
        {
            "environment_url": "https://contoso.crm4.dynamics.com/api/data/v9.2/",
            "client_id": "11111111-2222-4333-8444-555555555555",
            "refresh_token": "rt-value-not-used",
        }
    )
    assert p.flow == FLOW_REFRESH_TOKEN
    assert p.authority == "https://login.microsoftonline.com/organizations"
    assert p.scopes == ["https://contoso.crm4.dynamics.com/user_impersonation"]
    assert "rt-value-not-used" not in repr(p)
    gov = TokenProvider.from_config(
        {
            "environment_url": "https://contoso.crm.microsoftdynamics.us",
            "client_id": "11111111-2222-4333-8444-555555555555",
            "client_secret": "s3cret-value",
            "tenant_id": "contoso.onmicrosoft.us",
        }
    )
    assert gov.authority == "https://login.microsoftonline.us/contoso.onmicrosoft.us"
    assert gov.scopes == ["https://contoso.crm.microsoftdynamics.us/.default"]
    assert "s3cret-value" not in repr(gov)


# ------------------------------------------------------------------------------ delegated


def test_delegated_flow_rotates_the_refresh_token(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    rt0 = first_refresh_token(emu)
    p = delegated(emu, rt0)
    assert p.flow == FLOW_REFRESH_TOKEN
    assert p.credential_kind == "none"
    token = p.token()
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None
    assert info.user_object_id is not None
    assert info.scopes == ("user_impersonation",)
    assert who_am_i(emu, token).status_code == 200
    assert p.token() == token
    assert emu.identity.issued[GRANT_REFRESH_TOKEN] == 1
    # The original refresh token was rotated away.
    assert redeem_refresh_token(emu, rt0)["error_codes"] == [70000]
    # After a 401 the provider refreshes with the rotated token (via msal's cache).
    emu.expire_access_tokens()
    new = p.token(force_refresh=True)
    assert new != token
    assert emu.identity.validate_access_token(new) is not None
    again = p.token(force_refresh=True)
    assert emu.identity.validate_access_token(again) is not None
    assert emu.identity.issued[GRANT_REFRESH_TOKEN] == 3


def test_confidential_delegated_flow(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    rt0 = first_refresh_token(emu, emu.client_id, emu.client_secret)
    p = provider(emu, refresh_token=rt0)
    assert p.credential_kind == "client_secret"
    assert p.scopes == [f"{emu.url}/user_impersonation"]
    token = p.token()
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None and info.user_object_id is not None
    assert p.token(force_refresh=True) != token


def test_stale_refresh_token_without_cache(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    rt0 = first_refresh_token(emu)
    delegated(emu, rt0).token()
    with pytest.raises(AuthError) as info:
        delegated(emu, rt0).token()
    text = str(info.value)
    assert info.value.aadsts == 70000
    assert "Sign in again" in text and "refresh_token" in text
    assert rt0 not in text


def test_revoked_refresh_token(monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    rt0 = first_refresh_token(emu)
    p = delegated(emu, rt0)
    p.token()
    emu.revoke_all_tokens()
    with pytest.raises(AuthError) as info:
        p.token(force_refresh=True)
    assert info.value.aadsts == 50173
    assert "revoked" in str(info.value)
    assert rt0 not in str(info.value)


def test_cache_keeps_the_rotated_refresh_token_between_runs(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    path = tmp_path / "state" / "msal-cache.json"
    rt0 = first_refresh_token(emu)

    first_run = delegated(emu, rt0, token_cache_path=str(path))
    assert first_run.token()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.with_name("msal-cache.json.lock").exists()
    rotated = cached_refresh_tokens(path)
    assert rotated and rt0 not in rotated
    assert redeem_refresh_token(emu, rt0)["error_codes"] == [70000]

    # A new run, configured with the original (now stale) refresh token, still works.
    second_run = delegated(emu, rt0, token_cache_path=str(path))
    token = second_run.token(force_refresh=True)  # force: go past the cached access token
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None and info.user_object_id is not None
    assert cached_refresh_tokens(path) != rotated  # rotated again, and saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    third_run = delegated(emu, rt0, token_cache_path=str(path))
    assert emu.identity.validate_access_token(third_run.token()) is not None


def test_concurrent_runs_share_the_newest_refresh_token(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    path = tmp_path / "cache.json"
    rt0 = first_refresh_token(emu)
    a = delegated(emu, rt0, token_cache_path=str(path))
    a.token()
    b = delegated(emu, rt0, token_cache_path=str(path))  # loads A's rotated token
    for _ in range(3):  # each refresh rotates; the other run must pick the new one up
        assert emu.identity.validate_access_token(a.token(force_refresh=True)) is not None
        assert emu.identity.validate_access_token(b.token(force_refresh=True)) is not None


def test_cache_file_permissions_are_tightened(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    path = tmp_path / "cache.json"
    path.write_text("{}")
    path.chmod(0o644)
    provider(emu, token_cache_path=str(path)).token()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_corrupt_cache_file_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
    fresh_emulator: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    path = tmp_path / "cache.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with caplog.at_level(logging.WARNING, logger="dynamics_api.auth"):
        token = provider(emu, token_cache_path=str(path)).token()
    assert "not valid JSON" in caplog.text
    assert token
    assert json.loads(path.read_text())["AccessToken"]


# ------------------------------------------------------------------------------ secrets in logs


def test_no_secret_or_token_in_logs(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_emulator: Emulator,
    cert_emulator: Emulator,
    cert_material: tuple[Path, str, str],
    tmp_path: Path,
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="msal")
    shown: list[str] = []
    must_not_show: list[str] = [emu.client_secret]

    # Client credentials, a forced refresh, a wrong secret.
    p = provider(emu)
    must_not_show += [p.token(), p.token(force_refresh=True)]
    shown.append(repr(p))
    wrong = "Wr0ng~" + secrets.token_urlsafe(24)
    must_not_show.append(wrong)
    with pytest.raises(AuthError) as info:
        provider(emu, client_secret=wrong).token()
    shown.append(str(info.value))

    # Delegated with rotation and a cache file, then a stale refresh token.
    rt0 = first_refresh_token(emu)
    must_not_show.append(rt0)
    path = tmp_path / "cache.json"
    d = delegated(emu, rt0, token_cache_path=str(path))
    must_not_show += [d.token(), d.token(force_refresh=True)]
    must_not_show += cached_refresh_tokens(path)
    shown.append(repr(d))
    with pytest.raises(AuthError) as info:
        delegated(emu, rt0).token()
    shown.append(str(info.value))

    # Certificate credential (msal logs the signed client assertion unless redacted).
    trust(monkeypatch, cert_emulator)
    cfg = cert_emulator.tap_config(
        client_id=CERT_CLIENT_ID, client_certificate_path=str(cert_material[0])
    )
    cfg.pop("client_secret")
    c = TokenProvider.from_config(cfg)
    must_not_show.append(c.token())
    shown.append(repr(c))
    key_pem = cert_material[0].read_text().split("-----BEGIN CERTIFICATE-----")[0].strip()

    records = [r.getMessage() for r in caplog.records]
    assert any(r.name.startswith("msal") for r in caplog.records)  # msal did log at DEBUG
    assert any(r.name.startswith("dynamics_api.auth.") for r in caplog.records)
    everything = "\n".join([caplog.text, *records, *shown])
    for secret in must_not_show:
        assert secret and secret not in everything
    assert "PRIVATE KEY" not in everything and key_pem not in everything
    # No JWT at all (access and id tokens, client assertions); client_info is not one.
    assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", everything)


def test_msal_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="msal")
    event = {
        "data": {"client_assertion": "hdr.claims.signature", "code": "1.Acode-value"},
        "response": {"note": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"},
    }
    logging.getLogger("msal.token_cache").debug("event=%s", json.dumps(event))
    assert "event=" in caplog.text
    for value in ("hdr.claims.signature", "1.Acode-value", "eyJhbGciOiJSUzI1NiJ9"):
        assert value not in caplog.text


def test_delegated_flow_with_organizations_authority(
    monkeypatch: pytest.MonkeyPatch, fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    trust(monkeypatch, emu)
    assert emu.identity is not None
    rt0 = first_refresh_token(emu)
    path = tmp_path / "cache.json"
    p = delegated(emu, rt0, tenant_id="", token_cache_path=str(path))
    assert p.authority == f"{emu.url}/organizations"
    assert emu.identity.validate_access_token(p.token(), resource=emu.url) is not None
    nxt = delegated(emu, rt0, tenant_id="", token_cache_path=str(path))
    assert emu.identity.validate_access_token(nxt.token(force_refresh=True)) is not None


def test_instance_discovery_is_only_switched_off_for_custom_hosts(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator
) -> None:
    seen: list[dict[str, Any]] = []

    class FakeApp:
        def __init__(self, client_id: str, **kwargs: Any) -> None:
            seen.append(kwargs)

    monkeypatch.setattr(msal, "PublicClientApplication", FakeApp)
    public = TokenProvider.from_config(
        {
            "environment_url": "https://contoso.crm.dynamics.cn",
            "client_id": "11111111-2222-4333-8444-555555555555",
            "refresh_token": "rt-value-not-used",
        }
    )
    public._get_app()
    delegated(emulator, "rt-value-not-used")._get_app()
    assert "instance_discovery" not in seen[0]  # msal's defaults for Microsoft's hosts
    assert seen[0]["authority"] == "https://login.chinacloudapi.cn/organizations"
    assert seen[1]["instance_discovery"] is False  # no call to login.microsoftonline.com
    assert all(isinstance(kw["http_client"], VerifiedSession) for kw in seen)
