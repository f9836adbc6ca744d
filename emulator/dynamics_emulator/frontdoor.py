"""The organisation's front door: web servers, server affinity, faults, service protection, the
cost model's waits and the pre-rendered pages, around the Web API (``service.DataService``).

A real organisation runs on several web servers behind a load balancer. A response sets an
``ARRAffinity`` cookie naming the server that answered; a request that carries it goes back to
that server, one without it goes to the least loaded server (the fewest requests in flight; ties
in turn, round robin). Service protection budgets are per caller *and per server*, so a client
that drops the cookie spreads over the servers and gets more throughput.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .cost import CostModel
from .faults import Fault, FaultInjector
from .prerender import PageCache
from .protection import ServiceProtection
from .service import Caller, Request
from .wire import ODataError, Response

AFFINITY_COOKIE = "ARRAffinity"


@dataclass
class Answer:
    """A data-API request answered: the response, and what the server did for the request log."""

    response: Response
    fault: Fault | None = None
    server: int | None = None  # the web server that answered
    server_seconds: float | None = None  # modelled server time (None: refused before running)
    held_seconds: float | None = None  # real seconds the answer was held for (the cost model)


class WebServers:
    """The simulated web servers and the affinity cookie that names them."""

    def __init__(self, count: int = 1) -> None:
        if count < 1:
            raise ValueError("there must be at least one web server")
        self.count = count
        # Opaque, stable ids, shaped like the load balancer's (64 hex digits).
        self.ids = [
            hashlib.sha256(f"dynamics-emulator web server {i}".encode()).hexdigest()
            for i in range(count)
        ]
        self._by_id = {sid: i for i, sid in enumerate(self.ids)}
        self._next = 0
        self._lock = threading.Lock()

    def route(self, cookie_header: str | None, load: Callable[[int], int]) -> int:
        """The server named by the affinity cookie, else the least loaded (ties in turn)."""
        pinned = self._by_id.get(_cookie(cookie_header, AFFINITY_COOKIE) or "")
        if pinned is not None:
            return pinned
        with self._lock:
            order = [(self._next + k) % self.count for k in range(self.count)]
            chosen = min(order, key=load)  # min keeps the first of equals: round robin
            self._next = (chosen + 1) % self.count
            return chosen

    def set_cookie(self, server: int) -> str:
        return f"{AFFINITY_COOKIE}={self.ids[server]}; Path=/; HttpOnly; Secure"


def _cookie(header: str | None, name: str) -> str | None:
    for item in (header or "").split(";"):
        k, sep, v = item.strip().partition("=")
        if sep and k == name:
            return v.strip()
    return None


class FrontDoor:
    """Answers ``/api/data/...`` requests on one of the web servers."""

    def __init__(
        self,
        *,
        faults: FaultInjector,
        protection: ServiceProtection,
        servers: WebServers,
        cache: PageCache,
        cost_model: CostModel | None = None,
        dop_hint: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.faults = faults
        self.protection = protection
        self.servers = servers
        self.cache = cache
        self.cost_model = cost_model
        self.dop_hint = dop_hint
        #: How the answer is held for the cost model's time (tests record it instead).
        self.sleep = sleep

    def answer(
        self,
        req: Request,
        *,
        authenticate: Callable[[Mapping[str, str]], Caller | None],
        challenge: Callable[[], Response],
        handle: Callable[[Request], Response],
    ) -> Answer:
        """Route ``req`` (its caller not yet known) to a server and answer it there."""
        server = self.servers.route(req.header("cookie"), self.protection.active)
        fault = self.faults.next_fault(req.method, req.raw_path)
        if fault is not None and fault.kind == "status":
            ans = Answer(fault.error().to_response(), fault, server=server)
        else:
            req.caller = authenticate(req.headers)
            if req.caller is None:
                ans = Answer(challenge(), fault, server=server)
            else:
                ans = self._run(req, server, handle)
                ans.fault = fault
        self._stamp(ans.response, req, server)
        return ans

    def _run(self, req: Request, server: int, handle: Callable[[Request], Response]) -> Answer:
        assert req.caller is not None
        key = caller_key(req.caller)
        start = time.perf_counter()
        try:
            self.protection.enter(key, server)
        except ODataError as err:
            return Answer(err.to_response(), server=server)
        seconds = 0.0
        held: float | None = None
        try:
            res = self._render(req, key, handle)
            if self.cost_model is not None:
                seconds = self.cost_model.seconds(res.work)
                held = self.cost_model.real(seconds)
                remaining = held - (time.perf_counter() - start)
                if remaining > 0:
                    self.sleep(remaining)
            else:
                seconds = time.perf_counter() - start
        finally:
            self.protection.leave(key, seconds, server)
        return Answer(res, server=server, server_seconds=seconds, held_seconds=held)

    def _render(self, req: Request, caller: str, handle: Callable[[Request], Response]) -> Response:
        key = self.cache.key(
            req.method, caller, req.base_url, req.raw_path, req.raw_query, req.headers
        )
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        res = handle(req)
        if key is not None:
            self.cache.put(key, res)
        elif req.method not in ("GET", "HEAD"):
            self.cache.clear()  # a write: no kept page may show rows that changed
        return res

    def _stamp(self, res: Response, req: Request, server: int) -> None:
        """Headers every data-API response carries."""
        res.headers.append(("x-ms-dop-hint", str(self.dop_hint)))
        res.headers.append(("Set-Cookie", self.servers.set_cookie(server)))
        if req.caller is None or res.status == 429:
            return
        key = caller_key(req.caller)
        left = self.protection.remaining(key, server)
        if left is not None:
            res.headers.append(("x-ms-ratelimit-burst-remaining-xrm-requests", str(left)))
        time_left = self.protection.time_remaining(key, server)
        if time_left is not None:
            # Milliseconds, like the limit's own message [INFERRED].
            res.headers.append(
                ("x-ms-ratelimit-time-remaining-xrm-requests", f"{time_left * 1000:.2f}")
            )


def caller_key(caller: Caller) -> str:
    """Whom the limits count: the application, or the user it acts for."""
    return caller.client_id + "/" + (caller.user_object_id or "app")
