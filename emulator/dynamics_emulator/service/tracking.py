"""Change tracking: ``Prefer: odata.track-changes``, delta links, ``$deletedEntity`` rows and
expired delta tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from ..cost import Work
from ..model import Entity
from ..odata_query import parse_select
from ..resource import ResourcePath
from ..store import delta_token, parse_delta_token
from ..wire import (
    EXPIRED_VERSION_STAMP,
    JSON_CONTENT_TYPE,
    NOT_SUPPORTED,
    ODATA_BAD_URL,
    ODataError,
    Response,
)
from .common import MAX_PAGE_SIZE, Prefer, Request
from .reads import Reads


class ChangeTracking(Reads):
    """Initial synchronisation and deltas of a change-tracked table."""

    def _changes(
        self,
        req: Request,
        res: ResourcePath,
        entity: Entity,
        opts: dict[str, str],
        prefer: Prefer,
    ) -> Response:
        for k in ("$filter", "$orderby", "$expand", "$top"):
            if k in opts:
                raise ODataError(
                    400,
                    NOT_SUPPORTED,
                    f'The "{k}" query parameter isn\'t supported when Change Tracking is enabled.',
                )
        if not entity.change_tracking:
            raise ODataError(
                400,
                "0x80072491",
                f"Change tracking is not enabled for the entity '{entity.logical_name}'. "
                "Enable change tracking for the table and try again.",
            )
        base = self._api_base(req, res)
        selected = self._selected(entity, opts)
        columns = self._storage_columns(entity, selected, prefer)
        page_size = min(prefer.max_page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        applied = [("Preference-Applied", "odata.track-changes")]
        if prefer.max_page_size:
            applied.append(("Preference-Applied", f"odata.maxpagesize={page_size}"))
        sel_ctx = (
            f"({','.join(parse_select(opts['$select'], entity))})" if "$select" in opts else ""
        )
        if "$deltatoken" not in opts:
            # Initial synchronisation: every row, paged, then a delta link at the end.
            start_version = self.store.current_version
            cookie = opts.get("$skiptoken")
            page = self.store.query_page(
                entity, columns, where=None, params=[], orderby=[], limit=page_size, cookie=cookie
            )
            body: dict[str, Any] = {
                "@odata.context": f"{base}/$metadata#{entity.entity_set}{sel_ctx}"
            }
            body["value"] = self._render_rows(entity, selected, page.columns, page.rows, prefer)
            if page.next_cookie is not None:
                body["@odata.nextLink"] = self._next_link(
                    req, base, entity, "$skiptoken", page.next_cookie
                )
            else:
                # The token pins the version at the start of the last page: a row changed while
                # paging shows up again in the next delta, never lost.
                body["@odata.deltaLink"] = self._next_link(
                    req, base, entity, "$deltatoken", delta_token(start_version, self.clock)
                )
            return Response(
                200,
                orjson.dumps(body),
                [("Content-Type", JSON_CONTENT_TYPE), ("OData-Version", "4.0"), *applied],
                work=Work().read(len(page.rows), len(selected)),
            )
        token = opts["$deltatoken"]
        try:
            version, issued = parse_delta_token(token)
        except ValueError:
            raise ODataError(
                400, ODATA_BAD_URL, f"The delta token '{token}' is not valid."
            ) from None
        age_days = (datetime.fromtimestamp(self.clock(), UTC) - issued).total_seconds() / 86400
        if (
            version < self._expired_delta_before
            or age_days > self.settings.change_tracking_retention_days
        ):
            raise ODataError(
                400,
                EXPIRED_VERSION_STAMP,
                "Version stamp associated with the client has expired. Please perform a full sync.",
            )
        # A delta may itself be paged: the skiptoken carries the last version served.
        after = version
        if "$skiptoken" in opts:
            try:
                after = int(opts["$skiptoken"])
            except ValueError:
                raise ODataError(
                    400, "0x8004112A", "Invalid page number in paging cookie."
                ) from None
        end_version = self.store.current_version
        cols = list(dict.fromkeys([*columns, "versionnumber"]))
        rows = self.store.changed_rows(entity, cols, after, page_size + 1)
        tombs = self.store.tombstones(entity, after, page_size + 1)
        # Merge rows and deletions by version.
        merged: list[tuple[int, Any]] = [(r[cols.index("versionnumber")], ("row", r)) for r in rows]
        merged += [(t.version, ("del", t)) for t in tombs]
        merged.sort(key=lambda x: x[0])
        more = len(merged) > page_size
        merged = merged[:page_size]
        value: list[dict[str, Any]] = []
        changed_rows = [item[1] for _, item in merged if item[0] == "row"]
        rendered = iter(self._render_rows(entity, selected, cols, changed_rows, prefer))
        for _, (kind, item) in merged:
            if kind == "row":
                value.append(next(rendered))
            else:
                value.append(
                    {
                        "@odata.context": f"{base}/$metadata#{entity.entity_set}/$deletedEntity",
                        "id": item.id,
                        "reason": "deleted",
                    }
                )
        body = {
            "@odata.context": f"{base}/$metadata#{entity.entity_set}{sel_ctx}/$delta",
            "value": value,
        }
        if more:
            last = merged[-1][0]
            body["@odata.nextLink"] = self._next_link(
                req, base, entity, "$skiptoken", str(last)
            ) + (f"&$deltatoken={quote(token, safe='')}")
        else:
            body["@odata.deltaLink"] = self._next_link(
                req, base, entity, "$deltatoken", delta_token(end_version, self.clock)
            )
        return Response(
            200,
            orjson.dumps(body),
            [("Content-Type", JSON_CONTENT_TYPE), ("OData-Version", "4.0"), *applied],
            work=Work().read(len(value), len(selected)),
        )

    def expire_delta_tokens(self) -> None:
        """Test hook: every delta token issued so far is expired from now on; the tokens a full
        sync gets afterwards are not (the version moves on, as other tables' writes move it)."""
        self._expired_delta_before = self.store.next_version()
