"""Deletes through change tracking, its fallbacks, and big pages asked for again smaller."""

from __future__ import annotations

from pathlib import Path

from dynamics_emulator.server import Emulator
from tests.tapharness import discover, run_tap, select

CT = {"change_tracking": ["account", "new_project"], "custom_entities": ["new_project"]}


def _catalog(emu: Emulator, tmp: Path, streams: list[str]) -> dict:
    return select(discover(emu, tmp / "discover", **CT), streams)


def test_first_run_full_then_changes_and_deletes(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    cat = _catalog(emu, tmp_path, ["account"])
    props = next(s for s in cat["streams"] if s["tap_stream_id"] == "account")["schema"][
        "properties"
    ]
    assert props["_sdc_deleted_at"]["format"] == "date-time"
    first = run_tap(emu, tmp_path / "1", catalog=cat, config=CT)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(first.records("account")) == emu.counts["account"]
    state = first.last_state
    assert state is not None
    assert "$deltatoken=" in state["bookmarks"]["account"]["delta_link"]
    ids = emu.row_ids("account", 10)
    emu.update_rows("account", ids[:3], {"name": "Changed"})
    emu.delete_rows("account", ids[5:7])
    second = run_tap(emu, tmp_path / "2", catalog=cat, config=CT, state=state)
    assert second.returncode == 0, second.stderr[-2000:]
    rows = second.records("account")
    changed = {r["accountid"] for r in rows if r["_sdc_deleted_at"] is None}
    deleted = {r["accountid"] for r in rows if r["_sdc_deleted_at"] is not None}
    assert changed == set(ids[:3])
    assert deleted == set(ids[5:7])
    assert all(r["name"] == "Changed" for r in rows if r["accountid"] in changed)
    third = run_tap(emu, tmp_path / "3", catalog=cat, config=CT, state=second.last_state)
    assert third.records("account") == []


def test_expired_token_re_extracts_with_a_warning(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    cat = _catalog(emu, tmp_path, ["account"])
    first = run_tap(emu, tmp_path / "1", catalog=cat, config=CT)
    emu.expire_delta_tokens()
    again = run_tap(emu, tmp_path / "2", catalog=cat, config=CT, state=first.last_state)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(again.records("account")) == emu.counts["account"]
    assert "has expired" in again.stderr
    before, after = first.last_state, again.last_state
    assert before is not None
    assert after is not None
    assert (
        after["bookmarks"]["account"]["delta_link"] != before["bookmarks"]["account"]["delta_link"]
    )
    # The new link is a good one: the next run reads the changes since, not the table again.
    emu.update_rows("account", emu.row_ids("account", 1), {"name": "Changed"})
    third = run_tap(emu, tmp_path / "3", catalog=cat, config=CT, state=after)
    assert third.returncode == 0, third.stderr[-2000:]
    assert "has expired" not in third.stderr
    assert [r["name"] for r in third.records("account")] == ["Changed"]


def test_table_without_change_tracking_falls_back_to_modifiedon(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    emu = fresh_emulator
    cat = _catalog(emu, tmp_path, ["new_project"])
    first = run_tap(emu, tmp_path / "1", catalog=cat, config=CT)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "Change tracking is not enabled for table 'new_project'" in first.stderr
    assert len(first.records("new_project")) == emu.counts["new_project"]
    changed = emu.row_ids("new_project", 2)
    emu.update_rows("new_project", changed, {"new_name": "Moved"})
    second = run_tap(emu, tmp_path / "2", catalog=cat, config=CT, state=first.last_state)
    got = {r["new_projectid"] for r in second.records("new_project")}
    assert set(changed) <= got
    assert len(got) < emu.counts["new_project"]


def test_too_big_pages_are_asked_for_smaller(fresh_emulator: Emulator, tmp_path: Path) -> None:
    emu = fresh_emulator
    cat = select(discover(emu, tmp_path / "d"), ["contact"])
    clean = run_tap(emu, tmp_path / "clean", catalog=cat)
    emu.service.settings.max_response_bytes = 400_000  # type: ignore[union-attr]
    small = run_tap(emu, tmp_path / "small", catalog=cat)
    assert small.returncode == 0, small.stderr[-2000:]
    assert "too big" in small.stderr
    assert [r["contactid"] for r in small.records("contact")] == [
        r["contactid"] for r in clean.records("contact")
    ]
    emu.service.settings.max_response_bytes = 2_000  # type: ignore[union-attr]
    hopeless = run_tap(emu, tmp_path / "hopeless", catalog=cat)
    assert hopeless.returncode == 1
    assert "deselect large columns" in hopeless.stderr
