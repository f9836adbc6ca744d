"""What ``$metadata`` (CSDL) does not carry, read from the EntityDefinitions API: text columns'
maximum lengths and a table's states (for deactivating rows).

Each query asks for one typed subset of a table's attributes, never the whole
``EntityDefinitions?$expand=Attributes`` document, which runs to many megabytes on big orgs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynamics_api.http import DataverseClient

__all__ = ["StateOption", "inactive_state", "state_options", "text_lengths"]

_CAST = "Microsoft.Dynamics.CRM."


@dataclass(frozen=True)
class StateOption:
    """One value of a table's ``statecode``: the status a row gets by default in that state."""

    value: int
    invariant_name: str
    default_status: int | None
    label: str


def _attributes_path(table: str, cast: str) -> str:
    return f"EntityDefinitions(LogicalName='{table}')/Attributes/{_CAST}{cast}"


def text_lengths(client: DataverseClient, table: str) -> dict[str, int]:
    """Column -> MaxLength for the table's text and memo columns.

    Raises:
        DynamicsError: the query failed (the caller decides whether that matters).
    """
    out: dict[str, int] = {}
    for cast in ("StringAttributeMetadata", "MemoAttributeMetadata"):
        body = client.get_json(
            _attributes_path(table, cast), params="$select=LogicalName,MaxLength"
        )
        for item in body.get("value", []):
            name, limit = item.get("LogicalName"), item.get("MaxLength")
            if isinstance(name, str) and isinstance(limit, int) and limit > 0:
                out[name] = limit
    return out


def state_options(client: DataverseClient, table: str) -> list[StateOption]:
    """The table's states (empty when it has no ``statecode``).

    Raises:
        DynamicsError: the query failed.
    """
    body = client.get_json(
        _attributes_path(table, "StateAttributeMetadata"),
        params="$select=LogicalName&$expand=OptionSet($select=Options)",
    )
    out: list[StateOption] = []
    for attribute in body.get("value", []):
        options = (attribute.get("OptionSet") or {}).get("Options") or []
        for option in options:
            value = option.get("Value")
            if not isinstance(value, int):
                continue
            label = ((option.get("Label") or {}).get("UserLocalizedLabel") or {}).get("Label")
            status = option.get("DefaultStatus")
            out.append(
                StateOption(
                    value=value,
                    invariant_name=str(option.get("InvariantName") or label or value),
                    default_status=status if isinstance(status, int) else None,
                    label=str(label or option.get("InvariantName") or value),
                )
            )
    return out


def inactive_state(options: list[StateOption]) -> StateOption | None:
    """The state that deactivates a row: the one named ``Inactive``, as standard and custom
    tables have it. Tables whose other states mean something else (a case is Resolved or
    Cancelled, an opportunity Won or Lost) have none: closing those is a business action."""
    for option in options:
        if option.invariant_name.lower() == "inactive" and option.default_status is not None:
            return option
    return None
