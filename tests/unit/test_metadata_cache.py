"""dynamics_api.metadata.cache: the parsed model on disk (msgspec frames)."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dynamics_api.metadata import (
    EntityModel,
    MetadataCache,
    Property,
    fetch_metadata,
    parse_metadata,
)
from tests.fixtures import CRM_SCHEMA, DYNAMICS_CRM, needs_fixtures
from tests.unit.csdl_docs import ENV, VERSION, Opener

SIGNATURE = b"dynamics-api/metadata-cache\n"


@pytest.fixture(scope="module")
def crm() -> EntityModel:
    return parse_metadata(CRM_SCHEMA)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, crm: EntityModel) -> bytes:
    """The bytes of crm_schema.xml's model as saved."""
    cache = MetadataCache(tmp_path_factory.mktemp("saved"), 3600)
    cache.save(ENV, crm)
    return cache.path_for(ENV).read_bytes()


def _assert_same_model(loaded: EntityModel | None, parsed: EntityModel) -> None:
    assert loaded is not None
    assert loaded == parsed
    # what equality does not look at: order, classes, the timing
    assert list(loaded.entities) == list(parsed.entities)
    assert loaded.parse_seconds == parsed.parse_seconds
    for name, entity in parsed.entities.items():
        got = loaded.entities[name]
        assert list(got.properties) == list(entity.properties), name
        assert list(got.lookups) == list(entity.lookups), name
        assert all(type(p) is Property for p in got.properties.values())


@needs_fixtures
@pytest.mark.parametrize("document", [CRM_SCHEMA, DYNAMICS_CRM], ids=lambda p: p.stem)
def test_round_trip_of_a_real_model(tmp_path: Path, document: Path) -> None:
    parsed = parse_metadata(document)
    cache = MetadataCache(tmp_path, ttl_seconds=3600)
    cache.save(ENV, parsed)
    _assert_same_model(cache.load(ENV, None), parsed)


@needs_fixtures
def test_loaded_model_answers_like_the_parsed_one(tmp_path: Path, crm: EntityModel) -> None:
    cache = MetadataCache(tmp_path / "cache", ttl_seconds=3600)
    cache.save(ENV, crm)
    loaded = cache.load(ENV, None)
    assert loaded is not None
    account = loaded.entities["account"]
    assert loaded.lookup_targets(account.lookups["_ownerid_value"]) == ["systemuser", "team"]
    assert loaded.by_set("accounts") is account
    assert account.primary_id == "accountid"
    # the target narrows text lengths this way (read from EntityDefinitions)
    name = account.properties["name"]
    assert dataclasses.replace(name, max_length=7).max_length == 7
    assert cache.load(ENV, ["account", "email"]) == crm
    # same environment, differently spelled
    assert cache.load("HTTPS://contoso.CRM4.dynamics.com:443/", ["account"]) == crm
    assert cache.load("https://fabrikam.crm.dynamics.com", ["account"]) is None


@needs_fixtures
def test_cache_file(tmp_path: Path, crm: EntityModel) -> None:
    cache = MetadataCache(tmp_path / "cache", ttl_seconds=3600)
    cache.save(ENV, crm)
    files = list((tmp_path / "cache").iterdir())
    assert files == [cache.path_for(ENV)]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700
    data = files[0].read_bytes()
    assert data.startswith(SIGNATURE + struct.pack(">I", 2))
    assert b"<edmx" not in data  # the parsed model, not the XML
    assert len(data) < CRM_SCHEMA.stat().st_size / 2


@needs_fixtures
def test_cache_loading_does_not_need_the_xml(tmp_path: Path) -> None:
    model = parse_metadata(CRM_SCHEMA, ["account"])
    MetadataCache(tmp_path, 3600).save(ENV, model)

    def no_network(url: str) -> Iterator[bytes]:
        raise AssertionError("fetched although cached")

    cached = MetadataCache(tmp_path, 3600)
    assert fetch_metadata(no_network, ENV, ["account"], cached, api_version=VERSION) == model


@needs_fixtures
def test_cache_ttl(tmp_path: Path) -> None:
    now = [1_000_000.0]
    cache = MetadataCache(tmp_path, ttl_seconds=600, clock=lambda: now[0])
    model = parse_metadata(CRM_SCHEMA, ["account"])
    cache.save(ENV, model)
    now[0] += 599
    assert cache.load(ENV, ["account"]) == model
    now[0] += 2
    assert cache.load(ENV, ["account"]) is None
    now[0] -= 1000  # saved "in the future": the clock went back
    assert cache.load(ENV, ["account"]) is None


@needs_fixtures
def test_cache_must_hold_every_wanted_type(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path, 3600)
    cache.save(ENV, parse_metadata(CRM_SCHEMA, ["account"]))
    assert cache.load(ENV, ["account"]) is not None
    assert cache.load(ENV, "account") is not None
    assert cache.load(ENV, ["account", "contact"]) is None
    assert cache.load(ENV, None) is None  # a partial model never answers "everything"
    opener = Opener(CRM_SCHEMA.read_bytes())
    model = fetch_metadata(opener, ENV, ["account", "contact"], cache, api_version=VERSION)
    assert len(opener.urls) == 1 and "contact" in model.entities
    assert cache.load(ENV, ["contact"]) is not None  # saved after the fetch


