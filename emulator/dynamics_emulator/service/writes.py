"""Writes: create, update, upsert and delete, with ETags, alternate keys, audit stamps and the
columns the service computes itself."""

from __future__ import annotations

import uuid
from typing import Any

from ..model import Entity
from ..odata_query import parse_select
from ..resource import ResourcePath, format_key
from ..store import q, utc_now_text
from ..wire import DUPLICATE_KEY, NOT_SUPPORTED, ODataError, Response, json_response
from .common import ROW_VERSION_MISMATCH, Prefer, Request, payload_error, shown_key
from .payload import Payloads
from .reads import Reads


class Writes(Payloads, Reads):
    """Create, update, upsert (by primary or alternate key) and delete."""

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
        _check_not_activitypointer(entity, "Create")
        data = self._payload(req, entity)
        row_id = self._create_row(req, entity, self._convert_payload(entity, data, content_ids))
        prefer = Prefer.parse(req.header("prefer"))
        if prefer.return_representation:
            return self._representation(req, res, entity, row_id, 201)
        return Response(
            204, b"", [("OData-Version", "4.0"), *self._entity_id_header(req, res, entity, row_id)]
        )

    def _create_row(self, req: Request, entity: Entity, values: dict[str, Any]) -> str:
        """Insert one row from converted ``values``; its id (given in the payload, or new)."""
        _check_not_activitypointer(entity, "Create")
        row_id = values.get(entity.primary_id) or str(uuid.uuid4())
        values[entity.primary_id] = row_id
        with self.store.transaction():
            if self.store.get_row(entity, {entity.primary_id: row_id}, [entity.primary_id]):
                raise ODataError(400, "0x80040237", "Cannot insert duplicate key.")
            self._insert(req, entity, values)
        return str(row_id)

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
        _check_not_activitypointer(entity, "Update")
        key = self._resolve_key(entity, res)
        data = self._payload(req, entity)
        values = self._convert_payload(entity, data, content_ids)
        prefer = Prefer.parse(req.header("prefer"))
        key_text = format_key(res.key or {})
        row_id, created = self._upsert_row(
            req,
            entity,
            key,
            values,
            shown=shown_key(res),
            if_match=req.header("if-match"),
            if_none_match=req.header("if-none-match"),
        )
        if prefer.return_representation:
            return self._representation(req, res, entity, row_id, 201 if created else 200)
        return Response(
            204,
            b"",
            [("OData-Version", "4.0"), *self._entity_id_header(req, res, entity, key_text)],
        )

    def _upsert_row(
        self,
        req: Request,
        entity: Entity,
        key: dict[str, Any],
        values: dict[str, Any],
        *,
        shown: str,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> tuple[str, bool]:
        """Update the row ``key`` names, or create it (``If-Match`` / ``If-None-Match`` as in a
        PATCH); ``shown`` is the key as the not-found message shows it. Returns (row id,
        created)."""
        with self.store.transaction():
            existing = self.store.get_row(entity, key)
            if existing is None:
                if if_match is not None:
                    raise ODataError(
                        404, "", f"{entity.logical_name} With Id = {shown} Does Not Exist"
                    )
                if entity.primary_id in key and (
                    values.get(entity.primary_id, key[entity.primary_id]) != key[entity.primary_id]
                ):
                    raise payload_error(
                        entity, "The primary key in the payload does not match the URL."
                    )
                for p, v in key.items():
                    values.setdefault(p, v)  # body values win over URL key values
                values.setdefault(entity.primary_id, str(uuid.uuid4()))
                row_id = values[entity.primary_id]
                self._insert(req, entity, values)
                return str(row_id), True
            if if_none_match == "*":
                raise ODataError(412, "", "A record with matching key values already exists.")
            if if_match not in (None, "*") and if_match != f'W/"{existing.get("versionnumber")}"':
                raise ODataError(412, "", ROW_VERSION_MISMATCH)
            row_id = existing[entity.primary_id]
            if entity.primary_id not in key:
                for p in key:
                    values.pop(p, None)  # key columns in the body are ignored on update
            if values.get(entity.primary_id, row_id) != row_id:
                raise payload_error(
                    entity, "The primary key in the payload does not match the URL."
                )
            values.pop(entity.primary_id, None)
            self._stamp(req, entity, values, create=False)
            merged = {**existing, **values}
            values.update(self._computed(entity, merged))
            self._check_alternate_keys(entity, {**existing, **values}, exclude_id=row_id)
            self.store.update(entity, row_id, values)
            return str(row_id), False

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


def _check_not_activitypointer(entity: Entity, verb: str) -> None:
    if entity.logical_name == "activitypointer":
        raise ODataError(
            400, NOT_SUPPORTED, f"{verb} an activity through its own table (emails, tasks, ...)."
        )
