"""Signing in without a secret, against the emulator over real HTTPS with the real msal: a managed
identity (msal's managed identity client, pointed at the emulator's App Service style endpoint by
``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``) and workload identity federation (a token file an
external issuer signed, sent as the client assertion). Through ``TokenProvider`` and through real
``tap-dynamics`` runs whose config holds no secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import pytest

from dynamics_api.auth import (
    FLOW_CLIENT_CREDENTIALS,
    FLOW_MANAGED_IDENTITY,
    TokenProvider,
    sign_in,
)
from dynamics_api.errors import AuthError, ConfigError
from dynamics_emulator.identity import GRANT_CLIENT_CREDENTIALS, ClientApp, ManagedIdentity
from dynamics_emulator.server import Emulator
from tests.integration.test_auth import closed_port, who_am_i
from tests.oidc_issuer import AKS_SUBJECT, ExternalIssuer
from tests.tapharness import TapRun, run_tap, select

FED_CLIENT_ID = "8d3c1f0e-2b4a-4c6d-8e1f-3a5b7c9d0e2f"
ISSUER = ExternalIssuer("https://oidc.prod-aks.azure.com/9f8b7c6d/5e4f3a2b/")
USER_MI = ManagedIdentity(
    client_id="0c6f4a2e-8b1d-4e3f-9a5c-7d9e1f3a5b7c",
    object_id="1d7a5b3f-9c2e-4f4a-8b6d-8e0f2a4b6c8d",
)
UNKNOWN_MI = "2e8b6c4a-0d3f-4a5b-9c7e-9f1a3b5c7d9e"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    app = ClientApp(
        FED_CLIENT_ID, federated_credentials=(ISSUER.credential(),), display_name="workload"
    )
    with Emulator(extra_clients=(app,), counts={"account": 12, "systemuser": 2}) as emulator:
        assert emulator.identity is not None
        emulator.identity.register_managed_identity(USER_MI)
        yield emulator


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle)
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)


def on_this_resource(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> dict[str, str]:
    """Set what App Service sets for a resource with a managed identity: the emulator's."""
    assert emu.identity is not None
    env = emu.identity.managed_identity_environ()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def managed(emu: Emulator, **settings: Any) -> TokenProvider:
    return TokenProvider.from_config(
        {"environment_url": emu.url, "managed_identity": True, **settings}
    )


def federated_config(emu: Emulator, token_file: Path, **settings: Any) -> dict[str, Any]:
    return {
        "environment_url": emu.url,
        "authority_host": emu.authority_host,
        "tenant_id": emu.tenant_id,
        "client_id": FED_CLIENT_ID,
        "federated_token_file": str(token_file),
        **settings,
    }


def one_sentence(text: str, *never: str) -> None:
    assert "\n" not in text and "Traceback" not in text
    assert text.endswith("."), text
    for value in never:
        assert value not in text


def trust_issuer(emu: Emulator, issuer: ExternalIssuer) -> None:
    """The app's federated credential, with the issuer's current keys."""
    assert emu.identity is not None
    emu.identity.register_client(
        ClientApp(FED_CLIENT_ID, federated_credentials=(issuer.credential(),))
    )


# ------------------------------------------------------------------------------ managed identity


