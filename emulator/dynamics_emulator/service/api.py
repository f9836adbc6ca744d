"""``DataService``: the Web API's handlers put together, and the routing of a request to them."""

from __future__ import annotations

from ..cost import Work
from ..resource import ResourcePath, split_api_path
from ..wire import NOT_SUPPORTED, ODataError, Response
from .batch import Batch
from .bulk import Bulk, bulk_message
from .common import Prefer, Request
from .functions import Functions
from .metadata import MetadataAnswers
from .tracking import ChangeTracking


class DataService(MetadataAnswers, ChangeTracking, Batch, Bulk, Functions):
    """Answers ``/api/data/v9.x/...`` requests."""

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
        if req.method != "GET":
            self._check_bypass(req)
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
        if seg == "RetrieveTotalRecordCount":
            return self._retrieve_total_record_count(req, res)
        if seg == "EntityDefinitions":
            return self._string_lengths(req, res)
        if seg == "sdkmessagefilters":
            return self._sdk_message_filters(req, res)
        entity = self.model.by_set(seg)
        if entity is None or entity.abstract:
            raise ODataError(404, "0x80060888", f"Resource not found for the segment '{seg}'.")
        self._check_privilege(req, entity, "Read" if req.method == "GET" else "Write")
        if res.key is None:
            if res.rest == ["$count"] and req.method == "GET":
                return self._count(req, entity)
            message = bulk_message(res.rest[0]) if len(res.rest) == 1 else None
            if message is not None:
                return self._bulk(req, res, entity, message)
            if res.rest:
                raise ODataError(
                    400, NOT_SUPPORTED, f"The segment '{res.rest[0]}' is not supported."
                )
            if req.method == "GET":
                opts = self._options(req)
                prefer = Prefer.parse(req.header("prefer"))
                if prefer.track_changes or "$deltatoken" in opts:
                    return self._changes(req, res, entity, opts, prefer)
                return self._query(req, res, entity, opts, prefer)
            if req.method == "POST":
                return _wrote(self._create(req, res, entity, content_ids))
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
            return _wrote(self._upsert(req, res, entity, content_ids))
        if req.method == "DELETE":
            return _wrote(self._delete(req, res, entity))
        raise ODataError(405, NOT_SUPPORTED, f"{req.method} is not allowed on an entity.")


def _wrote(res: Response) -> Response:
    """A record written on its own (the cost model's "single"; a ``$batch`` recounts it)."""
    if res.status < 400:
        res.work = (res.work or Work()).wrote(1, "single")
    return res
