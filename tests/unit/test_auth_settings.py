"""The one parser of the auth settings, `AuthSettings.from_config` (no I/O: no certificate file,
no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dynamics_api.auth import AUTH_SETTINGS, AuthSettings
from dynamics_api.auth.settings import bool_setting, text_setting
from dynamics_api.errors import ConfigError

CLIENT_ID = "11111111-2222-4333-8444-555555555555"
SECRET = "s3cret~value-not-shown"
RT = "0.ARrt-value-not-shown"


@pytest.fixture(autouse=True)
def _no_federated_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parser's default for federated_token_file: tests that want it pass ``environ``.
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "environment_url": "https://contoso.crm4.dynamics.com",
        "client_id": CLIENT_ID,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_a_public_client_in_the_public_cloud() -> None:
    s = AuthSettings.from_config(config())
    assert s.environment_url == "https://contoso.crm4.dynamics.com"
    assert s.resource == "https://contoso.crm4.dynamics.com"
    assert s.authority_host == "https://login.microsoftonline.com"
    assert s.authority == "https://login.microsoftonline.com/organizations"
    assert s.tenant_id is None
    assert not s.confidential
    assert s.credential_kind == "none"
    assert s.msal_credential() is None
    assert s.token_cache_path is None
    assert s.secrets() == ()


def test_values_are_stripped_and_empty_ones_unset() -> None:
    s = AuthSettings.from_config(
        config(
            environment_url="  https://contoso.crm.dynamics.com/api/data/v9.2/ ",
            client_id=f" {CLIENT_ID} ",
            tenant_id=" contoso.onmicrosoft.com ",
            client_secret="   ",
            refresh_token="",
            authority_host="",
        )
    )
    assert s.environment_url == "https://contoso.crm.dynamics.com"
    assert s.client_id == CLIENT_ID
    assert s.tenant_id == "contoso.onmicrosoft.com"
    assert s.authority == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert s.client_secret is None and s.refresh_token is None
    assert not s.confidential


def test_the_authority_host_follows_the_cloud_unless_set() -> None:
    gov = AuthSettings.from_config(config(environment_url="https://org.crm.microsoftdynamics.us"))
    assert gov.authority_host == "https://login.microsoftonline.us"
    china = AuthSettings.from_config(config(environment_url="https://org.crm.dynamics.cn"))
    assert china.authority_host == "https://login.chinacloudapi.cn"
    own = AuthSettings.from_config(
        config(environment_url="https://127.0.0.1:8443", authority_host="https://127.0.0.1:8443/")
    )
    assert own.authority == "https://127.0.0.1:8443/organizations"


def test_a_confidential_client_and_its_secrets() -> None:
    s = AuthSettings.from_config(config(client_secret=SECRET, refresh_token=RT))
    assert s.confidential
    assert s.credential_kind == "client_secret"
    assert s.msal_credential() == SECRET
    assert set(s.secrets()) == {SECRET, RT}
    assert SECRET not in repr(s) and RT not in repr(s)


def test_the_token_cache_path_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    s = AuthSettings.from_config(config(token_cache_path="~/.cache/dynamics/tokens.json"))
    assert s.token_cache_path == Path("/home/someone/.cache/dynamics/tokens.json")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param({"environment_url": None}, "environment_url is required", id="no-url"),
        pytest.param({"environment_url": " "}, "environment_url is required", id="blank-url"),
        pytest.param({"client_id": None}, "client_id is required", id="no-client"),
        pytest.param({"client_id": ""}, "client_id is required", id="empty-client"),
        pytest.param({"client_secret": 12345}, "must be text, not int", id="number"),
        pytest.param({"tenant_id": ["a"]}, "tenant_id must be text", id="list"),
        pytest.param({"environment_url": "http://contoso.crm.dynamics.com"}, "https://", id="http"),
        pytest.param(
            {"client_certificate_thumbprint": "ab" * 20},
            "without client_certificate_path",
            id="thumbprint-alone",
        ),
        pytest.param(
            {"client_secret": SECRET, "client_certificate_path": "/nonexistent/cert.pem"},
            "Both client_secret and client_certificate_path",
            id="two-credentials",
        ),
    ],
)
def test_config_errors_are_one_sentence_without_secrets(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        AuthSettings.from_config(config(**overrides))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert SECRET not in message


def test_text_setting() -> None:
    assert text_setting({"a": " x "}, "a") == "x"
    assert text_setting({"a": ""}, "a") is None
    assert text_setting({}, "a") is None
    with pytest.raises(ConfigError, match="The setting a must be text, not bool"):
        text_setting({"a": True}, "a")


def test_auth_settings_lists_what_the_parser_reads(tmp_path: Path) -> None:
    """Every name in AUTH_SETTINGS changes the result, so the list the login command reads from
    the environment is the parser's."""
    token_file = tmp_path / "token"
    token_file.write_text("header.claims.signature")
    managed = {"client_id": None, "managed_identity": True}
    # name -> (the overrides that set it, the overrides it is compared with)
    values: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {
        "environment_url": ({"environment_url": "https://other.crm.dynamics.com"}, {}),
        "client_id": ({"client_id": "other-client"}, {}),
        "client_secret": ({"client_secret": SECRET}, {}),
        "client_certificate_path": None,  # needs a certificate: covered by the integration tests
        "client_certificate_thumbprint": None,
        "refresh_token": ({"refresh_token": RT}, {}),
        "tenant_id": ({"tenant_id": "contoso.onmicrosoft.com"}, {}),
        "authority_host": ({"authority_host": "https://login.microsoftonline.us"}, {}),
        "token_cache_path": ({"token_cache_path": "/tmp/tokens.json"}, {}),
        "managed_identity": (managed, {}),
        "managed_identity_client_id": (
            {**managed, "managed_identity_client_id": "mi-client"},
            managed,
        ),
        "federated_token_file": ({"federated_token_file": str(token_file)}, {}),
    }
    assert set(values) == set(AUTH_SETTINGS)
    for name, pair in values.items():
        if pair is not None:
            changed, base = pair
            assert AuthSettings.from_config(config(**changed), environ={}) != (
                AuthSettings.from_config(config(**base), environ={})
            ), name


