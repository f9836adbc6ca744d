"""The HTTPS plumbing: a threading server that does the TLS handshake in its workers, and the
request handler that reads a request, has the emulator answer it, writes the answer (or the fault
asked for: a reset, a truncated body, a slow answer) and logs it."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .frontdoor import Answer
from .wire import ODataError, Response

MAX_BODY = 64 * 1024 * 1024


@dataclass
class LogEntry:
    """One request as the emulator saw it (no Authorization header, no body)."""

    time: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int
    duration: float
    request_bytes: int
    response_bytes: int
    fault: str | None = None
    batch_operations: int | None = None
    #: The simulated web server that answered a data-API request.
    server: int | None = None
    #: Its modelled server time (None when it was refused before running: 401, 429, a fault).
    server_seconds: float | None = None
    #: Real seconds the answer was held for the cost model (None without a cost model).
    held_seconds: float | None = None


class App(Protocol):
    """What the server serves: the emulator."""

    def dispatch(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Answer: ...

    def record(self, entry: LogEntry) -> None: ...


class HttpsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        addr: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        ctx: ssl.SSLContext,
        app: App,
    ) -> None:
        self.ssl_context = ctx
        self.app = app
        super().__init__(addr, handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        # The TLS handshake runs in the worker thread, so one slow client cannot stall accept().
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request.settimeout(30)
            request.do_handshake()
        except (OSError, ssl.SSLError):
            with contextlib.suppress(OSError):
                request.close()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop connections are routine here (faults, killed taps); stay quiet.
        return


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HttpsServer
    timeout = 120
    # Headers and body leave in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers (about 40 ms per response on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        app = self.server.app
        start = time.perf_counter()
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(413)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            ans = app.dispatch(self.command, self.path, headers, body)
        except Exception as exc:  # noqa: BLE001 - a bug must answer 500, not hang the client
            ans = Answer(
                ODataError(
                    500, "0x80040216", f"An unexpected error occurred: {type(exc).__name__}"
                ).to_response()
            )
        res, fault = ans.response, ans.fault
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        kind = fault.kind if fault is not None else None
        status = 0 if kind == "reset" else -res.status if kind == "truncate" else res.status
        logged = {
            k: v for k, v in headers.items() if k not in ("authorization", "x-identity-header")
        }
        path, _, query = self.path.partition("?")
        app.record(
            LogEntry(
                time=time.time(),
                method=self.command,
                path=path,
                query=query,
                headers=logged,
                status=status,
                duration=time.perf_counter() - start,
                request_bytes=len(body),
                response_bytes=len(res.body),
                fault=fault.kind if fault is not None else None,
                batch_operations=(
                    body.count(b"Content-Type: application/http")
                    if path.endswith("$batch") and path.startswith("/api/data/")
                    else None
                ),
                server=ans.server,
                server_seconds=ans.server_seconds,
                held_seconds=ans.held_seconds,
            )
        )
        # Logged before it is sent: a client that has its answer finds the request in the log.
        if kind == "reset":
            self._reset()
        else:
            self._write(res, truncate=kind == "truncate")

    def _write(self, res: Response, *, truncate: bool) -> None:
        self.send_response(res.status)
        names = {k.lower() for k, _ in res.headers}
        for k, v in res.headers:
            self.send_header(k, v)
        if "content-type" not in names and res.body:
            self.send_header("Content-Type", "application/json")
        request_id = str(uuid.uuid4())
        self.send_header("x-ms-service-request-id", request_id)
        self.send_header("REQ_ID", request_id)
        self.send_header("Content-Length", str(len(res.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if truncate:
            # Half the announced body, then a clean close: the client reads a short body.
            self.wfile.write(res.body[: len(res.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(res.body)

    def _reset(self) -> None:
        """Drop the connection abruptly (RST), as a broken network or proxy would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            raw = self.connection
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
