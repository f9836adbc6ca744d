"""One way to start the emulator and talk to it, for tests, benchmarks and the demo.

* ``EmulatorProcess`` runs the ``dynamics-emulator`` command in a child process, as a user does,
  and reads back its connection (an in-process ``server.Emulator`` has ``.connection`` too).
* ``ApiSession`` is a ``requests`` session for one emulator: pinned to its CA bundle, with a
  bearer token from the emulator's own token endpoint through the real ``msal`` (client
  credentials), and the OData headers.
* ``Connection.settings()`` gives the tap-dynamics / target-dynamics settings.

It uses nothing of the connectors' packages, so what it finds out about the emulator does not
depend on the code the emulator is there to check.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import msal
import requests

from .connection import Connection

__all__ = [
    "ODATA_HEADERS",
    "ApiSession",
    "Connection",
    "EmulatorProcess",
    "EmulatorStartError",
    "PinnedSession",
]

ODATA_HEADERS = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}
_SECRET_VARIABLE = "DYNAMICS_EMULATOR_CLIENT_SECRET"  # noqa: S105 - a variable name
_READY = "  connection file"  # the last line dynamics-emulator prints when it is ready


class EmulatorStartError(RuntimeError):
    """The command exited (or stopped printing) before it was ready; the message holds its
    output."""


class PinnedSession(requests.Session):
    """A session that always verifies against one CA bundle.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` from the environment override
    ``Session.verify``; machines (CI's included) set them to the system store, which does not hold
    the emulator's private CA. Passing ``verify`` per request is what makes the pin stick.
    """

    def __init__(self, ca_bundle: str) -> None:
        super().__init__()
        self.verify = ca_bundle

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kw: Any
    ) -> requests.Response:
        kw.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kw)


class ApiSession(PinnedSession):
    """A session signed in to one emulator's Web API (``base`` is its ``/api/data/<version>``)."""

    def __init__(self, connection: Connection, api_version: str = "v9.2") -> None:
        super().__init__(connection.ca_bundle)
        self.connection = connection
        self.base = f"{connection.environment_url}/api/data/{api_version}"
        self.headers.update(ODATA_HEADERS)
        self._app = msal.ConfidentialClientApplication(
            connection.client_id,
            client_credential=connection.client_secret,
            authority=connection.authority,
            instance_discovery=False,
            http_client=PinnedSession(connection.ca_bundle),
        )
        self.refresh_token()

    def refresh_token(self) -> None:
        """Get a new token from the token endpoint (msal's cache would hand back the old one,
        which is exactly what a client must not do after a 401)."""
        self._app.remove_tokens_for_client()
        scope = f"{self.connection.environment_url}/.default"
        result = self._app.acquire_token_for_client(scopes=[scope])
        if "access_token" not in result:
            raise RuntimeError(f"The emulator refused a token: {result.get('error_description')}")
        self.headers["Authorization"] = f"Bearer {result['access_token']}"

    def url(self, path: str) -> str:
        """``path`` relative to ``base``, or an absolute URL (a next link) as it is."""
        return path if path.startswith("https://") else f"{self.base}/{path.lstrip('/')}"


class EmulatorProcess:
    """``dynamics-emulator`` in a child process; stops it on ``stop()`` or leaving the ``with``.

    ``args`` are further command-line options (``--rows``, ``--table``, ``--csdl``, ...). The
    client secret is made here and handed over through the environment. ``banner`` holds the
    lines the command printed, ``info`` its ``emulator.json`` (row counts included) and
    ``connection`` what a client needs.
    """

    def __init__(self, workdir: str | Path, *args: str) -> None:
        self.workdir = Path(workdir)
        secret = secrets.token_urlsafe(24)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dynamics_emulator",
                "--port",
                "0",
                "--workdir",
                str(self.workdir),
                "--client-secret-env",
                _SECRET_VARIABLE,
                *args,
            ],
            env={**os.environ, _SECRET_VARIABLE: secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.banner = _read_banner(self.proc)
        if not self.banner or not self.banner[-1].startswith(_READY):
            self.stop()
            raise EmulatorStartError("The emulator did not start:\n" + "\n".join(self.banner))
        path = self.workdir / "emulator.json"
        self.info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.connection = Connection.from_file(path, client_secret=secret)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def session(self, api_version: str = "v9.2") -> ApiSession:
        return ApiSession(self.connection, api_version)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not stopped within 30 seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_banner(proc: subprocess.Popen[bytes]) -> list[str]:
    """The lines the command prints up to the ready line (or until it exits)."""
    out: IO[bytes] | None = proc.stdout
    assert out is not None
    lines: list[str] = []
    for raw in out:
        lines.append(raw.decode("utf-8", "replace").rstrip())
        if lines[-1].startswith(_READY):
            break
    return lines
