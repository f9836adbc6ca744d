"""Metadata answers: ``$metadata`` (rendered from the model, or a given CSDL served as it is), the
service document, ``WhoAmI``, and ``EntityDefinitions`` text lengths and table states."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl

from ..csdl import render_csdl
from ..model import Attribute, Entity
from ..resource import ResourcePath
from ..seed import state_rules
from ..wire import NOT_SUPPORTED, ODataError, Response, json_response
from .base import ServiceBase
from .common import Request


class MetadataAnswers(ServiceBase):
    """``$metadata``, the service document, ``WhoAmI`` and the one ``EntityDefinitions`` query."""

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
