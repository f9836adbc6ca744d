"""Bad input: wrong settings give one clear sentence (no traceback, no secret) and a non-zero exit;
bad records are dead-lettered with the reason and never reach the service; property-based tests of
the parsers that read what the service sends (CSDL, ``$batch``) and the OData quoting.

Already covered elsewhere and not repeated here:
tests/integration/test_target.py::test_validation_and_service_failures_are_dead_lettered (unknown
columns, read-only columns, wrong types, invalid GUIDs, a missing key, an unknown lookup table, and a
string over the column's length, known from EntityDefinitions and refused before sending),
tests/unit/test_metadata_xmlguard.py::test_dtd_is_refused_before_parsing (billion laughs, external
entities), tests/unit/test_batch.py::test_decode_refuses_malformed and the round trips of
tests/unit/test_odata.py and tests/unit/test_batch.py.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamics_api.batch import BatchDecodeError, decode_batch_response
from dynamics_api.metadata import MetadataError, parse_metadata
from dynamics_api.odata import key_segment, literal, quote_string
from dynamics_emulator.server import Emulator
from tests.integration.test_auth import first_refresh_token
from tests.tapharness import discover, run_tap, select
from tests.targetharness import messages_text, record_message, run_target

# -- bad settings --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _account_input() -> str:
    return messages_text(
        [
            {
                "type": "SCHEMA",
                "stream": "account",
                "key_properties": ["accountid"],
                "schema": {"type": "object", "properties": {}},
            },
            record_message("account", {"accountid": str(uuid.uuid4()), "name": "Bad input"}),
        ]
    )


def _one_sentence(cli: str, stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(f"{cli}:")]
    assert len(lines) == 1, stderr[-3000:]
    line = lines[0]
    assert len(line) < 600, line
    assert line.rstrip().endswith((".", ")")), line
    return line


@pytest.fixture(scope="module")
def bad_emu() -> Iterator[Emulator]:
    with Emulator(counts={"account": 20, "systemuser": 3, "transactioncurrency": 4}) as emu:
        yield emu


def _run(
    cli: str, emu: Emulator, tmp: Path, config: dict[str, Any], catalog: dict[str, Any] | None
) -> tuple[int, str, str]:
    if cli == "tap-dynamics":
        tap = run_tap(emu, tmp, config=config, catalog=catalog, timeout=120)
        return tap.returncode, tap.stdout, tap.stderr
    target = run_target(emu, tmp, _account_input(), config=config, timeout=120)
    return target.returncode, target.stdout, target.stderr


def _bad_configs(emu: Emulator) -> dict[str, tuple[dict[str, Any], str]]:
    """case -> (settings over the emulator's, a word the sentence must contain)."""
    closed = f"https://127.0.0.1:{_free_port()}"
    return {
        "missing-environment-url": ({"environment_url": None}, "environment_url"),
        "malformed-environment-url": (
            {"environment_url": "contoso crm dynamics"},
            "environment_url",
        ),
        "http-url": ({"environment_url": emu.url.replace("https://", "http://")}, "https"),
        "closed-port-host": ({"environment_url": closed, "max_retries": 1}, "127.0.0.1"),
        "wrong-secret": ({"client_secret": "WRONG-SECRET-" + uuid.uuid4().hex}, "client_secret"),
        "unknown-tenant": ({"tenant_id": str(uuid.uuid4())}, "tenant"),
    }


BAD_CONFIG_CASES: list[Any] = [
    "missing-environment-url",
    "malformed-environment-url",
    "http-url",
    "closed-port-host",
    "wrong-secret",
    "unknown-tenant",
]


@pytest.mark.parametrize("cli", ["tap-dynamics", "target-dynamics"])
@pytest.mark.parametrize("case", BAD_CONFIG_CASES)
def test_bad_settings_one_sentence(
    bad_emu: Emulator, tmp_path: Path, catalog_account: dict[str, Any], cli: str, case: str
) -> None:
    overrides, word = _bad_configs(bad_emu)[case]
    config = {k: v for k, v in overrides.items() if v is not None}
    if any(v is None for v in overrides.values()):
        # Settings the harness fills in are removed by writing them as JSON null... not allowed:
        # drop them from the file instead.
        config["__drop__"] = [k for k, v in overrides.items() if v is None]
    code, out, err = _run_dropping(cli, bad_emu, tmp_path, config, catalog_account)
    assert code != 0
    line = _one_sentence(cli, err)
    assert word.lower() in line.lower(), line
    assert bad_emu.client_secret not in out + err
    for value in overrides.values():
        if isinstance(value, str) and "SECRET" in value:
            assert value not in out + err


def _run_dropping(
    cli: str, emu: Emulator, tmp: Path, config: dict[str, Any], catalog: dict[str, Any] | None
) -> tuple[int, str, str]:
    drop = config.pop("__drop__", [])
    if not drop:
        return _run(cli, emu, tmp, config, catalog)
    # The harnesses start from emu.tap_config(); a wrapper emulator view removes the settings.
    original = emu.tap_config

    def without(**overrides: Any) -> dict[str, Any]:
        cfg = original(**overrides)
        for k in drop:
            cfg.pop(k, None)
        return cfg

    emu.tap_config = without  # type: ignore[method-assign]
    try:
        return _run(cli, emu, tmp, config, catalog)
    finally:
        emu.tap_config = original  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def catalog_account(bad_emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return select(discover(bad_emu, tmp_path_factory.mktemp("cat")), ["account"])


@pytest.mark.parametrize("cli", ["tap-dynamics", "target-dynamics"])
def test_revoked_refresh_token_one_sentence(tmp_path: Path, cli: str) -> None:
    with Emulator(counts={"account": 5, "systemuser": 3, "transactioncurrency": 4}) as emu:
        catalog = select(discover(emu, tmp_path / "d"), ["account"])
        rt = first_refresh_token(emu)
        emu.revoke_all_tokens()
        config = {
            "client_id": emu.public_client_id,
            "refresh_token": rt,
            "token_cache_path": str(tmp_path / "tokens.json"),
        }
        original = emu.tap_config

        def delegated(**overrides: Any) -> dict[str, Any]:
            cfg = original(**overrides)
            cfg.pop("client_secret", None)
            return cfg

        emu.tap_config = delegated  # type: ignore[method-assign]
        code, out, err = _run(cli, emu, tmp_path / "run", config, catalog)
    assert code != 0
    line = _one_sentence(cli, err)
    assert "refresh" in line.lower() or "sign in" in line.lower(), line
    assert rt not in out + err


@pytest.mark.parametrize(
    "cli",
    [
        "tap-dynamics",
        "target-dynamics",
    ],
)
def test_no_privilege_on_the_table_one_sentence(tmp_path: Path, cli: str) -> None:
    with Emulator(counts={"account": 5, "systemuser": 3, "transactioncurrency": 4}) as emu:
        catalog = select(discover(emu, tmp_path / "d"), ["account"])
        emu.service.settings.denied_tables["*"] = {"account"}  # type: ignore[union-attr]
        assert emu.store is not None
        before = emu.store.count(emu.model["account"])
        code, out, err = _run(cli, emu, tmp_path / "run", {}, catalog)
        after = emu.store.count(emu.model["account"])
    assert code != 0
    line = _one_sentence(cli, err)
    assert "account" in line and "security role" in line, line
    assert emu.client_secret not in out + err
    assert after == before  # the service refused every write (the target's part got a 403)


# -- bad records ---------------------------------------------------------------------------------

INJECTIONS = ["x') or (1 eq 1", "../../$batch", "a\r\nGET /api/data/v9.2/accounts HTTP/1.1\r\n"]


def test_injection_in_primary_keys_and_lookups_is_dead_lettered(
    bad_emu: Emulator, tmp_path: Path
) -> None:
    """Primary ids and lookups must be GUIDs: anything else is refused before a request is built.
    Alternate-key values are strings: quoted, they address a row by their exact value."""
    emu = bad_emu
    msgs: list[dict[str, Any]] = [
        {
            "type": "SCHEMA",
            "stream": "account",
            "key_properties": ["accountid"],
            "schema": {"type": "object", "properties": {}},
        }
    ]
    for i, bad in enumerate(INJECTIONS):
        msgs.append(record_message("account", {"accountid": bad, "name": f"pk {i}"}))
        msgs.append(
            record_message(
                "account",
                {
                    "accountid": str(uuid.uuid4()),
                    "name": f"lookup {i}",
                    "_parentaccountid_value": bad,
                },
            )
        )
        msgs.append(
            record_message(
                "account",
                {
                    "accountid": str(uuid.uuid4()),
                    "name": f"typed lookup {i}",
                    "_parentaccountid_value": str(uuid.uuid4()),
                    "_parentaccountid_value@Microsoft.Dynamics.CRM.lookuplogicalname": bad,
                },
            )
        )
    emu.clear_log()
    before = set(emu.row_ids("account"))
    run = run_target(emu, tmp_path, messages_text(msgs), config={"max_failed_records": 100})
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(run.dead_letters) == 3 * len(INJECTIONS)
    for dead in run.dead_letters:
        assert dead["code"] == "invalid" and dead["status"] is None
        assert dead["message"], dead
    assert emu.requests("$batch") == []  # nothing reached the service
    assert set(emu.row_ids("account")) == before


@pytest.mark.parametrize(
    ("write_method", "path"),
    [
        pytest.param("batch", "/api/data/v9.2/$batch", id="batch"),
        # In a bulk message the key travels in the target's @odata.id, inside the JSON body.
        pytest.param(
            "auto", "/api/data/v9.2/accounts/Microsoft.Dynamics.CRM.UpsertMultiple", id="bulk"
        ),
    ],
)
def test_injection_in_alternate_key_values_stays_a_literal(
    bad_emu: Emulator, tmp_path: Path, write_method: str, path: str
) -> None:
    emu = bad_emu
    # New values for each way of writing (the emulator is the module's).
    values = [f"{write_method}{v}" for v in ("x') or (1 eq 1", "../../$batch", "O'Brien/100%#?&")]
    msgs: list[dict[str, Any]] = [
        {
            "type": "SCHEMA",
            "stream": "account",
            "key_properties": ["accountnumber"],
            "schema": {"type": "object", "properties": {}},
        }
    ]
    msgs += [
        record_message("account", {"accountnumber": v, "name": f"alt {i}"})
        for i, v in enumerate(values)
    ]
    before = set(emu.row_ids("account"))
    emu.clear_log()
    run = run_target(
        emu,
        tmp_path,
        messages_text(msgs),
        config={
            "stream_options": {"account": {"key": ["accountnumber"]}},
            "write_method": write_method,
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.dead_letters == []
    assert emu.store is not None
    for i, v in enumerate(values):
        row = emu.store.get_row(emu.model["account"], {"accountnumber": v})
        assert row is not None and row["name"] == f"alt {i}"
    assert len(set(emu.row_ids("account")) - before) == len(values)  # created, nothing else
    writes = [e.path for e in emu.requests() if e.method != "GET"]
    assert writes == [path]


def test_cr_lf_in_alternate_key_is_dead_lettered_or_literal(
    bad_emu: Emulator, tmp_path: Path
) -> None:
    """A CR/LF in a key value must not split the request line inside the ``$batch`` body."""
    emu = bad_emu
    value = "CRLF\r\nPATCH /api/data/v9.2/accounts HTTP/1.1"
    msgs = [
        {
            "type": "SCHEMA",
            "stream": "account",
            "key_properties": ["accountnumber"],
            "schema": {"type": "object", "properties": {}},
        },
        record_message("account", {"accountnumber": value, "name": "crlf"}),
    ]
    before = set(emu.row_ids("account"))
    emu.clear_log()
    run = run_target(
        emu,
        tmp_path,
        messages_text(msgs),
        config={"stream_options": {"account": {"key": ["accountnumber"]}}, "max_failed_records": 1},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    batches = emu.requests("$batch")
    assert all(b.batch_operations == 1 for b in batches)  # the body was not split in two
    if run.dead_letters:
        # Refused by the plan, or by the service on the (encoded) key: never a second request.
        dead = run.dead_letters[0]
        assert dead["message"] and (dead["code"] == "invalid") == (batches == [])
        assert set(emu.row_ids("account")) == before
    else:
        assert [b.batch_operations for b in batches] == [1]
        new = set(emu.row_ids("account")) - before
        assert len(new) == 1
        assert emu.get_row("account", new.pop())["accountnumber"] == value  # type: ignore[index]


# -- property-based: OData quoting -----------------------------------------------------------------


def _unquote_odata(lit: str) -> str:
    assert lit.startswith("'") and lit.endswith("'")
    inner = lit[1:-1]
    # Every quote inside comes doubled: the literal cannot end early.
    assert "'" not in inner.replace("''", "")
    return inner.replace("''", "'")


@given(st.text())
def test_string_literal_is_one_closed_literal(text: str) -> None:
    lit = literal(text)
    decoded = unquote(lit) if lit != quote_string(text) else lit
    assert _unquote_odata(decoded) == text


@given(st.text(min_size=1))
def test_non_guid_text_is_never_a_guid_key(text: str) -> None:
    try:
        uuid.UUID(text)
    except ValueError:
        pass
    else:
        return
    with pytest.raises((ValueError, TypeError)):
        key_segment({"accountid": text}, {"accountid": "Edm.Guid"})


# -- property-based: the CSDL parser ---------------------------------------------------------------

SMALL_CSDL = b"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      <EntityType Name="crmbaseentity" Abstract="true"/>
      <EntityType Name="account" BaseType="mscrm.crmbaseentity">
        <Key><PropertyRef Name="accountid"/></Key>
        <Property Name="accountid" Type="Edm.Guid"/>
        <Property Name="name" Type="Edm.String" MaxLength="160"/>
        <Property Name="revenue" Type="Edm.Decimal" Scale="4"/>
        <Property Name="modifiedon" Type="Edm.DateTimeOffset"/>
        <Property Name="_parentaccountid_value" Type="Edm.Guid"/>
        <NavigationProperty Name="parentaccountid" Type="mscrm.account" Nullable="false" Partner="account_parent_account">
          <ReferentialConstraint Property="_parentaccountid_value" ReferencedProperty="accountid"/>
        </NavigationProperty>
      </EntityType>
      <EntityContainer Name="System">
        <EntitySet Name="accounts" EntityType="Microsoft.Dynamics.CRM.account"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>
"""


def test_small_csdl_parses() -> None:
    model = parse_metadata(SMALL_CSDL)
    assert "account" in model.entities


_mutation = st.tuples(
    st.sampled_from(["delete", "insert", "replace", "duplicate"]),
    st.integers(min_value=0, max_value=len(SMALL_CSDL) - 1),
    st.integers(min_value=1, max_value=40),
    st.binary(min_size=1, max_size=20)
    | st.sampled_from([b"<", b">", b"/>", b'"', b"&", b"&amp;", b"]]>", b"<!--", b"\x00", b"\xff"]),
)


def _mutate(doc: bytes, mutations: list[tuple[str, int, int, bytes]]) -> bytes:
    for kind, pos, length, data in mutations:
        pos %= max(1, len(doc))
        if kind == "delete":
            doc = doc[:pos] + doc[pos + length :]
        elif kind == "insert":
            doc = doc[:pos] + data + doc[pos:]
        elif kind == "replace":
            doc = doc[:pos] + data + doc[pos + len(data) :]
        else:
            doc = doc[:pos] + doc[pos : pos + length] + doc[pos:]
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_mutation, min_size=1, max_size=4))
def test_mutated_csdl_parses_or_raises_metadata_error(
    mutations: list[tuple[str, int, int, bytes]],
) -> None:
    doc = _mutate(SMALL_CSDL, mutations)
    with contextlib.suppress(MetadataError):
        parse_metadata(doc)


_entity_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(_entity_name, st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=3))
def test_entity_expansion_anywhere_is_refused(name: str, fanout: int, where: int) -> None:
    """A DTD with nested entities, placed before the root (after the declaration, a comment or
    whitespace), is refused before any expansion."""
    refs = "".join(f"&{name}0;" for _ in range(fanout))
    dtd = (
        f'<!DOCTYPE edmx:Edmx [<!ENTITY {name}0 "lol">'
        + "".join(f'<!ENTITY {name}{i} "{refs.replace("0;", f"{i - 1};")}">' for i in range(1, 6))
        + "]>"
    ).encode()
    head, _, rest = SMALL_CSDL.partition(b"?>\n")
    prefix = [b"", b"<!-- c -->\n", b"\n\n", b"<?pi x?>"][where]
    doc = head + b"?>\n" + prefix + dtd + rest.replace(b"System", f"&{name}5;".encode(), 1)
    with pytest.raises(MetadataError, match="DOCTYPE/ENTITY"):
        parse_metadata(doc)


# -- property-based: the $batch decoder ------------------------------------------------------------

_RESPONSE = (
    b"--batchresponse_1\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n"
    b"HTTP/1.1 204 No Content\r\n"
    b"OData-Version: 4.0\r\n\r\n\r\n"
    b"--batchresponse_1\r\n"
    b"Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
    b"--changesetresponse_2\r\n"
    b"Content-Type: application/http\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"Content-ID: 1\r\n\r\n"
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: application/json; odata.metadata=minimal\r\n\r\n"
    b'{"error":{"code":"0x80044331","message":"A validation error occurred."}}\r\n'
    b"--changesetresponse_2--\r\n"
    b"--batchresponse_1--\r\n"
)
_CTYPE = "multipart/mixed; boundary=batchresponse_1"


def test_batch_response_sample_decodes() -> None:
    results = decode_batch_response(_RESPONSE, _CTYPE)
    assert [r.status for r in results] == [204, 400]


_ascii_mutation = _mutation.filter(lambda m: m[3].isascii())


@settings(max_examples=150, deadline=None)
@given(st.lists(_ascii_mutation, min_size=1, max_size=4))
def test_mutated_batch_response_decodes_or_raises_its_error(
    mutations: list[tuple[str, int, int, bytes]],
) -> None:
    body = _mutate(_RESPONSE, mutations)
    try:
        results = decode_batch_response(body, _CTYPE)
    except BatchDecodeError:
        return
    for r in results:
        assert isinstance(r.status, int)
        r.error()  # never raises on a decoded part


def test_non_ascii_changeset_boundary_raises_its_error() -> None:
    body = _RESPONSE.replace(b"boundary=changesetresponse_2", b"boundary=\x80changesetresponse_2")
    with pytest.raises(BatchDecodeError):
        decode_batch_response(body, _CTYPE)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=2000), st.sampled_from([_CTYPE, "multipart/mixed", "application/json", ""])
)
def test_random_bytes_decode_or_raise_its_error(body: bytes, ctype: str) -> None:
    with contextlib.suppress(BatchDecodeError):
        decode_batch_response(body, ctype)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=len(_RESPONSE)))
def test_truncated_batch_response_decodes_or_raises_its_error(cut: int) -> None:
    with contextlib.suppress(BatchDecodeError):
        decode_batch_response(_RESPONSE[:cut], _CTYPE)


def test_mutation_helper_is_deterministic() -> None:
    rng = random.Random(1)
    muts = [("delete", rng.randrange(100), 3, b"x")]
    assert _mutate(SMALL_CSDL, muts) == _mutate(SMALL_CSDL, muts)
    assert json.dumps(len(_mutate(SMALL_CSDL, muts))) == str(len(SMALL_CSDL) - 3)
