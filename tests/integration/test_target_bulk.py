"""target-dynamics with the bulk messages, end to end through the real CLI into the emulator:
which tables use them, the fallback to ``$batch``, bad rows isolated without losing the good ones,
an elastic table's partial success, order per row, parallelism from ``x-ms-dop-hint``, and the
business-logic bypass."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator
from dynamics_emulator.service import ServiceSettings
from tests.targetharness import messages_text, record_message, run_target, schema_message

BY_NUMBER = {"stream_options": {"account": {"key": ["accountnumber"]}}}
UPSERT = "Microsoft.Dynamics.CRM.UpsertMultiple"
SMALL = {"systemuser": 5, "team": 2, "transactioncurrency": 4, "contact": 20, "account": 20}


@pytest.fixture
def emu() -> Any:
    with Emulator(counts=SMALL) as emulator:
        yield emulator


def _accounts(n: int, prefix: str = "BK", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "accountnumber": f"{prefix}-{i:05d}",
            "name": f"{prefix} {i}",
            "numberofemployees": i,
            **extra,
        }
        for i in range(n)
    ]


def _text(records: list[dict[str, Any]], stream: str = "account") -> str:
    return messages_text(
        [
            schema_message(stream),
            *(record_message(stream, r) for r in records),
            {"type": "STATE", "value": {"done": len(records)}},
        ]
    )


def _written(emu: Emulator, prefix: str) -> dict[str, Any]:
    assert emu.store is not None
    with emu.store.lock:
        rows = emu.store.conn.execute(
            "SELECT accountnumber, numberofemployees FROM account WHERE accountnumber LIKE ?",
            [f"{prefix}-%"],
        ).fetchall()
    return dict(rows)


def _posts(emu: Emulator, part: str) -> list[Any]:
    return [e for e in emu.requests(part) if e.method == "POST"]


def _missing_contact(i: int) -> str:
    """A contact id that does not exist: the service refuses the bind (404), the target cannot
    know beforehand."""
    return str(uuid.UUID(int=(1 << 100) + i))


# -- the route ------------------------------------------------------------------------------------


def test_upserts_by_alternate_key_go_as_upsert_multiple(emu: Emulator, tmp_path: Path) -> None:
    records = _accounts(250)
    run = run_target(emu, tmp_path, _text(records), config={**BY_NUMBER, "bulk_size_rows": 100})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.dead_letters == []
    assert _written(emu, "BK") == {r["accountnumber"]: r["numberofemployees"] for r in records}
    posts = _posts(emu, UPSERT)
    assert len(posts) == 3 and all(p.status == 204 for p in posts)
    assert _posts(emu, "$batch") == []
    # Each request carries its targets: 100, 100 and 50 records of about the same size.
    sizes = sorted(p.request_bytes for p in posts)
    assert sizes[0] < sizes[1] * 0.6
    assert all(
        "odata.include-annotations" in (p.headers.get("prefer") or "") for p in posts
    )  # so that an elastic table lists its failed records
    (probe,) = emu.requests("/sdkmessagefilters")
    assert "UpsertMultiple" in probe.query and "account" in probe.query
    assert "3 bulk requests" in run.stderr
    assert "UpsertMultiple in requests of 100 rows" in run.stderr
    assert run.states == [{"done": 250}]


@pytest.mark.parametrize(
    ("mode", "message"),
    [("create", "CreateMultiple"), ("update", "UpdateMultiple")],
)
def test_create_and_update_use_their_own_messages(
    emu: Emulator, tmp_path: Path, mode: str, message: str
) -> None:
    ids = emu.row_ids("account", 3)
    records = (
        [{"accountid": str(uuid.uuid4()), "name": f"Created {i}"} for i in range(3)]
        if mode == "create"
        else [{"accountid": rid, "name": f"Updated {i}"} for i, rid in enumerate(ids)]
    )
    run = run_target(
        emu,
        tmp_path,
        _text(records),
        config={"stream_options": {"account": {"mode": mode}}},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(_posts(emu, f"Microsoft.Dynamics.CRM.{message}")) == 1
    for r in records:
        row = emu.get_row("account", r["accountid"])
        assert row is not None and row["name"] == r["name"]
    counts = "(3 created, 0 updated)" if mode == "create" else "(0 created, 3 updated)"
    assert f"3 written {counts}" in run.stderr


def test_an_update_of_a_missing_row_is_isolated_and_dead_lettered(
    emu: Emulator, tmp_path: Path
) -> None:
    ids = emu.row_ids("account", 4)
    ghost = str(uuid.uuid4())
    records = [{"accountid": rid, "name": f"Kept {i}"} for i, rid in enumerate(ids)]
    records.insert(2, {"accountid": ghost, "name": "nowhere"})
    run = run_target(
        emu,
        tmp_path,
        _text(records),
        config={"stream_options": {"account": {"mode": "update"}}, "max_failed_records": 1},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (dead,) = run.dead_letters
    assert dead["key"] == {"accountid": ghost}
    assert dead["status"] == 404 and dead["message"] == f"account With Id = {ghost} Does Not Exist"
    assert dead["operation"] == "update"
    assert [emu.get_row("account", rid)["name"] for rid in ids] == [  # type: ignore[index]
        f"Kept {i}" for i in range(4)
    ]
    assert emu.get_row("account", ghost) is None


def test_write_method_batch_never_asks_for_bulk(emu: Emulator, tmp_path: Path) -> None:
    run = run_target(
        emu, tmp_path, _text(_accounts(30)), config={**BY_NUMBER, "write_method": "batch"}
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert emu.requests("Multiple") == [] and emu.requests("sdkmessagefilters") == []
    assert len(_posts(emu, "$batch")) == 1
    assert len(_written(emu, "BK")) == 30


def test_a_table_without_the_messages_goes_through_batch(emu: Emulator, tmp_path: Path) -> None:
    emu.service.settings.bulk_unsupported.add("account")  # type: ignore[union-attr]
    run = run_target(emu, tmp_path, _text(_accounts(30)), config=BY_NUMBER)
    assert run.returncode == 0, run.stderr[-3000:]
    assert emu.requests("Multiple") == []  # sdkmessagefilters said so: no attempt
    assert len(_posts(emu, "$batch")) == 1
    assert len(_written(emu, "BK")) == 30
    notes = [line for line in run.stderr.splitlines() if "does not support UpsertMultiple" in line]
    assert len(notes) == 1 and "INFO" in notes[0] and "sdkmessagefilters" in notes[0]


def test_without_sdkmessagefilters_the_first_answer_decides(emu: Emulator, tmp_path: Path) -> None:
    settings = emu.service.settings  # type: ignore[union-attr]
    settings.bulk_unsupported.add("account")
    settings.denied_tables["*"] = {"sdkmessagefilter"}  # the user may not read it
    run = run_target(
        emu,
        tmp_path,
        _text(_accounts(120)),
        config={
            **BY_NUMBER,
            "bulk_size_rows": 50,
            "batch_size_rows": 40,
            "max_parallel_batches": 1,
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.dead_letters == []
    assert len(_written(emu, "BK")) == 120
    refused = _posts(emu, UPSERT)
    assert len(refused) == 1 and refused[0].status == 400  # asked once, then $batch
    operations = [e.batch_operations or 0 for e in _posts(emu, "$batch")]
    assert sum(operations) == 120 and max(operations) == 40
    notes = [line for line in run.stderr.splitlines() if "does not support UpsertMultiple" in line]
    assert len(notes) == 1 and "first request" in notes[0]


def test_write_method_bulk_stops_at_a_table_without_the_messages(
    emu: Emulator, tmp_path: Path
) -> None:
    emu.service.settings.bulk_unsupported.add("account")  # type: ignore[union-attr]
    run = run_target(
        emu, tmp_path, _text(_accounts(5)), config={**BY_NUMBER, "write_method": "bulk"}
    )
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last == (
        "target-dynamics: write_method is bulk, but table 'account' does not support "
        "UpsertMultiple (from sdkmessagefilters); set write_method to auto or batch."
    )
    assert _posts(emu, "$batch") == [] and _written(emu, "BK") == {}
    assert run.states == []


# -- bad rows ---------------------------------------------------------------------------------------


def test_bad_rows_are_isolated_and_only_they_are_dead_lettered(
    emu: Emulator, tmp_path: Path
) -> None:
    records = _accounts(400)
    bad = {7, 8, 150, 399}
    for i in bad:
        records[i]["_primarycontactid_value"] = _missing_contact(i)
    run = run_target(
        emu,
        tmp_path,
        _text(records),
        config={**BY_NUMBER, "bulk_size_rows": 200, "max_failed_records": 10},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dead = {d["record"]["accountnumber"]: d for d in run.dead_letters}
    assert set(dead) == {f"BK-{i:05d}" for i in bad}
    for i in bad:
        d = dead[f"BK-{i:05d}"]
        assert d["status"] == 404 and d["code"] == "0x80040217"
        assert d["message"] == f"contact With Id = {_missing_contact(i)} Does Not Exist"
    good = {
        r["accountnumber"]: r["numberofemployees"] for i, r in enumerate(records) if i not in bad
    }
    assert _written(emu, "BK") == good
    # Both requests failed, then their parts were sent again until the bad rows stood alone.
    summary = next(line for line in run.stderr.splitlines() if "Summary" in line)
    assert "396 written" in summary and "4 rejected by Dataverse" in summary
    isolating = int(summary.split(" requests to isolate")[0].rsplit("(", 1)[1])
    bulk = len(_posts(emu, UPSERT))
    batches = len(_posts(emu, "$batch"))
    assert isolating == bulk - 2 + batches > 0
    assert run.states == [{"done": 400}]


def test_an_elastic_table_keeps_its_good_rows_without_isolating(
    emu: Emulator, tmp_path: Path
) -> None:
    readings = [
        {
            "contoso_sensordataid": str(uuid.UUID(int=(1 << 90) + i)),
            "partitionid": f"device-{i % 3}",
            "contoso_name": f"reading {i}",
            "contoso_value": i / 4,
            "ttlinseconds": 3600,
        }
        for i in range(250)
    ]
    for i in (3, 120, 121):
        readings[i]["statuscode"] = 99  # not one of the table's status values
    config = {
        "stream_options": {
            "readings": {
                "entity": "contoso_sensordata",
                "key": ["contoso_sensordataid", "partitionid"],
            }
        },
        "max_failed_records": 3,
    }
    run = run_target(emu, tmp_path, _text(readings, "readings"), config=config)
    assert run.returncode == 0, run.stderr[-3000:]
    posts = _posts(emu, "contoso_sensordatas/Microsoft.Dynamics.CRM.UpsertMultiple")
    assert len(posts) == 3  # 100 per request on an elastic table; nothing sent again
    assert _posts(emu, "$batch") == []
    assert sorted(d["record"]["contoso_name"] for d in run.dead_letters) == [
        "reading 120",
        "reading 121",
        "reading 3",
    ]
    assert all(d["status"] == 400 and d["code"] == "0x8004431A" for d in run.dead_letters)
    first = next(d for d in run.dead_letters if d["record"]["contoso_name"] == "reading 120")
    assert "The value 99 of 'statuscode'" in first["message"]
    written = emu.service.store.conn.execute(  # type: ignore[union-attr]
        "SELECT count(*) FROM contoso_sensordata WHERE contoso_name LIKE 'reading %'"
    ).fetchone()[0]
    assert written == 247
    assert "isolate" not in run.stderr


# -- order, throttling, parallelism -----------------------------------------------------------------


def test_records_of_one_row_are_applied_in_input_order(emu: Emulator, tmp_path: Path) -> None:
    """A bulk request never holds two records of one row: each repeat of the key waits for the
    request that holds the previous one, even when that one is throttled and retried."""
    records = []
    for round_ in range(4):
        records += [{"accountnumber": "ORD-1", "numberofemployees": round_}]
        records += _accounts(30, prefix=f"F{round_}")
    emu.faults.add(Fault("status", status=429, retry_after=0.2), times=1, path_contains=UPSERT)
    run = run_target(
        emu,
        tmp_path,
        _text(records),
        config={**BY_NUMBER, "bulk_size_rows": 1000, "max_parallel_batches": 4},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _written(emu, "ORD") == {"ORD-1": 3}
    # One request per repeat of the row, plus the last: never two of its records in one.
    assert len([p for p in _posts(emu, UPSERT) if p.status == 204]) == 4
    assert len(emu.faults.injected) == 1


def test_parallelism_follows_the_dop_hint(tmp_path: Path) -> None:
    with Emulator(counts=SMALL, dop_hint=1) as emu:
        run = run_target(
            emu,
            tmp_path,
            _text(_accounts(300)),
            config={**BY_NUMBER, "bulk_size_rows": 20, "max_parallel_batches": 4},
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert emu.counters()["peak_concurrency"] == 1
        assert len(_posts(emu, UPSERT)) == 15


def test_throttling_lowers_the_parallelism_and_loses_nothing(tmp_path: Path) -> None:
    with Emulator(counts=SMALL, dop_hint=4) as emu:
        emu.protection.configure(max_concurrent=2)
        run = run_target(
            emu,
            tmp_path,
            _text(_accounts(400)),
            config={**BY_NUMBER, "bulk_size_rows": 20, "max_parallel_batches": 4},
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.dead_letters == []
        assert len(_written(emu, "BK")) == 400
        assert emu.counters()["throttled"] > 0
        assert "Dataverse throttled the writes (429)" in run.stderr


# -- business logic bypass --------------------------------------------------------------------------


def test_bypass_headers_go_with_every_write(emu: Emulator, tmp_path: Path) -> None:
    records = _accounts(5)
    deletion = {"accountnumber": "BK-00001", "_sdc_deleted_at": "2026-11-29T10:00:00Z"}
    run = run_target(
        emu,
        tmp_path,
        _text([*records, deletion]),
        config={
            **BY_NUMBER,
            "delete_mode": "hard",
            "bypass_business_logic": "CustomSync,CustomAsync",
            "bypass_power_automate_flows": True,
        },
    )
    assert run.returncode == 0, run.stderr[-3000:]
    writes = _posts(emu, UPSERT) + _posts(emu, "$batch")
    assert len(writes) == 2  # the upserts in bulk, the deletion in $batch
    for entry in writes:
        assert entry.headers["mscrm.bypassbusinesslogicexecution"] == "CustomSync,CustomAsync"
        assert entry.headers["mscrm.suppresscallbackregistrationexpanderjob"] == "true"
    assert set(_written(emu, "BK")) == {f"BK-{i:05d}" for i in (0, 2, 3, 4)}


@pytest.mark.parametrize("method", ["auto", "batch"])
def test_bypass_without_the_privilege_is_one_sentence_before_any_write(
    tmp_path: Path, method: str
) -> None:
    settings = ServiceSettings(no_bypass_privilege={"*"})
    with Emulator(counts=SMALL, settings=settings) as emu:
        run = run_target(
            emu,
            tmp_path,
            _text(_accounts(300)),
            config={
                **BY_NUMBER,
                "write_method": method,
                "bypass_business_logic": "CustomSync",
                "bulk_size_rows": 50,
                "batch_size_rows": 50,
                "max_parallel_batches": 4,
            },
        )
        assert run.returncode == 1
        last = run.stderr.strip().splitlines()[-1]
        assert last == (
            "target-dynamics: bypass_business_logic is set, but the user the target signs in "
            "as lacks the prvBypassCustomBusinessLogic privilege: grant it with a security role "
            "(System Administrator has it) or unset bypass_business_logic; nothing was written."
        )
        assert "Traceback" not in run.stderr
        assert _written(emu, "BK") == {}
        writes = _posts(emu, "Multiple") + _posts(emu, "$batch")
        assert len(writes) == 1  # the first request went alone, and no other followed
        assert run.states == []


def test_dead_letters_of_a_bulk_run_hold_the_record_and_its_error(
    emu: Emulator, tmp_path: Path
) -> None:
    records = _accounts(3)
    records[1]["_primarycontactid_value"] = _missing_contact(1)
    run = run_target(emu, tmp_path, _text(records), config={**BY_NUMBER, "max_failed_records": 1})
    assert run.returncode == 0, run.stderr[-3000:]
    (dead,) = run.dead_letters
    assert dead["record"] == records[1]
    assert dead["key"] == {"accountnumber": "BK-00001"}
    assert dead["operation"] == "upsert" and dead["stream"] == "account"
    assert json.loads(json.dumps(dead))["status"] == 404
