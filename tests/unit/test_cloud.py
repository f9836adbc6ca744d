"""Environment URL validation and cloud detection (no I/O)."""

from __future__ import annotations

import pytest

from dynamics_api.cloud import (
    CHINA_AUTHORITY,
    PUBLIC_AUTHORITY,
    US_GOV_AUTHORITY,
    Cloud,
    cloud_for,
    normalize_authority_host,
    normalize_environment_url,
    resolve_authority_host,
    resource_for,
)
from dynamics_api.errors import ConfigError

# Every org-host suffix of the protocol notes' table (section 1.2), with the cloud it belongs to.
REGION_HOSTS = [
    ("crm.dynamics.com", "public"),  # North America
    ("crm2.dynamics.com", "public"),  # South America
    ("crm3.dynamics.com", "public"),  # Canada
    ("crm4.dynamics.com", "public"),  # Europe
    ("crm5.dynamics.com", "public"),  # Asia Pacific
    ("crm6.dynamics.com", "public"),  # Oceania
    ("crm7.dynamics.com", "public"),  # Japan
    ("crm8.dynamics.com", "public"),  # India
    ("crm9.dynamics.com", "gcc"),  # US GCC
    ("crm10.dynamics.com", "public"),  # TIP/test
    ("crm11.dynamics.com", "public"),  # UK
    ("crm12.dynamics.com", "public"),  # France
    ("crm14.dynamics.com", "public"),  # South Africa
    ("crm15.dynamics.com", "public"),  # UAE
    ("crm16.dynamics.com", "public"),  # Germany (Go-Local)
    ("crm17.dynamics.com", "public"),  # Switzerland
    ("crm19.dynamics.com", "public"),  # Norway
    ("crm20.dynamics.com", "public"),  # Singapore
    ("crm21.dynamics.com", "public"),  # Korea
    ("crm22.dynamics.com", "public"),  # Sweden
    ("crm.microsoftdynamics.us", "gcc-high"),
    ("crm.appsplatform.us", "dod"),
    ("crm.dynamics.cn", "china"),
]
AUTHORITY = {
    "public": PUBLIC_AUTHORITY,
    "gcc": PUBLIC_AUTHORITY,
    "gcc-high": US_GOV_AUTHORITY,
    "dod": US_GOV_AUTHORITY,
    "china": CHINA_AUTHORITY,
}


def test_authority_constants() -> None:
    assert PUBLIC_AUTHORITY == "https://login.microsoftonline.com"
    assert US_GOV_AUTHORITY == "https://login.microsoftonline.us"
    assert CHINA_AUTHORITY == "https://login.chinacloudapi.cn"


