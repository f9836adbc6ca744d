"""``$batch``: operations and change sets, ``Content-ID`` references, ``odata.continue-on-error``,
and faults of single operations."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from .. import multipart
from ..cost import Work
from ..resource import ResourcePath, split_api_path
from ..wire import NOT_SUPPORTED, ODATA_BAD_URL, ODataError, Response
from .common import Prefer, Request
from .writes import Writes


class Batch(Writes):
    """``$batch``: change sets in one transaction, ``Content-ID`` references."""

    def _batch(self, req: Request, res: ResourcePath) -> Response:
        ctype = req.header("content-type") or ""
        parts = multipart.parse_batch(req.body, ctype)
        prefer = Prefer.parse(req.header("prefer"))
        results: list[multipart.PartResponse | multipart.ChangeSetResponse] = []
        work = Work()
        failed = False
        for part in parts:
            if isinstance(part, multipart.ChangeSet):
                cs_results: list[multipart.PartResponse] = []
                content_ids: dict[str, str] = {}
                try:
                    with self.store.transaction():
                        for op in part.operations:
                            r = self._batch_operation(req, op, content_ids)
                            work.add_operation(r.work)
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
                work.add_operation(r.work)
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
        return Response(status, body, headers, work=work)

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


def _part(r: Response, content_id: str | None) -> multipart.PartResponse:
    return multipart.PartResponse(
        status=r.status, headers=list(r.headers), body=r.body, content_id=content_id
    )