def test_system_assigned_managed_identity(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    on_this_resource(monkeypatch, emu)
    assert emu.identity is not None
    p = managed(emu)
    assert p.flow == FLOW_MANAGED_IDENTITY and p.credential_kind == "managed_identity"
    with caplog.at_level(logging.INFO, logger="dynamics_api.auth"):
        token = p.token()
    assert "the system-assigned managed identity, managed_identity flow" in caplog.text
    assert who_am_i(emu, token).status_code == 200
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None
    assert info.client_id == emu.identity.system_assigned_identity.client_id
    assert p.token() == token  # held in memory
    renewed = p.token(force_refresh=True)  # past msal's cache too
    assert renewed != token and who_am_i(emu, renewed).status_code == 200


def test_user_assigned_managed_identity(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    on_this_resource(monkeypatch, emu)
    assert emu.identity is not None
    token = managed(emu, managed_identity_client_id=USER_MI.client_id).token()
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None and info.client_id == USER_MI.client_id
    assert who_am_i(emu, token).status_code == 200


def test_managed_identity_tokens_in_the_token_cache(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator, tmp_path: Path
) -> None:
    on_this_resource(monkeypatch, emu)
    assert emu.identity is not None
    path = tmp_path / "tokens.json"
    first = managed(emu, token_cache_path=str(path)).token()
    issued = emu.identity.issued["managed_identity"]
    second = managed(emu, token_cache_path=str(path)).token()  # a new run, the same cache
    assert second == first
    assert emu.identity.issued["managed_identity"] == issued
    assert json.loads(path.read_text())["AccessToken"]


def test_an_unassigned_user_assigned_identity(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator
) -> None:
    env = on_this_resource(monkeypatch, emu)
    with pytest.raises(AuthError) as info:
        managed(emu, managed_identity_client_id=UNKNOWN_MI).token()
    text = str(info.value)
    assert text == (
        f"The managed identity endpoint IDENTITY_ENDPOINT ({urlsplit(emu.url).netloc}) has no "
        f"user-assigned managed identity with client id '{UNKNOWN_MI}' (HTTP 400: Unable to "
        "load the proper Managed Identity): assign that identity to this resource, or fix "
        "managed_identity_client_id."
    )
    one_sentence(text, env["IDENTITY_HEADER"])


def test_a_wrong_identity_header(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    on_this_resource(monkeypatch, emu)
    wrong = "not-the-identity-header-" + "x" * 12
    monkeypatch.setenv("IDENTITY_HEADER", wrong)
    with pytest.raises(AuthError) as info:
        managed(emu).token()
    text = str(info.value)
    assert "refused a token for the system-assigned managed identity (HTTP 401:" in text
    one_sentence(text, wrong)


def test_managed_identity_endpoint_with_an_untrusted_ca(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator
) -> None:
    on_this_resource(monkeypatch, emu)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(AuthError) as info:
        managed(emu).token()
    text = str(info.value)
    assert text.startswith("TLS certificate verification failed for the managed identity ")
    assert "REQUESTS_CA_BUNDLE" in text
    one_sentence(text)


def test_no_managed_identity_here(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    """Off Azure msal asks the VM's metadata service; here it is moved to a closed port."""
    port = closed_port()
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{port}")
    with pytest.raises(AuthError) as info:
        managed(emu).token()
    text = str(info.value)
    assert text.startswith(
        f"Could not reach the instance metadata service (IMDS) at 127.0.0.1:{port} for a token "
        "for the system-assigned managed identity: managed_identity works on an Azure resource"
    )
    one_sentence(text)


def test_an_endpoint_that_does_not_answer_json(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator
) -> None:
    on_this_resource(monkeypatch, emu)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emu.url}/devicelogin")  # an HTML page
    with pytest.raises(AuthError) as info:
        managed(emu).token()
    text = str(info.value)
    assert text.startswith(
        f"The managed identity endpoint IDENTITY_ENDPOINT ({urlsplit(emu.url).netloc}) gave no "
        "usable answer for the system-assigned managed identity"
    )
    one_sentence(text)


def test_msal_refusing_the_platform_setup(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    """Service Fabric's endpoint must be HTTPS: msal says so before asking."""
    env = on_this_resource(monkeypatch, emu)
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{closed_port()}/msi/token")
    monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT", "ab" * 20)
    with pytest.raises(AuthError) as info:
        managed(emu).token()
    text = str(info.value)
    assert text.startswith("msal could not ask the Service Fabric identity endpoint 127.0.0.1:")
    assert "must use HTTPS" in text
    one_sentence(text, env["IDENTITY_HEADER"])


# ------------------------------------------------------------------------------ federated token


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "azure-identity-token"
    path.write_text(ISSUER.token())
    return path


@pytest.fixture
def _issuer_restored(emu: Emulator) -> Iterator[None]:
    yield
    trust_issuer(emu, ISSUER)


def test_a_federated_token_signs_the_app_in(emu: Emulator, token_file: Path) -> None:
    assert emu.identity is not None
    p = TokenProvider.from_config(federated_config(emu, token_file))
    assert p.flow == FLOW_CLIENT_CREDENTIALS and p.credential_kind == "federated_token"
    token = p.token()
    info = emu.identity.validate_access_token(token, resource=emu.url)
    assert info is not None and info.client_id == FED_CLIENT_ID
    assert who_am_i(emu, token).status_code == 200


@pytest.mark.usefixtures("_issuer_restored")
def test_the_rotated_token_file_is_read_for_the_next_request(
    emu: Emulator, token_file: Path
) -> None:
    """Between two token requests the platform replaces the token, and the issuer rotates its
    signing key (so only the new token is still good)."""
    assert emu.identity is not None
    p = TokenProvider.from_config(federated_config(emu, token_file))
    first = p.token()
    rotated = ExternalIssuer(ISSUER.url, key_number=1)
    trust_issuer(emu, rotated)
    token_file.write_text(rotated.token())
    second = p.token(force_refresh=True)
    assert second != first
    assert emu.identity.validate_access_token(second, resource=emu.url) is not None
    assert who_am_i(emu, second).status_code == 200


def test_azure_federated_token_file_is_used_when_no_credential_is_set(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator, token_file: Path
) -> None:
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    config = federated_config(emu, token_file)
    del config["federated_token_file"]
    p = TokenProvider.from_config(config)
    assert p.credential_kind == "federated_token"
    assert who_am_i(emu, p.token()).status_code == 200


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        pytest.param(
            lambda: ExternalIssuer("https://token.actions.githubusercontent.com").token(),
            700211,
            "found no federated credential on client_id",
            id="unknown-issuer",
        ),
        pytest.param(
            lambda: ISSUER.token("system:serviceaccount:etl:other"),
            700213,
            "subject 'system:serviceaccount:etl:other'",
            id="other-subject",
        ),
        pytest.param(
            lambda: ISSUER.token(audience="api://other"),
            70021,
            f"(issuer '{ISSUER.url}', subject '{AKS_SUBJECT}', audience 'api://other')",
            id="other-audience",
        ),
        pytest.param(
            lambda: ExternalIssuer(ISSUER.url, key_number=2).token(),
            7000272,
            "could not verify the signature of the federated token",
            id="unpublished-key",
        ),
        pytest.param(
            lambda: ISSUER.token(lifetime=-600),
            700024,
            "has expired or is not valid yet",
            id="expired",
        ),
        pytest.param(lambda: "not-a-jwt", 50027, "as a JWT", id="not-a-jwt"),
    ],
)
def test_federated_refusals_are_one_sentence(
    emu: Emulator, tmp_path: Path, content: Any, code: int, fragment: str
) -> None:
    token = content()
    path = tmp_path / "token"
    path.write_text(token)
    p = TokenProvider.from_config(federated_config(emu, path))
    with pytest.raises(AuthError) as info:
        p.token()
    text = str(info.value)
    assert info.value.aadsts == code
    assert f"AADSTS{code}" in text and fragment in text
    assert f"federated_token_file ('{path}')" in text
    one_sentence(text, token)


def test_a_token_file_that_disappears(emu: Emulator, token_file: Path) -> None:
    p = TokenProvider.from_config(federated_config(emu, token_file))
    p.token()
    token_file.unlink()
    with pytest.raises(ConfigError) as info:
        p.token(force_refresh=True)
    text = str(info.value)
    assert "cannot be read (No such file or directory)" in text
    one_sentence(text)


def test_no_token_or_header_in_the_logs(
    monkeypatch: pytest.MonkeyPatch,
    emu: Emulator,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = on_this_resource(monkeypatch, emu)
    assertion = token_file.read_text()
    with caplog.at_level(logging.DEBUG):
        tokens = [
            TokenProvider.from_config(federated_config(emu, token_file)).token(),
            managed(emu).token(),
        ]
        token_file.write_text("garbage")
        with pytest.raises(AuthError):
            TokenProvider.from_config(federated_config(emu, token_file)).token()
    assert "msal" in caplog.text  # msal's DEBUG lines were captured
    for value in (assertion, env["IDENTITY_HEADER"], *tokens):
        assert value not in caplog.text


# ------------------------------------------------------------------------------ login


def test_login_is_not_for_a_managed_identity(emu: Emulator) -> None:
    with pytest.raises(ConfigError, match="a managed identity needs no sign-in"):
        sign_in({"environment_url": emu.url, "managed_identity": True})


def test_login_leaves_azure_federated_token_file_alone(
    monkeypatch: pytest.MonkeyPatch, emu: Emulator, tmp_path: Path
) -> None:
    """The variable is for unattended runs: a user signing in with a public client in such a
    pod gets the device code flow (it would be refused as a confidential client, and here the
    file does not even exist)."""
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "absent"))
    config = emu.tap_config(client_id=emu.public_client_id)
    config.pop("client_secret")
    said: list[str] = []
    with pytest.raises(AuthError, match="No sign-in arrived before the timeout"):
        sign_in(config, device_code=True, timeout=0.1, say=said.append)
    assert any("enter the code" in line for line in said)


# ------------------------------------------------------------------------------ tap-dynamics runs

NO_APP_SECRET = {"client_secret": None, "client_id": None, "tenant_id": None}


@pytest.fixture(scope="module")
def catalog(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Discovered with the system-assigned managed identity."""
    assert emu.identity is not None
    run = run_tap(
        emu,
        tmp_path_factory.mktemp("discover"),
        config={**NO_APP_SECRET, "managed_identity": True},
        args=["--discover"],
        env=emu.identity.managed_identity_environ(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found: dict[str, Any] = json.loads(run.stdout)
    return select(found, ["account"])


def secretless(tmp: Path, emu: Emulator) -> None:
    """The config the run had names no secret at all."""
    text = (tmp / "config.json").read_text()
    assert emu.client_secret not in text
    assert json.loads(text)["client_secret"] is None


def failed_with_one_sentence(run: TapRun, *never: str) -> str:
    assert run.returncode == 1
    lines = [line for line in run.stderr.splitlines() if line.startswith("tap-dynamics: ")]
    assert len(lines) == 1, run.stderr[-3000:]
    one_sentence(lines[0])
    for value in never:
        assert value not in run.stderr and value not in run.stdout
    assert "Traceback" not in run.stderr
    return lines[0]


@pytest.mark.parametrize("user_assigned", [False, True], ids=["system", "user"])
def test_tap_with_a_managed_identity(
    emu: Emulator, tmp_path: Path, catalog: dict[str, Any], user_assigned: bool
) -> None:
    assert emu.identity is not None
    identity = {"managed_identity_client_id": USER_MI.client_id} if user_assigned else {}
    run = run_tap(
        emu,
        tmp_path,
        config={**NO_APP_SECRET, "managed_identity": True, **identity},
        catalog=catalog,
        env=emu.identity.managed_identity_environ(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("account")) == 12
    secretless(tmp_path, emu)


def test_tap_with_an_unassigned_managed_identity(
    emu: Emulator, tmp_path: Path, catalog: dict[str, Any]
) -> None:
    assert emu.identity is not None
    env = emu.identity.managed_identity_environ()
    run = run_tap(
        emu,
        tmp_path,
        config={
            **NO_APP_SECRET,
            "managed_identity": True,
            "managed_identity_client_id": UNKNOWN_MI,
        },
        catalog=catalog,
        env=env,
    )
    line = failed_with_one_sentence(run, env["IDENTITY_HEADER"])
    assert f"no user-assigned managed identity with client id '{UNKNOWN_MI}'" in line


def test_tap_with_a_federated_token(
    emu: Emulator, tmp_path: Path, catalog: dict[str, Any], token_file: Path
) -> None:
    assert emu.identity is not None
    before = emu.identity.issued_by_client[(FED_CLIENT_ID, GRANT_CLIENT_CREDENTIALS)]
    run = run_tap(
        emu,
        tmp_path / "run",
        config={"client_id": FED_CLIENT_ID, "client_secret": None},
        catalog=catalog,
        env={"AZURE_FEDERATED_TOKEN_FILE": str(token_file)},  # as AKS workload identity sets it
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.records("account")) == 12
    assert emu.identity.issued_by_client[(FED_CLIENT_ID, GRANT_CLIENT_CREDENTIALS)] == before + 1
    secretless(tmp_path / "run", emu)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        pytest.param(lambda: ISSUER.token("system:serviceaccount:etl:other"), 700213, id="subject"),
        pytest.param(lambda: ISSUER.token(lifetime=-600), 700024, id="expired"),
        pytest.param(lambda: "not-a-jwt", 50027, id="not-a-jwt"),
    ],
)
def test_tap_with_a_refused_federated_token(
    emu: Emulator, tmp_path: Path, catalog: dict[str, Any], token: Any, code: int
) -> None:
    value = token()
    path = tmp_path / "token"
    path.write_text(value)
    run = run_tap(
        emu,
        tmp_path / "run",
        config={
            "client_id": FED_CLIENT_ID,
            "client_secret": None,
            "federated_token_file": str(path),
        },
        catalog=catalog,
    )
    line = failed_with_one_sentence(run, value)
    assert f"(AADSTS{code})" in line
