"""Write payloads: names, types, lengths, choices and ``@odata.bind`` references checked and
converted to storage values, with the service's error codes and messages."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..model import Attribute, Entity
from ..resource import GUID_RE, split_api_path
from ..wire import (
    LENGTH_VALIDATION,
    OBJECT_DOES_NOT_EXIST,
    ODATA_BAD_URL,
    ODATA_PAYLOAD_ERROR,
    PICKLIST_OUT_OF_RANGE,
    ODataError,
)
from .base import ServiceBase
from .common import INT32, Request, payload_error, shown_key


class Payloads(ServiceBase):
    """Turns a write's JSON body into storage columns, refusing what the service refuses."""

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
                    raise payload_error(
                        entity,
                        f"An undeclared property '{nav}' which only has property annotations in "
                        "the payload but no property value was found in the payload. In OData, "
                        "only declared navigation properties and declared named streams can be "
                        "represented as properties without values.",
                    )
                a, target = navs[nav]
                if a.read_only:
                    raise payload_error(
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
                raise payload_error(
                    entity,
                    f"The property '{key}' does not exist on type "
                    f"'Microsoft.Dynamics.CRM.{entity.logical_name}'. Make sure to only use "
                    "property names that are defined by the type or mark the type as open type.",
                )
            if maybe.is_lookup:
                raise payload_error(
                    entity,
                    f"The property '{key}' cannot be written directly; set the lookup through its "
                    "navigation property with "
                    f"'{next(iter(maybe.nav_names.values()))}@odata.bind'.",
                )
            if maybe.read_only and key != entity.primary_id:
                raise payload_error(entity, f"The property '{key}' is read-only and cannot be set.")
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
            return payload_error(
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
            raise payload_error(entity, f"The value of '{nav}@odata.bind' must be a URL string.")
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
            raise payload_error(entity, f"The URL '{value}' in '{nav}@odata.bind' is not valid.")
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
            raise payload_error(
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
                f"{te.logical_name} With Id = {shown_key(res)} Does Not Exist",
            )
        return str(row[te.primary_id])


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
