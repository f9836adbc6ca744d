"""The emulator's managed identity endpoint and federated client assertions: direct ``handle()``
calls on a fake clock, then the real msal over HTTPS."""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal
import pytest
import requests

from dynamics_emulator.harness import EmulatorProcess
from dynamics_emulator.identity import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_MANAGED_IDENTITY,
    ClientApp,
    IdentityProvider,
    ManagedIdentity,
)
from dynamics_emulator.wire import Response
from tests.emulator._https_harness import Harness, serve_identity
from tests.emulator.test_identity import (
    BASE,
    RESOURCE,
    TENANT,
    FakeClock,
    assert_aad_error,
    body,
    claims,
    client_credentials,
)
from tests.oidc_issuer import AKS_SUBJECT, ExternalIssuer

FED_ID = "44444444-4444-4444-8444-444444444444"
ISSUER = ExternalIssuer("https://oidc.prod-aks.azure.com/tenant/cluster/")
OTHER_ISSUER = ExternalIssuer("https://token.actions.githubusercontent.com", key_number=1)
USER_MI = ManagedIdentity(
    client_id="55555555-5555-4555-8555-555555555555",
    object_id="66666666-6666-4666-8666-666666666666",
    resource_id="/subscriptions/s/resourceGroups/rg/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/etl",
)
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def federated_app(*credentials: Any) -> ClientApp:
    return ClientApp(FED_ID, federated_credentials=credentials or (ISSUER.credential(),))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def idp(clock: FakeClock) -> IdentityProvider:
    return IdentityProvider(
        BASE,
        tenant_id=TENANT,
        clients=[federated_app()],
        users=[],
        clock=clock,
        managed_identities=(USER_MI,),
    )


def exchange(idp: IdentityProvider, assertion: str, **overrides: str) -> Response:
    form = {
        "client_id": FED_ID,
        "client_secret": "<omit>",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }
    return client_credentials(idp, **{**form, **overrides})


# ------------------------------------------------------------------------------ federated


def test_a_federated_token_gets_an_app_token(idp: IdentityProvider, clock: FakeClock) -> None:
    resp = exchange(idp, ISSUER.token(now=clock.now))
    assert resp.status == 200, resp.body
    token = body(resp)["access_token"]
    c = claims(token)
    assert (c["appid"], c["appidacr"], c["idtyp"], c["aud"]) == (FED_ID, "2", "app", RESOURCE)
    assert idp.validate_access_token(token, resource=RESOURCE) is not None
    assert idp.issued_by_client[(FED_ID, GRANT_CLIENT_CREDENTIALS)] == 1


def test_an_audience_list_and_a_second_credential(clock: FakeClock) -> None:
    idp = IdentityProvider(
        BASE,
        tenant_id=TENANT,
        clients=[federated_app(ISSUER.credential(), OTHER_ISSUER.credential("repo:o/r:main"))],
        users=[],
        clock=clock,
    )
    for token in (
        ISSUER.token(now=clock.now, audience=["https://other", "api://AzureADTokenExchange"]),
        OTHER_ISSUER.token("repo:o/r:main", now=clock.now),
    ):
        assert exchange(idp, token).status == 200


def _forged(now: float) -> str:
    """Signed by another key under the published key's id."""
    forger = ExternalIssuer(ISSUER.url, key_number=2)
    forger.kid = ISSUER.kid
    return forger.token(now=now)


@pytest.mark.parametrize(
    ("make", "code", "said"),
    [
        pytest.param(
            lambda now: OTHER_ISSUER.token(now=now),
            700211,
            f"presented assertion issuer '{OTHER_ISSUER.url}'",
            id="unknown-issuer",
        ),
        pytest.param(
            lambda now: ExternalIssuer(ISSUER.url, key_number=1).token(now=now),
            7000272,
            "The certificate with identifier key-1 used to sign the federated credential",
            id="unpublished-key",
        ),
        pytest.param(_forged, 700027, "failed signature validation", id="bad-signature"),
        pytest.param(
            lambda now: ISSUER.token("system:serviceaccount:etl:other", now=now),
            700213,
            "presented assertion subject 'system:serviceaccount:etl:other'",
            id="other-subject",
        ),
        pytest.param(
            lambda now: ISSUER.token(AKS_SUBJECT.upper(), now=now),
            700213,
            "subject",
            id="subject-is-case-sensitive",
        ),
        pytest.param(
            lambda now: ISSUER.token(now=now, audience="api://other"),
            70021,
            f"Assertion Issuer: '{ISSUER.url}'. Assertion Subject: '{AKS_SUBJECT}'. "
            "Assertion Audience: 'api://other'.",
            id="other-audience",
        ),
        pytest.param(
            lambda now: ISSUER.token(now=now - 3600 - 301),
            700024,
            "not within its valid time range",
            id="expired",
        ),
        pytest.param(
            lambda now: ISSUER.token(now=now + 301),
            700024,
            "not within its valid time range",
            id="not-yet-valid",
        ),
        pytest.param(lambda now: "not.a.jwt", 50027, "invalid or malformed", id="garbage"),
        pytest.param(
            lambda now: ISSUER.token(now=now, sub=None),
            50027,
            "invalid or malformed",
            id="no-subject",
        ),
    ],
)
def test_federated_refusals(
    idp: IdentityProvider, clock: FakeClock, make: Any, code: int, said: str
) -> None:
    data = assert_aad_error(exchange(idp, make(clock.now)), 401, "invalid_client", code)
    assert said in data["error_description"]
    assert idp.errors[code] == 1


