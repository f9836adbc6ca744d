"""tap-dynamics end to end against the emulator (real HTTPS, real msal, the real CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import jsonschema
import pytest

from dynamics_emulator.faults import Fault
from dynamics_emulator.server import Emulator
from tap_dynamics.streams import STANDARD_STREAMS
from tests.tapharness import discover, page_requests, run_tap, select

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


@pytest.fixture(scope="module")
def module_emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def catalog(module_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return discover(
        module_emulator, tmp_path_factory.mktemp("discover"), custom_entities=["new_project"]
    )


@pytest.fixture(scope="module")
def full_run(module_emulator: Emulator, catalog: dict, tmp_path_factory: pytest.TempPathFactory):
    names = [*STANDARD_STREAMS, "new_project"]
    module_emulator.clear_log()
    return run_tap(
        module_emulator,
        tmp_path_factory.mktemp("full"),
        config={"custom_entities": ["new_project"]},
        catalog=select(catalog, names),
    )


def test_discovery_catalog(catalog: dict) -> None:
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    assert set(streams) == {*STANDARD_STREAMS, "new_project"}
    assert streams["opportunity"]["table_name"] == "opportunities"
    assert streams["account"]["key_properties"] == ["accountid"]
    assert streams["systemuser"]["key_properties"] == ["systemuserid"]
    assert streams["email"]["key_properties"] == ["activityid"]
    assert streams["account"]["replication_key"] == "modifiedon"
    contact = streams["contact"]["schema"]["properties"]
    assert contact["birthdate"]["format"] == "date"
    assert contact["modifiedon"]["format"] == "date-time"
    assert contact["_parentcustomerid_value"]["format"] == "uuid"
    assert "number" in contact["annualincome"]["type"]
    assert "subject" in streams["email"]["schema"]["properties"]  # inherited from activitypointer


def test_full_sync_every_row_of_every_stream(module_emulator: Emulator, full_run) -> None:
    assert full_run.returncode == 0, full_run.stderr[-3000:]
    counts = module_emulator.counts
    expected = {n: counts.get(n, 0) for n in STANDARD_STREAMS}
    expected["activitypointer"] = counts["email"] + counts["phonecall"] + counts["task"]
    expected["new_project"] = counts["new_project"]
    for name, n in expected.items():
        rows = full_run.records(name)
        key = "activityid" if name in ("activitypointer", "email", "phonecall", "task") else None
        key = key or {"systemuser": "systemuserid", "team": "teamid"}.get(name, f"{name}id")
        assert len(rows) == n, name
        assert len({r[key] for r in rows}) == n, name


def test_records_match_their_schemas_exactly(full_run) -> None:
    """The premise of switching the SDK's type conformance off: every value already has the
    declared JSON type and format, for every Edm type in the model."""
    schemas = full_run.schemas()
    for name, schema in schemas.items():
        validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
        for record in full_run.records(name)[:300]:
            errors = list(validator.iter_errors(record))
            assert not errors, (name, errors[0].message)
            assert set(record) <= set(schema["properties"])


def test_money_stays_exact(full_run) -> None:
    raw = [line for line in full_run.stdout.splitlines() if '"stream":"account"' in line]
    assert any('"revenue":' in line and "." in line.split('"revenue":')[1][:30] for line in raw)


def test_catalog_run_makes_no_metadata_request(full_run, module_emulator: Emulator) -> None:
    assert full_run.returncode == 0
    paths = [e.path for e in module_emulator.log]
    assert any(p.endswith("/accounts") for p in paths)
    assert not [p for p in paths if "$metadata" in p]


def test_select_only_selected_columns_and_prefer_every_page(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    cat = discover(fresh_emulator, tmp_path / "d")
    fresh_emulator.clear_log()
    run = run_tap(
        fresh_emulator,
        tmp_path,
        # One chain of pages (windows side by side: tests/integration/test_parallel_read.py).
        config={"page_size": 120, "max_parallel_requests": 1},
        catalog=select(cat, ["account"], {"account": ["accountid", "name", "modifiedon"]}),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = run.records("account")
    assert len(rows) == fresh_emulator.counts["account"]
    assert all(set(r) == {"accountid", "name", "modifiedon"} for r in rows)
    pages = fresh_emulator.requests("/api/data/v9.2/accounts")
    assert len(pages) == -(-fresh_emulator.counts["account"] // 120)
    for page in pages:
        assert page.headers["prefer"] == "odata.maxpagesize=120"
        query = parse_qs(page.query)
        assert len(query["$select"]) == 1  # once, never duplicated on nextLink pages
        assert sorted(query["$select"][0].split(",")) == ["accountid", "modifiedon", "name"]
        assert query["$orderby"] == ["modifiedon asc,accountid asc"]


def test_incremental_second_run_returns_only_changes(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    cat = select(discover(fresh_emulator, tmp_path / "d"), ["incident"])
    first = run_tap(fresh_emulator, tmp_path / "1", catalog=cat)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(first.records("incident")) == fresh_emulator.counts["incident"]
    state = first.last_state
    bookmark = state["bookmarks"]["incident"]["replication_key_value"]  # type: ignore[index]
    changed = set(fresh_emulator.row_ids("incident")[100:105])
    fresh_emulator.update_rows("incident", changed, {"title": "Changed"})
    second = run_tap(fresh_emulator, tmp_path / "2", catalog=cat, state=state)
    assert second.returncode == 0, second.stderr[-2000:]
    rows = second.records("incident")
    ids = {r["incidentid"] for r in rows}
    assert changed <= ids
    # Anything else is a row at the bookmark itself (read again: `ge`, never `gt`).
    assert all(r["modifiedon"] == bookmark for r in rows if r["incidentid"] not in changed)


def test_no_row_lost_when_many_share_a_second_across_pages(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    """Resume from a bookmark inside a second shared by far more rows than a page holds."""
    emu = fresh_emulator
    cat = select(discover(emu, tmp_path / "d"), ["contact"])
    every = run_tap(emu, tmp_path / "all", catalog=cat, config={"page_size": 25})
    rows = every.records("contact")
    per_second: dict[str, int] = {}
    for r in rows:
        per_second[r["modifiedon"]] = per_second.get(r["modifiedon"], 0) + 1
    busy, n = max(per_second.items(), key=lambda kv: kv[1])
    assert n > 100  # many pages' worth of rows in one second
    state = {
        "bookmarks": {"contact": {"replication_key": "modifiedon", "replication_key_value": busy}}
    }
    resumed = run_tap(emu, tmp_path / "resume", catalog=cat, state=state, config={"page_size": 25})
    got = {r["contactid"] for r in resumed.records("contact")}
    want = {r["contactid"] for r in rows if r["modifiedon"] >= busy}
    assert got == want


def test_start_date_limits_the_first_run(fresh_emulator: Emulator, tmp_path: Path) -> None:
    cat = select(discover(fresh_emulator, tmp_path / "d"), ["lead"])
    start = "2026-06-01T00:00:00Z"
    run = run_tap(fresh_emulator, tmp_path, catalog=cat, config={"start_date": start})
    rows = run.records("lead")
    assert rows
    assert all(r["modifiedon"] >= start for r in rows)
    assert len(rows) < fresh_emulator.counts["lead"]


def test_recovers_from_throttling_faults_and_revoked_tokens(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    cat = select(discover(emu, tmp_path / "d"), ["contact"])
    clean = run_tap(emu, tmp_path / "clean", catalog=cat, config={"page_size": 200})
    emu.faults.script(
        [
            Fault("status", status=429, retry_after=1),
            None,
            Fault("status", status=503),
            Fault("reset"),
            None,
            Fault("status", status=429),  # no Retry-After: backs off on its own
            Fault("truncate"),
        ]
    )
    emu.revoke_all_tokens()  # the first request after this gets 401, then a new token
    faulty = run_tap(emu, tmp_path / "faulty", catalog=cat, config={"page_size": 200})
    assert faulty.returncode == 0, faulty.stderr[-3000:]
    assert [r["contactid"] for r in faulty.records("contact")] == [
        r["contactid"] for r in clean.records("contact")
    ]
    assert len(emu.faults.injected) == 5


def _one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("tap-dynamics:")]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


def test_wrong_secret_is_one_clear_sentence(emulator: Emulator, tmp_path: Path) -> None:
    secret = "wrong-Secret-Value-0123456789"
    run = run_tap(emulator, tmp_path, config={"client_secret": secret}, args=["--discover"])
    assert run.returncode == 1
    line = _one_sentence(run.stderr)
    assert "AADSTS7000215" in line
    assert "client_secret" in line
    assert secret not in run.stderr + run.stdout


def test_http_url_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    url = emulator.url.replace("https://", "http://")
    run = run_tap(emulator, tmp_path, config={"environment_url": url}, args=["--discover"])
    assert run.returncode == 1
    assert "https" in _one_sentence(run.stderr)


def test_unknown_custom_table(emulator: Emulator, tmp_path: Path) -> None:
    run = run_tap(
        emulator, tmp_path, config={"custom_entities": ["new_projects"]}, args=["--discover"]
    )
    assert run.returncode == 1
    assert "new_projects" in _one_sentence(run.stderr)


def test_missing_privilege_names_the_table(fresh_emulator: Emulator, tmp_path: Path) -> None:
    cat = select(discover(fresh_emulator, tmp_path / "d"), ["lead"])
    fresh_emulator.service.settings.denied_tables["*"] = {"lead"}  # type: ignore[union-attr]
    run = run_tap(fresh_emulator, tmp_path, catalog=cat)
    assert run.returncode == 1
    line = _one_sentence(run.stderr)
    assert "lead" in line
    assert "security role" in line


def test_catalog_snapshot(catalog: dict) -> None:
    """The discovered catalog of the emulator's standard org, compared with the stored one, so
    schema drift shows up in review. Regenerate with UPDATE_SNAPSHOTS=1."""
    import os

    path = Path(__file__).resolve().parents[1] / "snapshots" / "emulator_catalog.json"
    slim = {
        s["tap_stream_id"]: {
            "table_name": s.get("table_name"),
            "key_properties": s["key_properties"],
            "replication_key": s.get("replication_key"),
            "properties": s["schema"]["properties"],
        }
        for s in sorted(catalog["streams"], key=lambda s: s["tap_stream_id"])
    }
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(json.dumps(slim, indent=1, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot at {path}: run with UPDATE_SNAPSHOTS=1 once"
    assert json.loads(path.read_text()) == slim


def test_delegated_flow_runs_twice_on_a_rotating_refresh_token(
    fresh_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signed-in user's refresh token: the tap extracts with it, Entra ID rotates it, and the
    token cache carries the new one to the next run (the original is then spent)."""
    from tests.integration.test_auth import first_refresh_token

    emu = fresh_emulator
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_bundle)
    refresh = first_refresh_token(emu)
    cache = tmp_path / "tokens" / "cache.json"
    config = {
        "client_id": emu.public_client_id,
        "client_secret": None,
        "refresh_token": refresh,
        "tenant_id": "organizations",
        "token_cache_path": str(cache),
    }
    cat = select(discover(emu, tmp_path / "d", **config), ["team"])
    for n in (1, 2):
        run = run_tap(emu, tmp_path / f"run{n}", catalog=cat, config=config)
        assert run.returncode == 0, run.stderr[-2000:]
        assert len(run.records("team")) == emu.counts["team"]
        assert refresh not in run.stderr
    assert (cache.stat().st_mode & 0o777) == 0o600
    calls = page_requests(emu.requests("/api/data/v9.2/teams"))
    assert len(calls) == 2
