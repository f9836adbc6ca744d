"""The emulator's HTTPS server and its Python API (``Emulator``), usable as a pytest fixture.

One port serves both the Entra ID endpoints (``/<tenant>/oauth2/v2.0/token``, ...) and the
Dataverse Web API (``/api/data/v9.2/...``), so the organisation URL and the authority host are the
same ``https://127.0.0.1:<port>``.
"""

from __future__ import annotations

import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from . import seed as seeding
from .connection import Connection
from .cost import CostModel
from .faults import FaultInjector
from .frontdoor import Answer, FrontDoor, WebServers, caller_key
from .httpd import Handler, HttpsServer, LogEntry
from .identity import ClientApp, IdentityProvider, User
from .model import Model, standard_model
from .prerender import PageCache
from .protection import ServiceLimits, ServiceProtection
from .service import Caller, DataService, Request, ServiceSettings
from .store import Store, q, utc_now_text
from .tls import TlsFiles, create_tls_files, server_context
from .wire import ODataError, Response, json_response

__all__ = ["Emulator", "EmulatorOptions", "LogEntry", "run_forever"]

DEFAULT_TENANT_ID = "9f8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
DEFAULT_CLIENT_ID = "51f81489-12ee-4a9e-aaae-a2591f45987d"
DEFAULT_PUBLIC_CLIENT_ID = "2ad88395-b77d-4561-9441-d0e40824f9bc"
DEFAULT_REDIRECT_URIS = ("http://localhost", "http://127.0.0.1")
DEFAULT_USERS = (
    User("0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9", "dana.admin@contoso.example", "Dana Admin"),
    User("1b2c3d4e-5f60-4172-93a4-b5c6d7e8f90a", "sam.agent@contoso.example", "Sam Agent"),
)
#: The emulator's own counters as JSON, for benchmarks that run it in another process.
COUNTERS_PATH = "/_emulator/counters"


@dataclass
class EmulatorOptions:
    model: Model | None = None
    csdl_path: str | Path | None = None
    counts: dict[str, int] | None = None
    rows: dict[str, int] = field(default_factory=dict)
    seed: int = 42
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    store_path: Path | None = None
    tenant_id: str = DEFAULT_TENANT_ID
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = None
    public_client_id: str = DEFAULT_PUBLIC_CLIENT_ID
    extra_clients: tuple[ClientApp, ...] = ()
    users: tuple[User, ...] = DEFAULT_USERS
    access_token_lifetime: int = 3599
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    log_limit: int = 100_000
    #: Extra host names the emulator answers as (in its certificate, token audiences and links),
    #: e.g. a sovereign-cloud org host and its login host, for tests that resolve them to it.
    hostnames: tuple[str, ...] = ()
    #: Server time per request, and the time scale (None: answers as fast as they render).
    cost_model: CostModel | None = None
    #: Service protection (None: no limit; ``ServiceLimits()``: the real service's).
    service_protection: ServiceLimits | None = None
    #: Simulated web servers: budgets are per server, the affinity cookie names one.
    web_servers: int = 1
    #: The ``x-ms-dop-hint`` on every data-API response.
    dop_hint: int = 4
    #: Keep rendered pages and answer repeated identical GETs with the same bytes.
    prerender: bool = False
    prerender_max_bytes: int = 1 << 30


