"""Unbound functions besides ``WhoAmI``: ``RetrieveTotalRecordCount``.

``GET RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account","contact"]`` answers a recent
snapshot of each table's row count (the service's is from within the last 24 hours, so it lags
writes), as an ``EntityRecordCountCollection``: parallel ``Keys`` (logical names) and ``Values``.
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..resource import ResourcePath
from ..wire import ENTITY_NOT_FOUND, ODATA_BAD_URL, ODataError, Response, json_response
from .base import ServiceBase
from .common import Request

_PARAM_RE = re.compile(r"^\s*EntityNames\s*=\s*(.+?)\s*$", re.DOTALL)
_QUOTED_RE = re.compile(r"'((?:[^']|'')*)'")


class Functions(ServiceBase):
    """``RetrieveTotalRecordCount`` and its snapshot of row counts."""

    _record_counts: dict[str, int] | None = None
    _counts_lock = threading.Lock()

    def snapshot_record_counts(self) -> dict[str, int]:
        """Count every table's rows now; ``RetrieveTotalRecordCount`` answers from this."""
        counts = {e.logical_name: self.store.count(e) for e in self.model.concrete()}
        if "activitypointer" in self.model:
            counts["activitypointer"] = self.store.count(self.model["activitypointer"])
        with self._counts_lock:
            self._record_counts = counts
        return counts

    def _retrieve_total_record_count(self, req: Request, res: ResourcePath) -> Response:
        if req.method != "GET":
            raise ODataError(405, "", "RetrieveTotalRecordCount is a function: use GET.")
        names = _entity_names(res.args or "", dict(parse_qsl(req.raw_query)))
        with self._counts_lock:
            counts = self._record_counts
        if counts is None:
            # The first call takes the snapshot; later writes show only after a new one.
            counts = self.snapshot_record_counts()
        for name in names:
            if name not in counts:
                raise ODataError(404, ENTITY_NOT_FOUND, f"Could not find table with name '{name}'.")
        base = f"{req.base_url}/api/data/{res.version}"
        return json_response(
            200,
            {
                "@odata.context": (
                    f"{base}/$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse"
                ),
                "EntityRecordCountCollection": {
                    "Count": len(names),
                    "IsReadOnly": False,
                    "Keys": names,
                    "Values": [counts[n] for n in names],
                },
            },
        )


def _entity_names(args: str, aliases: dict[str, str]) -> list[str]:
    """The ``EntityNames`` parameter: inline (``["a","b"]`` or ``['a','b']``) or an ``@alias``."""
    m = _PARAM_RE.match(args)
    if m is None:
        raise ODataError(
            400,
            ODATA_BAD_URL,
            "RetrieveTotalRecordCount needs its EntityNames parameter: "
            'RetrieveTotalRecordCount(EntityNames=@p1)?@p1=["account"].',
        )
    value = m.group(1)
    if value.startswith("@"):
        if value not in aliases:
            raise ODataError(
                400, ODATA_BAD_URL, f"The parameter alias {value} has no value in the query."
            )
        value = aliases[value].strip()
    names = _collection(value)
    if names is None or not names:
        raise ODataError(
            400,
            ODATA_BAD_URL,
            f"EntityNames must be a collection of table logical names, such as "
            f'["account","contact"], not {value!r}.',
        )
    return list(dict.fromkeys(names))


def _collection(text: str) -> list[str] | None:
    """A JSON array of strings, or an OData collection literal of single-quoted strings."""
    try:
        parsed: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        inner = text.strip()
        if not (inner.startswith("[") and inner.endswith("]")):
            return None
        items = _QUOTED_RE.findall(inner)
        rest = _QUOTED_RE.sub("", inner[1:-1]).replace(",", "").strip()
        return None if rest else [i.replace("''", "'") for i in items]
    if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
        return parsed
    return None
