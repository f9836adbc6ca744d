"""dynamics_api.metadata.entitydefs: table states read from StateAttributeMetadata (no network)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dynamics_api.http import DataverseClient
from dynamics_api.metadata import StateOption, inactive_state, state_options


def _option(value: int, name: str, default_status: int | None) -> dict[str, Any]:
    """One StateOptionMetadata as the Web API writes it (labels trimmed to the user's one)."""
    label = {"Label": name, "LanguageCode": 1033}
    return {
        "Value": value,
        "InvariantName": name,
        "DefaultStatus": default_status,
        "Label": {"LocalizedLabels": [label], "UserLocalizedLabel": label},
    }


def _body(*options: dict[str, Any]) -> dict[str, Any]:
    return {
        "@odata.context": "https://contoso.crm.dynamics.com/api/data/v9.2/$metadata#...",
        "value": [
            {
                "@odata.type": "#Microsoft.Dynamics.CRM.StateAttributeMetadata",
                "LogicalName": "statecode",
                "MetadataId": "00000000-0000-0000-0000-000000000001",
                "OptionSet": {"Options": list(options)},
            }
        ],
    }


ACCOUNT = _body(_option(0, "Active", 1), _option(1, "Inactive", 2))
INCIDENT = _body(_option(0, "Active", 1), _option(1, "Resolved", 5), _option(2, "Cancelled", 6))


class _Answers:
    """A client stand-in with the one method `state_options` calls; records the paths."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.calls: list[tuple[str, str]] = []

    def get_json(self, path: str, params: str = "") -> dict[str, Any]:
        self.calls.append((path, params))
        return self.body


def _states(body: dict[str, Any], table: str = "account") -> list[StateOption]:
    client = _Answers(body)
    options = state_options(cast(DataverseClient, client), table)
    assert client.calls == [
        (
            f"EntityDefinitions(LogicalName='{table}')/Attributes/"
            "Microsoft.Dynamics.CRM.StateAttributeMetadata",
            "$select=LogicalName&$expand=OptionSet($select=Options)",
        )
    ]
    return options


def test_a_table_with_an_inactive_state() -> None:
    options = _states(ACCOUNT)
    assert options == [
        StateOption(value=0, invariant_name="Active", default_status=1, label="Active"),
        StateOption(value=1, invariant_name="Inactive", default_status=2, label="Inactive"),
    ]
    assert inactive_state(options) == options[1]


def test_a_case_has_no_inactive_state() -> None:
    """Active / Resolved / Cancelled: closing a case is a business action, not a deactivation."""
    options = _states(INCIDENT, "incident")
    assert [o.invariant_name for o in options] == ["Active", "Resolved", "Cancelled"]
    assert inactive_state(options) is None


def test_inactive_is_matched_by_invariant_name_not_label() -> None:
    localized = _option(1, "Inactive", 2)
    localized["Label"]["UserLocalizedLabel"] = {"Label": "Inaktiv", "LanguageCode": 1031}
    state = inactive_state(_states(_body(_option(0, "Active", 1), localized)))
    assert state is not None and (state.value, state.label) == (1, "Inaktiv")


def test_an_inactive_state_without_a_default_status_is_not_used() -> None:
    """Without a status to set alongside, the state cannot be written (statecode + statuscode)."""
    options = _states(_body(_option(0, "Active", 1), _option(1, "Inactive", None)))
    assert options[1].default_status is None
    assert inactive_state(options) is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"value": []}, id="no-statecode"),
        pytest.param({"value": [{"LogicalName": "statecode", "OptionSet": None}]}, id="no-options"),
        pytest.param(_body({"Value": "1", "InvariantName": "Inactive"}), id="value-not-a-number"),
    ],
)
def test_tables_without_usable_states(body: dict[str, Any]) -> None:
    options = _states(body)
    assert options == []
    assert inactive_state(options) is None
