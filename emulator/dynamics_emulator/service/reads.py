"""Reads: ``$select``, ``$filter``, ``$orderby``, ``$top``, ``$count``, paging with ``$skiptoken``
cookies, single rows by key, and the annotations (formatted values, lookup logical names,
navigation properties)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from ..cost import Work
from ..model import Attribute, Entity
from ..odata_query import parse_filter, parse_orderby, parse_select, parse_top
from ..resource import ResourcePath
from ..wire import JSON_CONTENT_TYPE, ODATA_BAD_URL, ODataError, Response, json_response
from .base import ServiceBase
from .common import ASSOC_NAV, FORMATTED, LOOKUP_LOGICAL, MAX_PAGE_SIZE, Prefer, Request


class Reads(ServiceBase):
    """Queries of a table and retrieval of one row, rendered with the annotations asked for."""

    def _count(self, req: Request, entity: Entity) -> Response:
        opts = self._options(req)
        where: str | None = None
        params: list[object] = []
        if "$filter" in opts:
            where, params = parse_filter(opts["$filter"], entity)
        n = min(self.store.count(entity, where, params), MAX_PAGE_SIZE)
        return Response(
            200, str(n).encode(), [("Content-Type", "text/plain"), ("OData-Version", "4.0")]
        )

    def _selected(self, entity: Entity, opts: dict[str, str]) -> list[str]:
        if "$select" in opts:
            sel = parse_select(opts["$select"], entity)
        else:
            sel = [a.property_name for a in entity.attributes.values()]
        props = entity.by_property()
        out = list(sel)
        # Selecting a money column also returns the currency lookup.
        if any(props[p].type == "money" for p in sel) and "_transactioncurrencyid_value" in props:
            out.append("_transactioncurrencyid_value")
        if entity.primary_id not in out:
            out.append(entity.primary_id)
        return list(dict.fromkeys(out))

    def _query(
        self,
        req: Request,
        res: ResourcePath,
        entity: Entity,
        opts: dict[str, str],
        prefer: Prefer,
    ) -> Response:
        selected = self._selected(entity, opts)
        where: str | None = None
        params: list[object] = []
        if "$filter" in opts:
            where, params = parse_filter(opts["$filter"], entity)
        orderby = parse_orderby(opts["$orderby"], entity) if "$orderby" in opts else []
        page_size = MAX_PAGE_SIZE
        applied: list[tuple[str, str]] = []
        top = parse_top(opts["$top"]) if "$top" in opts else None
        if prefer.max_page_size is not None:
            if prefer.max_page_size <= 0:
                raise ODataError(400, ODATA_BAD_URL, "odata.maxpagesize must be positive.")
            page_size = min(prefer.max_page_size, MAX_PAGE_SIZE)
            applied.append(("Preference-Applied", f"odata.maxpagesize={page_size}"))
            top = None  # the service ignores $top when a page size is preferred
        limit = page_size if top is None else min(top, MAX_PAGE_SIZE)
        cookie = opts.get("$skiptoken")
        columns = self._storage_columns(entity, selected, prefer)
        page = self.store.query_page(
            entity,
            columns,
            where=where,
            params=params,
            orderby=orderby,
            limit=limit,
            cookie=cookie,
        )
        if top is not None:
            page.next_cookie = None
        base = self._api_base(req, res)
        ctx = f"{base}/$metadata#{entity.entity_set}"
        if "$select" in opts:
            ctx += f"({','.join(parse_select(opts['$select'], entity))})"
        body: dict[str, Any] = {"@odata.context": ctx}
        if opts.get("$count") == "true":
            body["@odata.count"] = min(self.store.count(entity, where, params), MAX_PAGE_SIZE)
        if prefer.wants("Microsoft.Dynamics.CRM.totalrecordcount"):
            total = self.store.count(entity, where, params) if opts.get("$count") == "true" else -1
            body["@Microsoft.Dynamics.CRM.totalrecordcount"] = min(total, MAX_PAGE_SIZE)
            body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] = total > MAX_PAGE_SIZE
        if prefer.annotations:
            applied.append(
                (
                    "Preference-Applied",
                    f'odata.include-annotations="{",".join(prefer.annotations)}"',
                )
            )
        body["value"] = self._render_rows(entity, selected, page.columns, page.rows, prefer)
        if page.next_cookie is not None:
            body["@odata.nextLink"] = self._next_link(
                req, base, entity, "$skiptoken", page.next_cookie
            )
        payload = orjson.dumps(body)
        limit_bytes = self.settings.max_response_bytes
        if limit_bytes is not None and len(payload) > limit_bytes:
            raise ODataError(
                400,
                "0x80040216",
                "An unexpected error occurred. The response is too large; reduce the page size "
                "or the number of columns.",
            )
        return Response(
            200,
            payload,
            [("Content-Type", JSON_CONTENT_TYPE), ("OData-Version", "4.0"), *applied],
            work=Work().read(len(page.rows), len(selected)),
        )

    def _next_link(self, req: Request, base: str, entity: Entity, option: str, token: str) -> str:
        kept = [
            p
            for p in req.raw_query.split("&")
            if p and not p.startswith("$skiptoken=") and not p.startswith("$deltatoken=")
        ]
        kept.append(f"{option}={quote(token, safe='=/')}")
        return f"{base}/{entity.entity_set}?{'&'.join(kept)}"

    def _storage_columns(self, entity: Entity, selected: list[str], prefer: Prefer) -> list[str]:
        props = entity.by_property()
        cols = list(selected)
        if "versionnumber" in props:
            cols.append("versionnumber")
        for p in selected:
            a = props[p]
            if a.is_lookup and len(a.targets) > 1:
                cols.append(f"{p}@lookuplogicalname")
        if prefer.annotations and "_transactioncurrencyid_value" in props:
            cols.append("_transactioncurrencyid_value")
        return list(dict.fromkeys(cols))

    def _render_rows(
        self,
        entity: Entity,
        selected: list[str],
        columns: list[str],
        rows: list[tuple[Any, ...]],
        prefer: Prefer,
    ) -> list[dict[str, Any]]:
        props = entity.by_property()
        index = {c: i for i, c in enumerate(columns)}
        vi = index.get("versionnumber")
        spec: list[tuple[int, str, Callable[[Any], Any] | None]] = []
        for p in selected:
            spec.append((index[p], p, _converter(props[p])))
        want_fmt = prefer.wants(FORMATTED)
        want_ll = prefer.wants(LOOKUP_LOGICAL)
        want_nav = prefer.wants(ASSOC_NAV)
        out: list[dict[str, Any]] = []
        if not (want_fmt or want_ll or want_nav):
            # The hot path of every query: build each row with C-level zip, then convert the
            # few columns that need it (booleans, fixed-decimal money).
            columns_out = [name for _, name, _ in spec]
            pick = operator.itemgetter(*[i for i, _, _ in spec])
            convs = [(name, fn) for _, name, fn in spec if fn is not None]
            single = len(spec) == 1
            for row in rows:
                rec: dict[str, Any] = {}
                if vi is not None:
                    rec["@odata.etag"] = f'W/"{row[vi]}"'
                values = pick(row)
                rec.update(zip(columns_out, (values,) if single else values, strict=True))
                for name, fn in convs:
                    v = rec[name]
                    if v is not None:
                        rec[name] = fn(v)
                out.append(rec)
            return out
        names = self._lookup_names(entity, selected, index, rows) if want_fmt else {}
        cur_i = index.get("_transactioncurrencyid_value")
        for row in rows:
            rec = {}
            if vi is not None:
                rec["@odata.etag"] = f'W/"{row[vi]}"'
            for i, name, conv in spec:
                v = row[i]
                a = props[name]
                if v is not None:
                    if a.is_lookup:
                        target = self._lookup_target(a, row, index)
                        if want_fmt:
                            label = names.get((target, v))
                            if label is not None:
                                rec[f"{name}@{FORMATTED}"] = label
                        if want_nav:
                            rec[f"{name}@{ASSOC_NAV}"] = a.nav_names.get(target, a.name)
                        if want_ll:
                            rec[f"{name}@{LOOKUP_LOGICAL}"] = target
                    elif want_fmt:
                        cur = row[cur_i] if cur_i is not None else None
                        fv = self._formatted(a, v, cur)
                        if fv is not None:
                            rec[f"{name}@{FORMATTED}"] = fv
                rec[name] = conv(v) if conv is not None and v is not None else v
            out.append(rec)
        return out

    def _lookup_target(self, a: Attribute, row: tuple[Any, ...], index: dict[str, int]) -> str:
        if len(a.targets) == 1:
            return a.targets[0]
        i = index.get(f"{a.property_name}@lookuplogicalname")
        return str(row[i]) if i is not None and row[i] else a.targets[0]

    def _lookup_names(
        self,
        entity: Entity,
        selected: list[str],
        index: dict[str, int],
        rows: list[tuple[Any, ...]],
    ) -> dict[tuple[str, str], str]:
        props = entity.by_property()
        wanted: dict[str, set[str]] = {}
        for p in selected:
            a = props[p]
            if not a.is_lookup:
                continue
            i = index[p]
            for row in rows:
                if row[i]:
                    wanted.setdefault(self._lookup_target(a, row, index), set()).add(row[i])
        out: dict[tuple[str, str], str] = {}
        for target, ids in wanted.items():
            te = self.model.entities.get(target)
            if te is None or te.abstract:
                continue
            for rid, name in self.store.names_of(te, ids).items():
                if name is not None:
                    out[(target, rid)] = name
        return out

    def _currency_symbol(self, currency_id: str | None) -> str:
        if not currency_id:
            return ""
        if currency_id not in self._currency_cache:
            sym = ""
            te = self.model.entities.get("transactioncurrency")
            if te is not None and "currencysymbol" in te.attributes:
                row = self.store.get_row(te, {te.primary_id: currency_id}, ["currencysymbol"])
                sym = (row or {}).get("currencysymbol") or ""
            self._currency_cache[currency_id] = sym
        return self._currency_cache[currency_id]

    def _formatted(self, a: Attribute, v: Any, currency_id: str | None) -> str | None:
        t = a.type
        if a.is_choice:
            return (a.options or {}).get(int(v), str(v))
        if t == "boolean":
            return "Yes" if v else "No"
        if t == "money":
            return f"{self._currency_symbol(currency_id)}{float(v):,.2f}"
        if t in ("integer", "bigint"):
            return f"{int(v):,}"
        if t in ("decimal", "double"):
            return f"{float(v):,.2f}"
        if t == "datetime":
            dt = datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ")
            hour = dt.hour % 12 or 12
            ampm = "AM" if dt.hour < 12 else "PM"
            return f"{dt.month}/{dt.day}/{dt.year} {hour}:{dt.minute:02d} {ampm}"
        if t == "dateonly":
            y, m, d = v.split("-")
            return f"{int(m)}/{int(d)}/{y}"
        return None

    def _retrieve(self, req: Request, res: ResourcePath, entity: Entity) -> Response:
        opts = self._options(req)
        for k in ("$filter", "$orderby", "$top", "$skiptoken"):
            if k in opts:
                raise ODataError(
                    400, ODATA_BAD_URL, f"The query option {k} is not allowed on a single entity."
                )
        prefer = Prefer.parse(req.header("prefer"))
        key = self._resolve_key(entity, res)
        selected = self._selected(entity, opts)
        columns = self._storage_columns(entity, selected, prefer)
        row = self.store.get_row(entity, key, columns)
        if row is None:
            raise self._not_found(entity, res)
        base = self._api_base(req, res)
        ctx = f"{base}/$metadata#{entity.entity_set}"
        if "$select" in opts:
            ctx += f"({','.join(parse_select(opts['$select'], entity))})"
        rec = self._render_rows(
            entity, selected, columns, [tuple(row[c] for c in columns)], prefer
        )[0]
        body = {"@odata.context": ctx + "/$entity", **rec}
        headers = []
        if "versionnumber" in row:
            headers.append(("ETag", f'W/"{row["versionnumber"]}"'))
        inm = req.header("if-none-match")
        if (
            inm
            and inm != "null"
            and not prefer.annotations
            and inm == f'W/"{row.get("versionnumber")}"'
        ):
            return Response(304, b"", [("OData-Version", "4.0")])
        answer = json_response(200, body, headers)
        answer.work = Work().read(1, len(selected))
        return answer


def _money(precision: int) -> Callable[[Any], Any]:
    fmt = f"{{:.{precision}f}}"

    def conv(v: Any) -> Any:
        return orjson.Fragment(fmt.format(v).encode())

    return conv


def _converter(a: Attribute) -> Callable[[Any], Any] | None:
    if a.type == "boolean":
        return bool
    if a.type in ("money", "decimal") and a.precision is not None:
        return _money(a.precision)
    if a.type in ("double", "decimal", "money"):
        return float
    return None