def _format_1_file(saved_at: float) -> bytes:
    """A file as the JSON codec (format 1) wrote it: one document of dicts and lists."""
    return json.dumps(
        {
            "format": 1,
            "environment": ENV,
            "saved_at": saved_at,
            "source_bytes": 100,
            "parse_seconds": 0.1,
            "complete": True,
            "base_types": {"account": None},
            "abstract_types": [],
            "entities": [
                {
                    "name": "account",
                    "entity_set": "accounts",
                    "key": ["accountid"],
                    "base_type": None,
                    "abstract": False,
                    "properties": [
                        ["accountid", "Edm.Guid", False, False, None, None, None, "primitive"]
                    ],
                    "lookups": [],
                    "navigation": {},
                    "alternate_keys": [],
                    "change_tracking": True,
                    "is_custom": False,
                    "description": None,
                }
            ],
        }
    ).encode()


@needs_fixtures
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="format-1-json"),
        pytest.param(SIGNATURE + struct.pack(">I", 1), id="signed-format-1"),
        pytest.param(SIGNATURE + struct.pack(">I", 3) + b"\x00" * 64, id="future-format"),
    ],
)
def test_a_file_in_another_format_is_a_miss(
    tmp_path: Path, content: bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    now = 1_000_000.0
    cache = MetadataCache(tmp_path, 3600, clock=lambda: now)
    cache.path_for(ENV).write_bytes(_format_1_file(now) if content is None else content)
    with caplog.at_level(logging.INFO, logger="dynamics_api.metadata"):
        assert cache.load(ENV, ["account"]) is None
    assert "written by another version" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    model = fetch_metadata(
        Opener(CRM_SCHEMA.read_bytes()), ENV, ["account"], cache, api_version=VERSION
    )
    assert cache.load(ENV, ["account"]) == model  # replaced by a good one


@needs_fixtures
def test_saving_removes_the_format_1_file(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path, 3600)
    legacy = cache.path_for(ENV).with_suffix(".json")
    legacy.write_bytes(_format_1_file(0.0))
    other = tmp_path / "unrelated.json"
    other.write_text("{}")
    assert cache.load(ENV, ["account"]) is None  # never read
    cache.save(ENV, parse_metadata(CRM_SCHEMA, ["account"]))
    assert not legacy.exists()
    assert other.exists()
    assert cache.load(ENV, ["account"]) is not None


HEADER_AT = len(SIGNATURE) + 4  # where the header frame's length starts


def _frames(data: bytes) -> list[int]:
    """Where each frame (uint32 length, then MessagePack) starts."""
    starts, at = [], HEADER_AT
    while at < len(data):
        starts.append(at)
        at += 4 + struct.unpack(">I", data[at : at + 4])[0]
    return starts


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _last_frame_longer(data: bytes) -> bytes:
    at = _frames(data)[-1]
    size = struct.unpack(">I", data[at : at + 4])[0]
    return data[:at] + struct.pack(">I", size + 1) + data[at + 4 :]


@needs_fixtures
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: b"\x00\xff garbage", id="garbage"),
        pytest.param(lambda d: b"", id="empty"),
        pytest.param(lambda d: d[: len(SIGNATURE) + 2], id="cut-in-format"),
        pytest.param(lambda d: d[: HEADER_AT + 2], id="cut-in-header-length"),
        pytest.param(lambda d: d[: HEADER_AT + 40], id="cut-in-header"),
        pytest.param(lambda d: d[: len(d) // 2], id="cut-in-entities"),
        pytest.param(lambda d: d[:-1], id="last-byte-missing"),
        pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
        pytest.param(
            lambda d: d[:HEADER_AT] + b"\xff\xff\xff\xff" + d[HEADER_AT + 4 :],
            id="huge-frame-length",
        ),
        pytest.param(lambda d: _flip(d, HEADER_AT + 4), id="header-not-an-array"),
        pytest.param(lambda d: _flip(d, _frames(d)[1] + 4), id="entity-not-an-array"),
        pytest.param(_last_frame_longer, id="last-frame-length-too-long"),
        pytest.param(
            lambda d: d[:HEADER_AT] + struct.pack(">I", 1) + b"\x90" + d[HEADER_AT + 5 :],
            id="header-wrong-shape",
        ),
    ],
)
def test_a_corrupt_file_is_a_miss(
    tmp_path: Path,
    saved: bytes,
    damage: Callable[[bytes], bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    content = damage(saved)
    assert content != saved
    cache = MetadataCache(tmp_path, 3600)
    cache.path_for(ENV).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="dynamics_api.metadata"):
        assert cache.load(ENV, ["account"]) is None
    assert "corrupt" in caplog.text
    model = fetch_metadata(
        Opener(CRM_SCHEMA.read_bytes()), ENV, ["account"], cache, api_version=VERSION
    )
    assert cache.load(ENV, ["account"]) == model  # replaced by a good one


@needs_fixtures
def test_a_file_of_another_environment_is_a_miss(
    tmp_path: Path, saved: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MetadataCache(tmp_path, 3600)
    other = "https://fabrikam.crm.dynamics.com"
    cache.path_for(other).write_bytes(saved)  # copied under another environment's name
    with caplog.at_level(logging.WARNING, logger="dynamics_api.metadata"):
        assert cache.load(other, ["account"]) is None
    assert "another environment" in caplog.text


@needs_fixtures
def test_the_collector_is_switched_back_on(tmp_path: Path, saved: bytes) -> None:
    cache = MetadataCache(tmp_path, 3600)
    cache.path_for(ENV).write_bytes(saved)
    assert gc.isenabled()
    assert cache.load(ENV, None) is not None
    assert gc.isenabled()
    cache.path_for(ENV).write_bytes(saved[:-1])
    assert cache.load(ENV, None) is None  # failed half-way through the entity frames
    assert gc.isenabled()


@needs_fixtures
def test_cache_save_failure_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = MetadataCache(blocker / "cache", 3600)
    with caplog.at_level(logging.WARNING, logger="dynamics_api.metadata"):
        cache.save(ENV, parse_metadata(CRM_SCHEMA, ["account"]))
    assert "Could not save" in caplog.text
