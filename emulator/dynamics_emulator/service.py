"""The Dataverse Web API: reads (queries, paging, annotations, change tracking) and writes
(create, update, upsert, delete, ``$batch``), over the store. Transport-independent: the server
turns HTTP into a ``Request`` and writes back the ``Response``.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import operator
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import orjson

from . import multipart
from .csdl import render_csdl
from .faults import FaultInjector
from .model import Attribute, Entity, Model
from .odata_query import parse_filter, parse_orderby, parse_select, parse_top
from .resource import GUID_RE, ResourcePath, format_key, split_api_path
from .seed import state_rules
from .store import Store, delta_token, parse_delta_token, q, utc_now_text
from .wire import (
    DUPLICATE_KEY,
    EXPIRED_VERSION_STAMP,
    JSON_CONTENT_TYPE,
    LENGTH_VALIDATION,
    NOT_SUPPORTED,
    OBJECT_DOES_NOT_EXIST,
    ODATA_BAD_URL,
    ODATA_PAYLOAD_ERROR,
    PICKLIST_OUT_OF_RANGE,
    PRIVILEGE_DENIED,
    ODataError,
    Response,
    json_response,
)

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


class DataService:
    """Answers ``/api/data/v9.x/...`` requests."""

    def __init__(
        self,
        model: Model,
        store: Store,
        settings: ServiceSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        csdl: bytes | None = None,
        part_faults: FaultInjector | None = None,
    ) -> None:
        self.model = model
        self.store = store
        self.settings = settings or ServiceSettings()
        self.clock = clock
        # Faults for single operations inside a $batch (the outer request succeeds).
        self.part_faults = part_faults
        self._csdl: dict[bool, bytes] = {}
        if csdl is not None:
            # A given document (a real org's $metadata) is served as it is, annotated or not.
            self._csdl = {True: csdl, False: csdl}
        self._expired_delta_before = 0  # delta tokens with a version below this are expired
        self._currency_cache: dict[str, str] = {}

    # -- entry ---------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        try:
            res = split_api_path(req.raw_path)
            if res is None:
                raise ODataError(404, "", f"Resource not found for the segment '{req.raw_path}'.")
            return self._route(req, res, content_ids=None)
        except ODataError as err:
            return err.to_response()

    def _route(
        self, req: Request, res: ResourcePath, content_ids: dict[str, str] | None
    ) -> Response:
        seg = res.segment
        if seg == "$metadata":
            return self._metadata(req)
        if seg == "$batch":
            if req.method != "POST":
                raise ODataError(405, NOT_SUPPORTED, "The $batch endpoint only accepts POST.")
            return self._batch(req, res)
        if seg == "":
            return self._service_document(req, res)
        if seg == "WhoAmI" or seg == "WhoAmI()":
            return self._whoami(req, res)
        if seg == "EntityDefinitions":
            return self._string_lengths(req, res)
        entity = self.model.by_set(seg)
        if entity is None or entity.abstract:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{seg}'.")
        self._check_privilege(req, entity, "Read" if req.method == "GET" else "Write")
        if res.key is None:
            if res.rest == ["$count"] and req.method == "GET":
                return self._count(req, entity)
            if res.rest:
                raise ODataError(
                    400, NOT_SUPPORTED, f"The segment '{res.rest[0]}' is not supported."
                )
            if req.method == "GET":
                return self._query(req, res, entity)
            if req.method == "POST":
                return self._create(req, res, entity, content_ids)
            raise ODataError(405, NOT_SUPPORTED, f"{req.method} is not allowed on a collection.")
        if res.rest:
            raise ODataError(
                400,
                NOT_SUPPORTED,
                f"The segment '{'/'.join(res.rest)}' is not supported by this emulator.",
            )
        if req.method == "GET":
            return self._retrieve(req, res, entity)
        if req.method == "PATCH":
            return self._upsert(req, res, entity, content_ids)
        if req.method == "DELETE":
            return self._delete(req, res, entity)
        raise ODataError(405, NOT_SUPPORTED, f"{req.method} is not allowed on an entity.")

    def _check_privilege(self, req: Request, entity: Entity, access: str) -> None:
        if req.caller is None:
            return
        denied = self.settings.denied_tables.get(req.caller.client_id, set()) | (
            self.settings.denied_tables.get("*", set())
        )
        if entity.logical_name in denied:
            uid = req.caller.systemuser_id or "00000000-0000-0000-0000-000000000000"
            raise ODataError(
                403,
                PRIVILEGE_DENIED,
                f"Principal user (Id={uid}, type=8, roleCount=1, privilegeCount=0, accessMode=0), "
                f"is missing prv{access}{entity.logical_name} privilege "
                f"(Id={uuid.uuid5(uuid.NAMESPACE_URL, access + entity.logical_name)}) on OTC=0 "
                f"for entity '{entity.logical_name}'. context.Caller={uid}",
            )

    # -- helpers --------------------------------------------------------------------------------

    def _api_base(self, req: Request, res: ResourcePath) -> str:
        return f"{req.base_url}/api/data/{res.version}"

    def _options(self, req: Request) -> dict[str, str]:
        opts: dict[str, str] = {}
        for k, v in parse_qsl(req.raw_query, keep_blank_values=True):
            if k in opts:
                raise ODataError(
                    400, ODATA_BAD_URL, f"Query option '{k}' was specified more than once."
                )
            if k.startswith("$") and k not in SUPPORTED_OPTIONS:
                if k in UNSUPPORTED_OPTIONS:
                    raise ODataError(
                        400,
                        NOT_SUPPORTED,
                        f"The query parameter {k} is not supported by this emulator.",
                    )
                raise ODataError(
                    400,
                    ODATA_BAD_URL,
                    f"The query parameter '{k}' is not supported.",
                )
            opts[k] = v
        return opts

    def _metadata(self, req: Request) -> Response:
        # Like the service: the plain document by default, annotations with ?annotations=true.
        annotated = dict(parse_qsl(req.raw_query)).get("annotations") == "true"
        if annotated not in self._csdl:
            self._csdl[annotated] = render_csdl(self.model, annotations=annotated)
        return Response(
            200,
            self._csdl[annotated],
            [("Content-Type", "application/xml"), ("OData-Version", "4.0")],
        )

    def _service_document(self, req: Request, res: ResourcePath) -> Response:
        base = self._api_base(req, res)
        value = [
            {"name": e.entity_set, "kind": "EntitySet", "url": e.entity_set}
            for e in self.model.entities.values()
            if not e.abstract
        ]
        return json_response(200, {"@odata.context": f"{base}/$metadata", "value": value})

    def _whoami(self, req: Request, res: ResourcePath) -> Response:
        base = self._api_base(req, res)
        uid = req.caller.systemuser_id if req.caller else None
        return json_response(
            200,
            {
                "@odata.context": f"{base}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": str(uuid.uuid5(uuid.NAMESPACE_URL, "businessunit")),
                "UserId": uid,
                "OrganizationId": str(uuid.uuid5(uuid.NAMESPACE_URL, "organization")),
            },
        )

    def _string_lengths(self, req: Request, res: ResourcePath) -> Response:
        """The metadata queries the emulator answers besides $metadata, on
        ``EntityDefinitions(LogicalName='x')/Attributes/Microsoft.Dynamics.CRM.<cast>``:

        * ``StringAttributeMetadata`` / ``MemoAttributeMetadata`` with
          ``$select=LogicalName,MaxLength``: text columns' lengths (which CSDL does not carry);
        * ``StateAttributeMetadata`` with
          ``$select=LogicalName&$expand=OptionSet($select=Options)``:
          the table's states, each with its ``DefaultStatus`` and ``InvariantName``.
        """
        casts = {
            "Microsoft.Dynamics.CRM.StringAttributeMetadata": "string",
            "Microsoft.Dynamics.CRM.MemoAttributeMetadata": "memo",
            "Microsoft.Dynamics.CRM.StateAttributeMetadata": "state",
        }
        key = res.key or {}
        if (
            req.method != "GET"
            or list(key) != ["LogicalName"]
            or len(res.rest) != 2
            or (res.rest[0] != "Attributes" or res.rest[1] not in casts)
        ):
            raise ODataError(
                400,
                NOT_SUPPORTED,
                "This emulator answers only EntityDefinitions(LogicalName='<table>')/Attributes/"
                "Microsoft.Dynamics.CRM.StringAttributeMetadata (or MemoAttributeMetadata, "
                "StateAttributeMetadata).",
            )
        entity = self.model.entities.get(str(key["LogicalName"]))
        if entity is None:
            raise ODataError(
                404,
                "0x80094005",
                f"Could not find table with name '{key['LogicalName']}'.",
            )
        kind = casts[res.rest[1]]
        base = self._api_base(req, res)
        context = (
            f"{base}/$metadata#EntityDefinitions('{entity.logical_name}')/Attributes/{res.rest[1]}"
        )
        if kind == "state":
            return json_response(
                200,
                {
                    "@odata.context": context + "(LogicalName,OptionSet(Options))",
                    "value": [
                        self._state_metadata(entity, a)
                        for a in entity.attributes.values()
                        if a.type == "state"
                    ],
                },
            )
        value = [
            {
                "LogicalName": a.name,
                "MaxLength": a.max_length,
                "MetadataId": str(
                    uuid.uuid5(uuid.NAMESPACE_URL, f"{entity.logical_name}.{a.name}")
                ),
            }
            for a in entity.attributes.values()
            if a.type == kind and a.max_length is not None
        ]
        return json_response(
            200, {"@odata.context": context + "(LogicalName,MaxLength)", "value": value}
        )

    def _state_metadata(self, entity: Entity, state: Attribute) -> dict[str, Any]:
        """A StateAttributeMetadata item: each state with the status a row gets by default
        when it enters that state (the first status of the state, as the seed data has them)."""
        defaults = {s: allowed[0] for s, allowed, _ in state_rules(entity)}
        options = []
        for value, label in sorted((state.options or {}).items()):
            options.append(
                {
                    "Value": value,
                    "DefaultStatus": defaults.get(value),
                    "InvariantName": label.replace(" ", ""),
                    "Label": {
                        "LocalizedLabels": [{"Label": label, "LanguageCode": 1033}],
                        "UserLocalizedLabel": {"Label": label, "LanguageCode": 1033},
                    },
                }
            )
        meta = uuid.uuid5(uuid.NAMESPACE_URL, f"{entity.logical_name}.{state.name}")
        return {
            "LogicalName": state.name,
            "MetadataId": str(meta),
            "OptionSet": {"MetadataId": str(uuid.uuid5(meta, "optionset")), "Options": options},
        }

    # -- reads ---------------------------------------------------------------------------------

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

    def _query(self, req: Request, res: ResourcePath, entity: Entity) -> Response:
        opts = self._options(req)
        prefer = Prefer.parse(req.header("prefer"))
        if prefer.track_changes or "$deltatoken" in opts:
            return self._changes(req, res, entity, opts, prefer)
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
        return json_response(200, body, headers)

    # -- change tracking -------------------------------------------------------------------------

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
        )

    def expire_delta_tokens(self) -> None:
        """Test hook: every delta token issued so far is expired from now on."""
        self._expired_delta_before = self.store.current_version + 1

    # -- keys ------------------------------------------------------------------------------------

    def _resolve_key(self, entity: Entity, res: ResourcePath) -> dict[str, Any]:
        """A storage-column -> value mapping that identifies at most one row."""
        assert res.key is not None
        if res.key_is_guid:
            return {entity.primary_id: res.key[""]}
        props = entity.by_property()
        if list(res.key) == [entity.primary_id]:
            v = res.key[entity.primary_id]
            if not isinstance(v, str) or not GUID_RE.match(v):
                raise ODataError(
                    400,
                    ODATA_BAD_URL,
                    f"The key value for '{entity.primary_id}' is not a valid GUID.",
                )
            return {entity.primary_id: v.lower()}
        wanted = set(res.key)
        for _name, cols in entity.alternate_keys:
            names = {entity.attributes[c].property_name for c in cols}
            if names == wanted:
                key: dict[str, Any] = {}
                for p, v in res.key.items():
                    a = props[p]
                    key[p] = _key_value(a, v)
                return key
        raise ODataError(
            400,
            ODATA_BAD_URL,
            f"The key '{format_key(res.key)}' is not a valid key for entity "
            f"'{entity.logical_name}': "
            "it matches neither the primary key nor a declared alternate key.",
        )

    def _not_found(self, entity: Entity, res: ResourcePath) -> ODataError:
        return ODataError(
            404, "", f"{entity.logical_name} With Id = {_shown_key(res)} Does Not Exist"
        )

    # -- writes ----------------------------------------------------------------------------------

    def _payload(self, req: Request, entity: Entity) -> dict[str, Any]:
        try:
            data = orjson.loads(req.body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise ODataError(
                400,
                ODATA_PAYLOAD_ERROR,
                "Error identified in Payload provided by the user for Entity :"
                f"'{entity.entity_set}', "
                f"For more information on this error please follow this help link "
                f"https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
                f"Microsoft.OData.ODataException: Invalid JSON. {exc}",
            ) from None
        if not isinstance(data, dict):
            raise ODataError(400, ODATA_PAYLOAD_ERROR, "The request body must be a JSON object.")
        return data

    def _convert_payload(
        self,
        entity: Entity,
        data: dict[str, Any],
        content_ids: dict[str, str] | None,
    ) -> dict[str, Any]:
        """JSON payload -> storage columns, validating names, types, lengths, choices, binds."""
        props = entity.by_property()
        navs: dict[str, tuple[Attribute, str]] = {}
        for a in entity.lookups():
            for target, nav in a.nav_names.items():
                navs[nav] = (a, target)
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key.endswith("@odata.bind"):
                nav = key[: -len("@odata.bind")]
                if nav not in navs:
                    raise _payload_error(
                        entity,
                        f"An undeclared property '{nav}' which only has property annotations in "
                        "the payload but no property value was found in the payload. In OData, "
                        "only declared navigation properties and declared named streams can be "
                        "represented as properties without values.",
                    )
                a, target = navs[nav]
                if a.read_only:
                    raise _payload_error(
                        entity, f"The property '{nav}' is read-only and cannot be set."
                    )
                if value is None:
                    out[a.property_name] = None
                    if len(a.targets) > 1:
                        out[f"{a.property_name}@lookuplogicalname"] = None
                    continue
                rid = self._resolve_bind(entity, nav, target, value, content_ids)
                out[a.property_name] = rid
                if len(a.targets) > 1:
                    out[f"{a.property_name}@lookuplogicalname"] = target
                if a.type == "owner":
                    self._owner_columns(entity, target, rid, out)
                continue
            if key.startswith("@") or "@" in key:
                continue  # instance annotations (@odata.type, ...) are ignored
            maybe = props.get(key)
            if maybe is None:
                nav_attr = navs.get(key)
                if nav_attr is not None and value is None:
                    # {"parentaccountid": null} clears a lookup through its navigation property.
                    la = nav_attr[0]
                    out[la.property_name] = None
                    if len(la.targets) > 1:
                        out[f"{la.property_name}@lookuplogicalname"] = None
                    continue
                raise _payload_error(
                    entity,
                    f"The property '{key}' does not exist on type "
                    f"'Microsoft.Dynamics.CRM.{entity.logical_name}'. Make sure to only use "
                    "property names that are defined by the type or mark the type as open type.",
                )
            if maybe.is_lookup:
                raise _payload_error(
                    entity,
                    f"The property '{key}' cannot be written directly; set the lookup through its "
                    "navigation property with "
                    f"'{next(iter(maybe.nav_names.values()))}@odata.bind'.",
                )
            if maybe.read_only and key != entity.primary_id:
                raise _payload_error(
                    entity, f"The property '{key}' is read-only and cannot be set."
                )
            out[key] = self._convert_value(entity, maybe, value)
        return out

    def _owner_columns(self, entity: Entity, target: str, rid: str, out: dict[str, Any]) -> None:
        if "owninguser" in entity.attributes:
            out["_owninguser_value"] = rid if target == "systemuser" else None
        if "owningteam" in entity.attributes:
            out["_owningteam_value"] = rid if target == "team" else None

    def _convert_value(self, entity: Entity, a: Attribute, v: Any) -> Any:
        if v is None:
            return None
        t = a.type
        edm = a.edm_type

        def bad() -> ODataError:
            shown = orjson.dumps(v).decode() if not isinstance(v, str) else v
            return _payload_error(
                entity,
                f"Cannot convert the literal '{shown}' to the expected type '{edm}'.",
            )

        if t in ("string", "memo"):
            if not isinstance(v, str):
                raise bad()
            if a.max_length is not None and len(v) > a.max_length:
                raise ODataError(
                    400,
                    LENGTH_VALIDATION,
                    f"A validation error occurred.  The length of the '{a.name}' attribute of the "
                    f"'{entity.logical_name}' entity exceeded the maximum allowed length of "
                    f"'{a.max_length}'.",
                )
            return v
        if t in ("integer", "bigint", "picklist", "state", "status"):
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad()
            if t != "bigint" and not (INT32[0] <= v <= INT32[1]):
                raise bad()
            if a.is_choice and a.options is not None and v not in a.options:
                raise ODataError(
                    400,
                    PICKLIST_OUT_OF_RANGE,
                    f"A validation error occurred. The value {v} of '{a.name}' on record of type "
                    f"'{entity.logical_name}' is outside the valid range. Accepted Values: "
                    f"{','.join(str(k) for k in a.options)}",
                )
            return v
        if t in ("decimal", "money", "double"):
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise bad()
            return float(v)
        if t == "boolean":
            if not isinstance(v, bool):
                raise bad()
            return 1 if v else 0
        if t == "datetime":
            if not isinstance(v, str):
                raise bad()
            return _normalise_datetime(v, bad)
        if t == "dateonly":
            if not isinstance(v, str) or not re.match(r"^\d{4}-\d{2}-\d{2}$", v):
                raise bad()
            try:
                datetime.strptime(v, "%Y-%m-%d")
            except ValueError:
                raise bad() from None
            return v
        if t == "uniqueidentifier":
            if not isinstance(v, str) or not GUID_RE.match(v):
                raise bad()
            return v.lower()
        if t == "binary":
            if not isinstance(v, str):
                raise bad()
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise bad() from None
            return v
        raise bad()

    def _resolve_bind(
        self,
        entity: Entity,
        nav: str,
        target: str,
        value: Any,
        content_ids: dict[str, str] | None,
    ) -> str:
        if not isinstance(value, str):
            raise _payload_error(entity, f"The value of '{nav}@odata.bind' must be a URL string.")
        ref = value
        if ref.startswith("$") and content_ids is not None:
            if ref[1:] not in content_ids:
                raise ODataError(
                    400,
                    ODATA_BAD_URL,
                    f"Content-ID Reference: '{ref}' does not exist in the batch context.",
                )
            ref = content_ids[ref[1:]]
        if "://" in ref:
            ref = urlsplit(ref).path
        ref = ref.lstrip("/")
        m = re.match(r"^(?:api/data/v9\.[0-2]/)?([A-Za-z0-9_]+)\((.*)\)$", ref, re.S)
        if not m:
            raise _payload_error(entity, f"The URL '{value}' in '{nav}@odata.bind' is not valid.")
        set_name = m.group(1)
        te = self.model.by_set(set_name)
        target_entity = self.model.entities.get(target)
        if (
            te is None
            or target_entity is None
            or (
                te.logical_name != target
                and not (target_entity.abstract and te.base_type == target_entity.logical_name)
            )
        ):
            raise _payload_error(
                entity,
                f"The entity set '{set_name}' in '{nav}@odata.bind' does not match the type of "
                f"the navigation property '{nav}' (expected '{target}').",
            )
        res = split_api_path(f"/api/data/v9.2/{set_name}({m.group(2)})")
        assert res is not None
        key = self._resolve_key(te, res)
        row = self.store.get_row(te, key, [te.primary_id])
        if row is None:
            raise ODataError(
                404,
                OBJECT_DOES_NOT_EXIST,
                f"{te.logical_name} With Id = {_shown_key(res)} Does Not Exist",
            )
        return str(row[te.primary_id])

    def _computed(self, entity: Entity, row: dict[str, Any]) -> dict[str, Any]:
        """Recompute read-only derived columns from a (merged) row."""
        out: dict[str, Any] = {}
        attrs = entity.attributes
        if "fullname" in attrs and ("firstname" in attrs and "lastname" in attrs):
            out["fullname"] = (
                " ".join(x for x in (row.get("firstname"), row.get("lastname")) if x) or None
            )
        for prefix in ("address1", "address2"):
            comp = f"{prefix}_composite"
            if comp in attrs:
                parts = [
                    row.get(f"{prefix}_{p}")
                    for p in ("line1", "city", "stateorprovince", "postalcode", "country")
                ]
                out[comp] = "\n".join(str(p) for p in parts if p) or None
        rate = row.get("exchangerate") or 1.0
        for a in attrs.values():
            if a.type == "money" and f"{a.name}_base" in attrs and a.name in row:
                v = row.get(a.name)
                out[f"{a.name}_base"] = None if v is None else round(v / rate, 4)
        return out

    def _stamp(self, req: Request, entity: Entity, values: dict[str, Any], *, create: bool) -> int:
        now = utc_now_text(self.clock)
        version = self.store.next_version()
        uid = req.caller.systemuser_id if req.caller else None
        if "modifiedon" in entity.attributes:
            values["modifiedon"] = now
        if "modifiedby" in entity.attributes:
            values["_modifiedby_value"] = uid
        if "versionnumber" in entity.attributes:
            values["versionnumber"] = version
        if create:
            if "createdon" in entity.attributes:
                values["createdon"] = now
            if "createdby" in entity.attributes:
                values["_createdby_value"] = uid
            if (
                "ownerid" in entity.attributes
                and entity.attributes["ownerid"].is_lookup
                and values.get("_ownerid_value") is None
                and uid
            ):
                values["_ownerid_value"] = uid
                values["_ownerid_value@lookuplogicalname"] = "systemuser"
                self._owner_columns(entity, "systemuser", uid, values)
            for name in ("statecode", "statuscode"):
                a = entity.attributes.get(name)
                if a is not None and values.get(name) is None and a.options:
                    values[name] = min(a.options) if name == "statecode" else next(iter(a.options))
            if entity.logical_name == "incident" and "ticketnumber" in entity.attributes:
                values.setdefault(
                    "ticketnumber", f"CAS-{version % 100000:05d}-{uuid.uuid4().hex[:6].upper()}"
                )
            if "activitytypecode" in entity.attributes and entity.activity_type:
                values["activitytypecode"] = entity.activity_type
            if (
                "_transactioncurrencyid_value" in entity.by_property()
                and values.get("_transactioncurrencyid_value") is None
            ) and any(
                entity.attributes[a].type == "money" and values.get(a) is not None
                for a in entity.attributes
            ):
                cur = self._base_currency()
                if cur:
                    values["_transactioncurrencyid_value"] = cur
                    values.setdefault("exchangerate", 1.0)
        return version

    def _base_currency(self) -> str | None:
        te = self.model.entities.get("transactioncurrency")
        if te is None:
            return None
        with self.store.lock:
            row = self.store.conn.execute(
                f"SELECT {q(te.primary_id)} FROM {q(te.logical_name)} ORDER BY "
                'exchangerate = 1.0 DESC, "@rowid" LIMIT 1'
            ).fetchone()
        return row[0] if row else None

    def _entity_id_header(
        self, req: Request, res: ResourcePath, entity: Entity, key_text: str
    ) -> list[tuple[str, str]]:
        url = f"{self._api_base(req, res)}/{entity.entity_set}({key_text})"
        return [("OData-EntityId", url), ("Location", url)]

    def _representation(
        self, req: Request, res: ResourcePath, entity: Entity, row_id: str, status: int
    ) -> Response:
        opts = self._options(req)
        selected = self._selected(entity, opts)
        prefer = Prefer.parse(req.header("prefer"))
        columns = self._storage_columns(entity, selected, prefer)
        row = self.store.get_row(entity, {entity.primary_id: row_id}, columns)
        assert row is not None
        rec = self._render_rows(
            entity, selected, columns, [tuple(row[c] for c in columns)], prefer
        )[0]
        base = self._api_base(req, res)
        sel = f"({','.join(parse_select(opts['$select'], entity))})" if "$select" in opts else ""
        body = {"@odata.context": f"{base}/$metadata#{entity.entity_set}{sel}/$entity", **rec}
        headers = [("Preference-Applied", "return=representation")]
        if "versionnumber" in row:
            headers.append(("ETag", f'W/"{row["versionnumber"]}"'))
        return json_response(status, body, headers)

    def _create(
        self, req: Request, res: ResourcePath, entity: Entity, content_ids: dict[str, str] | None
    ) -> Response:
        if entity.logical_name == "activitypointer":
            raise ODataError(
                400, NOT_SUPPORTED, "Create an activity through its own table (emails, tasks, ...)."
            )
        data = self._payload(req, entity)
        values = self._convert_payload(entity, data, content_ids)
        row_id = values.get(entity.primary_id) or str(uuid.uuid4())
        values[entity.primary_id] = row_id
        with self.store.transaction():
            if self.store.get_row(entity, {entity.primary_id: row_id}, [entity.primary_id]):
                raise ODataError(400, "0x80040237", "Cannot insert duplicate key.")
            self._insert(req, entity, values)
        prefer = Prefer.parse(req.header("prefer"))
        if prefer.return_representation:
            return self._representation(req, res, entity, row_id, 201)
        return Response(
            204, b"", [("OData-Version", "4.0"), *self._entity_id_header(req, res, entity, row_id)]
        )

    def _insert(self, req: Request, entity: Entity, values: dict[str, Any]) -> None:
        self._stamp(req, entity, values, create=True)
        if entity.logical_name == "systemuser" or entity.logical_name == "team":
            values["ownerid"] = values[entity.primary_id]
        values.update(self._computed(entity, values))
        self._check_alternate_keys(entity, values, exclude_id=None)
        self.store.insert(entity, values)

    def _check_alternate_keys(
        self, entity: Entity, values: dict[str, Any], exclude_id: str | None
    ) -> None:
        for _name, cols in entity.alternate_keys:
            props = [entity.attributes[c].property_name for c in cols]
            if not all(p in values for p in props) or any(values[p] is None for p in props):
                continue
            row = self.store.get_row(entity, {p: values[p] for p in props}, [entity.primary_id])
            if row is not None and row[entity.primary_id] != exclude_id:
                raise ODataError(
                    412,
                    DUPLICATE_KEY,
                    f"A record that has the attribute values {', '.join(props)} already exists. "
                    f"The entity key {_name} requires that this set of attributes contains unique "
                    "values. Select unique values and try again.",
                )

    def _upsert(
        self, req: Request, res: ResourcePath, entity: Entity, content_ids: dict[str, str] | None
    ) -> Response:
        if entity.logical_name == "activitypointer":
            raise ODataError(
                400, NOT_SUPPORTED, "Update an activity through its own table (emails, tasks, ...)."
            )
        key = self._resolve_key(entity, res)
        data = self._payload(req, entity)
        values = self._convert_payload(entity, data, content_ids)
        if_match = req.header("if-match")
        if_none_match = req.header("if-none-match")
        prefer = Prefer.parse(req.header("prefer"))
        key_text = format_key(res.key or {})
        with self.store.transaction():
            existing = self.store.get_row(entity, key)
            if existing is None:
                if if_match is not None:
                    raise self._not_found(entity, res)
                if entity.primary_id in key:
                    if (
                        values.get(entity.primary_id, key[entity.primary_id])
                        != key[entity.primary_id]
                    ):
                        raise _payload_error(
                            entity, "The primary key in the payload does not match the URL."
                        )
                    values[entity.primary_id] = key[entity.primary_id]
                else:
                    for p, v in key.items():
                        values.setdefault(p, v)  # body values win over URL key values
                    values.setdefault(entity.primary_id, str(uuid.uuid4()))
                row_id = values[entity.primary_id]
                self._insert(req, entity, values)
                created = True
            else:
                if if_none_match == "*":
                    raise ODataError(412, "", "A record with matching key values already exists.")
                if (
                    if_match not in (None, "*")
                    and if_match != f'W/"{existing.get("versionnumber")}"'
                ):
                    raise ODataError(
                        412,
                        "",
                        ROW_VERSION_MISMATCH,
                    )
                row_id = existing[entity.primary_id]
                if entity.primary_id not in key:
                    for p in key:
                        values.pop(p, None)  # key columns in the body are ignored on update
                if values.get(entity.primary_id, row_id) != row_id:
                    raise _payload_error(
                        entity, "The primary key in the payload does not match the URL."
                    )
                values.pop(entity.primary_id, None)
                self._stamp(req, entity, values, create=False)
                merged = {**existing, **values}
                values.update(self._computed(entity, merged))
                self._check_alternate_keys(entity, {**existing, **values}, exclude_id=row_id)
                self.store.update(entity, row_id, values)
                created = False
        if prefer.return_representation:
            return self._representation(req, res, entity, row_id, 201 if created else 200)
        return Response(
            204,
            b"",
            [("OData-Version", "4.0"), *self._entity_id_header(req, res, entity, key_text)],
        )

    def _delete(self, req: Request, res: ResourcePath, entity: Entity) -> Response:
        key = self._resolve_key(entity, res)
        with self.store.transaction():
            row = self.store.get_row(
                entity,
                key,
                [entity.primary_id, "versionnumber"]
                if "versionnumber" in entity.attributes
                else [entity.primary_id],
            )
            if row is None:
                raise self._not_found(entity, res)
            if_match = req.header("if-match")
            if if_match not in (None, "*") and if_match != f'W/"{row.get("versionnumber")}"':
                raise ODataError(
                    412,
                    "",
                    ROW_VERSION_MISMATCH,
                )
            self.store.delete(entity, row[entity.primary_id])
        return Response(204, b"", [("OData-Version", "4.0")])

    # -- $batch ----------------------------------------------------------------------------------

    def _batch(self, req: Request, res: ResourcePath) -> Response:
        ctype = req.header("content-type") or ""
        parts = multipart.parse_batch(req.body, ctype)
        prefer = Prefer.parse(req.header("prefer"))
        results: list[multipart.PartResponse | multipart.ChangeSetResponse] = []
        failed = False
        for part in parts:
            if isinstance(part, multipart.ChangeSet):
                cs_results: list[multipart.PartResponse] = []
                content_ids: dict[str, str] = {}
                try:
                    with self.store.transaction():
                        for op in part.operations:
                            r = self._batch_operation(req, op, content_ids)
                            cs_results.append(_part(r, op.content_id))
                            if r.status >= 400:
                                raise _ChangeSetFailedError(r, op.content_id)
                            if op.content_id is not None:
                                loc = r.header("OData-EntityId")
                                if loc:
                                    content_ids[op.content_id] = loc
                except _ChangeSetFailedError as f:
                    failed = True
                    # A failed change set answers with the one failure, like the service.
                    results.append(_part(f.response, f.content_id))
                    if not prefer.continue_on_error:
                        break
                    continue
                results.append(multipart.ChangeSetResponse(cs_results))
            else:
                r = self._batch_operation(req, part, None)
                results.append(_part(r, part.content_id))
                if r.status >= 400:
                    failed = True
                    if not prefer.continue_on_error:
                        break
        ctype_out, body = multipart.render_batch_response(results)
        status = 400 if failed and not prefer.continue_on_error else 200
        if status == 400:
            # Without continue-on-error the service answers 400 with just the failing part.
            last = results[-1]
            ctype_out, body = multipart.render_batch_response([last])
        headers = [("Content-Type", ctype_out), ("OData-Version", "4.0")]
        if prefer.continue_on_error:
            headers.append(("Preference-Applied", "odata.continue-on-error"))
        return Response(status, body, headers)

    def _batch_operation(
        self, outer: Request, op: multipart.Operation, content_ids: dict[str, str] | None
    ) -> Response:
        url = op.url
        if url.startswith("$") and content_ids is not None:
            ref, _, tail = url.partition("/")
            if ref[1:] not in content_ids:
                return ODataError(
                    400,
                    ODATA_BAD_URL,
                    f"Content-ID Reference: '{ref}' does not exist in the batch context.",
                ).to_response()
            url = content_ids[ref[1:]] + (f"/{tail}" if tail else "")
        parts = urlsplit(url)
        path = parts.path
        if not path.startswith("/"):
            path = f"/api/data/v9.2/{path}"
        headers = {k.lower(): v for k, v in op.headers.items()}
        for k in ("prefer",):
            if k not in headers and outer.header(k) and k != "prefer":
                headers[k] = outer.header(k) or ""
        inner = Request(
            method=op.method,
            raw_path=path,
            raw_query=parts.query,
            headers=headers,
            body=op.body,
            caller=outer.caller,
            base_url=outer.base_url,
        )
        if self.part_faults is not None:
            fault = self.part_faults.next_fault(op.method, path)
            if fault is not None and fault.kind == "status":
                return fault.error().to_response()
        try:
            res = split_api_path(path)
            if res is None:
                raise ODataError(404, "", f"Resource not found for the segment '{unquote(path)}'.")
            if res.segment == "$batch":
                raise ODataError(400, NOT_SUPPORTED, "Nested $batch requests are not supported.")
            return self._route(inner, res, content_ids)
        except ODataError as err:
            return err.to_response()


class _ChangeSetFailedError(Exception):
    def __init__(self, response: Response, content_id: str | None) -> None:
        super().__init__("change set failed")
        self.response = response
        self.content_id = content_id


def _shown_key(res: ResourcePath) -> str:
    if res.key_is_guid:
        return str((res.key or {}).get(""))
    return format_key(res.key or {})


def _part(r: Response, content_id: str | None) -> multipart.PartResponse:
    return multipart.PartResponse(
        status=r.status, headers=list(r.headers), body=r.body, content_id=content_id
    )


def _payload_error(entity: Entity, inner: str) -> ODataError:
    return ODataError(
        400,
        ODATA_PAYLOAD_ERROR,
        f"Error identified in Payload provided by the user for Entity :'{entity.entity_set}', For "
        "more information on this error please follow this help link "
        "https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : "
        f"Microsoft.OData.ODataException: {inner}",
    )


def _normalise_datetime(v: str, bad: Callable[[], ODataError]) -> str:
    s = v.strip()
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise bad() from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_value(a: Attribute, v: Any) -> Any:
    if a.edm_type == "Edm.Guid" and isinstance(v, str):
        return v.lower()
    if a.type == "boolean" and isinstance(v, bool):
        return 1 if v else 0
    return v


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
