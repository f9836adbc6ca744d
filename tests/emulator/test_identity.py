"""Tests for the Entra ID emulation: direct ``handle()`` calls, then the real msal over HTTPS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msal
import orjson
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from dynamics_emulator.identity import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH_TOKEN,
    ClientApp,
    IdentityProvider,
    User,
)
from dynamics_emulator.wire import Response
from tests.emulator._https_harness import Harness, serve_identity

TENANT = "5f2c3b7e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
BASE = "https://login.emulator.test"
RESOURCE = "https://org.crm.dynamics.com"
USER_SCOPE = f"{RESOURCE}/user_impersonation"
CONF_ID = "11111111-1111-4111-8111-111111111111"
PUBLIC_ID = "22222222-2222-4222-8222-222222222222"
CERT_ID = "33333333-3333-4333-8333-333333333333"
SECRET = "conf-secret-value~1"
CALLBACK = "https://app.example/callback"
ALICE = User("aaaaaaaa-0000-4000-8000-000000000001", "alice@contoso.test", "Alice Example")
BOB = User("bbbbbbbb-0000-4000-8000-000000000002", "bob@contoso.test", "Bob Example")
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def cert_material() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulator-client")])
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
    return key, cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def make_clients(cert_pem: str, public_redirect: str = "http://localhost") -> list[ClientApp]:
    return [
        ClientApp(
            CONF_ID,
            SECRET,
            redirect_uris=(CALLBACK, "http://localhost"),
            display_name="Confidential",
            app_roles=("Dataverse.ReadWrite",),
        ),
        ClientApp(PUBLIC_ID, None, redirect_uris=(public_redirect,), display_name="Public"),
        ClientApp(CERT_ID, None, certificates=(cert_pem,), display_name="Cert"),
    ]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(clock: FakeClock, cert_material: tuple[rsa.RSAPrivateKey, str]) -> IdentityProvider:
    return IdentityProvider(
        BASE,
        tenant_id=TENANT,
        clients=make_clients(cert_material[1]),
        users=[ALICE, BOB],
        tenant_domains=("contoso.test",),
        clock=clock,
    )


# ---------------------------------------------------------------------------- helpers


def post_form(
    idp: IdentityProvider,
    form: dict[str, str],
    path: str = TOKEN_PATH,
    headers: dict[str, str] | None = None,
) -> Response:
    resp = idp.handle("POST", path, {}, {k: [v] for k, v in form.items()}, headers or {})
    assert resp is not None
    return resp


def post(idp: IdentityProvider, path: str = TOKEN_PATH, /, **form: str) -> Response:
    return post_form(idp, form, path)


def body(resp: Response) -> dict[str, Any]:
    data = orjson.loads(resp.body)
    assert isinstance(data, dict)
    return data


def claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    data = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert isinstance(data, dict)
    return data


def assert_aad_error(resp: Response, status: int, error: str, code: int) -> dict[str, Any]:
    data = body(resp)
    assert resp.status == status, data
    assert data["error"] == error
    assert data["error_codes"] == [code]
    desc = data["error_description"]
    assert desc.startswith(f"AADSTS{code}: ")
    assert "\r\nTrace ID: " in desc
    assert f"\r\nCorrelation ID: {data['correlation_id']}" in desc
    assert f"\r\nTimestamp: {data['timestamp']}" in desc
    assert data["trace_id"] in desc
    assert data["error_uri"].endswith(f"error?code={code}")
    assert resp.header("Content-Type") == "application/json; charset=utf-8"
    return data


def client_credentials(idp: IdentityProvider, **overrides: str) -> Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": CONF_ID,
        "client_secret": SECRET,
        "scope": f"{RESOURCE}/.default",
    }
    form.update(overrides)
    return post(idp, **{k: v for k, v in form.items() if v != "<omit>"})


def pkce_pair(verifier: str = "v" * 43) -> tuple[str, str]:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def authorize(idp: IdentityProvider, tenant: str = TENANT, **params: str) -> Response:
    query = {
        "client_id": CONF_ID,
        "response_type": "code",
        "redirect_uri": CALLBACK,
        "scope": f"{USER_SCOPE} openid profile offline_access",
        "state": "st-1",
    }
    query.update(params)
    query = {k: v for k, v in query.items() if v != "<omit>"}
    resp = idp.handle(
        "GET", f"/{tenant}/oauth2/v2.0/authorize", {k: [v] for k, v in query.items()}, {}, {}
    )
    assert resp is not None
    return resp


def redirect_params(resp: Response) -> dict[str, str]:
    assert resp.status == 302
    location = resp.header("Location")
    assert location is not None
    return dict(parse_qsl(urlsplit(location).query))


def get_code(idp: IdentityProvider, **params: str) -> str:
    return redirect_params(authorize(idp, **params))["code"]


def redeem(idp: IdentityProvider, code: str, **overrides: str) -> Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": CONF_ID,
        "client_secret": SECRET,
        "code": code,
        "redirect_uri": CALLBACK,
        "scope": f"{USER_SCOPE} openid profile offline_access",
    }
    form.update(overrides)
    return post(idp, **{k: v for k, v in form.items() if v != "<omit>"})


def user_tokens(idp: IdentityProvider) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    code = get_code(idp, code_challenge=challenge, code_challenge_method="S256", nonce="n-1")
    resp = redeem(idp, code, code_verifier=verifier)
    assert resp.status == 200, resp.body
    return body(resp)


def refresh(idp: IdentityProvider, rt: str, **overrides: str) -> Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": CONF_ID,
        "client_secret": SECRET,
        "refresh_token": rt,
        "scope": f"{USER_SCOPE} openid profile offline_access",
    }
    form.update(overrides)
    return post(idp, **{k: v for k, v in form.items() if v != "<omit>"})


def assertion(
    key: rsa.RSAPrivateKey,
    cert_pem: str,
    *,
    alg: str = "RS256",
    aud: str = f"{BASE}/{TENANT}/oauth2/v2.0/token",
    iss: str = CERT_ID,
    exp_in: float = 600,
    now: float = 1_700_000_000.0,
) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header: dict[str, str] = {"alg": alg, "typ": "JWT"}
    if alg == "PS256":
        header["x5t#S256"] = b64(cert.fingerprint(hashes.SHA256()))
    else:
        header["x5t"] = b64(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is SHA-1
    payload = {"aud": aud, "iss": iss, "sub": iss, "exp": now + exp_in, "iat": now, "jti": "j1"}
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}".encode()
    pad: padding.AsymmetricPadding = (
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        if alg == "PS256"
        else padding.PKCS1v15()
    )
    return f"{signing_input.decode()}.{b64(key.sign(signing_input, pad, hashes.SHA256()))}"


# ---------------------------------------------------------------------------- discovery


def test_discovery_document_for_tenant_guid(idp: IdentityProvider) -> None:
    resp = idp.handle("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration", {}, {}, {})
    assert resp is not None
    assert resp.status == 200
    doc = body(resp)
    assert doc["issuer"] == f"{BASE}/{TENANT}/v2.0"
    assert doc["token_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/authorize"
    assert doc["device_authorization_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/devicecode"
    assert doc["jwks_uri"] == f"{BASE}/{TENANT}/discovery/v2.0/keys"
    assert "code" in doc["response_types_supported"]
    assert "form_post" in doc["response_modes_supported"]


def test_discovery_aliases(idp: IdentityProvider) -> None:
    for alias in ("organizations", "common"):
        resp = idp.handle("GET", f"/{alias}/v2.0/.well-known/openid-configuration", {}, {}, {})
        assert resp is not None
        assert resp.status == 200
        doc = body(resp)
        assert doc["token_endpoint"] == f"{BASE}/{alias}/oauth2/v2.0/token"
        assert doc["issuer"] == f"{BASE}/{{tenantid}}/v2.0"
    # A verified domain name resolves to the tenant GUID, as on the real service.
    resp = idp.handle("GET", "/contoso.test/v2.0/.well-known/openid-configuration", {}, {}, {})
    assert resp is not None
    assert body(resp)["token_endpoint"] == f"{BASE}/{TENANT}/oauth2/v2.0/token"


def test_discovery_unknown_tenant(idp: IdentityProvider) -> None:
    resp = idp.handle("GET", "/nope/v2.0/.well-known/openid-configuration", {}, {}, {})
    assert resp is not None
    data = assert_aad_error(resp, 400, "invalid_tenant", 90002)
    assert "Tenant 'nope' not found." in data["error_description"]


def test_jwks_verifies_issued_tokens(idp: IdentityProvider) -> None:
    token = body(client_credentials(idp))["access_token"]
    resp = idp.handle("GET", f"/{TENANT}/discovery/v2.0/keys", {}, {}, {})
    assert resp is not None
    assert resp.status == 200
    (jwk,) = body(resp)["keys"]

    def num(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    public = rsa.RSAPublicNumbers(num(jwk["e"]), num(jwk["n"])).public_key()
    head, payload, sig = token.split(".")
    header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    assert header["kid"] == jwk["kid"]
    assert header["alg"] == "RS256"
    public.verify(
        base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)),
        f"{head}.{payload}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def test_non_identity_paths_are_not_handled(idp: IdentityProvider) -> None:
    for path in ("/", "/api/data/v9.2/accounts", "/api/data/v9.2/$metadata", f"/{TENANT}/x"):
        assert idp.handle("GET", path, {}, {}, {}) is None


def test_base_url_with_path_prefix(cert_material: tuple[rsa.RSAPrivateKey, str]) -> None:
    idp = IdentityProvider(
        "https://host.test/login",
        tenant_id=TENANT,
        clients=make_clients(cert_material[1]),
        users=[ALICE],
    )
    assert idp.handle("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration", {}, {}, {}) is None
    resp = idp.handle("GET", f"/login/{TENANT}/v2.0/.well-known/openid-configuration", {}, {}, {})
    assert resp is not None
    assert body(resp)["token_endpoint"] == f"https://host.test/login/{TENANT}/oauth2/v2.0/token"


# ---------------------------------------------------------------------------- client credentials


def test_client_credentials_success(idp: IdentityProvider, clock: FakeClock) -> None:
    resp = client_credentials(idp)
    assert resp.status == 200
    assert resp.header("Cache-Control") == "no-store, no-cache"
    data = body(resp)
    assert data["token_type"] == "Bearer"
    assert data["expires_in"] == 3599
    assert data["ext_expires_in"] == 3599
    assert "refresh_token" not in data
    assert "id_token" not in data
    c = claims(data["access_token"])
    assert c["aud"] == RESOURCE
    assert c["appid"] == CONF_ID
    assert c["tid"] == TENANT
    assert c["idtyp"] == "app"
    assert c["roles"] == ["Dataverse.ReadWrite"]
    assert "scp" not in c
    assert c["exp"] == int(clock.now) + 3599
    info = idp.validate_access_token(data["access_token"], RESOURCE + "/")
    assert info is not None
    assert info.client_id == CONF_ID
    assert info.user_object_id is None
    assert info.scopes == ()
    assert info.roles == ("Dataverse.ReadWrite",)
    assert info.expires_at == clock.now + 3599
    assert idp.validate_access_token(data["access_token"]) is not None
    assert idp.validate_access_token(data["access_token"], "https://other.crm.dynamics.com") is None
    assert idp.validate_access_token("not-a-token") is None
    assert idp.issued[GRANT_CLIENT_CREDENTIALS] == 1
    assert idp.issued_by_client[(CONF_ID, GRANT_CLIENT_CREDENTIALS)] == 1


def test_client_credentials_double_slash_default_scope(idp: IdentityProvider) -> None:
    resp = client_credentials(idp, scope=f"{RESOURCE}//.default")
    assert resp.status == 200
    assert claims(body(resp)["access_token"])["aud"] == RESOURCE


def test_client_credentials_basic_auth(idp: IdentityProvider) -> None:
    basic = base64.b64encode(f"{CONF_ID}:{SECRET}".encode()).decode()
    resp = post_form(
        idp,
        {"grant_type": "client_credentials", "scope": f"{RESOURCE}/.default"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert resp.status == 200
    assert claims(body(resp)["access_token"])["appid"] == CONF_ID
    bad = base64.b64encode(f"{CONF_ID}:nope".encode()).decode()
    resp = post_form(
        idp,
        {"grant_type": "client_credentials", "scope": f"{RESOURCE}/.default"},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert_aad_error(resp, 401, "invalid_client", 7000215)


def test_unknown_client(idp: IdentityProvider) -> None:
    data = assert_aad_error(
        client_credentials(idp, client_id="99999999-9999-4999-8999-999999999999"),
        400,
        "unauthorized_client",
        700016,
    )
    assert "99999999-9999-4999-8999-999999999999" in data["error_description"]


def test_wrong_secret(idp: IdentityProvider) -> None:
    data = assert_aad_error(
        client_credentials(idp, client_secret="wrong"), 401, "invalid_client", 7000215
    )
    assert "wrong" not in data["error_description"]
    assert idp.errors[7000215] == 1
    assert idp.issued[GRANT_CLIENT_CREDENTIALS] == 0


def test_missing_secret(idp: IdentityProvider) -> None:
    assert_aad_error(
        client_credentials(idp, client_secret="<omit>"), 401, "invalid_client", 7000218
    )


def test_public_client_must_not_send_secret(idp: IdentityProvider) -> None:
    assert_aad_error(
        client_credentials(idp, client_id=PUBLIC_ID, client_secret="x"),
        401,
        "invalid_client",
        700025,
    )


def test_public_client_cannot_use_client_credentials(idp: IdentityProvider) -> None:
    assert_aad_error(
        client_credentials(idp, client_id=PUBLIC_ID, client_secret="<omit>"),
        401,
        "invalid_client",
        7000218,
    )


@pytest.mark.parametrize(
    ("scope", "error", "code"),
    [
        ("<omit>", "invalid_request", 900144),
        ("", "invalid_request", 900144),
        (f"{RESOURCE}/user_impersonation", "invalid_scope", 1002012),
        (f"{RESOURCE}/.default https://other.crm.dynamics.com/.default", "invalid_scope", 28000),
        ("https:///.default", "invalid_scope", 70011),
    ],
)
def test_client_credentials_scope_errors(
    idp: IdentityProvider, scope: str, error: str, code: int
) -> None:
    assert_aad_error(client_credentials(idp, scope=scope), 400, error, code)


def test_unsupported_and_missing_grant_type(idp: IdentityProvider) -> None:
    data = assert_aad_error(
        client_credentials(idp, grant_type="password"), 400, "unsupported_grant_type", 70003
    )
    assert "'password'" in data["error_description"]
    assert_aad_error(client_credentials(idp, grant_type="<omit>"), 400, "invalid_request", 900144)


def test_missing_client_id(idp: IdentityProvider) -> None:
    data = assert_aad_error(
        client_credentials(idp, client_id="<omit>"), 400, "invalid_request", 900144
    )
    assert "'client_id'" in data["error_description"]


def test_token_endpoint_requires_post(idp: IdentityProvider) -> None:
    resp = idp.handle("GET", TOKEN_PATH, {}, {}, {})
    assert resp is not None
    assert_aad_error(resp, 400, "invalid_request", 900561)


def test_token_endpoint_unknown_tenant(idp: IdentityProvider) -> None:
    resp = post(
        idp,
        "/someone-else.test/oauth2/v2.0/token",
        grant_type="client_credentials",
        client_id=CONF_ID,
        client_secret=SECRET,
        scope=f"{RESOURCE}/.default",
    )
    assert_aad_error(resp, 400, "invalid_request", 90002)


def test_token_endpoint_accepts_aliases(idp: IdentityProvider) -> None:
    for tenant in ("organizations", "common", "contoso.test", TENANT.upper()):
        resp = post(
            idp,
            f"/{tenant}/oauth2/v2.0/token",
            grant_type="client_credentials",
            client_id=CONF_ID,
            client_secret=SECRET,
            scope=f"{RESOURCE}/.default",
        )
        assert resp.status == 200, tenant


def test_correlation_id_is_echoed(idp: IdentityProvider) -> None:
    cid = "0f0e0d0c-0b0a-4909-8807-060504030201"
    resp = post_form(
        idp,
        {
            "grant_type": "client_credentials",
            "client_id": CONF_ID,
            "client_secret": "bad",
            "scope": f"{RESOURCE}/.default",
        },
        headers={"client-request-id": cid},
    )
    assert body(resp)["correlation_id"] == cid
    assert resp.header("client-request-id") == cid


def test_secrets_not_in_repr_or_logs(
    idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    assert SECRET not in repr(idp._clients[CONF_ID.lower()])
    with caplog.at_level(logging.DEBUG, logger="dynamics_emulator.identity"):
        token = body(client_credentials(idp))["access_token"]
        client_credentials(idp, client_secret="another-secret")
    assert caplog.records
    assert SECRET not in caplog.text
    assert "another-secret" not in caplog.text
    assert token not in caplog.text


# ---------------------------------------------------------------------------- client assertion


def test_client_assertion_rs256_and_ps256(
    idp: IdentityProvider, cert_material: tuple[rsa.RSAPrivateKey, str]
) -> None:
    key, pem = cert_material
    for alg in ("RS256", "PS256"):
        resp = client_credentials(
            idp,
            client_id=CERT_ID,
            client_secret="<omit>",
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=assertion(key, pem, alg=alg),
        )
        assert resp.status == 200, resp.body
        assert claims(body(resp)["access_token"])["appidacr"] == "2"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"aud": "https://elsewhere.test/token"}, 700023),
        ({"iss": CONF_ID}, 700021),
        ({"exp_in": -1000}, 700024),
        ({"wrong_key": True}, 700027),
        ({"garbage": True}, 50027),
    ],
)
def test_client_assertion_errors(
    idp: IdentityProvider,
    cert_material: tuple[rsa.RSAPrivateKey, str],
    kwargs: dict[str, Any],
    code: int,
) -> None:
    key, pem = cert_material
    if kwargs.pop("wrong_key", False):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    value = "a.b" if kwargs.pop("garbage", False) else assertion(key, pem, **kwargs)
    resp = client_credentials(
        idp,
        client_id=CERT_ID,
        client_secret="<omit>",
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=value,
    )
    assert_aad_error(resp, 401, "invalid_client", code)


def _b64json(value: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param(
            f"{_b64json({'alg': 'none', 'typ': 'JWT'})}.{_b64json({'iss': CERT_ID})}.",
            5002738,
            id="alg-none",
        ),
        pytest.param(
            f"{_b64json({'alg': 'HS256', 'typ': 'JWT'})}.{_b64json({'iss': CERT_ID})}.c2ln",
            5002738,
            id="alg-hs256",
        ),
        pytest.param(
            f"{_b64json({'alg': 'RS256'})}.{_b64json(['not', 'an', 'object'])}.c2ln",
            50027,
            id="claims-not-an-object",
        ),
        pytest.param(
            f"{_b64json({'alg': 'RS256', 'x5t': 'AAAA'})}.{_b64json({'iss': CERT_ID})}.c2ln",
            700027,
            id="unregistered-certificate",
        ),
    ],
)
def test_client_assertion_refused_before_its_signature(
    idp: IdentityProvider, value: str, code: int
) -> None:
    resp = client_credentials(
        idp,
        client_id=CERT_ID,
        client_secret="<omit>",
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=value,
    )
    assert_aad_error(resp, 401, "invalid_client", code)


# ---------------------------------------------------------------------------- authorization code


def test_authorization_code_with_pkce_s256(idp: IdentityProvider, clock: FakeClock) -> None:
    verifier, challenge = pkce_pair()
    resp = authorize(idp, code_challenge=challenge, code_challenge_method="S256", nonce="n-1")
    params = redirect_params(resp)
    assert (resp.header("Location") or "").startswith(CALLBACK + "?")
    assert params["state"] == "st-1"
    assert "session_state" in params
    tok = redeem(idp, params["code"], code_verifier=verifier)
    assert tok.status == 200, tok.body
    data = body(tok)
    assert data["token_type"] == "Bearer"
    assert data["scope"] == USER_SCOPE
    assert data["expires_in"] == 3599
    assert data["ext_expires_in"] == 3599
    assert data["refresh_token"]
    client_info = orjson.loads(base64.urlsafe_b64decode(data["client_info"] + "=="))
    assert client_info == {"uid": ALICE.object_id, "utid": TENANT}
    idt = claims(data["id_token"])
    assert idt["iss"] == f"{BASE}/{TENANT}/v2.0"
    assert idt["aud"] == CONF_ID
    assert idt["nonce"] == "n-1"
    assert idt["tid"] == TENANT
    assert idt["oid"] == ALICE.object_id
    assert idt["preferred_username"] == ALICE.upn
    assert idt["name"] == ALICE.name
    assert idt["sub"]
    assert idt["iat"] == idt["nbf"] == int(clock.now)
    assert idt["exp"] > idt["iat"]
    at = claims(data["access_token"])
    assert at["aud"] == RESOURCE
    assert at["scp"] == "user_impersonation"
    assert at["oid"] == ALICE.object_id
    assert at["appid"] == CONF_ID
    info = idp.validate_access_token(data["access_token"], RESOURCE)
    assert info is not None
    assert info.user_object_id == ALICE.object_id
    assert info.upn == ALICE.upn
    assert info.scopes == ("user_impersonation",)
    assert idp.issued[GRANT_AUTHORIZATION_CODE] == 1


def test_authorization_code_pkce_plain(idp: IdentityProvider) -> None:
    code = get_code(idp, code_challenge="plain-verifier-" + "x" * 30)
    assert redeem(idp, code, code_verifier="plain-verifier-" + "x" * 30).status == 200


def test_pkce_mismatch_and_missing_verifier(idp: IdentityProvider) -> None:
    _, challenge = pkce_pair()
    code = get_code(idp, code_challenge=challenge, code_challenge_method="S256")
    assert_aad_error(redeem(idp, code, code_verifier="w" * 43), 400, "invalid_grant", 501481)
    assert_aad_error(redeem(idp, code), 400, "invalid_grant", 501481)


def test_code_reuse_expiry_and_unknown(idp: IdentityProvider, clock: FakeClock) -> None:
    code = get_code(idp)
    assert redeem(idp, code).status == 200
    assert_aad_error(redeem(idp, code), 400, "invalid_grant", 54005)
    code = get_code(idp)
    clock.advance(601)
    assert_aad_error(redeem(idp, code), 400, "invalid_grant", 70008)
    assert_aad_error(redeem(idp, "1.Abogus"), 400, "invalid_grant", 70000)
    assert_aad_error(redeem(idp, code="<omit>"), 400, "invalid_request", 900144)


def test_code_for_another_client(idp: IdentityProvider) -> None:
    code = get_code(idp, client_id=PUBLIC_ID, redirect_uri="http://localhost")
    assert_aad_error(redeem(idp, code), 400, "invalid_grant", 70000)


def test_code_redemption_redirect_uri_checks(idp: IdentityProvider) -> None:
    code = get_code(idp)
    assert_aad_error(
        redeem(idp, code, redirect_uri="https://evil.example/cb"), 400, "invalid_client", 50011
    )
    assert_aad_error(
        redeem(idp, code, redirect_uri="http://localhost"), 400, "invalid_grant", 500112
    )
    assert_aad_error(redeem(idp, code, redirect_uri="<omit>"), 400, "invalid_request", 900144)
    assert redeem(idp, code).status == 200


def test_confidential_client_needs_secret_to_redeem(idp: IdentityProvider) -> None:
    code = get_code(idp)
    assert_aad_error(redeem(idp, code, client_secret="<omit>"), 401, "invalid_client", 7000218)
    assert_aad_error(redeem(idp, code, client_secret="nope"), 401, "invalid_client", 7000215)


def test_public_client_redeems_without_secret(idp: IdentityProvider) -> None:
    verifier, challenge = pkce_pair()
    # Loopback redirect URIs match whatever the port, as for native apps on Entra.
    code = get_code(
        idp,
        client_id=PUBLIC_ID,
        redirect_uri="http://localhost:53123",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    resp = redeem(
        idp,
        code,
        client_id=PUBLIC_ID,
        client_secret="<omit>",
        redirect_uri="http://localhost:53123",
        code_verifier=verifier,
    )
    assert resp.status == 200, resp.body
    assert claims(body(resp)["access_token"])["appidacr"] == "0"


def test_no_offline_access_no_refresh_token_no_openid_no_id_token(idp: IdentityProvider) -> None:
    code = get_code(idp, scope=USER_SCOPE)
    data = body(redeem(idp, code, scope=USER_SCOPE))
    assert "refresh_token" not in data
    assert "id_token" not in data
    assert data["access_token"]
    assert data["client_info"]


def test_default_scope_for_user_flow_and_oidc_only(idp: IdentityProvider) -> None:
    code = get_code(idp, scope=f"{RESOURCE}/.default openid offline_access")
    data = body(redeem(idp, code, scope=f"{RESOURCE}/.default openid offline_access"))
    assert data["scope"] == USER_SCOPE
    code = get_code(idp, scope="openid profile")
    data = body(redeem(idp, code, scope="openid profile"))
    assert claims(data["access_token"])["aud"] == "https://graph.microsoft.com"


def test_login_hint_selects_user(idp: IdentityProvider) -> None:
    code = get_code(idp, login_hint="BOB@contoso.test")
    data = body(redeem(idp, code))
    assert claims(data["id_token"])["preferred_username"] == BOB.upn
    params = redirect_params(authorize(idp, login_hint="mallory@contoso.test"))
    assert params["error"] == "invalid_request"
    assert params["error_description"].startswith("AADSTS50034: ")
    assert params["state"] == "st-1"


def test_authorize_errors_redirect_when_redirect_uri_valid(idp: IdentityProvider) -> None:
    params = redirect_params(authorize(idp, response_type="token"))
    assert params["error"] == "unsupported_response_type"
    assert params["state"] == "st-1"
    params = redirect_params(authorize(idp, scope="<omit>"))
    assert params["error"] == "invalid_request"
    assert params["error_description"].startswith("AADSTS900144: ")
    params = redirect_params(authorize(idp, scope=f"{RESOURCE}/a https://b.test/c"))
    assert params["error"] == "invalid_scope"
    params = redirect_params(authorize(idp, code_challenge="c", code_challenge_method="S512"))
    assert params["error"] == "invalid_request"


def test_authorize_error_pages(idp: IdentityProvider) -> None:
    resp = authorize(idp, redirect_uri="https://evil.example/cb")
    assert resp.status == 400
    assert resp.header("Location") is None
    assert b"AADSTS50011" in resp.body
    resp = authorize(idp, client_id="nobody")
    assert resp.status == 400
    assert b"AADSTS700016" in resp.body
    resp = authorize(idp, client_id="<omit>")
    assert resp.status == 400
    assert b"AADSTS900144" in resp.body
    resp = authorize(idp, tenant="nope")
    assert resp.status == 400
    assert b"AADSTS90002" in resp.body


def test_authorize_default_redirect_uri(idp: IdentityProvider) -> None:
    resp = authorize(idp, redirect_uri="<omit>")
    assert (resp.header("Location") or "").startswith(CALLBACK + "?")
    code = redirect_params(resp)["code"]
    assert redeem(idp, code, redirect_uri="<omit>").status == 200


def test_authorize_response_modes(idp: IdentityProvider) -> None:
    resp = authorize(idp, response_mode="fragment")
    location = resp.header("Location") or ""
    assert location.startswith(CALLBACK + "#code=")
    resp = authorize(idp, response_mode="form_post")
    assert resp.status == 200
    assert resp.header("Content-Type") == "text/html; charset=utf-8"
    page = resp.body.decode()
    assert f'action="{CALLBACK}"' in page
    assert 'name="code"' in page
    assert 'name="state" value="st-1"' in page
    assert "submit()" in page


# ---------------------------------------------------------------------------- refresh tokens


def test_refresh_token_rotation(idp: IdentityProvider) -> None:
    first = user_tokens(idp)
    resp = refresh(idp, first["refresh_token"])
    assert resp.status == 200, resp.body
    second = body(resp)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert "id_token" in second
    assert "nonce" not in claims(second["id_token"])
    assert idp.validate_access_token(second["access_token"], RESOURCE) is not None
    # Strict rotation: the presented refresh token is dead after one use.
    assert_aad_error(refresh(idp, first["refresh_token"]), 400, "invalid_grant", 70000)
    third = body(refresh(idp, second["refresh_token"]))
    assert third["refresh_token"] not in (first["refresh_token"], second["refresh_token"])
    assert idp.issued[GRANT_REFRESH_TOKEN] == 2


def test_refresh_token_without_scope_uses_original_grant(idp: IdentityProvider) -> None:
    rt = user_tokens(idp)["refresh_token"]
    data = body(refresh(idp, rt, scope="<omit>"))
    assert data["scope"] == USER_SCOPE
    assert "refresh_token" in data


def test_refresh_token_for_other_resource(idp: IdentityProvider) -> None:
    rt = user_tokens(idp)["refresh_token"]
    data = body(refresh(idp, rt, scope="https://other.crm4.dynamics.com/user_impersonation"))
    assert claims(data["access_token"])["aud"] == "https://other.crm4.dynamics.com"


def test_refresh_token_errors(idp: IdentityProvider, clock: FakeClock) -> None:
    assert_aad_error(refresh(idp, "garbage"), 400, "invalid_grant", 70000)
    assert_aad_error(refresh(idp, "<omit>"), 400, "invalid_request", 900144)
    rt = user_tokens(idp)["refresh_token"]
    assert_aad_error(refresh(idp, rt, client_secret="x"), 401, "invalid_client", 7000215)
    assert_aad_error(
        refresh(idp, rt, client_id=PUBLIC_ID, client_secret="<omit>"), 400, "invalid_grant", 70000
    )
    clock.advance(86400)
    assert_aad_error(refresh(idp, rt), 400, "invalid_grant", 700082)


def test_refresh_window_slides_with_rotation(idp: IdentityProvider, clock: FakeClock) -> None:
    rt = user_tokens(idp)["refresh_token"]
    for _ in range(3):
        clock.advance(80000)
        resp = refresh(idp, rt)
        assert resp.status == 200
        rt = body(resp)["refresh_token"]


def test_revoke_all_tokens(idp: IdentityProvider) -> None:
    user = user_tokens(idp)
    app = body(client_credentials(idp))
    idp.revoke_all_tokens()
    assert idp.validate_access_token(user["access_token"]) is None
    assert idp.validate_access_token(app["access_token"]) is None
    data = assert_aad_error(refresh(idp, user["refresh_token"]), 400, "invalid_grant", 50173)
    assert "revoked" in data["error_description"]
    # New sign-ins work again afterwards.
    fresh = user_tokens(idp)
    assert idp.validate_access_token(fresh["access_token"]) is not None
    assert refresh(idp, fresh["refresh_token"]).status == 200


def test_expire_access_tokens_keeps_refresh_tokens(idp: IdentityProvider) -> None:
    user = user_tokens(idp)
    app = body(client_credentials(idp))
    idp.expire_access_tokens()
    assert idp.validate_access_token(user["access_token"]) is None
    assert idp.validate_access_token(app["access_token"]) is None
    new = body(refresh(idp, user["refresh_token"]))
    assert idp.validate_access_token(new["access_token"]) is not None
    assert idp.validate_access_token(body(client_credentials(idp))["access_token"]) is not None


def test_access_token_expires_with_clock(idp: IdentityProvider, clock: FakeClock) -> None:
    token = body(client_credentials(idp))["access_token"]
    clock.advance(3598)
    assert idp.validate_access_token(token) is not None
    clock.advance(1)
    assert idp.validate_access_token(token) is None


def test_custom_lifetimes(cert_material: tuple[rsa.RSAPrivateKey, str], clock: FakeClock) -> None:
    idp = IdentityProvider(
        BASE,
        tenant_id=TENANT,
        clients=make_clients(cert_material[1]),
        users=[ALICE],
        access_token_lifetime=60,
        refresh_token_lifetime=120,
        code_lifetime=5,
        clock=clock,
    )
    data = body(client_credentials(idp))
    assert data["expires_in"] == 60
    code = get_code(idp)
    clock.advance(5)
    assert_aad_error(redeem(idp, code), 400, "invalid_grant", 70008)
    rt = user_tokens(idp)["refresh_token"]
    clock.advance(120)
    assert_aad_error(refresh(idp, rt), 400, "invalid_grant", 700082)


# ---------------------------------------------------------------------------- device code


def start_device_flow(idp: IdentityProvider, client_id: str = PUBLIC_ID) -> dict[str, Any]:
    resp = post(
        idp,
        f"/{TENANT}/oauth2/v2.0/devicecode",
        client_id=client_id,
        scope=f"{USER_SCOPE} openid profile offline_access",
    )
    assert resp.status == 200, resp.body
    return body(resp)


def poll(idp: IdentityProvider, device_code: str, client_id: str = PUBLIC_ID) -> Response:
    return post(
        idp,
        grant_type="urn:ietf:params:oauth:grant-type:device_code",
        client_id=client_id,
        device_code=device_code,
    )


def test_device_code_flow(idp: IdentityProvider) -> None:
    flow = start_device_flow(idp)
    assert flow["verification_uri"] == f"{BASE}/devicelogin"
    assert flow["expires_in"] == 900
    assert flow["interval"] == 5
    assert flow["user_code"] in flow["message"]
    assert len(flow["user_code"]) == 9
    assert_aad_error(poll(idp, flow["device_code"]), 400, "authorization_pending", 70016)
    idp.approve_device_code(flow["user_code"].lower(), "bob@contoso.test")
    resp = poll(idp, flow["device_code"])
    assert resp.status == 200, resp.body
    data = body(resp)
    assert claims(data["id_token"])["preferred_username"] == BOB.upn
    assert data["refresh_token"]
    assert data["scope"] == USER_SCOPE
    assert idp.issued[GRANT_DEVICE_CODE] == 1
    assert_aad_error(poll(idp, flow["device_code"]), 400, "invalid_grant", 70000)


def test_device_code_errors(idp: IdentityProvider, clock: FakeClock) -> None:
    with pytest.raises(KeyError):
        idp.approve_device_code("NOSUCHCODE")
    flow = start_device_flow(idp)
    with pytest.raises(KeyError):
        idp.approve_device_code(flow["user_code"], "mallory@contoso.test")
    assert_aad_error(poll(idp, flow["device_code"], CONF_ID), 400, "invalid_grant", 70000)
    assert_aad_error(poll(idp, "bogus"), 400, "invalid_grant", 70000)
    clock.advance(900)
    assert_aad_error(poll(idp, flow["device_code"]), 400, "expired_token", 70020)
    resp = post(idp, f"/{TENANT}/oauth2/v2.0/devicecode", client_id="nobody", scope="openid")
    assert_aad_error(resp, 400, "unauthorized_client", 700016)
    resp = post(idp, f"/{TENANT}/oauth2/v2.0/devicecode", client_id=PUBLIC_ID)
    assert_aad_error(resp, 400, "invalid_request", 900144)


def test_devicelogin_page_approves(idp: IdentityProvider) -> None:
    flow = start_device_flow(idp)
    page = idp.handle("GET", "/devicelogin", {}, {}, {})
    assert page is not None
    assert page.status == 200
    assert b"user_code" in page.body
    bad = idp.handle("POST", "/devicelogin", {}, {"user_code": ["WRONG"]}, {})
    assert bad is not None
    assert bad.status == 400
    ok = idp.handle("POST", "/devicelogin", {}, {"user_code": [flow["user_code"]]}, {})
    assert ok is not None
    assert ok.status == 200
    data = body(poll(idp, flow["device_code"]))
    assert claims(data["id_token"])["preferred_username"] == ALICE.upn


# ---------------------------------------------------------------------------- concurrency


def test_concurrent_token_requests(idp: IdentityProvider) -> None:
    tokens: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(10):
            token = body(client_credentials(idp))["access_token"]
            with lock:
                tokens.append(token)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 80
    assert idp.issued[GRANT_CLIENT_CREDENTIALS] == 80
    assert all(idp.validate_access_token(t) is not None for t in tokens)


# ---------------------------------------------------------------------------- real msal over HTTPS


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, cert_material: tuple[rsa.RSAPrivateKey, str]
) -> Iterator[Harness]:
    def make(base_url: str) -> IdentityProvider:
        return IdentityProvider(
            base_url,
            tenant_id=TENANT,
            clients=make_clients(cert_material[1]),
            users=[ALICE, BOB],
            device_code_interval=1,
        )

    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's ``verify`` (the
    # attribute msal sets from ``verify=``), so they must be unset for ``verify=<ca>`` to apply.
    with (
        pytest.MonkeyPatch.context() as mp,
        serve_identity(make, tmp_path_factory.mktemp("identity")) as h,
    ):
        mp.delenv("REQUESTS_CA_BUNDLE", raising=False)
        mp.delenv("CURL_CA_BUNDLE", raising=False)
        yield h


def confidential(
    h: Harness, credential: Any = SECRET, client_id: str = CONF_ID, tenant: str = TENANT
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=f"{h.base_url}/{tenant}",
        instance_discovery=False,
        verify=h.ca_path,
    )


def public(h: Harness) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(
        PUBLIC_ID, authority=f"{h.base_url}/{TENANT}", instance_discovery=False, verify=h.ca_path
    )


class _HiddenInputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")


def follow_authorize(h: Harness, flow: dict[str, Any], redirect_uri: str) -> dict[str, str]:
    """Act as the browser: load the authorize URL and read what would be posted back."""
    resp = requests.get(flow["auth_uri"], allow_redirects=False, verify=h.ca_path, timeout=10)
    assert resp.status_code == 200, resp.text
    parser = _HiddenInputs()
    parser.feed(resp.text)
    assert parser.action == redirect_uri
    return parser.fields


def start_auth_code_flow(app: msal.ClientApplication, redirect_uri: str) -> dict[str, Any]:
    # form_post: msal warns about any other response_mode (RFC 9700 advice).
    return app.initiate_auth_code_flow(
        [USER_SCOPE], redirect_uri=redirect_uri, response_mode="form_post"
    )


def test_msal_client_credentials(harness: Harness) -> None:
    app = confidential(harness)
    before = harness.provider.issued[GRANT_CLIENT_CREDENTIALS]
    result = app.acquire_token_for_client(scopes=[f"{RESOURCE}/.default"])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    info = harness.provider.validate_access_token(result["access_token"], RESOURCE)
    assert info is not None
    assert info.client_id == CONF_ID
    assert info.user_object_id is None
    again = app.acquire_token_for_client(scopes=[f"{RESOURCE}/.default"])
    assert again["access_token"] == result["access_token"]  # served from msal's cache
    assert harness.provider.issued[GRANT_CLIENT_CREDENTIALS] == before + 1


def test_msal_wrong_secret(harness: Harness) -> None:
    result = confidential(harness, credential="wrong").acquire_token_for_client(
        scopes=[f"{RESOURCE}/.default"]
    )
    assert result["error"] == "invalid_client"
    assert "AADSTS7000215" in result["error_description"]
    assert result["error_codes"] == [7000215]


def test_msal_unknown_tenant_fails_discovery(harness: Harness) -> None:
    with pytest.raises(ValueError, match="tenant"):
        confidential(harness, tenant="unknown-tenant.test")


def test_msal_organizations_authority(harness: Harness) -> None:
    # (msal deprecates /organizations for client credentials, so use a user flow.)
    app = msal.PublicClientApplication(
        PUBLIC_ID,
        authority=f"{harness.base_url}/organizations",
        instance_discovery=False,
        verify=harness.ca_path,
    )
    flow = app.initiate_device_flow(scopes=[USER_SCOPE])
    assert flow["verification_uri"] == f"{harness.base_url}/devicelogin"
    harness.provider.approve_device_code(flow["user_code"], BOB.upn)
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    assert result["id_token_claims"]["tid"] == TENANT
    (account,) = app.get_accounts()
    assert account["home_account_id"] == f"{BOB.object_id}.{TENANT}"


def test_msal_certificate_credentials(
    harness: Harness, cert_material: tuple[rsa.RSAPrivateKey, str]
) -> None:
    key, pem = cert_material
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    sha1 = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA1()).hex()  # noqa: S303
    for credential in (
        {"private_key": key_pem, "public_certificate": pem},  # PS256 + x5t#S256
        {"private_key": key_pem, "thumbprint": sha1},  # RS256 + x5t
    ):
        result = confidential(harness, credential, CERT_ID).acquire_token_for_client(
            scopes=[f"{RESOURCE}/.default"]
        )
        assert "access_token" in result, result
        assert claims(result["access_token"])["appidacr"] == "2"


def test_msal_auth_code_flow_then_refresh(harness: Harness) -> None:
    idp = harness.provider
    app = confidential(harness)
    flow = start_auth_code_flow(app, CALLBACK)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(harness, flow, CALLBACK))
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == ALICE.upn
    (account,) = app.get_accounts()
    assert account["username"] == ALICE.upn
    assert account["home_account_id"] == f"{ALICE.object_id}.{TENANT}"
    rt = result["refresh_token"]

    refreshed = app.acquire_token_by_refresh_token(rt, scopes=[USER_SCOPE])
    assert "access_token" in refreshed, refreshed
    assert refreshed["refresh_token"] != rt
    assert idp.validate_access_token(refreshed["access_token"], RESOURCE) is not None
    again = app.acquire_token_by_refresh_token(rt, scopes=[USER_SCOPE])
    assert again["error"] == "invalid_grant"  # rotated away
    assert "AADSTS70000" in again["error_description"]


def test_msal_public_auth_code_flow_and_silent_refresh(harness: Harness) -> None:
    idp = harness.provider
    app = public(harness)
    redirect_uri = "http://localhost:50123"
    flow = start_auth_code_flow(app, redirect_uri)
    result = app.acquire_token_by_auth_code_flow(
        flow, follow_authorize(harness, flow, redirect_uri)
    )
    assert "access_token" in result, result
    first_rt = result["refresh_token"]
    (account,) = app.get_accounts()

    refreshes = idp.issued_by_client[(PUBLIC_ID, GRANT_REFRESH_TOKEN)]
    cached = app.acquire_token_silent([USER_SCOPE], account)
    assert cached is not None
    assert cached["access_token"] == result["access_token"]
    assert idp.issued_by_client[(PUBLIC_ID, GRANT_REFRESH_TOKEN)] == refreshes

    # The data API would now answer 401; a client then forces a refresh.
    idp.expire_access_tokens()
    assert idp.validate_access_token(result["access_token"]) is None
    new = app.acquire_token_silent([USER_SCOPE], account, force_refresh=True)
    assert new is not None
    assert "access_token" in new, new
    assert idp.validate_access_token(new["access_token"], RESOURCE) is not None
    # msal stored the rotated refresh token: a second forced refresh works too.
    newer = app.acquire_token_silent([USER_SCOPE], account, force_refresh=True)
    assert newer is not None
    assert "access_token" in newer, newer
    assert idp.issued_by_client[(PUBLIC_ID, GRANT_REFRESH_TOKEN)] == refreshes + 2
    # And the first refresh token is dead.
    direct = refresh(idp, first_rt, client_id=PUBLIC_ID, client_secret="<omit>")
    assert body(direct)["error_codes"] == [70000]


def test_msal_silent_refresh_of_short_lived_tokens(
    tmp_path: Path,
    cert_material: tuple[rsa.RSAPrivateKey, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    # Access tokens under 5 minutes look expired to msal, so acquire_token_silent refreshes.
    def make(base_url: str) -> IdentityProvider:
        return IdentityProvider(
            base_url,
            tenant_id=TENANT,
            clients=make_clients(cert_material[1]),
            users=[ALICE],
            access_token_lifetime=120,
        )

    with serve_identity(make, tmp_path) as h:
        app = public(h)
        redirect_uri = "http://localhost:50124"
        flow = start_auth_code_flow(app, redirect_uri)
        result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(h, flow, redirect_uri))
        assert "access_token" in result, result
        (account,) = app.get_accounts()
        tokens = {result["access_token"]}
        for _ in range(2):
            res = app.acquire_token_silent([USER_SCOPE], account)
            assert res is not None
            assert "access_token" in res, res
            tokens.add(res["access_token"])
        assert len(tokens) == 3
        assert h.provider.issued[GRANT_REFRESH_TOKEN] == 2


def test_msal_device_flow(harness: Harness) -> None:
    idp = harness.provider
    app = public(harness)
    flow = app.initiate_device_flow(scopes=[USER_SCOPE])
    assert "user_code" in flow, flow
    pending = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    assert pending["error"] == "authorization_pending"
    time.sleep(0.05)
    idp.approve_device_code(flow["user_code"])
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    assert idp.validate_access_token(result["access_token"], RESOURCE) is not None
    assert [a["username"] for a in app.get_accounts()] == [ALICE.upn]


def test_state_is_pruned(cert_material: tuple[rsa.RSAPrivateKey, str], clock: FakeClock) -> None:
    idp = IdentityProvider(
        BASE,
        tenant_id=TENANT,
        clients=make_clients(cert_material[1]),
        users=[ALICE],
        access_token_lifetime=10,
        clock=clock,
    )
    old = [body(client_credentials(idp))["access_token"] for _ in range(511)]
    clock.advance(11)
    new = body(client_credentials(idp))["access_token"]  # the 512th issuance prunes
    assert list(idp._access) == [new]
    assert idp.validate_access_token(old[0]) is None
    assert idp.validate_access_token(new) is not None
