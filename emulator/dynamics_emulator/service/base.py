"""The base of the Web API's handlers: the organisation, privileges, query options and keys."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from ..faults import FaultInjector
from ..model import Attribute, Entity, Model
from ..resource import GUID_RE, ResourcePath, format_key
from ..store import Store
from ..wire import NOT_SUPPORTED, ODATA_BAD_URL, PRIVILEGE_DENIED, ODataError, Response
from .common import SUPPORTED_OPTIONS, UNSUPPORTED_OPTIONS, Request, ServiceSettings, shown_key


class ServiceBase:
    """The organisation a ``DataService`` answers for (model, store, settings, clock) and what every
    handler uses: privileges, query options, keys. The handlers are mixins over this class."""

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

    def _route(
        self, req: Request, res: ResourcePath, content_ids: dict[str, str] | None
    ) -> Response:
        raise NotImplementedError  # DataService routes; $batch operations go through it again

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
            404, "", f"{entity.logical_name} With Id = {shown_key(res)} Does Not Exist"
        )


def _key_value(a: Attribute, v: Any) -> Any:
    if a.edm_type == "Edm.Guid" and isinstance(v, str):
        return v.lower()
    if a.type == "boolean" and isinstance(v, bool):
        return 1 if v else 0
    return v
