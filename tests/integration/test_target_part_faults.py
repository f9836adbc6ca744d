"""A partly failed `$batch`: only the operations that failed retryably are sent again."""

from __future__ import annotations

from pathlib import Path

from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator
from tests.targetharness import messages_text, record_message, run_target, schema_message

# Faults of single operations inside a $batch: the writes go through $batch.
CONFIG = {"stream_options": {"account": {"key": ["accountnumber"]}}, "write_method": "batch"}


def _input(n: int) -> str:
    props = {"accountnumber": {"type": "string"}, "numberofemployees": {"type": "integer"}}
    records = [
        record_message("account", {"accountnumber": f"PART-{i:04d}", "numberofemployees": i})
        for i in range(n)
    ]
    return messages_text([schema_message("account", props), *records])


def _written(emu: Emulator) -> dict[str, int]:
    assert emu.store is not None
    with emu.store.lock:
        rows = emu.store.conn.execute(
            "SELECT accountnumber, numberofemployees FROM account WHERE accountnumber LIKE 'PART-%'"
        ).fetchall()
    return dict(rows)


def test_throttled_and_failed_parts_are_retried_alone(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    # Inside the first $batch: the 3rd operation is throttled, the 5th hits a 503.
    emu.part_faults.script(
        [None, None, Fault("status", status=429, retry_after=1), None, Fault("status", status=503)]
    )
    run = run_target(emu, tmp_path, _input(120), config=CONFIG)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.dead_letters == []
    assert _written(emu) == {f"PART-{i:04d}": i for i in range(120)}
    batches = [e for e in emu.requests("/$batch") if e.method == "POST"]
    ops = [e.batch_operations or 0 for e in batches]
    # 120 records in batches of 50, and the two retried parts sent again on their own (in one
    # or two small batches: the first two batches run in parallel): 122 operations in all.
    assert sum(ops) == 122
    assert sorted(ops)[-3:] == [20, 50, 50]
    assert len(ops) in (4, 5)
    assert len(emu.part_faults.injected) == 2


def test_part_that_keeps_failing_is_dead_lettered_with_its_error(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    emu.part_faults.add(Fault("status", status=503), times=100, method="PATCH")
    run = run_target(
        emu, tmp_path, _input(3), config={**CONFIG, "max_part_retries": 2, "max_failed_records": 5}
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.dead_letters) == 3
    assert all(d["status"] == 503 for d in run.dead_letters)
    assert _written(emu) == {}
