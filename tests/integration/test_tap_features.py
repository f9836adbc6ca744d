"""Formatted values, custom tables by wildcard, and tables the user cannot read."""

from __future__ import annotations

from pathlib import Path

from dynamics_emulator.server import Emulator
from tests.fixtures import CRM_SCHEMA, needs_fixtures
from tests.tapharness import discover, page_requests, run_tap, select

FMT = {"include_formatted_values": True}


def test_formatted_value_columns_on_every_page(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    cat = discover(emu, tmp_path / "d", **FMT)
    incident = next(s for s in cat["streams"] if s["tap_stream_id"] == "incident")
    props = incident["schema"]["properties"]
    for col in (
        "statuscode_label",
        "prioritycode_label",
        "_customerid_value_name",
        "_customerid_value_table",
        "_ownerid_value_table",
    ):
        assert col in props, col
    emu.clear_log()
    run = run_tap(
        emu, tmp_path, catalog=select(cat, ["incident"]), config={**FMT, "page_size": 150}
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rows = run.records("incident")
    assert len(rows) == emu.counts["incident"]
    labels = emu.model["incident"].attributes["statuscode"].options or {}
    assert all(r["statuscode_label"] == labels[r["statuscode"]] for r in rows)
    assert {r["_customerid_value_table"] for r in rows if r["_customerid_value"]} == {
        "account",
        "contact",
    }
    assert all("@" not in k for r in rows for k in r)
    pages = page_requests(emu.requests("/api/data/v9.2/incidents"))
    assert len(pages) > 1
    assert all("odata.include-annotations" in p.headers["prefer"] for p in pages)


@needs_fixtures
def test_wildcard_custom_tables_over_a_real_org(tmp_path: Path) -> None:
    with Emulator(csdl_path=CRM_SCHEMA) as emu:
        cat = discover(emu, tmp_path / "d", custom_entities=["*"], streams=["account"])
        names = {s["tap_stream_id"] for s in cat["streams"]}
        assert names == {"account", "he_employee"}
        run = run_tap(
            emu, tmp_path, catalog=select(cat, ["he_employee"]), config={"custom_entities": ["*"]}
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert len(run.records("he_employee")) == emu.counts["he_employee"]


def test_wildcard_table_without_read_privilege_is_skipped(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    cfg = {"custom_entities": ["new_*"], "streams": ["team"]}
    cat = discover(emu, tmp_path / "d", **cfg)
    assert {s["tap_stream_id"] for s in cat["streams"]} == {"team", "new_project"}
    emu.service.settings.denied_tables["*"] = {"new_project"}  # type: ignore[union-attr]
    run = run_tap(emu, tmp_path, catalog=select(cat, ["team", "new_project"]), config=cfg)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Skipping table 'new_project'" in run.stderr
    assert len(run.records("team")) == emu.counts["team"]