def test_the_skew_is_allowed(idp: IdentityProvider, clock: FakeClock) -> None:
    assert exchange(idp, ISSUER.token(now=clock.now - 3600 - 299)).status == 200
    assert exchange(idp, ISSUER.token(now=clock.now + 299)).status == 200


def test_a_federated_assertion_needs_its_type(idp: IdentityProvider, clock: FakeClock) -> None:
    resp = exchange(idp, ISSUER.token(now=clock.now), client_assertion_type="<omit>")
    assert_aad_error(resp, 400, "invalid_request", 90014)


def test_an_app_with_only_federated_credentials_is_confidential(idp: IdentityProvider) -> None:
    assert not federated_app().is_public
    resp = client_credentials(idp, client_id=FED_ID, client_secret="<omit>")
    assert_aad_error(resp, 401, "invalid_client", 7000218)


def test_an_unusable_jwks_is_refused_at_registration(idp: IdentityProvider) -> None:
    bad = dataclasses.replace(ISSUER.credential(), jwks={"keys": []})
    with pytest.raises(ValueError, match="JWKS of the federated credential"):
        idp.register_client(federated_app(bad))


# ------------------------------------------------------------------------------ managed identity


def mi_get(
    idp: IdentityProvider, header: str | None = "<right>", method: str = "GET", **params: str
) -> Response:
    query = {"api-version": "2019-08-01", "resource": RESOURCE, **params}
    headers = {}
    if header is not None:
        headers["X-IDENTITY-HEADER"] = (
            idp.managed_identity_header if header == "<right>" else header
        )
    resp = idp.handle(
        method,
        "/msi/token",
        {k: [v] for k, v in query.items() if v != "<omit>"},
        {},
        headers,
    )
    assert resp is not None
    return resp


def test_the_system_assigned_identity(idp: IdentityProvider, clock: FakeClock) -> None:
    resp = mi_get(idp)
    assert resp.status == 200, resp.body
    data = body(resp)
    system = idp.system_assigned_identity
    assert data["client_id"] == system.client_id
    assert data["resource"] == RESOURCE and data["token_type"] == "Bearer"
    assert data["expires_on"] == str(int(clock.now) + idp.access_token_lifetime)
    c = claims(data["access_token"])
    assert (c["appid"], c["oid"], c["idtyp"], c["aud"]) == (
        system.client_id,
        system.object_id,
        "app",
        RESOURCE,
    )
    info = idp.validate_access_token(data["access_token"], resource=RESOURCE)
    assert info is not None and info.client_id == system.client_id
    assert info.user_object_id is None
    assert idp.issued[GRANT_MANAGED_IDENTITY] == 1
    assert idp.managed_identity_environ() == {
        "IDENTITY_ENDPOINT": f"{BASE}/msi/token",
        "IDENTITY_HEADER": idp.managed_identity_header,
    }


@pytest.mark.parametrize(
    "selector",
    [
        {"client_id": USER_MI.client_id},
        {"client_id": USER_MI.client_id.upper()},
        {"object_id": USER_MI.object_id},
        {"mi_res_id": str(USER_MI.resource_id)},
    ],
    ids=["client_id", "client_id-upper-case", "object_id", "mi_res_id"],
)
def test_a_user_assigned_identity(idp: IdentityProvider, selector: dict[str, str]) -> None:
    resp = mi_get(idp, **selector)
    assert resp.status == 200, resp.body
    assert body(resp)["client_id"] == USER_MI.client_id
    assert claims(body(resp)["access_token"])["oid"] == USER_MI.object_id


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        pytest.param(
            {"client_id": "77777777-7777-4777-8777-777777777777"},
            400,
            "Unable to load the proper Managed Identity.",
            id="unknown-user-assigned",
        ),
        pytest.param({"header": None}, 401, "X-IDENTITY-HEADER", id="no-header"),
        pytest.param({"header": "guess"}, 401, "X-IDENTITY-HEADER", id="wrong-header"),
        pytest.param({"resource": "<omit>"}, 400, "resource", id="no-resource"),
        pytest.param({"api-version": "2017-09-01"}, 400, "2019-08-01", id="old-api-version"),
        pytest.param(
            {"client_id": USER_MI.client_id, "object_id": USER_MI.object_id},
            400,
            "Only one of",
            id="two-selectors",
        ),
    ],
)
def test_managed_identity_refusals(
    idp: IdentityProvider, kwargs: dict[str, Any], status: int, message: str
) -> None:
    resp = mi_get(idp, **kwargs)
    data = body(resp)
    assert resp.status == status
    assert set(data) == {"statusCode", "message", "correlationId"}
    assert data["statusCode"] == status and message in data["message"]
    assert resp.header("Content-Type") == "application/json; charset=utf-8"
    assert idp.managed_identity_header not in resp.body.decode()


