"""BATCH messages: every record of a batch file goes the way a RECORD message would; the tap's
batch files hold exactly its RECORD output; tap (batch_config) -> target round trip."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dynamics_emulator.server import Emulator
from tests.tapharness import discover, run_tap, select
from tests.targetharness import messages_text, record_message, run_target, schema_message

BY_NUMBER = {"account": {"key": ["accountnumber"]}}


def _write_jsonl(path: Path, records: list[dict[str, Any]], *, gzipped: bool) -> str:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path.as_uri()


def _batch(stream: str, urls: list[str], fmt: str = "jsonl", compression: str | None = "gzip"):
    return {
        "type": "BATCH",
        "stream": stream,
        "encoding": {"format": fmt, "compression": compression},
        "manifest": urls,
    }


def _account(emu: Emulator, number: str) -> dict[str, Any] | None:
    assert emu.store is not None
    return emu.store.get_row(emu.model["account"], {"accountnumber": number})


def _batches(emu: Emulator) -> list[Any]:
    return [e for e in emu.requests("/$batch") if e.method == "POST"]


def test_every_record_of_a_gzip_batch_file_lands(fresh_emulator: Emulator, tmp_path: Path) -> None:
    """The reported failure: a BATCH message of 5 records used to write nothing and exit 0."""
    emu = fresh_emulator
    records = [{"accountnumber": f"BATCH-{i}", "name": f"from a file {i}"} for i in range(5)]
    url = _write_jsonl(tmp_path / "part-1.json.gz", records, gzipped=True)
    text = messages_text(
        [
            schema_message("account"),
            _batch("account", [url]),
            {"type": "STATE", "value": {"bookmarks": {"account": {"n": 5}}}},
        ]
    )
    run = run_target(emu, tmp_path / "run", text, config={"stream_options": BY_NUMBER})
    assert run.returncode == 0, run.stderr[-2000:]
    for i in range(5):
        row = _account(emu, f"BATCH-{i}")
        assert row is not None and row["name"] == f"from a file {i}"
    assert "5 records; 5 written" in run.stderr
    assert run.states == [{"bookmarks": {"account": {"n": 5}}}]


def test_batch_records_take_the_record_path(fresh_emulator: Emulator, tmp_path: Path) -> None:
    """Stream maps, validation with dead letters, deletions and RECORD messages mixed in."""
    emu = fresh_emulator
    assert emu.store is not None
    with emu.store.lock:
        (doomed,) = emu.store.conn.execute(
            "SELECT accountnumber FROM account WHERE statecode = 0 LIMIT 1"
        ).fetchone()
    file_1 = _write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"accountnumber": "MIX-1", "name": "one"},
            {"accountnumber": "MIX-2", "name": "two", "nosuchcolumn": 1},
        ],
        gzipped=False,
    )
    file_2 = _write_jsonl(
        tmp_path / "b.jsonl.gz",
        [{"accountnumber": doomed, "_sdc_deleted_at": "2026-11-29T10:00:00Z"}],
        gzipped=True,
    )
    text = messages_text(
        [
            schema_message("account"),
            record_message("account", {"accountnumber": "MIX-0", "name": "zero"}),
            _batch("account", [file_1], compression=None),
            _batch("account", [file_2]),
        ]
    )
    run = run_target(
        emu,
        tmp_path / "run",
        text,
        config={
            "stream_options": BY_NUMBER,
            "delete_mode": "hard",
            "max_failed_records": 1,
            "stream_maps": {"account": {"description": "'mapped: ' + record.get('name', '')"}},
        },
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert _account(emu, "MIX-0")["description"] == "mapped: zero"  # type: ignore[index]
    assert _account(emu, "MIX-1")["description"] == "mapped: one"  # type: ignore[index]
    assert _account(emu, "MIX-2") is None
    assert _account(emu, doomed) is None
    (dead,) = run.dead_letters
    assert dead["key"] == {"accountnumber": "MIX-2"} and "nosuchcolumn" in dead["message"]
    assert "4 records; 2 written; deleted at source: 1 deleted" in run.stderr


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b'{"accountnumber": "X"}\n'), "is not gzip-compressed"),
        (lambda p: p.write_bytes(gzip.compress(b'{"accountnumber": "X"}\n[1, 2]\n')), "line 2"),
        (lambda p: p.write_bytes(gzip.compress(b"{not json\n")), "cannot be read"),
    ],
    ids=["missing", "not-gzip", "not-an-object", "not-json"],
)
def test_an_unreadable_batch_file_stops_the_run_with_one_sentence(
    fresh_emulator: Emulator, tmp_path: Path, make: Any, expected: str
) -> None:
    emu = fresh_emulator
    path = tmp_path / "part-9.json.gz"
    make(path)
    text = messages_text(
        [
            schema_message("account"),
            record_message("account", {"accountnumber": "BEFORE-1", "name": "before"}),
            {"type": "STATE", "value": {"at": "before"}},
            _batch("account", [path.as_uri()]),
            {"type": "STATE", "value": {"at": "after"}},
        ]
    )
    run = run_target(emu, tmp_path / "run", text, config={"stream_options": BY_NUMBER})
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("target-dynamics:")]
    assert len(errors) == 1, run.stderr[-2000:]
    assert str(path) in errors[0] and expected in errors[0]
    assert "Traceback" not in run.stderr
    assert {"at": "after"} not in run.states


def test_only_local_manifests_are_read(fresh_emulator: Emulator, tmp_path: Path) -> None:
    text = messages_text(
        [schema_message("account"), _batch("account", ["s3://bucket/part-1.json.gz"])]
    )
    run = run_target(fresh_emulator, tmp_path, text, config={"stream_options": BY_NUMBER})
    assert run.returncode == 1
    assert "target-dynamics: The BATCH manifest names s3://bucket/part-1.json.gz" in run.stderr


def test_parquet_batch_files(fresh_emulator: Emulator, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="parquet batch files need pyarrow (dev extra)")
    import pyarrow.parquet as pq

    emu = fresh_emulator
    table = pa.Table.from_pylist(
        [{"accountnumber": f"PQ-{i}", "name": f"parquet {i}"} for i in range(3)]
    )
    pq.write_table(table, tmp_path / "part.parquet")
    text = messages_text(
        [
            schema_message("account"),
            _batch("account", [(tmp_path / "part.parquet").as_uri()], fmt="parquet"),
        ]
    )
    run = run_target(emu, tmp_path / "run", text, config={"stream_options": BY_NUMBER})
    assert run.returncode == 0, run.stderr[-2000:]
    assert [(_account(emu, f"PQ-{i}") or {}).get("name") for i in range(3)] == [
        f"parquet {i}" for i in range(3)
    ]


def test_activate_version_is_noted_once_per_stream(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    text = messages_text(
        [
            schema_message("account"),
            *({"type": "ACTIVATE_VERSION", "stream": "account", "version": v} for v in (1, 2, 3)),
        ]
    )
    run = run_target(fresh_emulator, tmp_path, text)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if "ACTIVATE_VERSION" in line]
    assert len(lines) == 1 and "INFO" in lines[0]
    assert "WARNING" not in run.stderr


# --------------------------------------------------------------------------------------------
# The tap's side
# --------------------------------------------------------------------------------------------

WRITABLE = ["accountid", "name", "accountnumber", "numberofemployees", "revenue", "industrycode"]


def _files_of(run_stdout: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for line in run_stdout.splitlines():
        message = json.loads(line)
        if message["type"] != "BATCH":
            continue
        for url in message["manifest"]:
            path = Path(url.removeprefix("file://"))
            with gzip.open(path, "rb") as fh:
                records += [json.loads(x) for x in fh]
    return records


def test_tap_batch_files_hold_its_record_output(emulator: Emulator, tmp_path: Path) -> None:
    config = {
        "include_formatted_values": True,
        "stream_maps": {"account": {"label": "name + '!'", "revenue": None}},
    }
    discovered = discover(emulator, tmp_path / "d", include_formatted_values=True)
    catalog = select(discovered, ["account"], {"account": [*WRITABLE, "industrycode_label"]})
    plain = run_tap(emulator, tmp_path / "plain", config=config, catalog=catalog)
    assert plain.returncode == 0, plain.stderr[-2000:]
    batch_config = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": (tmp_path / "files").as_uri()},
        "batch_size": 40,
    }
    batched = run_tap(
        emulator,
        tmp_path / "batched",
        config={**config, "batch_config": batch_config},
        catalog=catalog,
    )
    assert batched.returncode == 0, batched.stderr[-2000:]
    expected = plain.records("account")
    assert len(expected) > 40
    assert "industrycode_label" in expected[0] and "label" in expected[0]
    assert "revenue" not in expected[0]
    assert _files_of(batched.stdout) == expected
    kinds = [m["type"] for m in batched.messages]
    assert "RECORD" not in kinds and kinds[-1] == "STATE"
    # A STATE never runs ahead of the files announced before it (a STATE equal to the one
    # before it is not repeated), and the last one equals the RECORD run's.
    announced: list[str] = []
    for message in batched.messages:
        if message["type"] == "BATCH":
            announced += [r["modifiedon"] for r in _files_of(json.dumps(message))]
        elif message["type"] == "STATE" and announced:
            bookmark = message["value"]["bookmarks"]["account"].get("replication_key_value")
            assert bookmark is None or bookmark <= max(announced)
    assert batched.last_state == plain.last_state


def test_tap_batch_files_uncompressed(emulator: Emulator, tmp_path: Path) -> None:
    catalog = select(discover(emulator, tmp_path / "d"), ["team"])
    batch_config = {
        "encoding": {"format": "jsonl"},
        "storage": {"root": (tmp_path / "files").as_uri()},
        "batch_size": 1000,
    }
    run = run_tap(emulator, tmp_path / "t", config={"batch_config": batch_config}, catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    (message,) = [m for m in run.messages if m["type"] == "BATCH"]
    (url,) = message["manifest"]
    assert url.endswith(".jsonl")
    lines = Path(url.removeprefix("file://")).read_text().splitlines()
    plain = run_tap(emulator, tmp_path / "p", catalog=catalog)
    assert [json.loads(x) for x in lines] == plain.records("team")


def test_round_trip_tap_batch_files_into_the_target(emulator: Emulator, tmp_path: Path) -> None:
    """Accounts read into batch files by the tap, written by the target into another org."""
    catalog = select(
        discover(emulator, tmp_path / "d"),
        ["account"],
        {"account": ["accountid", "name", "accountnumber", "numberofemployees"]},
    )
    batch_config = {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": (tmp_path / "files").as_uri()},
        "batch_size": 50,
    }
    tap = run_tap(
        emulator, tmp_path / "tap", config={"batch_config": batch_config}, catalog=catalog
    )
    assert tap.returncode == 0, tap.stderr[-2000:]
    source = {r["accountnumber"]: r for r in _files_of(tap.stdout)}
    assert len(source) > 50
    with Emulator() as other:
        run = run_target(
            other,
            tmp_path / "target",
            tap.stdout,
            config={
                "stream_options": BY_NUMBER,
                # The tap's replication key is read-only in Dataverse; the ids are the source's.
                "stream_maps": {
                    "account": {
                        "modifiedon": None,
                        "accountid": None,
                        "__key_properties__": ["accountnumber"],
                    }
                },
                "batch_size_rows": 100,
            },
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.dead_letters == []
        assert f"{len(source)} records; {len(source)} written" in run.stderr
        assert other.store is not None
        for number, record in source.items():
            row = other.store.get_row(other.model["account"], {"accountnumber": number})
            assert row is not None
            assert (row["name"], row["numberofemployees"]) == (
                record["name"],
                record["numberofemployees"],
            )
        assert run.states and run.states[-1] == tap.last_state


def test_a_stream_map_that_fails_is_one_sentence(fresh_emulator: Emulator, tmp_path: Path) -> None:
    text = messages_text(
        [schema_message("account"), record_message("account", {"accountnumber": "M-1"})]
    )
    run = run_target(
        fresh_emulator,
        tmp_path,
        text,
        config={"stream_maps": {"account": {"description": "'x' + name"}}},
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("target-dynamics: a stream map cannot be applied (")
    assert last.endswith("fix stream_maps.")


def test_tap_parquet_batch_files_hold_its_record_output(emulator: Emulator, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="parquet batch files need pyarrow (dev extra)")
    import pyarrow.parquet as pq

    catalog = select(discover(emulator, tmp_path / "d"), ["account"])
    batch_config = {
        "encoding": {"format": "parquet"},
        "storage": {"root": (tmp_path / "files").as_uri()},
        "batch_size": 200,
    }
    run = run_tap(emulator, tmp_path / "b", config={"batch_config": batch_config}, catalog=catalog)
    assert run.returncode == 0, run.stderr[-2000:]
    from_files: list[dict[str, Any]] = []
    for message in run.messages:
        if message["type"] == "BATCH":
            for url in message["manifest"]:
                from_files += pq.read_table(url.removeprefix("file://")).to_pylist()
    plain = run_tap(emulator, tmp_path / "p", catalog=catalog)
    # Exact numbers on both sides: Dataverse decimals as Decimal, parquet's decimal128 likewise.
    expected = [
        json.loads(line, parse_float=Decimal)["record"]
        for line in plain.stdout.splitlines()
        if line.startswith('{"type":"RECORD"')
    ]
    assert len(expected) > 200
    assert from_files == expected