class Emulator:
    """A running (or startable) emulator. Use as a context manager or call start()/stop()."""

    def __init__(self, options: EmulatorOptions | None = None, **kw: Any) -> None:
        self.options = options or EmulatorOptions(**kw)
        opts = self.options
        self.client_id = opts.client_id
        self.client_secret = opts.client_secret or secrets.token_urlsafe(24)
        self.public_client_id = opts.public_client_id
        self.tenant_id = opts.tenant_id
        self.faults = FaultInjector()
        #: Faults for single operations inside a $batch (status faults only).
        self.part_faults = FaultInjector()
        scale = opts.cost_model.time_scale if opts.cost_model is not None else 1.0
        self.protection = ServiceProtection(time_scale=scale)
        self.protection.use(opts.service_protection)
        self.web_servers = WebServers(opts.web_servers)
        self.page_cache = PageCache(enabled=opts.prerender, max_bytes=opts.prerender_max_bytes)
        self.front = FrontDoor(
            faults=self.faults,
            protection=self.protection,
            servers=self.web_servers,
            cache=self.page_cache,
            cost_model=opts.cost_model,
            dop_hint=opts.dop_hint,
        )
        self.log: list[LogEntry] = []
        self._log_lock = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: HttpsServer | None = None
        self._thread: threading.Thread | None = None
        self.model: Model = standard_model()
        self.store: Store | None = None
        self.service: DataService | None = None
        self.identity: IdentityProvider | None = None
        self.tls: TlsFiles | None = None
        self._app_user: str | None = None
        self._user_map: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Emulator:
        opts = self.options
        if opts.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dynamics-emulator-")
            workdir = Path(self._tmp.name)
        else:
            workdir = Path(opts.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.tls = create_tls_files(workdir, hosts=(*_hosts_for(opts.host), *opts.hostnames))
        self.model = self._load_model()
        self.store = Store(self.model, opts.store_path)
        self._seed()
        csdl = Path(opts.csdl_path).read_bytes() if opts.csdl_path is not None else None
        self.service = DataService(
            self.model, self.store, opts.settings, csdl=csdl, part_faults=self.part_faults
        )
        server = HttpsServer((opts.host, opts.port), Handler, server_context(self.tls), self)
        self._server = server
        self.port = server.server_address[1]
        self.url = f"https://{_url_host(opts.host)}:{self.port}"
        clients = [
            ClientApp(
                self.client_id,
                secret=self.client_secret,
                redirect_uris=DEFAULT_REDIRECT_URIS,
                display_name="tap-dynamics (emulator)",
            ),
            ClientApp(
                self.public_client_id,
                redirect_uris=DEFAULT_REDIRECT_URIS,
                display_name="tap-dynamics login (public client)",
            ),
            *opts.extra_clients,
        ]
        self.identity = IdentityProvider(
            self.url,
            tenant_id=self.tenant_id,
            clients=clients,
            users=list(opts.users),
            access_token_lifetime=opts.access_token_lifetime,
        )
        self._map_users()
        self._thread = threading.Thread(
            target=server.serve_forever, name="dynamics-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _load_model(self) -> Model:
        opts = self.options
        if opts.model is not None:
            return opts.model
        if opts.csdl_path is not None:
            from .csdl_load import load_model

            return load_model(opts.csdl_path)
        return standard_model()

    def _seed(self) -> None:
        assert self.store is not None
        opts = self.options
        if opts.csdl_path is not None and opts.counts is None:
            counts = {e.logical_name: 5 for e in self.model.concrete()}
        else:
            counts = dict(opts.counts if opts.counts is not None else seeding.default_counts())
        counts.update(opts.rows)
        counts = {k: v for k, v in counts.items() if k in self.model}
        self.counts = counts
        for entity in self.model.concrete():
            n = counts.get(entity.logical_name, 0)
            if n:
                self.store.insert_rows(
                    entity, seeding.generate_rows(self.model, entity, counts, seed=opts.seed)
                )

    def _map_users(self) -> None:
        """Tie identities to systemuser rows: app-only calls run as the first systemuser (the
        application user); each signed-in user as a systemuser with their object id."""
        assert self.store is not None and self.identity is not None
        su = self.model.entities.get("systemuser")
        if su is None:
            return
        with self.store.lock:
            ids = [
                r[0]
                for r in self.store.conn.execute(
                    f'SELECT {q(su.primary_id)} FROM systemuser ORDER BY "@rowid" LIMIT 50'
                )
            ]
        if not ids:
            return
        self._app_user = ids[0]
        for i, user in enumerate(self.options.users):
            self._user_map[user.object_id] = ids[(i + 1) % len(ids)]

    # -- addresses --------------------------------------------------------------------------------

    @property
    def authority_host(self) -> str:
        return self.url

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant_id}"

    @property
    def ca_bundle(self) -> str:
        assert self.tls is not None
        return str(self.tls.ca_bundle)

    @property
    def connection(self) -> Connection:
        """What a client needs: URLs, tenant, the confidential client and the CA bundle."""
        return Connection(
            environment_url=self.url,
            authority_host=self.authority_host,
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            client_secret=self.client_secret,
            ca_bundle=self.ca_bundle,
        )

    def tap_config(self, **overrides: Any) -> dict[str, Any]:
        """Settings for tap-dynamics / target-dynamics pointed at this emulator."""
        return self.connection.settings(**overrides)

    # -- test hooks -------------------------------------------------------------------------------

    def revoke_all_tokens(self) -> None:
        assert self.identity is not None
        self.identity.revoke_all_tokens()

    def expire_access_tokens(self) -> None:
        assert self.identity is not None
        self.identity.expire_access_tokens()

    def expire_delta_tokens(self) -> None:
        assert self.service is not None
        self.service.expire_delta_tokens()
        self.page_cache.clear()

    def snapshot_record_counts(self) -> None:
        """Take a new snapshot for ``RetrieveTotalRecordCount`` (the service's lags a day)."""
        assert self.service is not None
        self.service.snapshot_record_counts()

    def counters(self) -> dict[str, Any]:
        """What the benchmarks read: per web server the requests, modelled server seconds, 429s
        and peak concurrency; in all, the 429s, ``Retry-After`` violations, peak concurrency;
        and the pre-rendered pages' cache. Also served as JSON at ``/_emulator/counters``."""
        return {
            **self.protection.snapshot(self.web_servers.count),
            "prerender": self.page_cache.snapshot(),
        }

    def reset_counters(self) -> None:
        self.protection.reset_counters()

    def prerender(self, path: str, prefer: str | None = None) -> int:
        """Render every page of a query now, as the emulator's own client application will ask
        for them (``path`` below ``/api/data/v9.2/``, or a full URL; ``prefer`` exactly as the
        client sends its ``Prefer`` header), so that walking it is answered from the cache.
        Turns the cache on. Returns the number of pages kept."""
        assert self.service is not None
        self.page_cache.enabled = True
        caller = Caller(self.client_id, self._app_user)
        headers = {"prefer": prefer} if prefer is not None else {}
        url: str | None = path if "://" in path else f"{self.url}/api/data/v9.2/{path.lstrip('/')}"
        pages = 0
        while url:
            parts = urlsplit(url)
            req = Request("GET", parts.path, parts.query, headers, b"", caller, self.url)
            key = self.page_cache.key(
                "GET", caller_key(caller), self.url, parts.path, parts.query, headers
            )
            res = self.service.handle(req)
            if key is None or res.status != 200 or res.work is None:
                raise ValueError(f"{path} is not a query of rows the cache can keep: {res.status}.")
            self.page_cache.put(key, res)
            pages += 1
            url = orjson.loads(res.body).get("@odata.nextLink")
        return pages

    def clear_log(self) -> None:
        with self._log_lock:
            self.log.clear()

    def requests(self, path_contains: str = "/api/data/") -> list[LogEntry]:
        with self._log_lock:
            return [e for e in self.log if path_contains in e.path]

    def update_rows(self, table: str, ids: Iterable[str], values: Mapping[str, Any]) -> int:
        """Change rows as a user of the organisation would (new modifiedon and version)."""
        assert self.store is not None
        entity = self.model[table]
        n = 0
        with self.store.transaction():
            for rid in ids:
                vals = dict(values)
                if "modifiedon" in entity.attributes:
                    vals["modifiedon"] = utc_now_text()
                if "versionnumber" in entity.attributes:
                    vals["versionnumber"] = self.store.next_version()
                self.store.update(entity, rid, vals)
                n += 1
        self.page_cache.clear()
        return n

    def delete_rows(self, table: str, ids: Iterable[str]) -> int:
        assert self.store is not None
        entity = self.model[table]
        self.page_cache.clear()
        return sum(1 for rid in ids if self.store.delete(entity, rid))

    def row_ids(self, table: str, limit: int | None = None) -> list[str]:
        assert self.store is not None
        entity = self.model[table]
        sql = f'SELECT {q(entity.primary_id)} FROM {q(table)} ORDER BY "@rowid"'
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.store.lock:
            return [r[0] for r in self.store.conn.execute(sql)]

    def get_row(self, table: str, row_id: str) -> dict[str, Any] | None:
        assert self.store is not None
        entity = self.model[table]
        return self.store.get_row(entity, {entity.primary_id: row_id})

    # -- request handling -------------------------------------------------------------------------

    def _caller_for(self, token: str) -> Caller | None:
        assert self.identity is not None
        info = self.identity.validate_access_token(token)
        if info is None or not self._is_own_resource(info.resource):
            return None
        if info.user_object_id is None:
            return Caller(info.client_id, self._app_user)
        return Caller(
            info.client_id,
            self._user_map.get(info.user_object_id, self._app_user),
            info.user_object_id,
        )

    def _is_own_resource(self, resource: str) -> bool:
        """A token's audience names this organisation: its URL, or one of its host aliases."""
        if resource.rstrip("/") == self.url:
            return True
        return (urlsplit(resource).hostname or "") in self.options.hostnames

    def _base_url_for(self, headers: Mapping[str, str]) -> str:
        """Links name the host the client used when it is one of the emulator's aliases."""
        host = headers.get("host", "")
        if host.split(":")[0] in self.options.hostnames:
            return f"https://{host}"
        return self.url

    def _challenge(self) -> Response:
        err = ODataError(401, "", "")
        challenge = (
            f"Bearer authorization_uri={self.url}/{self.tenant_id}/oauth2/authorize, "
            f"resource_id={self.url}/"
        )
        return Response(401, b"", [("WWW-Authenticate", challenge), *err.headers])

    def _authenticate(self, headers: Mapping[str, str]) -> Caller | None:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        return self._caller_for(token) if token else None

    def dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one HTTP request."""
        assert self.identity is not None and self.service is not None
        parts = urlsplit(target)
        path, raw_query = parts.path, parts.query
        if path.startswith("/api/data/"):
            req = Request(
                method=method,
                raw_path=path,
                raw_query=raw_query,
                headers=headers,
                body=body,
                base_url=self._base_url_for(headers),
            )
            return self.front.answer(
                req,
                authenticate=self._authenticate,
                challenge=self._challenge,
                handle=self.service.handle,
            )
        if path == COUNTERS_PATH and method == "GET":
            return Answer(json_response(200, self.counters()))
        query = parse_qs(raw_query, keep_blank_values=True)
        form: dict[str, list[str]] = {}
        ctype = headers.get("content-type", "")
        if method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        res_id = self.identity.handle(method, path, query, form, headers)
        if res_id is not None:
            return Answer(res_id)
        return Answer(ODataError(404, "", f"No resource at '{path}'.").to_response())

    def record(self, entry: LogEntry) -> None:
        with self._log_lock:
            self.log.append(entry)
            if len(self.log) > self.options.log_limit:
                del self.log[: len(self.log) - self.options.log_limit]


def _hosts_for(host: str) -> tuple[str, ...]:
    hosts = ["127.0.0.1", "localhost"]
    if host not in hosts and host not in ("0.0.0.0", "::"):  # noqa: S104 - names, not binds
        hosts.append(host)
    return tuple(hosts)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is reached via loopback
        return "127.0.0.1"
    return host


def run_forever(emulator: Emulator, on_ready: Callable[[Emulator], None] | None = None) -> None:
    """Start, call ``on_ready``, and serve until interrupted."""
    emulator.start()
    try:
        if on_ready is not None:
            on_ready(emulator)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
