"""The one parser of the auth settings, `AuthSettings.from_config` (no I/O: no certificate file,
no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dynamics_api.auth import AUTH_SETTINGS, AuthSettings
from dynamics_api.auth.settings import text_setting
from dynamics_api.errors import ConfigError

CLIENT_ID = "11111111-2222-4333-8444-555555555555"
SECRET = "s3cret~value-not-shown"
RT = "0.ARrt-value-not-shown"


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


def test_auth_settings_lists_what_the_parser_reads() -> None:
    """Every name in AUTH_SETTINGS changes the result, so the list the login command reads from
    the environment is the parser's."""
    values = {
        "environment_url": "https://other.crm.dynamics.com",
        "client_id": "other-client",
        "client_secret": SECRET,
        "client_certificate_path": None,  # needs a file: covered by the integration tests
        "client_certificate_thumbprint": None,
        "refresh_token": RT,
        "tenant_id": "contoso.onmicrosoft.com",
        "authority_host": "https://login.microsoftonline.us",
        "token_cache_path": "/tmp/tokens.json",
    }
    assert set(values) == set(AUTH_SETTINGS)
    base = AuthSettings.from_config(config())
    for name, value in values.items():
        if value is not None:
            assert AuthSettings.from_config(config(**{name: value})) != base, name
