"""Formatted values against the emulator: real pages with the tap's Prefer value, transformed by
tap_dynamics.formatted, checked against the emulator's model and rows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from dynamics_api.metadata import EntityModel, json_schema, parse_metadata
from dynamics_emulator.server import Emulator
from tap_dynamics.formatted import (
    LABEL_SUFFIX,
    NAME_SUFFIX,
    TABLE_SUFFIX,
    extend_schema,
    formatted_columns,
    make_row_transform,
    prefer_annotations,
    source_columns,
)
from tests.webapi import WebApi


@pytest.fixture(scope="module")
def model(emulator: Emulator) -> EntityModel:
    with WebApi(emulator) as api:
        resp = api.get("$metadata", headers={"Accept": "application/xml"})
        assert resp.status_code == 200
        return parse_metadata(resp.content)


def fetch(api: WebApi, entity_set: str, select: list[str], prefer: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    url: str | None = api.url(entity_set)
    params: dict[str, str] | None = {"$select": ",".join(select)}
    while url:
        resp = api.session.get(url, params=params, headers={"Prefer": prefer}, timeout=60)
        assert resp.status_code == 200, resp.text
        assert 'odata.include-annotations="' in resp.headers.get("Preference-Applied", "")
        body = resp.json()
        rows.extend(body["value"])
        url, params = body.get("@odata.nextLink"), None
    return rows


def primary_names(api: WebApi, emulator: Emulator, table: str) -> dict[str, str | None]:
    entity = emulator.model[table]
    assert entity.primary_name is not None
    rows = api.get_all(
        f"{entity.entity_set}?$select={entity.primary_id},{entity.primary_name}", page_size=5000
    )
    return {r[entity.primary_id]: r[entity.primary_name] for r in rows}


@pytest.mark.parametrize("table", ["account", "incident"])
def test_formatted_values_over_all_rows(
    api: WebApi, emulator: Emulator, model: EntityModel, table: str
) -> None:
    entity = model.entities[table]
    assert entity.entity_set is not None
    schema = extend_schema(entity, json_schema(entity), model)
    props = schema["properties"]
    selected = list(props)
    extras = formatted_columns(props, selected)
    real = [c for c in selected if c not in extras]
    select = source_columns(props, selected)
    assert select == real
    prefer = f"odata.maxpagesize=200,{prefer_annotations()}"
    raw = fetch(api, entity.entity_set, select, prefer)
    transform = make_row_transform(real, extras)
    rows = [transform(r) for r in raw]
    assert len(rows) == emulator.counts[table]

    emu_entity = emulator.model[table]
    attrs = emu_entity.by_property()
    labels = [e for e in extras if e.endswith(LABEL_SUFFIX)]
    names = [e for e in extras if e.endswith(NAME_SUFFIX)]
    tables = [e for e in extras if e.endswith(TABLE_SUFFIX)]
    assert {"statecode_label", "statuscode_label"} <= set(labels)
    assert {"_ownerid_value_name", "_ownerid_value_table"} <= set(extras)
    if table == "incident":
        assert {"_customerid_value_table", "isescalated_label", "prioritycode_label"} <= set(extras)
    # Single-target lookups get no _table column.
    assert "_createdby_value_table" not in extras

    targets = {lk: model.lookup_targets(entity.lookups[lk]) for lk in entity.lookups}
    lookup_names = {
        t: primary_names(api, emulator, t) for lk in targets if lk in props for t in targets[lk]
    }

    filled: Counter[str] = Counter()
    seen_tables: dict[str, Counter[str]] = {t: Counter() for t in tables}
    for row in rows:
        assert list(row) == [*real, *extras]  # every column, every row, stable order
        assert not any("@" in k or "." in k for k in row)
        for col in labels:
            base = col[: -len(LABEL_SUFFIX)]
            value, attr = row[base], attrs[base]
            if value is None:
                expected = None
            elif attr.is_choice:
                assert attr.options is not None
                expected = attr.options[value]
            elif attr.type == "boolean":
                expected = "Yes" if value else "No"
            else:  # whole numbers named ...code
                expected = f"{value:,}"
            assert row[col] == expected, (col, value)
            filled[col] += row[col] is not None
        for col in names:
            base = col[: -len(NAME_SUFFIX)]
            rid = row[base]
            if rid is None:
                assert row[col] is None
                if f"{base}{TABLE_SUFFIX}" in row:
                    assert row[f"{base}{TABLE_SUFFIX}"] is None
                continue
            options = targets[base]
            target = row[f"{base}{TABLE_SUFFIX}"] if len(options) != 1 else options[0]
            assert target in options
            assert rid in lookup_names[target], (base, target, rid)
            assert row[col] == lookup_names[target][rid], (col, rid)
            filled[col] += row[col] is not None
        for col in tables:
            if row[col] is not None:
                seen_tables[col][row[col]] += 1

    for col in ("statecode_label", "statuscode_label", "_ownerid_value_name"):
        assert filled[col] == len(rows), col
    assert filled["_createdby_value_name"] > 0
    assert set(seen_tables["_ownerid_value_table"]) <= {"systemuser", "team"}
    assert seen_tables["_ownerid_value_table"]["systemuser"] > 0
    assert seen_tables["_ownerid_value_table"]["team"] > 0
    if table == "incident":
        assert set(seen_tables["_customerid_value_table"]) == {"account", "contact"}
    print(f"\n{table}: {len(rows)} rows, {len(extras)} extra columns; tables {seen_tables}")


def test_labels_match_the_emulator_options(
    api: WebApi, emulator: Emulator, model: EntityModel
) -> None:
    """Every status reason of incident the rows use is rendered as the model's label."""
    entity = model.entities["incident"]
    props = extend_schema(entity, json_schema(entity, properties=["statuscode"]), model)[
        "properties"
    ]
    extras = formatted_columns(props, ["statuscode_label"])
    assert extras == ["statuscode_label"]
    select = source_columns(props, ["incidentid", "statuscode_label"])
    assert select == ["incidentid", "statuscode"]
    transform = make_row_transform(["incidentid"], extras)
    rows = [transform(r) for r in fetch(api, "incidents", select, prefer_annotations())]
    options = emulator.model["incident"].attributes["statuscode"].options
    assert options is not None
    used = Counter(r["statuscode_label"] for r in rows)
    assert set(used) <= set(options.values())
    assert len(used) > 1
    assert all(set(r) == {"incidentid", "statuscode_label"} for r in rows)
