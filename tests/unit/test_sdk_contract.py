"""What the plugins rely on in singer-sdk's private internals (names starting with ``_``).

One test per reliance; each fails when a singer-sdk release changes it: the private methods we
override still exist with the signatures we override, the SDK still calls them on the path we rely
on, and the private methods we call still take what we pass. The path tests run the SDK's real code
with small in-process plugins (the real tap and target classes, rows from memory, the target in a
dry run on an in-memory model): no I/O but the files they write under ``tmp_path``.

The pin in pyproject.toml admits the singer-sdk versions this module (and the suites) passed on.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import logging
import textwrap
import typing as t
from decimal import Decimal
from pathlib import Path

import pytest
from singer_sdk import Stream, Tap, Target
from singer_sdk.exceptions import InvalidInputLine
from singer_sdk.helpers._batch import BatchConfig
from singer_sdk.sinks import BatchSink

from dynamics_api.errors import ConfigError
from dynamics_api.metadata import EntityModel, parse_metadata
from dynamics_emulator.csdl import render_csdl
from dynamics_emulator.model import standard_model
from dynamics_singer.config import SentenceConfigErrors
from tap_dynamics.client import DynamicsStream
from tap_dynamics.tap import TapDynamics
from target_dynamics.sinks import DynamicsSink
from target_dynamics.target import TargetDynamics

CONNECTION = {"environment_url": "https://probe.invalid", "client_id": "probe"}

# -- the inventory ----------------------------------------------------------------------------

#: Every SDK-private name our classes override, and nothing else: a new SDK name that one of our
#: helpers or attributes happens to shadow fails test_only_the_listed_private_names_are_shared.
OVERRIDES: dict[type, tuple[type, set[str]]] = {
    DynamicsStream: (Stream, {"_singer_catalog_entry", "_generate_record_messages"}),
    TapDynamics: (Tap, {"_validate_config"}),
    TargetDynamics: (
        Target,
        {"_validate_config", "_process_batch_message", "_process_activate_version_message"},
    ),
    DynamicsSink: (
        BatchSink,
        {"_validate_and_parse", "_singer_validate_message", "_remove_sdc_metadata_from_record"},
    ),
}
OUR_PACKAGES = ("dynamics_singer", "tap_dynamics", "target_dynamics")


def _is_private(name: str) -> bool:
    # Dunders are Python's, __name is mangled per class, _abc_impl is ABCMeta's bookkeeping.
    return name.startswith("_") and not name.startswith("__") and name != "_abc_impl"


def _private_names(cls: type, packages: tuple[str, ...]) -> set[str]:
    """Private names the classes of ``cls``'s MRO from ``packages`` define: class attributes,
    methods and properties, and the ``self._x`` attributes their code assigns."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith(packages):
            continue
        names |= {n for n in vars(klass) if _is_private(n)}
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        names |= {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and _is_private(node.attr)
        }
    return names


@pytest.mark.parametrize("ours", list(OVERRIDES), ids=lambda c: c.__name__)
def test_only_the_listed_private_names_are_shared(ours: type) -> None:
    base, listed = OVERRIDES[ours]
    shared = _private_names(ours, OUR_PACKAGES) & _private_names(base, ("singer_sdk",))
    assert shared == listed


@pytest.mark.parametrize(
    ("ours", "name"),
    [(ours, name) for ours, (_, names) in OVERRIDES.items() for name in sorted(names)],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_overrides_keep_the_sdk_signature(ours: type, name: str) -> None:
    base = OVERRIDES[ours][0]
    mine, theirs = inspect.getattr_static(ours, name), inspect.getattr_static(base, name)
    if isinstance(theirs, property):
        assert isinstance(mine, property)
        return

    def params(f: t.Any) -> list[tuple[str, t.Any]]:
        return [(p.name, p.kind) for p in inspect.signature(f).parameters.values()]

    assert params(mine) == params(theirs)


@pytest.mark.parametrize(
    ("owner", "name", "args", "kwargs"),
    [
        # DynamicsStream.get_batches, as the SDK's own get_batches calls it.
        (Stream, "_sync_records", ({"partition": 1},), {"write_messages": False}),
        # TargetDynamics._process_batch_message, one RECORD message per record of a file.
        (Target, "_process_record_message", ({"type": "RECORD"},), {}),
    ],
)
def test_private_methods_we_call_take_our_arguments(
    owner: type, name: str, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]
) -> None:
    inspect.signature(getattr(owner, name)).bind(object(), *args, **kwargs)


