"""target-dynamics end to end: .singer fixtures through the real CLI into the emulator."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator
from tests.tapharness import discover, run_tap, select
from tests.targetharness import (
    fixture_lines,
    messages_text,
    record_message,
    run_target,
    schema_message,
)

BY_NUMBER = {"stream_options": {"account": {"key": ["accountnumber"]}}}


def _account_by_number(emu: Emulator, number: str) -> dict[str, Any] | None:
    assert emu.store is not None
    return emu.store.get_row(emu.model["account"], {"accountnumber": number})


def _batches(emu: Emulator) -> list[Any]:
    return [e for e in emu.requests("/$batch") if e.method == "POST"]


def test_upsert_by_alternate_key_fixture(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    before = _account_by_number(emu, "ACC-000001")
    assert before is not None
    run = run_target(
        emu,
        tmp_path,
        fixture_lines("accounts_by_number.singer"),
        config={
            **BY_NUMBER,
            "write_method": "batch",
            "batch_size_rows": 2,
            "max_parallel_batches": 1,
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.dead_letters == []
    row = _account_by_number(emu, "ACC-000001")
    assert row is not None and row["accountid"] == before["accountid"]
    assert row["industrycode"] == 1 and row["numberofemployees"] == 100
    assert row["revenue"] == pytest.approx(1234567.89)
    assert row["description"] == "Enriched 1"
    assert row["lastusedincampaign"] == "2024-03-01T08:00:00Z"  # converted to UTC
    new = _account_by_number(emu, "NEW-O'Brien/100%")
    assert new is not None and new["description"] == "brand new"
    batches = _batches(emu)
    assert [b.batch_operations for b in batches] == [2, 2, 2]
    assert all(b.status == 200 for b in batches)
    assert all(b.headers.get("prefer") == "odata.continue-on-error" for b in batches)
    assert run.states[-1] == {"bookmarks": {"account": {"n": 6}}}
    assert "6 written" in run.stderr


def test_validation_and_service_failures_are_dead_lettered(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    run = run_target(emu, tmp_path, fixture_lines("accounts_invalid.singer"), config=BY_NUMBER)
    assert run.returncode == 1
    assert "9 record(s) were not written" in run.stderr
    by_key = {json.dumps(d["key"]): d for d in run.dead_letters}
    assert len(run.dead_letters) == 9

    def dead(number: str | None) -> dict[str, Any]:
        return by_key[json.dumps({"accountnumber": number})]

    assert "does not exist on table 'account'" in dead("ACC-000011")["message"]
    assert "read-only" in dead("ACC-000012")["message"]
    assert "whole number" in dead("ACC-000013")["message"]
    assert "GUID" in dead("ACC-000014")["message"]
    assert "missing" in dead(None)["message"]
    assert "nosuchtable" in dead("ACC-000015")["message"]
    # Over the column's length: known from EntityDefinitions (CSDL has no MaxLength), so caught
    # before sending, like the other invalid records.
    assert "longer than 160 characters" in dead("ACC-000016")["message"]
    for number in (
        "ACC-000011",
        "ACC-000012",
        "ACC-000013",
        "ACC-000014",
        "ACC-000015",
        "ACC-000016",
    ):
        assert dead(number)["code"] == "invalid" and dead(number)["status"] is None
    assert (dead("ACC-000017")["status"], dead("ACC-000017")["code"]) == (400, "0x8004431A")
    assert (dead("ACC-000018")["status"], dead("ACC-000018")["code"]) == (404, "0x80040217")
    assert dead("ACC-000016")["record"]["name"] == "x" * 200  # the user's data is kept
    assert all(
        set(d) == {"stream", "record", "status", "code", "message", "key", "operation", "time"}
        and d["operation"] == "upsert"
        for d in run.dead_letters
    )
    # Invalid records never reached the service: one batch of the 3 valid-looking ones.
    assert [b.batch_operations for b in _batches(emu)] == [3]
    assert _account_by_number(emu, "ACC-000010")["industrycode"] == 2  # type: ignore[index]
    assert emu.client_secret not in run.stderr + json.dumps(run.dead_letters)
    # Every record was written or dead-lettered: the STATE is released.
    assert run.states == [{"done": True}]


def test_max_failed_records_relaxes_the_exit_code(fresh_emulator: Emulator, tmp_path: Path) -> None:
    run = run_target(
        fresh_emulator,
        tmp_path,
        fixture_lines("accounts_invalid.singer"),
        config={**BY_NUMBER, "max_failed_records": 9},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.dead_letters) == 9


def test_dry_run_writes_nothing(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    run = run_target(
        emu,
        tmp_path,
        fixture_lines("accounts_invalid.singer"),
        config={**BY_NUMBER, "dry_run": True, "max_failed_records": 100},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # Reads only: $metadata, and the text column lengths from EntityDefinitions.
    assert [e.method for e in emu.requests()] == ["GET", "GET", "GET"]
    assert not [e for e in emu.requests() if "$batch" in e.path]
    assert len(run.dead_letters) == 7  # the invalid ones (the over-long name too); nothing sent
    assert "Dry run summary" in run.stderr


def test_undeclared_key_fails_before_any_write(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    run = run_target(
        emu,
        tmp_path,
        fixture_lines("accounts_by_number.singer"),
        config={"stream_options": {"account": {"key": ["name"]}, "contact": {"mode": "create"}}},
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("target-dynamics: The setting stream_options.account.key (name) is not")
    assert "accountnumber" in last
    assert _batches(emu) == []
    assert run.states == []


def test_unknown_table_and_bad_lookup_config(fresh_emulator: Emulator, tmp_path: Path) -> None:
    run = run_target(
        fresh_emulator,
        tmp_path,
        fixture_lines("accounts_by_number.singer"),
        config={
            "stream_options": {
                "account": {"key": ["accountnumber"], "lookups": {"primarycontactid": "account"}}
            }
        },
    )
    assert run.returncode == 1
    assert "can point at contact" in run.stderr.strip().splitlines()[-1]
    run2 = run_target(
        fresh_emulator,
        tmp_path / "2",
        fixture_lines("accounts_by_number.singer"),
        config={"stream_options": {"account": {"entity": "nosuchtable"}}},
    )
    assert run2.returncode == 1
    assert "nosuchtable" in run2.stderr.strip().splitlines()[-1]
    assert _batches(fresh_emulator) == []


def test_binds_use_exact_nav_names_polymorphic_and_alternate_keys(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    account = emu.row_ids("account", 2)
    contact = emu.row_ids("contact", 1)[0]
    incident = emu.row_ids("incident", 2)
    msgs = [
        schema_message("new_project"),
        # custom table: nav name new_AccountId (case-sensitive), composite alternate key
        record_message(
            "new_project",
            {
                "new_code": "P-1",
                "_new_accountid_value": account[0],
                "new_name": "Bound",
                "new_startdate": "2024-05-06",
                "new_hoursestimate": 12.25,
            },
        ),
        schema_message("incident"),
        record_message(
            "incident",
            {
                "incidentid": incident[0],
                "_customerid_value": contact,
                "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname": "contact",
            },
        ),
        record_message("incident", {"incidentid": incident[1], "customerid": account[1]}),
        schema_message("account"),
        record_message("account", {"accountid": account[1], "parentaccountid": "ACC-000001"}),
    ]
    run = run_target(
        emu,
        tmp_path,
        messages_text(msgs),
        config={
            "stream_options": {
                "new_project": {"key": ["new_code", "new_accountid"]},
                "incident": {"lookups": {"customerid": "account"}},
                "account": {
                    "lookups": {"parentaccountid": {"table": "account", "key": ["accountnumber"]}}
                },
            }
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert emu.store is not None
    proj = emu.store.get_row(emu.model["new_project"], {"new_code": "P-1"})
    assert proj is not None and proj["_new_accountid_value"] == account[0]
    assert proj["new_startdate"] == "2024-05-06" and proj["new_name"] == "Bound"
    inc0 = emu.get_row("incident", incident[0])
    inc1 = emu.get_row("incident", incident[1])
    assert inc0 is not None and inc1 is not None
    assert inc0["_customerid_value"] == contact
    assert inc0["_customerid_value@lookuplogicalname"] == "contact"
    assert inc1["_customerid_value"] == account[1]
    assert inc1["_customerid_value@lookuplogicalname"] == "account"
    parent = _account_by_number(emu, "ACC-000001")
    acc1 = emu.get_row("account", account[1])
    assert parent is not None and acc1 is not None
    assert acc1["_parentaccountid_value"] == parent["accountid"]


def test_update_and_create_modes(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    msgs = [
        schema_message("account"),
        record_message("account", {"accountnumber": "ACC-000003", "description": "updated"}),
        record_message("account", {"accountnumber": "NOPE-1", "description": "never created"}),
    ]
    run = run_target(
        emu,
        tmp_path,
        messages_text(msgs),
        config={"stream_options": {"account": {"key": ["accountnumber"], "mode": "update"}}},
    )
    assert run.returncode == 1
    assert _account_by_number(emu, "ACC-000003")["description"] == "updated"  # type: ignore[index]
    assert _account_by_number(emu, "NOPE-1") is None
    (dead,) = run.dead_letters
    assert dead["status"] == 404 and dead["key"] == {"accountnumber": "NOPE-1"}
    assert "1 updated" in run.stderr

    run2 = run_target(
        emu,
        tmp_path / "c",
        messages_text(msgs),
        config={"stream_options": {"account": {"key": ["accountnumber"], "mode": "create"}}},
    )
    assert run2.returncode == 1
    (dead2,) = run2.dead_letters
    assert dead2["status"] == 412 and dead2["key"] == {"accountnumber": "ACC-000003"}
    assert _account_by_number(emu, "NOPE-1")["description"] == "never created"  # type: ignore[index]
    assert "1 created" in run2.stderr


def _five_records() -> str:
    msgs: list[dict[str, Any]] = [schema_message("account")]
    msgs += [
        record_message("account", {"accountnumber": f"ACC-{i:06d}", "description": f"r{i}"})
        for i in range(20, 25)
    ]
    msgs.append({"type": "STATE", "value": {"n": 5}})
    return messages_text(msgs)


#: The two ways records are written: (write_method, the path of their requests).
METHODS = [
    pytest.param(("batch", "$batch"), id="batch"),
    pytest.param(("auto", "Microsoft.Dynamics.CRM.UpsertMultiple"), id="bulk"),
]


WHOLE_REQUEST_FAULTS = [
    pytest.param(Fault("status", status=429, retry_after=1), id="whole-request-429-retry-after"),
    pytest.param(Fault("status", status=503), id="whole-request-503"),
    pytest.param(Fault("reset"), id="reset-mid-request"),
    pytest.param(Fault("truncate"), id="truncated-response"),
]


@pytest.mark.parametrize(
    ("fault", "method"),
    [
        pytest.param(f.values[0], m.values[0], id=f"{f.id}-{m.id}")
        for f in WHOLE_REQUEST_FAULTS
        for m in METHODS
        # An UpsertMultiple answer (204) has no body to cut short.
        if not (f.id == "truncated-response" and m.id == "bulk")
    ],
)
def test_whole_request_failures_are_retried(
    fresh_emulator: Emulator, tmp_path: Path, fault: Fault, method: tuple[str, str]
) -> None:
    emu = fresh_emulator
    write_method, path = method
    emu.faults.add(fault, times=1, path_contains=path)
    started = time.monotonic()
    run = run_target(
        emu, tmp_path, _five_records(), config={**BY_NUMBER, "write_method": write_method}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.dead_letters == []
    for i in range(20, 25):
        assert _account_by_number(emu, f"ACC-{i:06d}")["description"] == f"r{i}"  # type: ignore[index]
    attempts = [e for e in emu.log if e.path.endswith(path)]
    assert len(attempts) == 2
    assert len(emu.faults.injected) == 1
    if fault.status == 429 and fault.kind == "status":
        assert time.monotonic() - started >= 1.0  # waited the Retry-After
    assert run.states == [{"n": 5}]


@pytest.mark.parametrize("method", METHODS)
def test_fatal_failure_releases_no_state(
    fresh_emulator: Emulator, tmp_path: Path, method: tuple[str, str]
) -> None:
    emu = fresh_emulator
    write_method, path = method
    emu.faults.add(Fault("status", status=503), times=100, path_contains=path)
    run = run_target(
        emu,
        tmp_path,
        _five_records(),
        config={**BY_NUMBER, "max_retries": 1, "write_method": write_method},
    )
    assert run.dead_letters == []  # a failure of the service is not a failure of the records
    assert run.returncode == 1
    assert run.states == []  # the records before the STATE were neither written nor dead-lettered
    assert run.stderr.strip().splitlines()[-1].startswith("target-dynamics: ")
    assert "503" in run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("method", METHODS)
def test_revoked_token_mid_run(
    fresh_emulator: Emulator, tmp_path: Path, method: tuple[str, str]
) -> None:
    emu = fresh_emulator
    write_method, path = method
    emu.faults.add(Fault("slow", delay=1.0), times=1, path_contains=path)
    msgs: list[dict[str, Any]] = [schema_message("account")]
    msgs += [
        record_message("account", {"accountnumber": f"ACC-{i:06d}", "sic": f"S{i}"})
        for i in range(30, 90)
    ]
    stop = threading.Event()
    injected = len(emu.faults.injected)

    def revoke_while_the_first_batch_is_slow() -> None:
        # Revoke while the slow first batch is being answered (its fault is picked when it
        # arrives, then it is held 1 s): every later request meets the revoked token. (Waiting
        # for the batch in the log instead, written just before its answer is sent, raced the
        # target's next request: on a loaded machine the revocation came a request or more late,
        # and with the last request it would come too late.)
        while not stop.is_set():
            if len(emu.faults.injected) > injected:
                emu.revoke_all_tokens()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=revoke_while_the_first_batch_is_slow)
    watcher.start()
    try:
        run = run_target(
            emu,
            tmp_path,
            messages_text(msgs),
            config={
                **BY_NUMBER,
                "write_method": write_method,
                "batch_size_rows": 10,
                "bulk_size_rows": 10,
                "max_parallel_batches": 1,
            },
        )
    finally:
        stop.set()
        watcher.join()
    assert run.returncode == 0, run.stderr[-3000:]
    assert any(e.status == 401 for e in emu.requests(path))
    for i in range(30, 90):
        assert _account_by_number(emu, f"ACC-{i:06d}")["sic"] == f"S{i}"  # type: ignore[index]


@pytest.mark.parametrize("method", METHODS)
def test_roundtrip_tap_accounts_through_target_unchanged(
    fresh_emulator: Emulator, tmp_path: Path, method: tuple[str, str]
) -> None:
    emu = fresh_emulator
    catalog = discover(emu, tmp_path / "tap")
    writable = [
        "accountid",
        "name",
        "accountnumber",
        "revenue",
        "numberofemployees",
        "industrycode",
        "creditonhold",
        "description",
        "lastusedincampaign",
        "address1_latitude",
        "_primarycontactid_value",
        "_parentaccountid_value",
    ]
    tap = run_tap(
        emu, tmp_path / "tap", catalog=select(catalog, ["account"], {"account": writable})
    )
    assert tap.returncode == 0, tap.stderr[-2000:]
    before = tap.records("account")
    assert len(before) >= 100
    emu.clear_log()
    run = run_target(
        emu,
        tmp_path / "target",
        tap.stdout,
        # The tap always emits its replication key; it is read-only, so a stream map drops it.
        config={
            "write_method": method[0],
            "batch_size_rows": 200,
            "bulk_size_rows": 200,
            "max_parallel_batches": 4,
            "stream_maps": {"account": {"modifiedon": None}},
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.dead_letters == []
    if method[0] == "batch":
        assert all(b.batch_operations <= 200 for b in _batches(emu))
        assert sum(b.batch_operations or 0 for b in _batches(emu)) == len(before)
    else:  # by primary id: UpsertMultiple with @odata.id accounts(<id>), 200 rows a request
        assert _batches(emu) == []
        assert len(emu.requests(method[1])) == -(-len(before) // 200)
    again = run_tap(
        emu, tmp_path / "tap2", catalog=select(catalog, ["account"], {"account": writable})
    )
    after = {r["accountid"]: r for r in again.records("account")}
    assert len(after) == len(before)
    for rec in before:
        got = dict(after[rec["accountid"]])
        assert got.pop("modifiedon") >= rec["modifiedon"]
        assert got == {k: v for k, v in rec.items() if k != "modifiedon"}
