"""DataverseClient against the emulator over real HTTPS, with real msal tokens and injected faults."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msal
import pytest

from dynamics_api.errors import ApiError, ConfigError
from dynamics_api.http import DataverseClient
from dynamics_api.odata import build_query, entity_url, literal
from dynamics_api.session_base import VerifiedSession
from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator, LogEntry

COUNTS = {"account": 20, "contact": 5, "lead": 5, "systemuser": 3, "transactioncurrency": 1}


class MsalTokens:
    """A TokenSource on msal's client-credentials flow, counting forced refreshes."""

    def __init__(self, emulator: Emulator) -> None:
        self.scopes = [f"{emulator.url}/.default"]
        self.app = msal.ConfidentialClientApplication(
            emulator.client_id,
            client_credential=emulator.client_secret,
            authority=emulator.authority,
            instance_discovery=False,
            http_client=VerifiedSession(),
        )
        self.refreshes = 0
        self.issued: list[str] = []
        self._lock = threading.Lock()

    def token(self, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh:
                self.refreshes += 1
                self.app.remove_tokens_for_client()
            result = self.app.acquire_token_for_client(scopes=self.scopes)
            assert "access_token" in result, result.get("error_description")
            token = str(result["access_token"])
            if token not in self.issued:
                self.issued.append(token)
            return token


class BogusTokens:
    """A TokenSource whose tokens the service never accepts."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def token(self, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        return f"not-a-real-token-{len(self.calls)}"


class Sleeps(list[float]):
    """An injected ``sleep`` that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """A small emulator of its own (tests here inject faults, revoke tokens and deny tables)."""
    with Emulator(counts=COUNTS) as emulator:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_bundle)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        yield emulator


@pytest.fixture
def tokens(emu: Emulator) -> MsalTokens:
    return MsalTokens(emu)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(emu: Emulator, tokens: MsalTokens, sleeps: Sleeps) -> Iterator[DataverseClient]:
    with DataverseClient(emu.url, tokens, sleep=sleeps, jitter=0.0, timeout=(5, 30)) as c:
        yield c


def logged(emu: Emulator, path_contains: str, expected: int | None = None) -> list[LogEntry]:
    """The emulator's log entries for a path; the server records a request just after answering
    it, so wait (briefly) until ``expected`` entries are there."""
    deadline = time.monotonic() + 5
    entries = emu.requests(path_contains)
    while expected is not None and len(entries) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
        entries = emu.requests(path_contains)
    return entries


def _accounts(client: DataverseClient) -> list[dict[str, Any]]:
    body = client.get_json("accounts", params=build_query(select=["name"]), entity="account")
    return list(body["value"])


# -- the happy path and the headers ------------------------------------------------------------


def test_get_json_sends_odata_headers(emu: Emulator, client: DataverseClient) -> None:
    rows = _accounts(client)
    assert len(rows) == COUNTS["account"]
    assert set(rows[0]) >= {"name", "accountid", "@odata.etag"}
    (entry,) = logged(emu, "/api/data/v9.2/accounts", 1)
    assert entry.method == "GET" and entry.query == "$select=name"
    headers = entry.headers
    assert headers["if-none-match"] == "null"
    assert headers["odata-maxversion"] == "4.0"
    assert headers["odata-version"] == "4.0"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("tap-dynamics/")
    assert "content-type" not in headers
    assert "cookie" not in headers
    assert client.stats.snapshot()["statuses"] == {200: 1}


def test_json_body_gets_content_type_and_no_if_none_match(
    emu: Emulator, client: DataverseClient
) -> None:
    (account_id,) = emu.row_ids("account", 1)
    url = entity_url(client.base_url, "accounts", account_id)
    response = client.request("PATCH", url, json={"name": "Renamed"}, entity="account")
    assert response.status_code == 204
    (entry,) = logged(emu, f"accounts({account_id})", 1)
    assert entry.headers["content-type"] == "application/json"
    assert "if-none-match" not in entry.headers
    row = emu.get_row("account", account_id)
    assert row is not None and row["name"] == "Renamed"


def test_caller_headers_override_defaults_but_not_authorization(
    emu: Emulator, client: DataverseClient
) -> None:
    body = client.get_json(
        "accounts",
        params=build_query(select=["name"]),
        headers={"Prefer": "odata.maxpagesize=5", "Authorization": "Bearer stolen"},
    )
    assert len(body["value"]) == 5 and "@odata.nextLink" in body
    following = client.get_json(body["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=5"})
    assert len(following["value"]) == 5
    assert [e.headers["prefer"] for e in logged(emu, "/accounts", 2)] == ["odata.maxpagesize=5"] * 2


