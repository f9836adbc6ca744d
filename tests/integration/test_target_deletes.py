"""Records deleted at source (``_sdc_deleted_at``): never an upsert; skip, hard or deactivate.

Also the order of records of one row: applied as given, even across parallel ``$batch`` requests
and their retries.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator
from tests.targetharness import messages_text, record_message, run_target, schema_message

GHOST = "11111111-2222-3333-4444-555555555555"
DELETED = "2026-11-29T10:00:00Z"
BY_NUMBER = {"account": {"key": ["accountnumber"]}}


def _account(emu: Emulator, **key: Any) -> dict[str, Any] | None:
    assert emu.store is not None
    return emu.store.get_row(emu.model["account"], key)


def _active_accounts(emu: Emulator, n: int) -> list[dict[str, Any]]:
    assert emu.store is not None
    with emu.store.lock:
        rows = emu.store.conn.execute(
            "SELECT accountid, accountnumber FROM account WHERE statecode = 0 "
            "ORDER BY accountnumber LIMIT ?",
            [n],
        ).fetchall()
    return [{"accountid": r[0], "accountnumber": r[1]} for r in rows]


def _batches(emu: Emulator) -> list[Any]:
    return [e for e in emu.requests("/$batch") if e.method == "POST"]


def _deletions(*records: dict[str, Any]) -> str:
    return messages_text(
        [
            schema_message("account"),
            *(record_message("account", {**r, "_sdc_deleted_at": DELETED}) for r in records),
            {"type": "STATE", "value": {"done": True}},
        ]
    )


def test_skip_is_the_default_and_writes_nothing(fresh_emulator: Emulator, tmp_path: Path) -> None:
    """The reported failure: a deletion for an id not in the table used to create an empty
    account with that id and count it as written."""
    emu = fresh_emulator
    (live,) = _active_accounts(emu, 1)
    before = _account(emu, accountid=live["accountid"])
    run = run_target(
        emu, tmp_path, _deletions({"accountid": GHOST}, {"accountid": live["accountid"]})
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _account(emu, accountid=GHOST) is None  # no ghost row
    assert _account(emu, accountid=live["accountid"]) == before  # untouched
    assert _batches(emu) == []
    warnings = [line for line in run.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "delete_mode" in warnings[0]
    assert "0 written" in run.stderr and "2 skipped (delete_mode skip)" in run.stderr
    assert run.states == [{"done": True}]


def test_hard_deletes_by_primary_and_alternate_key(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    a, b = _active_accounts(emu, 2)
    run = run_target(
        emu,
        tmp_path,
        _deletions(
            {"accountid": a["accountid"]},
            {"accountnumber": b["accountnumber"]},
            {"accountnumber": "NOT-THERE-1"},
            {"accountid": GHOST},  # the id alone still names the row, whatever the key
        ),
        config={"delete_mode": "hard", "stream_options": BY_NUMBER},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _account(emu, accountid=a["accountid"]) is None
    assert _account(emu, accountnumber=b["accountnumber"]) is None
    assert _account(emu, accountid=GHOST) is None
    assert run.dead_letters == []
    (batch,) = _batches(emu)
    assert batch.batch_operations == 4
    assert "2 deleted, 0 deactivated, 2 already gone" in run.stderr
    assert run.states == [{"done": True}]


def test_hard_delete_by_composite_alternate_key(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    assert emu.store is not None
    with emu.store.lock:
        code, account = emu.store.conn.execute(
            "SELECT new_code, _new_accountid_value FROM new_project "
            "WHERE _new_accountid_value IS NOT NULL AND new_code IS NOT NULL LIMIT 1"
        ).fetchone()
        before = emu.store.conn.execute("SELECT count(*) FROM new_project").fetchone()[0]
    text = messages_text(
        [
            schema_message("new_project"),
            record_message(
                "new_project",
                {"new_code": code, "new_accountid": account, "_sdc_deleted_at": DELETED},
            ),
        ]
    )
    run = run_target(
        emu,
        tmp_path,
        text,
        config={
            "delete_mode": "hard",
            "stream_options": {"new_project": {"key": ["new_code", "new_accountid"]}},
        },
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with emu.store.lock:
        rows = emu.store.conn.execute(
            "SELECT count(*) FROM new_project WHERE new_code = ? AND _new_accountid_value = ?",
            [code, account],
        ).fetchone()[0]
        after = emu.store.conn.execute("SELECT count(*) FROM new_project").fetchone()[0]
    assert (rows, after) == (0, before - 1)
    assert len(_batches(emu)) == 1
    assert "1 deleted" in run.stderr


def test_deactivate_sets_the_inactive_state_and_never_creates(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    (live,) = _active_accounts(emu, 1)
    run = run_target(
        emu,
        tmp_path,
        _deletions({"accountid": live["accountid"]}, {"accountid": GHOST}),
        config={"delete_mode": "deactivate"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = _account(emu, accountid=live["accountid"])
    assert row is not None and (row["statecode"], row["statuscode"]) == (1, 2)
    assert _account(emu, accountid=GHOST) is None
    assert "0 deleted, 1 deactivated, 1 already gone" in run.stderr
    (batch,) = _batches(emu)
    assert batch.batch_operations == 2


def test_deactivate_a_table_without_inactive_state_stops_before_any_write(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    text = messages_text(
        [
            schema_message("account"),
            record_message("account", {"accountnumber": "ANY-1", "name": "written?"}),
            schema_message("incident"),
            record_message("incident", {"incidentid": GHOST, "_sdc_deleted_at": DELETED}),
        ]
    )
    run = run_target(
        emu,
        tmp_path,
        text,
        config={
            "stream_options": {**BY_NUMBER, "incident": {"delete_mode": "deactivate"}},
        },
    )
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("target-dynamics:")]
    assert len(errors) == 1, run.stderr[-2000:]
    assert "has no Inactive state" in errors[0] and "incident" in errors[0]
    assert "Traceback" not in run.stderr
    assert _batches(emu) == []
    assert _account(emu, accountnumber="ANY-1") is None


def test_unknown_delete_mode_is_one_sentence(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    run = run_target(
        emu, tmp_path, _deletions({"accountid": GHOST}), config={"delete_mode": "purge"}
    )
    assert run.returncode == 1
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("target-dynamics: The configuration is not valid: delete_mode must be one of")
    )
    assert "Traceback" not in run.stderr
    assert emu.requests("/$batch") == []
    assert run.states == []


def test_a_stream_option_overrides_delete_mode(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    (live,) = _active_accounts(emu, 1)
    run = run_target(
        emu,
        tmp_path,
        _deletions({"accountid": live["accountid"]}),
        config={"delete_mode": "skip", "stream_options": {"account": {"delete_mode": "hard"}}},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _account(emu, accountid=live["accountid"]) is None


def test_dry_run_counts_deletions_and_sends_nothing(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    (live,) = _active_accounts(emu, 1)
    run = run_target(
        emu,
        tmp_path,
        _deletions({"accountid": live["accountid"]}),
        config={"delete_mode": "hard", "dry_run": True},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _account(emu, accountid=live["accountid"]) is not None
    assert "1 would be deleted or deactivated" in run.stderr
    assert _batches(emu) == []


def test_a_failed_deletion_is_dead_lettered_as_a_deletion(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    (live,) = _active_accounts(emu, 1)
    emu.part_faults.add(Fault("status", status=503), times=10, method="DELETE")
    run = run_target(
        emu,
        tmp_path,
        _deletions({"accountid": live["accountid"]}),
        config={"delete_mode": "hard", "max_part_retries": 1},
    )
    assert run.returncode == 1
    (dead,) = run.dead_letters
    assert dead["operation"] == "delete" and dead["status"] == 503
    assert dead["record"] == {"accountid": live["accountid"], "_sdc_deleted_at": DELETED}
    assert _account(emu, accountid=live["accountid"]) is not None


# --------------------------------------------------------------------------------------------
# Order of the records of one row
# --------------------------------------------------------------------------------------------


def test_delete_then_recreate_across_parallel_batches_ends_as_the_input_says(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    """The deletion fails once (503) and is retried after a back-off; the re-creation of the
    same row, in a later batch that could run meanwhile, must wait for it."""
    emu = fresh_emulator
    key = "ORDER-1"
    fillers = [
        record_message("account", {"accountnumber": f"FILL-{i}", "name": f"filler {i}"})
        for i in range(6)
    ]
    text = messages_text(
        [
            schema_message("account"),
            record_message("account", {"accountnumber": key, "name": "first"}),
            fillers[0],
            record_message("account", {"accountnumber": key, "_sdc_deleted_at": DELETED}),
            fillers[1],
            fillers[2],
            fillers[3],
            record_message("account", {"accountnumber": key, "name": "again"}),
            fillers[4],
            fillers[5],
        ]
    )
    emu.part_faults.add(Fault("status", status=503), times=1, method="DELETE")
    run = run_target(
        emu,
        tmp_path,
        text,
        config={
            "delete_mode": "hard",
            "stream_options": BY_NUMBER,
            "batch_size_rows": 2,
            "max_parallel_batches": 4,
        },
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(emu.part_faults.injected) == 1
    row = _account(emu, accountnumber=key)
    assert row is not None and row["name"] == "again"
    assert all(_account(emu, accountnumber=f"FILL-{i}") is not None for i in range(6))


def test_two_updates_of_one_row_keep_their_order_when_the_first_is_throttled(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    (live,) = _active_accounts(emu, 1)
    number = live["accountnumber"]
    text = messages_text(
        [
            schema_message("account"),
            record_message("account", {"accountnumber": number, "numberofemployees": 1}),
            record_message("account", {"accountnumber": number, "numberofemployees": 2}),
        ]
    )
    # Whichever operation reaches the service first is throttled once.
    emu.part_faults.add(Fault("status", status=429, retry_after=0.5), times=1, method="PATCH")
    run = run_target(
        emu,
        tmp_path,
        text,
        config={
            "stream_options": BY_NUMBER,
            "write_method": "batch",
            "batch_size_rows": 1,
            "max_parallel_batches": 4,
        },
    )
    assert run.returncode == 0, run.stderr[-2000:]
    row = _account(emu, accountnumber=number)
    assert row is not None and row["numberofemployees"] == 2
    ops = [b.batch_operations for b in _batches(emu)]
    assert ops == [1, 1, 1]  # the throttled one again, then the second: one after the other


@pytest.mark.parametrize("mode", ["hard", "deactivate"])
def test_dead_letter_lines_say_the_operation(
    fresh_emulator: Emulator, tmp_path: Path, mode: str
) -> None:
    emu = fresh_emulator
    run = run_target(
        emu,
        tmp_path,
        _deletions({"accountid": "not-a-guid"}),
        config={"delete_mode": mode, "max_failed_records": 1},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    (dead,) = run.dead_letters
    assert dead["operation"] == ("delete" if mode == "hard" else "deactivate")
    assert dead["code"] == "invalid" and "GUID" in dead["message"]
    assert json.dumps(dead["key"]) == json.dumps({"accountid": "not-a-guid"})


# --------------------------------------------------------------------------------------------
# Property: any interleaving of writes and deletions of a few rows ends as applying them in order
# --------------------------------------------------------------------------------------------

_COLUMNS = ("numberofemployees", "telephone1")
_op: st.SearchStrategy[tuple[str, int, dict[str, Any]]] = st.one_of(
    st.tuples(
        st.just("upsert"),
        st.integers(0, 2),
        st.fixed_dictionaries(
            {"name": st.sampled_from(["a", "b", "c"])},
            optional={
                "numberofemployees": st.integers(0, 99),
                "telephone1": st.sampled_from(["1", "2"]),
            },
        ),
    ),
    st.tuples(st.just("delete"), st.integers(0, 2), st.just({})),
)
_examples = itertools.count()


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(_op, min_size=2, max_size=14),
    batch_size=st.integers(1, 3),
    seed=st.integers(0, 1000),
)
def test_any_interleaving_ends_as_applying_records_in_order(
    shared_emulator: Emulator,
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[str, int, dict[str, Any]]],
    batch_size: int,
    seed: int,
) -> None:
    emu = shared_emulator
    prefix = f"PROP-{next(_examples)}-"
    expected: dict[str, dict[str, Any] | None] = {f"{prefix}{k}": None for k in range(3)}
    messages: list[dict[str, Any]] = [schema_message("account")]
    for kind, k, columns in ops:
        number = f"{prefix}{k}"
        if kind == "delete":
            expected[number] = None
            messages.append(
                record_message("account", {"accountnumber": number, "_sdc_deleted_at": DELETED})
            )
            continue
        row = expected[number] or {"name": None, **dict.fromkeys(_COLUMNS)}
        expected[number] = {**row, **columns}
        messages.append(record_message("account", {"accountnumber": number, **columns}))
    # Throttle a share of the operations (each retried after Retry-After), so that parallel
    # batches and their retries overlap in every order.
    emu.part_faults.randomly(0.25, [Fault("status", status=429, retry_after=0.2)], seed=seed)
    try:
        run = run_target(
            emu,
            tmp_path_factory.mktemp("prop"),
            messages_text(messages),
            config={
                "delete_mode": "hard",
                "stream_options": BY_NUMBER,
                "batch_size_rows": batch_size,
                "max_parallel_batches": 4,
                "max_part_retries": 20,
            },
        )
    finally:
        emu.part_faults.clear()
    assert run.returncode == 0, run.stderr[-2000:]
    for number, want in expected.items():
        found = _account(emu, accountnumber=number)
        if want is None:
            assert found is None, number
        else:
            assert found is not None, number
            assert {c: found[c] for c in want} == want, number