def test_managed_identity_only_answers_get(idp: IdentityProvider) -> None:
    assert mi_get(idp, method="POST").status == 405


# ------------------------------------------------------------------------------ the real msal


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    def make(base_url: str) -> IdentityProvider:
        return IdentityProvider(
            base_url,
            tenant_id=TENANT,
            clients=[federated_app()],
            users=[],
            managed_identities=(USER_MI,),
        )

    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's ``verify``, so they
    # must be unset for the harness's CA to apply.
    with (
        pytest.MonkeyPatch.context() as mp,
        serve_identity(make, tmp_path_factory.mktemp("identity")) as h,
    ):
        mp.delenv("REQUESTS_CA_BUNDLE", raising=False)
        mp.delenv("CURL_CA_BUNDLE", raising=False)
        yield h


def verified(h: Harness) -> requests.Session:
    session = requests.Session()
    session.verify = h.ca_path
    return session


@pytest.mark.parametrize("user_assigned", [False, True], ids=["system", "user"])
def test_msal_managed_identity_client(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, user_assigned: bool
) -> None:
    for name, value in harness.provider.managed_identity_environ().items():
        monkeypatch.setenv(name, value)
    identity: Any = (
        msal.UserAssignedManagedIdentity(client_id=USER_MI.client_id)
        if user_assigned
        else msal.SystemAssignedManagedIdentity()
    )
    with verified(harness) as session:
        client = msal.ManagedIdentityClient(identity, http_client=session)
        result = client.acquire_token_for_client(resource=RESOURCE)
        assert "access_token" in result, result
        assert 3000 < result["expires_in"] <= 3599
        info = harness.provider.validate_access_token(result["access_token"], resource=RESOURCE)
        expected = USER_MI if user_assigned else harness.provider.system_assigned_identity
        assert info is not None and info.client_id == expected.client_id
        again = client.acquire_token_for_client(resource=RESOURCE)
        assert again["token_source"] == "cache"


def test_msal_managed_identity_client_unknown_identity(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in harness.provider.managed_identity_environ().items():
        monkeypatch.setenv(name, value)
    with verified(harness) as session:
        client = msal.ManagedIdentityClient(
            msal.UserAssignedManagedIdentity(client_id="77777777-7777-4777-8777-777777777777"),
            http_client=session,
        )
        result = client.acquire_token_for_client(resource=RESOURCE)
    assert "access_token" not in result
    assert result["error_description"] == "400, Unable to load the proper Managed Identity."


def test_msal_confidential_client_with_a_federated_assertion(harness: Harness) -> None:
    sent: list[str] = []

    def assertion() -> str:
        token = ISSUER.token()
        sent.append(token)
        return token

    app = msal.ConfidentialClientApplication(
        FED_ID,
        client_credential={"client_assertion": assertion},
        authority=f"{harness.base_url}/{TENANT}",
        instance_discovery=False,
        http_client=verified(harness),
    )
    result = app.acquire_token_for_client(scopes=[f"{RESOURCE}/.default"])
    assert "access_token" in result, result
    assert len(sent) == 1
    app.remove_tokens_for_client()
    assert "access_token" in app.acquire_token_for_client(scopes=[f"{RESOURCE}/.default"])
    assert len(sent) == 2  # msal asked for a new assertion for the new request


def test_the_command_hands_over_the_managed_identity_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmulatorProcess(tmp_path) as emu:
        header_file = tmp_path / "identity_header"
        assert stat.S_IMODE(header_file.stat().st_mode) == 0o600
        endpoint = emu.info["identity_endpoint"]
        assert f"IDENTITY_ENDPOINT={endpoint}" in "\n".join(emu.banner)
        header = header_file.read_text()
        assert header not in "\n".join(emu.banner)
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", header)
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with requests.Session() as session:
            session.verify = emu.connection.ca_bundle
            client = msal.ManagedIdentityClient(
                msal.SystemAssignedManagedIdentity(), http_client=session
            )
            result = client.acquire_token_for_client(resource=emu.connection.environment_url)
            assert "access_token" in result, result
            me = session.get(
                f"{emu.connection.environment_url}/api/data/v9.2/WhoAmI",
                headers={"Authorization": f"Bearer {result['access_token']}"},
                timeout=30,
            )
            assert me.status_code == 200
