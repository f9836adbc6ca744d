"""What the Web API's parts share: who is calling, the request, the Prefer header, the
service settings, limits, annotation names and the payload error."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import Entity
from ..resource import ResourcePath, format_key
from ..wire import ODATA_BAD_URL, ODATA_PAYLOAD_ERROR, ODataError

MAX_PAGE_SIZE = 5000
FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL = "Microsoft.Dynamics.CRM.lookuplogicalname"
ASSOC_NAV = "Microsoft.Dynamics.CRM.associatednavigationproperty"
SUPPORTED_OPTIONS = {
    "$select",
    "$filter",
    "$orderby",
    "$top",
    "$count",
    "$skiptoken",
    "$deltatoken",
}
UNSUPPORTED_OPTIONS = {"$skip", "$search", "$format", "$expand", "$apply", "$levels"}
INT32 = (-(2**31), 2**31 - 1)
ROW_VERSION_MISMATCH = (
    "The version of the existing record doesn't match the RowVersion property provided."
)


@dataclass
class Caller:
    """Who is calling: the app (client id) and the systemuser the call runs as."""

    client_id: str
    systemuser_id: str | None
    user_object_id: str | None = None


@dataclass
class Request:
    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    caller: Caller | None = None
    base_url: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Prefer:
    max_page_size: int | None = None
    annotations: list[str] = field(default_factory=list)
    track_changes: bool = False
    return_representation: bool = False
    continue_on_error: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Prefer:
        p = cls()
        if not header:
            return p
        for item in _split_prefer(header):
            name, _, value = item.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name == "odata.maxpagesize":
                try:
                    p.max_page_size = int(value)
                except ValueError:
                    raise ODataError(
                        400, ODATA_BAD_URL, f"Invalid odata.maxpagesize '{value}'."
                    ) from None
            elif name == "odata.include-annotations":
                p.annotations = [a.strip() for a in value.split(",") if a.strip()]
            elif name == "odata.track-changes":
                p.track_changes = True
            elif name == "return":
                p.return_representation = value == "representation"
            elif name == "odata.continue-on-error":
                p.continue_on_error = True
        return p

    def wants(self, term: str) -> bool:
        return any(fnmatch.fnmatchcase(term, pat) for pat in self.annotations)


def _split_prefer(header: str) -> list[str]:
    """Split a Prefer header on commas outside double quotes (several headers arrive joined)."""
    out: list[str] = []
    buf: list[str] = []
    in_q = False
    for ch in header:
        if ch == '"':
            in_q = not in_q
        if ch == "," and not in_q:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


@dataclass
class ServiceSettings:
    change_tracking_retention_days: float = 7.0
    denied_tables: dict[str, set[str]] = field(default_factory=dict)  # client id or "*" -> tables
    max_response_bytes: int | None = None  # a page larger than this fails with 0x80040216
    #: Tables without CreateMultiple / UpdateMultiple / UpsertMultiple (logical names).
    bulk_unsupported: set[str] = field(default_factory=set)
    #: Client ids (or "*") whose user lacks prvBypassCustomBusinessLogic.
    no_bypass_privilege: set[str] = field(default_factory=set)


def shown_key(res: ResourcePath) -> str:
    if res.key_is_guid:
        return str((res.key or {}).get(""))
    return format_key(res.key or {})


def payload_error(entity: Entity, inner: str) -> ODataError:
    return ODataError(
        400,
        ODATA_PAYLOAD_ERROR,
        f"Error identified in Payload provided by the user for Entity :'{entity.entity_set}', For "
        "more information on this error please follow this help link "
        "https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
        f"Microsoft.OData.ODataException: {inner}",
    )