# ------------------------------------------------------------------------------ managed identity


def test_a_system_assigned_managed_identity_needs_no_app() -> None:
    s = AuthSettings.from_config(config(client_id=None, managed_identity=True))
    assert s.managed_identity and s.managed_identity_client_id is None
    assert s.client_id is None
    assert s.credential_kind == "managed_identity"
    assert not s.confidential
    assert s.secrets() == ()
    with pytest.raises(ConfigError, match="client_id is required"):
        _ = s.app_client_id


@pytest.mark.parametrize("flag", [True, "true", " TRUE ", "1", "yes"])
def test_a_user_assigned_managed_identity(flag: object) -> None:
    s = AuthSettings.from_config(
        config(client_id=None, managed_identity=flag, managed_identity_client_id=" mi-1 ")
    )
    assert s.managed_identity and s.managed_identity_client_id == "mi-1"


@pytest.mark.parametrize("flag", [False, "false", "0", "no", "", None])
def test_managed_identity_false_is_the_app_flows(flag: object) -> None:
    s = AuthSettings.from_config(config(managed_identity=flag))
    assert not s.managed_identity and s.client_id == CLIENT_ID


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        pytest.param({"managed_identity": "maybe"}, "must be true or false", id="not-a-bool"),
        pytest.param({"managed_identity": 2}, "must be true or false", id="a-number"),
        pytest.param(
            {"managed_identity_client_id": "mi-1"},
            "managed_identity_client_id is set without managed_identity",
            id="client-id-alone",
        ),
        pytest.param(
            {"managed_identity": True},
            "managed_identity is set together with client_id: a managed identity",
            id="with-client-id",
        ),
        pytest.param(
            {"managed_identity": True, "client_id": None, "client_secret": SECRET},
            "together with client_secret",
            id="with-secret",
        ),
        pytest.param(
            {"managed_identity": True, "client_id": None, "refresh_token": RT},
            "together with refresh_token",
            id="with-refresh-token",
        ),
        pytest.param(
            {"managed_identity": True, "client_id": None, "federated_token_file": "/x"},
            "together with federated_token_file",
            id="with-federated-token",
        ),
    ],
)
def test_managed_identity_config_errors(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        AuthSettings.from_config(config(**overrides))
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message and message.endswith(".")
    assert SECRET not in message and RT not in message


def test_bool_setting() -> None:
    assert bool_setting({}, "a") is False
    assert bool_setting({"a": True}, "a") is True
    assert bool_setting({"a": " False "}, "a") is False
    with pytest.raises(ConfigError, match="The setting a must be true or false"):
        bool_setting({"a": [True]}, "a")


# ------------------------------------------------------------------------------ federated token


def test_a_federated_token_file_is_the_apps_credential(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first.token.value\n")
    s = AuthSettings.from_config(
        config(federated_token_file=str(path), tenant_id="contoso.onmicrosoft.com"), environ={}
    )
    assert s.federated_token is not None
    assert s.federated_token.path == path
    assert s.federated_token.source == "federated_token_file"
    assert s.confidential and s.credential_kind == "federated_token"
    seen: list[str] = []
    credential = s.msal_credential(on_assertion=seen.append)
    assert isinstance(credential, dict) and set(credential) == {"client_assertion"}
    assertion = credential["client_assertion"]
    assert callable(assertion)
    assert assertion() == "first.token.value"
    path.write_text("second.token.value")  # rotated: read again on the next call
    assert assertion() == "second.token.value"
    assert seen == ["first.token.value", "second.token.value"]
    assert "token.value" not in repr(s)


def test_azure_federated_token_file_is_the_default(tmp_path: Path) -> None:
    path = tmp_path / "azure-identity-token"
    path.write_text("a.b.c")
    env = {"AZURE_FEDERATED_TOKEN_FILE": str(path)}
    s = AuthSettings.from_config(config(), environ=env)
    assert s.federated_token is not None
    assert s.federated_token.source == "AZURE_FEDERATED_TOKEN_FILE"
    # ... but never instead of (or beside) a way of signing in that is configured.
    for overrides in (
        {"client_secret": SECRET},
        {"refresh_token": RT},
        {"client_id": None, "managed_identity": True},
    ):
        assert AuthSettings.from_config(config(**overrides), environ=env).federated_token is None
    # The setting wins over the variable.
    own = tmp_path / "own-token"
    own.write_text("d.e.f")
    s = AuthSettings.from_config(config(federated_token_file=str(own)), environ=env)
    assert s.federated_token is not None and s.federated_token.path == own


@pytest.mark.parametrize(
    ("content", "environ", "fragment"),
    [
        pytest.param(None, False, "federated_token_file ('", id="missing-file"),
        pytest.param(None, True, "AZURE_FEDERATED_TOKEN_FILE ('", id="missing-file-from-env"),
        pytest.param(" \n", False, "is empty", id="empty-file"),
        pytest.param("x" * 70_000, False, "too big to hold a token", id="huge-file"),
    ],
)
def test_federated_token_file_errors(
    tmp_path: Path, content: str | None, environ: bool, fragment: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    overrides = {} if environ else {"federated_token_file": str(path)}
    env = {"AZURE_FEDERATED_TOKEN_FILE": str(path)} if environ else {}
    with pytest.raises(ConfigError) as info:
        AuthSettings.from_config(config(**overrides), environ=env)
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_federated_token_file_beside_another_credential(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a.b.c")
    with pytest.raises(ConfigError, match="Both client_secret and federated_token_file are set"):
        AuthSettings.from_config(config(client_secret=SECRET, federated_token_file=str(path)))
