"""Sovereign clouds end to end: an org host of a national cloud makes the client sign in at that
cloud's login host, with the org's own scope. The emulator answers as those hosts (certificate,
audience, links) and the test resolves them to it, since no DNS points there from here."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from dynamics_api.auth import TokenProvider
from dynamics_api.http import DataverseClient
from dynamics_emulator.server import Emulator

CLOUDS = [
    pytest.param("contoso.crm9.dynamics.com", "login.microsoftonline.com", id="gcc"),
    pytest.param("contoso.crm.microsoftdynamics.us", "login.microsoftonline.us", id="gcc-high"),
    pytest.param("contoso.crm.appsplatform.us", "login.microsoftonline.us", id="dod"),
    pytest.param("contoso.crm.dynamics.cn", "login.chinacloudapi.cn", id="china"),
]


@pytest.fixture
def resolve_to(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Host names -> the local port that answers for them (any other name resolves as usual)."""
    table: dict[str, int] = {}
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(host, str) and host in table:
            return real("127.0.0.1", table[host], *args, **kw)
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return table


@pytest.mark.parametrize(("org_host", "login_host"), CLOUDS)
def test_national_cloud_org_signs_in_at_its_login_host(
    org_host: str,
    login_host: str,
    resolve_to: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Emulator(hostnames=(org_host, login_host)) as emu:
        resolve_to[org_host] = emu.port
        resolve_to[login_host] = emu.port
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle)
        config = {
            "environment_url": f"https://{org_host}",
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "tenant_id": emu.tenant_id,
            # no authority_host: it must follow from the org host's cloud
        }
        tokens = TokenProvider.from_config(config)
        with DataverseClient(config["environment_url"], tokens) as client:
            first = client.get_json(
                "accounts", params="$select=name", headers={"Prefer": "odata.maxpagesize=200"}
            )
            assert first["@odata.nextLink"].startswith(f"https://{org_host}/api/data/v9.2/")
            rest = client.get_json(first["@odata.nextLink"])
        assert len(first["value"]) + len(rest["value"]) > 200
        hosts = [(e.headers.get("host", ""), e.path) for e in emu.log]
        # msal found the tenant at the cloud's own login host ...
        assert any(
            h == login_host and p.endswith("/v2.0/.well-known/openid-configuration")
            for h, p in hosts
        ), hosts
        # ... and the data calls went to the org host with a token for the org's own scope.
        assert any(h == org_host and p.endswith("/accounts") for h, p in hosts), hosts
        info = emu.identity.validate_access_token(tokens.token())  # type: ignore[union-attr]
        assert info is not None
        assert info.resource.rstrip("/") == f"https://{org_host}"