# -- the tap: sync, catalog and BATCH paths ------------------------------------------------------

SCHEMA: dict[str, t.Any] = {
    "type": "object",
    "properties": {
        "probeid": {"type": ["string"]},
        "amount": {"type": ["number", "null"]},
        "modifiedon": {"type": ["string", "null"], "format": "date-time"},
    },
}
ROWS: list[dict[str, t.Any]] = [
    {"probeid": "p1", "amount": Decimal("1.10"), "modifiedon": "2024-01-01T00:00:00Z"},
    {"probeid": "p2", "amount": None, "modifiedon": "2024-01-02T00:00:00Z"},
]


class ProbeStream(DynamicsStream):
    """Rows from memory instead of the Web API; notes the hooks the SDK called."""

    rows: list[dict[str, t.Any]]
    generated: int
    batch_configs: list[t.Any]

    def get_records(self, context: t.Mapping[str, t.Any] | None) -> t.Iterable[dict[str, t.Any]]:
        return (dict(row) for row in self.rows)

    def _generate_record_messages(self, record: dict[str, t.Any]) -> t.Any:
        self.generated += 1
        return super()._generate_record_messages(record)

    def get_batches(self, batch_config: t.Any, context: t.Any = None) -> t.Any:
        self.batch_configs.append(batch_config)
        return super().get_batches(batch_config, context)


class ProbeTap(TapDynamics):
    """TapDynamics with one stream read from memory."""

    def __init__(
        self, config: dict[str, t.Any], rows: list[dict[str, t.Any]], schema: dict[str, t.Any]
    ) -> None:
        self.probe = (rows, schema)
        super().__init__(config={**CONNECTION, **config})

    def discover_streams(self) -> list[DynamicsStream]:
        rows, schema = self.probe
        stream = ProbeStream(
            self,
            schema=schema,
            client=None,
            name="probe",
            entity_set="probes",
            primary_keys=["probeid"],
        )
        stream.rows, stream.generated, stream.batch_configs = rows, 0, []
        return [stream]

    @property
    def probe_stream(self) -> ProbeStream:
        return t.cast("ProbeStream", self.streams["probe"])


def _output(capsysbinary: pytest.CaptureFixture[bytes]) -> list[dict[str, t.Any]]:
    lines = capsysbinary.readouterr().out.splitlines()
    return [json.loads(line, parse_float=Decimal) for line in lines]


