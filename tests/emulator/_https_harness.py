"""A tiny test-only HTTPS server that routes every request to ``IdentityProvider.handle``.

The certificate comes from a throw-away ``trustme`` CA whose PEM is written to a file, so
clients verify TLS for real (``verify=<ca path>``).
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from dynamics_emulator.identity import IdentityProvider


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _IdentityServer

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        form: dict[str, list[str]] = {}
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        provider = self.server.provider
        assert provider is not None
        resp = provider.handle(
            self.command,
            url.path,
            parse_qs(url.query, keep_blank_values=True),
            form,
            dict(self.headers.items()),
        )
        if resp is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _IdentityServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ssl_context = ssl_context
        self.provider: IdentityProvider | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # The handshake happens on first read, in the handler thread, not in the accept loop.
        return self.ssl_context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), addr


@dataclass
class Harness:
    provider: IdentityProvider
    base_url: str
    ca_path: str


@contextmanager
def serve_identity(
    make_provider: Callable[[str], IdentityProvider], tmp_dir: Path
) -> Iterator[Harness]:
    """Start the server on 127.0.0.1:<free port>; ``make_provider(base_url)`` builds the IdP."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)
    ca_path = tmp_dir / "identity-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = _IdentityServer(ctx)
    base_url = f"https://127.0.0.1:{server.server_address[1]}"
    server.provider = make_provider(base_url)
    thread = threading.Thread(target=server.serve_forever, name="identity-https", daemon=True)
    thread.start()
    try:
        yield Harness(server.provider, base_url, str(ca_path))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