@pytest.mark.parametrize(("suffix", "cloud"), REGION_HOSTS, ids=[s for s, _ in REGION_HOSTS])
@pytest.mark.parametrize("api", ["", "api."], ids=["org", "api"])
def test_every_region_host(suffix: str, cloud: str, api: str) -> None:
    url = f"https://contoso-dev.{api}{suffix}"
    assert normalize_environment_url(url) == url
    assert cloud_for(url) == Cloud(cloud, AUTHORITY[cloud])
    assert resolve_authority_host(url) == AUTHORITY[cloud]
    assert resource_for(url) == url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            "https://contoso.crm.dynamics.com", "https://contoso.crm.dynamics.com", id="plain"
        ),
        pytest.param(
            "https://contoso.crm.dynamics.com/", "https://contoso.crm.dynamics.com", id="slash"
        ),
        pytest.param(
            "https://contoso.crm.dynamics.com//", "https://contoso.crm.dynamics.com", id="slashes"
        ),
        pytest.param(
            "  https://contoso.crm4.dynamics.com/\n",
            "https://contoso.crm4.dynamics.com",
            id="spaces",
        ),
        pytest.param(
            "HTTPS://Contoso.CRM4.Dynamics.COM", "https://contoso.crm4.dynamics.com", id="case"
        ),
        pytest.param(
            "https://contoso.crm.dynamics.com/api/data/v9.2",
            "https://contoso.crm.dynamics.com",
            id="api-path",
        ),
        pytest.param(
            "https://contoso.crm.dynamics.com/api/data/v9.2/",
            "https://contoso.crm.dynamics.com",
            id="api-path-slash",
        ),
        pytest.param(
            "https://contoso.api.crm.dynamics.com/api/data/v9.0/",
            "https://contoso.api.crm.dynamics.com",
            id="api-host-and-path",
        ),
        pytest.param(
            "https://contoso.crm.dynamics.com/api/data",
            "https://contoso.crm.dynamics.com",
            id="api-data-only",
        ),
        pytest.param(
            "https://contoso.crm.dynamics.com:443/", "https://contoso.crm.dynamics.com", id="443"
        ),
        pytest.param("https://127.0.0.1:8443", "https://127.0.0.1:8443", id="ip-port"),
        pytest.param("https://LOCALHOST:9000/", "https://localhost:9000", id="localhost-port"),
        pytest.param("https://[::1]:8443/", "https://[::1]:8443", id="ipv6"),
        pytest.param(
            "https://contoso.crm.dynamics.com.", "https://contoso.crm.dynamics.com", id="fqdn-dot"
        ),
    ],
)
def test_normalize(given: str, expected: str) -> None:
    assert normalize_environment_url(given) == expected


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        pytest.param("http://contoso.crm.dynamics.com", "use an https:// URL", id="http"),
        pytest.param("HTTP://contoso.crm.dynamics.com", "use an https:// URL", id="http-upper"),
        pytest.param("", "is empty", id="empty"),
        pytest.param("   ", "is empty", id="blank"),
        pytest.param("contoso.crm.dynamics.com", "must be an https:// URL", id="no-scheme"),
        pytest.param("ftp://contoso.crm.dynamics.com", "must be an https:// URL", id="ftp"),
        pytest.param("not a url", "contains spaces", id="garbage"),
        pytest.param("https://", "has no host name", id="no-host"),
        pytest.param("https:///api/data/v9.2", "has no host name", id="path-only"),
        pytest.param("https://contoso.crm.dynamics.com/main.aspx", "has a path", id="ui-path"),
        pytest.param("https://contoso.crm.dynamics.com/api", "has a path", id="api-prefix"),
        pytest.param("https://contoso.crm.dynamics.com/apidata", "has a path", id="apidata"),
        pytest.param("https://contoso.crm.dynamics.com?x=1", "query", id="query"),
        pytest.param("https://contoso.crm.dynamics.com#frag", "query or fragment", id="fragment"),
        pytest.param("https://bad_host.crm.dynamics.com", "invalid host", id="underscore"),
        pytest.param("https://-bad.crm.dynamics.com", "invalid host", id="leading-dash"),
        pytest.param("https://contoso.crm.dynamics.com:99999", "not a valid URL", id="port-big"),
        pytest.param("https://contoso.crm.dynamics.com:abc", "not a valid URL", id="port-text"),
        pytest.param("https://contoso.crm.dynamics.com:0", "invalid port", id="port-zero"),
    ],
)
def test_rejects(given: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_environment_url(given)
    message = str(info.value)
    assert fragment in message
    assert "environment_url" in message
    assert "https://yourorg.crm.dynamics.com" in message
    assert message.endswith(".")


def test_rejects_non_text() -> None:
    with pytest.raises(ConfigError, match="environment_url"):
        normalize_environment_url(None)  # type: ignore[arg-type]


def test_credentials_in_url_are_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_environment_url("https://admin:hunter2@contoso.crm.dynamics.com")
    assert "hunter2" not in str(info.value)
    assert "user name or password" in str(info.value)


def test_query_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_environment_url("https://contoso.crm.dynamics.com/?sig=s3cr3tsig")
    assert "s3cr3tsig" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8443",
        "https://localhost",
        "https://dataverse.example.com",
        "https://crm.dynamics.com",  # no organisation label
        "https://contoso.crm.dynamics.com.evil.example",
        "https://contoso.dynamics.com",
        "https://contoso.crmx.dynamics.com",
        "https://contoso.crm.microsoftdynamics.de",  # retired German sovereign cloud
        "https://a.b.crm.dynamics.com",  # two labels before the suffix
    ],
)
def test_custom_hosts(url: str) -> None:
    assert cloud_for(url) == Cloud("custom", None)
    with pytest.raises(ConfigError, match="set authority_host"):
        resolve_authority_host(url)


def test_port_does_not_change_the_cloud() -> None:
    assert cloud_for("https://contoso.crm.dynamics.com:8443").name == "public"
    assert resource_for("https://contoso.crm.dynamics.com:8443") == (
        "https://contoso.crm.dynamics.com:8443"
    )


def test_cloud_for_validates() -> None:
    with pytest.raises(ConfigError, match="use an https:// URL"):
        cloud_for("http://contoso.crm.dynamics.com")


@pytest.mark.parametrize(
    ("url", "setting", "expected"),
    [
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
        (
            "https://contoso.crm.dynamics.com",
            "https://Login.MicrosoftOnline.US",
            "https://login.microsoftonline.us",
        ),
        ("https://contoso.crm.dynamics.com", None, PUBLIC_AUTHORITY),
        ("https://contoso.crm.dynamics.com", "", PUBLIC_AUTHORITY),
    ],
)
def test_resolve_authority_host(url: str, setting: str | None, expected: str) -> None:
    assert resolve_authority_host(url, setting) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("http://login.microsoftonline.com", "use an https:// URL"),
        ("https://login.microsoftonline.com/contoso.onmicrosoft.com", "tenant_id"),
        ("login.microsoftonline.com", "must be an https:// URL"),
    ],
)
def test_authority_host_rejects(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_authority_host(value)
    assert fragment in str(info.value)
    assert "authority_host" in str(info.value)


def test_resource_keeps_api_host() -> None:
    # Documented choice: the api. form is the resource as given (same org, accepted audience).
    assert resource_for("https://contoso.api.crm4.dynamics.com/api/data/v9.2/") == (
        "https://contoso.api.crm4.dynamics.com"
    )