def test_sync_writes_records_through_generate_record_messages(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    tap = ProbeTap({}, ROWS, SCHEMA)
    tap.sync_all()
    records = [m["record"] for m in _output(capsysbinary) if m["type"] == "RECORD"]
    assert tap.probe_stream.generated == len(ROWS)
    assert records == ROWS


def test_generate_record_messages_yields_what_the_sdk_would(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """The override leaves out two steps that change nothing in our records: for such records
    it yields the SDK's messages, stream maps and the full-table version (SDK-private
    ``_stream_version``, set by sync) included."""
    props = {k: v for k, v in SCHEMA["properties"].items() if k != "modifiedon"}
    full_table = {**SCHEMA, "properties": props}
    rows = [{k: v for k, v in row.items() if k != "modifiedon"} for row in ROWS]
    config = {
        "emit_activate_version_messages": True,
        "stream_maps": {"probe_copy": {"__source__": "probe"}},
    }
    tap = ProbeTap(config, rows, full_table)
    tap.sync_all()
    out = _output(capsysbinary)
    [version] = {m["version"] for m in out if m["type"] == "ACTIVATE_VERSION"}
    records = [m for m in out if m["type"] == "RECORD"]
    assert {(m["stream"], m["version"]) for m in records} == {
        ("probe", version),
        ("probe_copy", version),
    }
    stream = tap.probe_stream
    for row in rows:
        ours = stream._generate_record_messages(dict(row))
        sdks = Stream._generate_record_messages(stream, dict(row))
        assert [(m.stream, m.record, m.version) for m in ours] == [
            (m.stream, m.record, m.version) for m in sdks
        ]


def test_catalog_entries_come_from_singer_catalog_entry() -> None:
    [entry] = ProbeTap({}, ROWS, SCHEMA).catalog_dict["streams"]
    assert entry["tap_stream_id"] == "probe"
    assert entry["table_name"] == "probes"  # CatalogEntry.table, as the Singer spec names it


def test_batch_sync_calls_get_batches_which_reads_through_sync_records(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """``_sync_batches`` passes a BatchConfig (SDK-private type) to ``get_batches``, whose
    ``_sync_records(write_messages=False)`` writes no RECORD message and still keeps the
    bookmark for the STATE after the BATCH message."""
    storage = {"root": tmp_path.as_uri(), "prefix": "probe-"}
    config = {"batch_config": {"encoding": {"format": "jsonl"}, "storage": storage}}
    tap = ProbeTap(config, ROWS, SCHEMA)
    tap.sync_all()
    out = _output(capsysbinary)
    assert [type(c) for c in tap.probe_stream.batch_configs] == [BatchConfig]
    assert tap.probe_stream.generated == 0
    assert "RECORD" not in {m["type"] for m in out}
    [batch] = [m for m in out if m["type"] == "BATCH"]
    [url] = batch["manifest"]
    lines = Path(url.removeprefix("file://")).read_text().splitlines()
    assert [json.loads(line, parse_float=Decimal) for line in lines] == ROWS
    after = [m for m in out[out.index(batch) :] if m["type"] == "STATE"]
    bookmark = after[-1]["value"]["bookmarks"]["probe"]
    assert bookmark["replication_key_value"] == ROWS[-1]["modifiedon"]


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plugin", "config", "sentence"),
    [
        (TapDynamics, {"client_id": "x"}, "environment_url is missing"),
        (
            TargetDynamics,
            {**CONNECTION, "batch_size_rows": 0},
            "batch_size_rows must be at least 1",
        ),
    ],
)
def test_constructor_validates_through_validate_config(
    plugin: type[SentenceConfigErrors], config: dict[str, t.Any], sentence: str
) -> None:
    """The SDK's constructor calls ``_validate_config``, whose SDK version raises the
    ConfigValidationError that the override turns into one sentence."""
    with pytest.raises(ConfigError) as caught:
        plugin(config=config)  # type: ignore[call-arg]
    assert str(caught.value) == (
        f"The configuration is not valid: {sentence}. Fix these settings (see --about for the "
        "list)."
    )


# -- the target: RECORD, BATCH and ACTIVATE_VERSION paths -------------------------------------

MODEL: EntityModel = parse_metadata(render_csdl(standard_model()))
A = [f"00000000-0000-0000-0000-0000000000a{i}" for i in range(6)]
DELETED = "2024-01-03T00:00:00Z"


class CapturingSink(DynamicsSink):
    """The real sink, noting each record ``process_record`` is given."""

    def __init__(
        self,
        target: TargetDynamics,
        stream_name: str,
        schema: dict[str, t.Any],
        key_properties: t.Sequence[str] | None,
    ) -> None:
        super().__init__(target, stream_name, schema, key_properties)
        self.seen: list[dict[str, t.Any]] = t.cast("OfflineTarget", target).seen

    def process_record(self, record: dict[str, t.Any], context: dict[str, t.Any]) -> None:
        self.seen.append(dict(record))
        super().process_record(record, context)


class OfflineTarget(TargetDynamics):
    """TargetDynamics in a dry run on an in-memory model: it validates and makes no request."""

    default_sink_class = CapturingSink

    def __init__(self, config: dict[str, t.Any]) -> None:
        self.seen: list[dict[str, t.Any]] = []
        super().__init__(
            config={**CONNECTION, "dry_run": True, "max_failed_records": 100, **config}
        )

    def model(self) -> EntityModel:
        return MODEL

    def _add_string_lengths(self, table: str) -> None:
        return None


def _lines(*messages: dict[str, t.Any]) -> io.StringIO:
    return io.StringIO("".join(json.dumps(m) + "\n" for m in messages))


def _schema(stream: str) -> dict[str, t.Any]:
    text = {"type": ["string", "null"]}
    stamp = {"type": ["string", "null"], "format": "date-time"}
    props = {"accountid": text, "name": text, "lastusedincampaign": stamp}
    props |= {"_sdc_extracted_at": stamp, "_sdc_deleted_at": stamp}
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": props},
        "key_properties": ["accountid"],
    }


def _record(stream: str, record: dict[str, t.Any]) -> dict[str, t.Any]:
    return {"type": "RECORD", "stream": stream, "record": record}


def test_record_path_hands_process_record_what_the_overrides_leave(tmp_path: Path) -> None:
    """The SDK's RECORD path calls ``_remove_sdc_metadata_from_record`` (``_sdc_deleted_at``
    kept, the other ``_sdc_*`` fields dropped), ``_validate_and_parse`` (date strings stay
    strings, a bad one does not stop the run) and ``_singer_validate_message`` (a record
    without its key reaches the plan) before ``process_record``."""
    target = OfflineTarget({"dead_letter_path": str(tmp_path / "dead.jsonl")})
    target.listen(
        _lines(
            _schema("account"),
            _record(
                "account",
                {
                    "accountid": A[1],
                    "name": "A",
                    "lastusedincampaign": "2024-01-02T03:04:05Z",
                    "_sdc_extracted_at": DELETED,
                },
            ),
            _record("account", {"accountid": A[2], "_sdc_deleted_at": DELETED}),
            _record("account", {"name": "no key"}),
            _record("account", {"accountid": A[3], "lastusedincampaign": "soon"}),
        )
    )
    assert target.seen == [
        {"accountid": A[1], "name": "A", "lastusedincampaign": "2024-01-02T03:04:05Z"},
        {"accountid": A[2], "_sdc_deleted_at": DELETED},
        {"name": "no key"},
        {"accountid": A[3], "lastusedincampaign": "soon"},
    ]
    counts = target.report.snapshot()["account"]
    assert (counts["records"], counts["skipped_deletions"], counts["invalid"]) == (4, 1, 2)


def test_batch_and_activate_version_messages_reach_our_overrides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reader dispatches BATCH and ACTIVATE_VERSION lines to ``_process_batch_message`` and
    ``_process_activate_version_message``; each record of a file goes through the SDK's
    ``_process_record_message`` (stream map and sink overrides applied)."""
    batch_file = tmp_path / "part-1.jsonl"
    batch_file.write_text(
        json.dumps({"accountid": A[4], "name": "B", "_sdc_extracted_at": DELETED})
        + "\n"
        + json.dumps({"accountid": A[5], "_sdc_deleted_at": DELETED})
        + "\n"
    )
    target = OfflineTarget(
        {
            "dead_letter_path": str(tmp_path / "dead.jsonl"),
            "stream_maps": {"incoming": {"__alias__": "account"}},
        }
    )
    activate = {"type": "ACTIVATE_VERSION", "stream": "incoming", "version": 1}
    batch = {
        "type": "BATCH",
        "stream": "incoming",
        "encoding": {"format": "jsonl", "compression": None},
        "manifest": [batch_file.as_uri()],
    }
    with caplog.at_level(logging.INFO):
        target.listen(_lines(_schema("incoming"), activate, batch, activate))
    assert target.seen == [
        {"accountid": A[4], "name": "B"},
        {"accountid": A[5], "_sdc_deleted_at": DELETED},
    ]
    assert target.report.snapshot()["account"]["skipped_deletions"] == 1
    about_versions = [r for r in caplog.records if "ACTIVATE_VERSION" in r.getMessage()]
    assert [r.levelno for r in about_versions] == [logging.INFO]


def test_batch_message_without_manifest_is_an_invalid_line(tmp_path: Path) -> None:
    target = OfflineTarget({"dead_letter_path": str(tmp_path / "dead.jsonl")})
    line = {"type": "BATCH", "stream": "account", "encoding": {"format": "jsonl"}}
    with pytest.raises(InvalidInputLine, match="manifest"):
        target.listen(_lines(line))
