"""The emulator's harness: the ``dynamics-emulator`` command in a child process, a session signed
in with the real msal, and the connection it describes."""

from __future__ import annotations

import json
from pathlib import Path

import certifi
import pytest

from dynamics_emulator.connection import Connection
from dynamics_emulator.harness import ApiSession, EmulatorProcess, EmulatorStartError
from dynamics_emulator.server import Emulator
from tests.emulator.test_csdl import EXTERNAL_ENTITY


def test_the_command_starts_serves_and_stops(tmp_path: Path) -> None:
    with EmulatorProcess(tmp_path, "--rows", "40", "--table", "account") as emu:
        assert emu.banner[0].startswith("dynamics-emulator ready in")
        assert emu.info["rows"]["account"] == 40
        conn = emu.connection
        assert conn.ca_bundle == str((tmp_path / "ca.pem").resolve())
        assert not (tmp_path / "client_secret").exists()  # the secret came from the environment
        # $metadata with nothing but the CA bundle the command wrote (and a token).
        http = emu.session()
        meta = http.get(http.url("$metadata"), timeout=30)
        assert meta.status_code == 200
        assert meta.headers["Content-Type"].startswith("application/xml")
        assert b'EntityType Name="account"' in meta.content
        me = http.get(http.url("WhoAmI"), timeout=30).json()
        assert me["UserId"]
        accounts = http.get(http.url("accounts?$select=name&$count=true"), timeout=30).json()
        assert accounts["@odata.count"] == 40
    assert emu.proc.poll() is not None  # stopped on leaving the block


def test_a_command_that_cannot_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(EmulatorStartError, match=r"no CSDL file at .*missing\.xml"):
        EmulatorProcess(tmp_path, "--csdl", str(tmp_path / "missing.xml"))


def test_a_csdl_with_a_dtd_is_one_sentence(tmp_path: Path) -> None:
    doc = tmp_path / "hostile.xml"
    doc.write_bytes(EXTERNAL_ENTITY)
    with pytest.raises(EmulatorStartError) as info:
        EmulatorProcess(tmp_path / "work", "--csdl", str(doc))
    message = str(info.value)
    assert f"dynamics-emulator: cannot serve {doc}: refusing XML with a DTD" in message
    assert "Traceback" not in message


def test_session_of_an_in_process_emulator(emulator: Emulator) -> None:
    http = ApiSession(emulator.connection)
    first = http.headers["Authorization"]
    assert http.get(http.url("accounts?$top=1"), timeout=30).status_code == 200
    http.refresh_token()
    assert http.headers["Authorization"] != first  # a new token, not msal's cached one
    assert http.get(http.url("accounts?$top=1"), timeout=30).status_code == 200


def test_a_refused_token_is_an_error_without_the_secret(emulator: Emulator) -> None:
    wrong = Connection.from_settings(
        emulator.tap_config(client_secret="not-the-secret"), emulator.ca_bundle
    )
    with pytest.raises(RuntimeError, match="AADSTS7000215") as info:
        ApiSession(wrong)
    assert "not-the-secret" not in str(info.value)


def test_the_pin_holds_against_the_environment(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE pointing at the system store does not unpin the session."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    http = ApiSession(emulator.connection)
    assert http.get(http.url("WhoAmI"), timeout=30).status_code == 200


def test_connection_settings_and_back(emulator: Emulator) -> None:
    conn = emulator.connection
    settings = conn.settings(page_size=100)
    assert settings == emulator.tap_config(page_size=100)
    assert settings["environment_url"] == emulator.url
    assert Connection.from_settings(settings, emulator.ca_bundle) == conn
    assert conn.environ() == {"REQUESTS_CA_BUNDLE": emulator.ca_bundle}
    assert conn.authority == emulator.authority
    assert emulator.client_secret not in repr(conn)


def test_connection_from_the_files_the_command_writes(tmp_path: Path) -> None:
    info = {
        "environment_url": "https://127.0.0.1:8443",
        "authority_host": "https://127.0.0.1:8443",
        "tenant_id": "t",
        "client_id": "c",
        "ca_bundle": "/x/ca.pem",
    }
    (tmp_path / "emulator.json").write_text(json.dumps(info))
    (tmp_path / "client_secret").write_text("generated\n")
    conn = Connection.from_file(tmp_path / "emulator.json")
    assert conn.client_secret == "generated"
    assert conn.authority == "https://127.0.0.1:8443/t"
    given = Connection.from_file(tmp_path / "emulator.json", client_secret="given")
    assert given.client_secret == "given"
