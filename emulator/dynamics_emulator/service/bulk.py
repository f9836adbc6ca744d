"""The bulk messages: ``CreateMultiple``, ``UpdateMultiple`` and ``UpsertMultiple`` (bound actions,
``POST /<set>/Microsoft.Dynamics.CRM.<Message>`` with ``{"Targets": [...]}``), the
``sdkmessagefilters`` query that says which tables support them, and the business-logic bypass
headers a write may carry.

* Every target names its type (``"@odata.type": "Microsoft.Dynamics.CRM.<table>"``); a target
  without one fails the whole request before anything is written.
* ``UpsertMultiple`` and ``UpdateMultiple`` find a target's row by its ``@odata.id``
  (``accounts(accountnumber='A-1')``, a primary or alternate key), else by the primary id in the
  target; ``UpsertMultiple`` without either creates.
* On a standard table the request is one transaction: the first failing target rolls every one
  back and the answer is that target's error (it does not say which target failed). On an elastic
  table each target is written on its own: the good ones stay written, and the error answer
  lists the failed ones (``RequestIndex``, ``Id``, ``StatusCode``) in the
  ``@Microsoft.PowerApps.CDS.ErrorDetails.Plugin.BulkApiErrorDetails`` annotation when
  ``Prefer: odata.include-annotations`` asks for it.
* A table without the messages (``ServiceSettings.bulk_unsupported``) answers 400 ``0x80040800``;
  ``sdkmessagefilters`` answers an empty collection for it.
* The cost model charges a bulk request ``Work.wrote(n, "bulk")`` for the targets it ran (on a
  standard table the ones before and including the failure, rolled back but executed).
* ``MSCRM.BypassBusinessLogicExecution: CustomSync,CustomAsync`` needs the caller's
  ``prvBypassCustomBusinessLogic`` privilege (``ServiceSettings.no_bypass_privilege`` lists the
  apps without it); ``MSCRM.SuppressCallbackRegistrationExpanderJob`` (Power Automate flows) must
  be true or false. The emulator runs no plug-ins or flows, so both only change what is refused.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from ..cost import Work
from ..model import Entity
from ..resource import ResourcePath, format_key, split_api_path
from ..wire import (
    NOT_SUPPORTED,
    ODATA_BAD_URL,
    ODATA_PAYLOAD_ERROR,
    PRIVILEGE_DENIED,
    ODataError,
    Response,
    json_response,
)
from .common import Prefer, Request, payload_error
from .writes import Writes

NAMESPACE = "Microsoft.Dynamics.CRM."
#: The bulk messages this emulator runs (DeleteMultiple is answered, never run).
BULK_MESSAGES = ("CreateMultiple", "UpdateMultiple", "UpsertMultiple")
SDK_ENTITY_DOES_NOT_SUPPORT_MESSAGE = "0x80040800"
INVALID_ARGUMENT = "0x80040203"
BYPASS_HEADER = "mscrm.bypassbusinesslogicexecution"
FLOWS_HEADER = "mscrm.suppresscallbackregistrationexpanderjob"
BYPASS_VALUES = ("CustomSync", "CustomAsync")
BYPASS_PRIVILEGE = "prvBypassCustomBusinessLogic"
ERROR_DETAILS = "Microsoft.PowerApps.CDS.ErrorDetails.Plugin.BulkApiErrorDetails"
_EMPTY_ID = "00000000-0000-0000-0000-000000000000"
# Messages that every concrete table has, for sdkmessagefilters.
_SINGLE_MESSAGES = frozenset(
    {"Create", "Update", "Upsert", "Delete", "Retrieve", "RetrieveMultiple"}
)
_COMPARISON_RE = re.compile(r"^\s*(sdkmessageid/name|primaryobjecttypecode)\s+eq\s+(.+?)\s*$")
_FILTER_TABLE = Entity("sdkmessagefilter", "sdkmessagefilters", "sdkmessagefilterid", None, {})


def bulk_message(segment: str) -> str | None:
    """The message a bound action segment names (``Microsoft.Dynamics.CRM.CreateMultiple``)."""
    if segment.startswith(NAMESPACE):
        name = segment[len(NAMESPACE) :]
        if name in BULK_MESSAGES or name == "DeleteMultiple":
            return name
    return None


class Bulk(Writes):
    """The bulk messages, ``sdkmessagefilters`` and the bypass headers."""

    # -- which tables have the messages --------------------------------------------------------

    def _supports(self, entity: Entity | None, message: str) -> bool:
        if entity is None or entity.abstract or entity.logical_name == "activitypointer":
            return False
        if message in _SINGLE_MESSAGES:
            return True
        if message == "DeleteMultiple":
            return entity.elastic
        return (
            message in BULK_MESSAGES and entity.logical_name not in self.settings.bulk_unsupported
        )

    def _sdk_message_filters(self, req: Request, res: ResourcePath) -> Response:
        """``GET sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name eq
        @message and primaryobjecttypecode eq @table&@message='X'&@table='y'``: one row when the
        table has the message, none otherwise."""
        if req.method != "GET":
            raise ODataError(405, NOT_SUPPORTED, "sdkmessagefilters is read-only here.")
        self._check_privilege(req, _FILTER_TABLE, "Read")
        query = dict(parse_qsl(req.raw_query, keep_blank_values=True))
        wanted = _filter_terms(query.get("$filter", ""), query)
        message, table = wanted.get("sdkmessageid/name"), wanted.get("primaryobjecttypecode")
        if message is None or table is None:
            raise ODataError(
                400,
                NOT_SUPPORTED,
                "This emulator answers sdkmessagefilters only for $filter=sdkmessageid/name eq "
                "<message> and primaryobjecttypecode eq <table>.",
            )
        value: list[dict[str, Any]] = []
        if self._supports(self.model.entities.get(table), message):
            fid = uuid.uuid5(uuid.NAMESPACE_URL, f"sdkmessagefilter/{message}/{table}")
            value.append(
                {"@odata.etag": f'W/"{fid.int % 10_000_000}"', "sdkmessagefilterid": str(fid)}
            )
        base = self._api_base(req, res)
        context = f"{base}/$metadata#sdkmessagefilters(sdkmessagefilterid)"
        return json_response(200, {"@odata.context": context, "value": value})

    # -- the bypass headers ----------------------------------------------------------------------

    def _check_bypass(self, req: Request) -> None:
        """Refuse a write whose bypass headers are malformed, or asked by a caller without the
        privilege."""
        flows = req.header(FLOWS_HEADER)
        if flows is not None and flows.strip().lower() not in ("true", "false"):
            raise ODataError(
                400,
                INVALID_ARGUMENT,
                f"Invalid value '{flows}' for MSCRM.SuppressCallbackRegistrationExpanderJob: "
                "use true or false.",
            )
        asked = req.header(BYPASS_HEADER)
        if asked is None:
            return
        values = [v.strip() for v in asked.split(",") if v.strip()]
        if not values or any(v not in BYPASS_VALUES for v in values):
            raise ODataError(
                400,
                INVALID_ARGUMENT,
                f"Invalid value '{asked}' for MSCRM.BypassBusinessLogicExecution: use "
                "CustomSync, CustomAsync or both, separated by a comma.",
            )
        if req.caller is None:
            return
        lacking = self.settings.no_bypass_privilege
        if req.caller.client_id in lacking or "*" in lacking:
            uid = req.caller.systemuser_id or _EMPTY_ID
            pid = uuid.uuid5(uuid.NAMESPACE_URL, BYPASS_PRIVILEGE)
            raise ODataError(
                403,
                PRIVILEGE_DENIED,
                f"Principal user (Id={uid}, type=8, roleCount=1, privilegeCount=0, "
                f"accessMode=0), is missing {BYPASS_PRIVILEGE} privilege (Id={pid}). "
                f"context.Caller={uid}",
            )

    # -- the messages ------------------------------------------------------------------------------

    def _bulk(self, req: Request, res: ResourcePath, entity: Entity, message: str) -> Response:
        if req.method != "POST":
            raise ODataError(405, NOT_SUPPORTED, f"{message} is an action: use POST.")
        if message == "DeleteMultiple" and not entity.elastic:
            raise ODataError(400, NOT_SUPPORTED, "DeleteMultiple has not yet been implemented.")
        if not self._supports(entity, message):
            raise ODataError(
                400,
                SDK_ENTITY_DOES_NOT_SUPPORT_MESSAGE,
                f"The '{message}' method does not support entities of type "
                f"'{entity.logical_name}'. MessageProcessorCache returned MessageProcessor.Empty.",
            )
        if message == "DeleteMultiple":
            raise ODataError(
                400, NOT_SUPPORTED, "DeleteMultiple is not supported by this emulator."
            )
        targets = self._targets(req, entity, message)
        if entity.elastic:
            return self._each_on_its_own(req, res, entity, message, targets)
        ids: list[str] = []
        done = 0
        try:
            with self.store.transaction():
                for target in targets:
                    done += 1
                    ids.append(self._write_target(req, entity, message, target))
        except ODataError as err:
            # The whole request rolled back; the targets up to the failure ran (and count).
            return _charged(err.to_response(), done)
        return _charged(self._success(req, res, message, ids), len(targets))

    def _each_on_its_own(
        self,
        req: Request,
        res: ResourcePath,
        entity: Entity,
        message: str,
        targets: list[dict[str, Any]],
    ) -> Response:
        """Elastic tables: no transaction; failed targets are listed, the others stay written."""
        ids: list[str] = []
        failed: list[tuple[int, str, ODataError]] = []
        for index, target in enumerate(targets):
            try:
                ids.append(self._write_target(req, entity, message, target))
            except ODataError as err:
                given = target.get(entity.primary_id)
                failed.append((index, given if isinstance(given, str) else _EMPTY_ID, err))
        if not failed:
            return _charged(self._success(req, res, message, ids), len(targets))
        first = failed[0][2]
        body = first.body()
        if Prefer.parse(req.header("prefer")).wants(ERROR_DETAILS):
            details = [
                {"RequestIndex": i, "Id": rid, "StatusCode": err.status} for i, rid, err in failed
            ]
            body["error"][f"@{ERROR_DETAILS}"] = orjson.dumps(details).decode()
        return _charged(json_response(first.status, body, first.headers), len(targets))

    def _success(self, req: Request, res: ResourcePath, message: str, ids: list[str]) -> Response:
        if message == "CreateMultiple":
            base = self._api_base(req, res)
            return json_response(
                200,
                {
                    "@odata.context": f"{base}/$metadata#{NAMESPACE}CreateMultipleResponse",
                    "Ids": ids,
                },
            )
        return Response(204, b"", [("OData-Version", "4.0")])

    def _targets(self, req: Request, entity: Entity, message: str) -> list[dict[str, Any]]:
        """The request's ``Targets``, each checked for its ``@odata.type`` before any is run."""
        data = self._payload(req, entity)
        targets = data.get("Targets")
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            raise payload_error(
                entity,
                f"The parameter 'Targets' of {message} must be a collection of "
                f"{NAMESPACE}{entity.logical_name} entities.",
            )
        wanted = f"{NAMESPACE}{entity.logical_name}"
        for target in targets:
            given = target.get("@odata.type")
            if given is None:
                raise ODataError(
                    400,
                    ODATA_PAYLOAD_ERROR,
                    "An error occurred while validating input parameters: "
                    "Microsoft.OData.ODataException: A resource without a type name was found, "
                    "but no expected type was specified. To allow entries without type "
                    "information, the expected type must also be specified when the model is "
                    "specified.",
                )
            if not isinstance(given, str) or given.lstrip("#") != wanted:
                raise payload_error(
                    entity,
                    f"The type '{given}' of an item of Targets is not '{wanted}': every target of "
                    f"{message} on '{entity.entity_set}' must be of that type.",
                )
        return targets

    def _write_target(
        self, req: Request, entity: Entity, message: str, target: dict[str, Any]
    ) -> str:
        """Run one target; its row id."""
        values = self._convert_payload(entity, target, None)
        if message == "CreateMultiple":
            return self._create_row(req, entity, values)
        key, shown = self._target_key(entity, target, values)
        if key is None:
            if message == "UpdateMultiple":
                raise payload_error(
                    entity,
                    f"A target of UpdateMultiple names no row: give '{entity.primary_id}' or "
                    "'@odata.id'.",
                )
            return self._create_row(req, entity, values)
        if_match = "*" if message == "UpdateMultiple" else None
        row_id, _ = self._upsert_row(req, entity, key, values, shown=shown, if_match=if_match)
        return row_id

    def _target_key(
        self, entity: Entity, target: dict[str, Any], values: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str]:
        """The row a target names: by ``@odata.id`` (a primary or alternate key of this entity
        set), else by the primary id in it."""
        ref = target.get("@odata.id")
        if ref is None:
            rid = values.get(entity.primary_id)
            return ({entity.primary_id: rid}, str(rid)) if rid is not None else (None, "")
        path = urlsplit(ref).path if isinstance(ref, str) else ""
        if isinstance(ref, str) and not path.startswith("/api/data/"):
            path = "/api/data/v9.2/" + path.lstrip("/")
        res = split_api_path(path) if path else None
        if res is None or res.segment != entity.entity_set or res.key is None or res.rest:
            raise ODataError(
                400,
                ODATA_BAD_URL,
                f"The @odata.id '{ref}' of a target does not address a row of "
                f"'{entity.entity_set}'.",
            )
        return self._resolve_key(entity, res), (
            str(res.key[""]) if res.key_is_guid else format_key(res.key)
        )


def _charged(response: Response, targets: int) -> Response:
    """``targets`` records of a bulk message, for the cost model."""
    response.work = Work().wrote(targets, "bulk")
    return response


def _filter_terms(text: str, query: dict[str, str]) -> dict[str, str]:
    """``a eq 'x' and b eq @p`` -> {a: x, b: <@p's value>}; only that shape."""
    out: dict[str, str] = {}
    for part in re.split(r"\s+and\s+", text.strip()):
        m = _COMPARISON_RE.match(part)
        if m is None:
            return {}
        raw = m.group(2)
        if raw.startswith("@"):
            raw = query.get(raw, "")
        if len(raw) < 2 or raw[0] != "'" or raw[-1] != "'":
            return {}
        out[m.group(1)] = raw[1:-1].replace("''", "'")
    return out