def test_filter_and_alternate_key_quoting_end_to_end(
    emu: Emulator, client: DataverseClient
) -> None:
    nasty = "O'Brien & Sons+1 #2 /?% 東京 'x') or (1 eq 1"
    first, second = emu.row_ids("account", 2)
    emu.update_rows("account", [first], {"name": nasty, "accountnumber": nasty})
    emu.update_rows("account", [second], {"name": "O'Brien & Sons 1"})
    query = build_query(select=["name"], filter=f"name eq {literal(nasty)}")
    body = client.get_json("accounts", params=query)
    assert [r["accountid"] for r in body["value"]] == [first]
    url = entity_url(client.base_url, "accounts", {"accountnumber": nasty})
    row = client.get_json(url, params=build_query(select=["name"]))
    assert row["accountid"] == first and row["name"] == nasty
    since = datetime(2000, 1, 1, tzinfo=UTC)
    recent = client.get_json(
        "accounts",
        params=build_query(select=["name"], filter=f"modifiedon ge {literal(since)}", top=3),
    )
    assert len(recent["value"]) == 3


# -- throttling --------------------------------------------------------------------------------


def test_429_waits_exactly_retry_after(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    emu.faults.script([Fault("status", status=429, retry_after=7)])
    assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [7.0]
    stats = client.stats.snapshot()
    assert stats["throttled_waits"] == 1 and stats["retries"] == 1
    assert stats["waited_seconds"] == 7.0
    assert stats["statuses"] == {429: 1, 200: 1}


def test_429_retry_after_is_not_jittered(emu: Emulator, tokens: MsalTokens) -> None:
    sleeps = Sleeps()
    emu.faults.script([Fault("status", status=429, retry_after=3)] * 3)
    with DataverseClient(emu.url, tokens, sleep=sleeps, jitter=0.5) as client:
        assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [3.0, 3.0, 3.0]


def test_429_from_service_protection_uses_its_retry_after(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    emu.protection.configure(max_concurrent=0)
    emu.faults.script([None])
    with pytest.raises(ApiError) as info:
        _accounts(client)
    assert info.value.status == 429 and info.value.code == "0x80072326"
    assert sleeps == [1.0] * client.max_retries
    assert "Gave up after 6 retries" in str(info.value)


def test_429_without_retry_after_backs_off_exponentially(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    emu.faults.script([Fault("status", status=429)] * 3)
    assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [1.0, 2.0, 4.0]
    assert client.stats.snapshot()["throttled_waits"] == 3


def test_backoff_jitter_is_small_and_capped(emu: Emulator, tokens: MsalTokens) -> None:
    sleeps = Sleeps()
    emu.faults.script([Fault("status", status=429)] * 4)
    with DataverseClient(
        emu.url, tokens, sleep=sleeps, backoff_base=2.0, backoff_max=10.0, jitter=0.1
    ) as client:
        _accounts(client)
    assert len(sleeps) == 4
    for wait, base in zip(sleeps, [2.0, 4.0, 8.0, 10.0], strict=True):
        assert base <= wait <= min(10.0, base * 1.1)
    assert sleeps[-1] == 10.0


def test_retry_after_beyond_max_fails_at_once(
    emu: Emulator, tokens: MsalTokens, sleeps: Sleeps
) -> None:
    emu.faults.script([Fault("status", status=429, retry_after=900)])
    with (
        DataverseClient(emu.url, tokens, sleep=sleeps, max_retry_after=300) as client,
        pytest.raises(ApiError) as info,
    ):
        _accounts(client)
    assert sleeps == []
    assert info.value.status == 429
    assert "asked to wait 900 s before retrying, more than max_retry_after (300 s)" in str(
        info.value
    )


# -- transient failures ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps, status: int
) -> None:
    emu.faults.script([Fault("status", status=status), Fault("status", status=status)])
    assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [1.0, 2.0]
    assert client.stats.snapshot()["statuses"] == {status: 2, 200: 1}


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_broken_connections_are_retried(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps, kind: str
) -> None:
    emu.faults.script([Fault(kind)])
    assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [1.0]
    assert [e.fault for e in logged(emu, "/accounts", 2)] == [kind, None]
    assert client.stats.snapshot()["network_errors"] == 1


def test_a_body_cut_off_while_written_to_a_file_is_written_again_from_its_start(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps, tmp_path: Path
) -> None:
    # The emulator sends half the body, then drops the connection: the page asked for again
    # replaces what was written of it.
    expected = client.request("GET", "accounts", params=build_query(select=["name"])).content
    emu.faults.script([Fault("truncate")])
    with (tmp_path / "page").open("w+b") as into:
        response = client.request("GET", "accounts", params=build_query(select=["name"]), into=into)
        assert into.tell() == len(expected) and response.content == b""
        into.seek(0)
        assert into.read() == expected
    assert sleeps == [1.0]
    assert [e.fault for e in logged(emu, "/accounts", 3)][1:] == ["truncate", None]


def test_answered_is_told_once_before_the_body_is_read(
    emu: Emulator, client: DataverseClient, tmp_path: Path
) -> None:
    # The emulator gives every answer's length: the service's work is done when the headers
    # come. A body cut off on its way is asked for again without telling it twice.
    query = build_query(select=["name"])
    expected = client.request("GET", "accounts", params=query).content
    emu.faults.script([Fault("truncate")])
    with (tmp_path / "page").open("w+b") as into:
        seen: list[int] = []
        client.request(
            "GET", "accounts", params=query, into=into, answered=lambda: seen.append(into.tell())
        )
        assert seen == [0]  # once, before the first byte of the body was written
        into.seek(0)
        assert into.read() == expected
    seen.clear()
    response = client.request(
        "GET", "accounts", params=query, answered=lambda: seen.append(len(seen))
    )
    assert seen == [0] and response.content == expected


def test_slow_response_past_read_timeout_is_retried(
    emu: Emulator, tokens: MsalTokens, sleeps: Sleeps
) -> None:
    emu.faults.script([Fault("slow", delay=1.5)])
    with DataverseClient(emu.url, tokens, sleep=sleeps, jitter=0, timeout=(5, 0.5)) as client:
        assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [1.0]


def test_retries_are_bounded(emu: Emulator, tokens: MsalTokens, sleeps: Sleeps) -> None:
    emu.faults.add(Fault("status", status=503), times=10)
    with (
        DataverseClient(emu.url, tokens, sleep=sleeps, jitter=0, max_retries=3) as client,
        pytest.raises(ApiError) as info,
    ):
        _accounts(client)
    err = info.value
    assert err.status == 503 and err.retryable
    assert "Dataverse answered 503" in str(err) and "Gave up after 3 retries" in str(err)
    assert sleeps == [1.0, 2.0, 4.0]
    assert len(logged(emu, "/accounts", 4)) == 4


def test_network_retries_are_bounded(emu: Emulator, tokens: MsalTokens, sleeps: Sleeps) -> None:
    emu.faults.add(Fault("reset"), times=10)
    with (
        DataverseClient(emu.url, tokens, sleep=sleeps, jitter=0, max_retries=2) as client,
        pytest.raises(ApiError) as info,
    ):
        _accounts(client)
    assert info.value.status == 0
    assert "connection" in str(info.value) and "Gave up after 2 retries" in str(info.value)
    assert len(logged(emu, "/accounts", 3)) == 3


def test_post_is_not_resent_after_an_ambiguous_failure(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    emu.faults.script([Fault("reset")])
    with pytest.raises(ApiError) as info:
        client.request("POST", "accounts", json={"name": "Only once"}, entity="account")
    assert "not sent again" in str(info.value)
    assert sleeps == []
    assert len(logged(emu, "/accounts", 1)) == 1
    created = client.get_json("accounts", params=build_query(filter="name eq 'Only once'"))
    assert len(created["value"]) == 1  # the reset came after the service created it


def test_post_marked_idempotent_is_resent(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    (account_id,) = emu.row_ids("account", 1)
    emu.faults.script([Fault("reset"), Fault("status", status=503)])
    response = client.request(
        "POST",
        "$batch",
        data=_batch_patch(client, account_id, "Batched"),
        headers={"Content-Type": "multipart/mixed; boundary=batch_x"},
        idempotent=True,
    )
    assert response.status_code == 200
    assert sleeps == [1.0, 2.0]
    row = emu.get_row("account", account_id)
    assert row is not None and row["name"] == "Batched"


def _batch_patch(client: DataverseClient, account_id: str, name: str) -> bytes:
    url = entity_url(client.base_url, "accounts", account_id)
    lines = [
        "--batch_x",
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        f"PATCH {url} HTTP/1.1",
        "Content-Type: application/json",
        "",
        f'{{"name": "{name}"}}',
        "--batch_x--",
        "",
    ]
    return "\r\n".join(lines).encode()


# -- authentication ----------------------------------------------------------------------------


def test_401_after_revocation_refreshes_once(
    emu: Emulator, client: DataverseClient, tokens: MsalTokens
) -> None:
    _accounts(client)
    emu.revoke_all_tokens()
    assert len(_accounts(client)) == COUNTS["account"]
    assert tokens.refreshes == 1
    assert len(tokens.issued) == 2
    assert [e.status for e in logged(emu, "/accounts", 3)] == [200, 401, 200]
    assert client.stats.snapshot()["token_refreshes"] == 1
    _accounts(client)
    assert tokens.refreshes == 1


def test_retry_after_refresh_carries_the_new_token(
    emu: Emulator, client: DataverseClient, tokens: MsalTokens, sleeps: Sleeps
) -> None:
    _accounts(client)
    emu.expire_access_tokens()
    emu.faults.script([None, Fault("status", status=503)])
    assert len(_accounts(client)) == COUNTS["account"]
    assert [e.status for e in logged(emu, "/accounts", 4)] == [200, 401, 503, 200]
    assert tokens.refreshes == 1 and sleeps == [1.0]


def test_second_401_fails_with_the_token_hint(emu: Emulator, sleeps: Sleeps) -> None:
    bogus = BogusTokens()
    with DataverseClient(emu.url, bogus, sleep=sleeps) as client, pytest.raises(ApiError) as info:
        _accounts(client)
    err = info.value
    assert err.status == 401
    assert bogus.calls.count(True) == 1
    assert len(logged(emu, "/accounts", 2)) == 2
    assert sleeps == []
    assert (
        "The token was refused: check that the app has permission for environment_url "
        f"{emu.url}" in str(err)
    )
    assert "application user" in str(err)
    assert "not-a-real-token" not in str(err)


def test_concurrent_401s_share_one_refresh(emu: Emulator, tokens: MsalTokens) -> None:
    with DataverseClient(emu.url, tokens, sleep=Sleeps(), max_connections=8) as client:
        _accounts(client)
        emu.revoke_all_tokens()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: len(_accounts(client)), range(16)))
    assert results == [COUNTS["account"]] * 16
    assert tokens.refreshes == 1


# -- errors with hints -------------------------------------------------------------------------


def test_denied_table_gives_the_security_role_hint(emu: Emulator, client: DataverseClient) -> None:
    assert emu.service is not None
    emu.service.settings.denied_tables["*"] = {"lead"}
    with pytest.raises(ApiError) as info:
        client.get_json("leads", params=build_query(select=["subject"]))
    err = info.value
    assert err.status == 403 and err.code == "0x80040220"
    assert not err.retryable
    assert (
        "The user or application user needs a security role with read access to table 'lead' "
        "(prvReadlead)." in str(err)
    )
    assert err.request_id
    assert len(logged(emu, "/leads", 1)) == 1


def test_malformed_filter_gives_the_query_hint(emu: Emulator, client: DataverseClient) -> None:
    with pytest.raises(ApiError) as info:
        client.get_json("accounts", params=build_query(filter="name eq 'unterminated"))
    err = info.value
    assert err.status == 400
    assert "unterminated literal" in err.service_message
    assert "The query is malformed:" in str(err)
    assert len(logged(emu, "/accounts", 1)) == 1


def test_unknown_column_gives_the_query_hint(client: DataverseClient) -> None:
    with pytest.raises(ApiError, match="The query is malformed"):
        client.get_json("accounts", params=build_query(select=["no_such_column"]))


def test_unknown_entity_set_gives_the_table_hint(client: DataverseClient) -> None:
    with pytest.raises(ApiError) as info:
        client.get_json("new_nosuchthings", params=build_query(select=["name"]))
    err = info.value
    assert err.status == 404
    assert err.entity == "new_nosuchthings"
    assert (
        "Check the table name 'new_nosuchthings' and that the table exists in this environment."
        in str(err)
    )


def test_missing_row_has_no_table_hint(client: DataverseClient) -> None:
    url = entity_url(client.base_url, "accounts", "00000000-0000-0000-0000-000000000001")
    with pytest.raises(ApiError) as info:
        client.get_json(url, entity="account")
    assert info.value.status == 404 and "Check the table name" not in str(info.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_host_gives_the_cannot_reach_sentence(sleeps: Sleeps) -> None:
    port = _closed_port()
    with (
        DataverseClient(
            f"https://127.0.0.1:{port}", BogusTokens(), sleep=sleeps, jitter=0, max_retries=2
        ) as client,
        pytest.raises(ApiError) as info,
    ):
        client.get_json("accounts")
    err = info.value
    assert err.status == 0
    assert (
        f"Cannot reach 127.0.0.1:{port}: check environment_url (and REQUESTS_CA_BUNDLE for a "
        "private CA)." in str(err)
    )
    assert "connection refused" in str(err)
    assert sleeps == [1.0, 2.0]


def test_untrusted_certificate_fails_at_once(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with (
        DataverseClient(emu.url, BogusTokens(), sleep=sleeps) as client,
        pytest.raises(ApiError) as info,
    ):
        client.get_json("accounts")
    assert "TLS certificate verification failed" in str(info.value)
    assert f"Cannot reach {emu.url.removeprefix('https://')}: check environment_url" in str(
        info.value
    )
    assert sleeps == []


def test_foreign_next_link_is_refused(client: DataverseClient) -> None:
    with pytest.raises(ConfigError, match="not the environment_url host"):
        client.get_json("https://evil.example/api/data/v9.2/accounts?$skiptoken=1")


@pytest.mark.parametrize(
    "url",
    [
        "http://org.crm.dynamics.com",
        "org.crm.dynamics.com",
        "https://org.crm.dynamics.com/other/path",
        "https://",
    ],
)
def test_bad_environment_url(url: str) -> None:
    with pytest.raises(ConfigError, match="environment_url"):
        DataverseClient(url, BogusTokens())


def test_environment_url_is_normalised() -> None:
    with DataverseClient("https://ORG.crm.dynamics.com:443/api/data/v9.2/", BogusTokens()) as c:
        assert c.environment_url == "https://org.crm.dynamics.com"
        assert c.base_url == "https://org.crm.dynamics.com/api/data/v9.2"


# -- streaming, concurrency, logs --------------------------------------------------------------


def test_iter_bytes_streams_metadata_and_retries_a_cut_off_start(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    whole = b"".join(client.iter_bytes("$metadata", 4096))
    assert whole.startswith(b"<?xml") and whole.rstrip().endswith(b"</edmx:Edmx>")
    emu.faults.script([Fault("status", status=503), Fault("truncate")])
    again = b"".join(client.iter_bytes("$metadata", len(whole) * 2))
    assert again == whole
    assert sleeps == [1.0, 1.0]


def test_concurrent_requests_with_random_faults(emu: Emulator, tokens: MsalTokens) -> None:
    emu.faults.randomly(
        0.3,
        [Fault("status", status=503), Fault("status", status=429, retry_after=0), Fault("reset")],
        seed=7,
    )
    sleeps = Sleeps()
    with DataverseClient(emu.url, tokens, sleep=sleeps, max_retries=10, max_connections=4) as c:
        with ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(lambda _: len(_accounts(c)), range(40)))
        stats = c.stats.snapshot()
    assert sizes == [COUNTS["account"]] * 40
    injected = len(emu.faults.injected)
    assert injected > 0
    assert stats["requests"] == 40 + injected
    assert stats["retries"] == injected == len(sleeps)
    assert stats["statuses"][200] == 40


def test_logs_never_show_the_token(
    emu: Emulator,
    client: DataverseClient,
    tokens: MsalTokens,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _accounts(client)
    emu.revoke_all_tokens()
    emu.faults.script([None, Fault("status", status=429, retry_after=1), Fault("reset")])
    _accounts(client)
    with pytest.raises(ApiError) as info:
        client.get_json("new_nosuchthings")
    assert len(tokens.issued) == 2
    text = caplog.text + str(info.value)
    for token in tokens.issued:
        assert token not in text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dynamics_api"))
    assert "Bearer" not in ours and "authorization" not in ours.lower()
    assert "Dataverse answered 429 on GET /api/data/v9.2/accounts: retry 1 of 6 in 1.00 s" in text
    assert "connection" in text and "retry 2 of 6" in text
    assert all(
        "authorization" not in e.headers and "Authorization" not in e.headers
        for e in logged(emu, "/api/data/")
    )


def test_a_429_holds_every_request_of_the_client(
    emu: Emulator, client: DataverseClient, sleeps: Sleeps
) -> None:
    """The service throttles the user, not the connection: after a 429 with Retry-After, other
    threads of the same client wait for it too (the refused request waits once, not twice)."""
    emu.faults.script([Fault("status", status=429, retry_after=30)])
    assert len(_accounts(client)) == COUNTS["account"]
    assert sleeps == [30.0]  # the refused request: Retry-After, exactly
    other: list[int] = []
    worker = threading.Thread(target=lambda: other.append(len(_accounts(client))))
    worker.start()
    worker.join(timeout=60)
    assert other == [COUNTS["account"]]
    # The other thread's request waited for what was left of the 30 s (the sleeps are recorded,
    # not slept, so almost all of it), before it was sent.
    assert len(sleeps) == 2 and 25.0 < sleeps[1] <= 30.0
    assert client.stats.snapshot()["held_waits"] == 1
    assert [e.status for e in emu.requests("/accounts")] == [429, 200, 200]
