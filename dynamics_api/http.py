"""The Dataverse Web API client: OData headers, per-attempt auth, Retry-After-aware retries.

One :class:`DataverseClient` is shared by all the threads of a tap or target. It owns one
:class:`~dynamics_api.session_base.VerifiedSession` (TLS always verified, against
``REQUESTS_CA_BUNDLE`` when set) whose connection pool holds ``max_connections`` connections, and
applies one retry policy to every request:

- 429 waits exactly the ``Retry-After`` the service gave (seconds or an HTTP date, no jitter), or
  backs off exponentially with a little jitter when there is none;
- 500, 502, 503, 504, refused or reset connections, read timeouts and cut-off bodies back off
  exponentially (``backoff_base * 2**n``, at most ``backoff_max``), up to ``max_retries`` times;
- 401 forces a token refresh and retries once;
- any other error fails at once with an :class:`~dynamics_api.errors.ApiError` that says what to do.

Nothing here logs or raises with a header, a token or a query string value.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

import orjson
import requests
import requests.adapters

from .cloud import normalize_environment_url
from .errors import (
    ApiError,
    ConfigError,
    api_error,
    parse_error_annotations,
    parse_error_body,
    request_id_of,
)
from .retry import RETRYABLE_STATUS, Hold, RetryPolicy, parse_retry_after
from .session_base import VerifiedSession
from .stats import ClientStats
from .wire import (
    NETWORK_ERRORS,
    describe,
    is_certificate_failure,
    is_connect_failure,
    log_path,
    read_error_body,
    read_into,
)

__all__ = [
    "RETRYABLE_STATUS",
    "ClientStats",
    "DataverseClient",
    "RetryPolicy",
    "TokenSource",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

# Methods whose repetition cannot change the outcome: re-sent even when a failure may have
# happened after the service received them (a reset, a read timeout, a cut-off body).
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
_API_PATH_RE = re.compile(r"/api/data/v[0-9.]+/([^/(?]+)(\()?")


def _default_user_agent() -> str:
    try:
        return f"tap-dynamics/{dist_version('tap-dynamics')}"
    except PackageNotFoundError:
        return "tap-dynamics/0"


DEFAULT_USER_AGENT = _default_user_agent()


class TokenSource(Protocol):
    """Anything that hands out Dataverse access tokens (``dynamics_api.auth.TokenProvider``)."""

    def token(self, force_refresh: bool = False) -> str:
        """A valid access token; a new one from the identity service when ``force_refresh``."""
        ...


class DataverseClient:
    """A thread-safe Dataverse Web API client with one retry policy.

    Args:
        environment_url: ``https://<org>.crm.dynamics.com`` (any https URL, such as the emulator's).
        token_source: gives access tokens; ``token(force_refresh=True)`` after a 401.
        api_version: Web API version, ``9.2``.
        timeout: (connect, read) seconds per attempt.
        max_retries: retries of one request after throttling or transient failures.
        backoff_base: first exponential wait, in seconds.
        backoff_max: longest exponential wait.
        max_retry_after: longest ``Retry-After`` honoured; a longer one fails the request.
        jitter: at most this fraction is added to exponential waits (never to Retry-After).
        sleep: how to wait (tests pass a recorder).
        (the five above build the client's :class:`~dynamics_api.retry.RetryPolicy`,
        ``client.retry``, which target-dynamics also applies to ``$batch`` parts)
        user_agent: the ``User-Agent`` header.
        max_connections: connection pool size; also the most requests in flight at once.

    Raises:
        ConfigError: ``environment_url`` is not an https organisation URL (see
            :func:`dynamics_api.cloud.normalize_environment_url`).
    """

    def __init__(
        self,
        environment_url: str,
        token_source: TokenSource,
        *,
        api_version: str = "9.2",
        timeout: tuple[float, float] = (10, 120),
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 300.0,
        jitter: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = DEFAULT_USER_AGENT,
        max_connections: int = 16,
    ) -> None:
        self.environment_url = normalize_environment_url(environment_url)
        parts = urlsplit(self.environment_url)
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1.")
        self.host = parts.netloc
        self._origin = ((parts.hostname or "").lower(), parts.port or 443)
        version = api_version.lstrip("vV")
        self.base_url = f"{self.environment_url}/api/data/v{version}"
        self.timeout = timeout
        self.retry = RetryPolicy(
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            jitter=jitter,
            sleep=sleep,
        )
        self.stats = ClientStats()
        self._tokens = token_source
        self._hold = Hold()
        self._refresh_lock = threading.Lock()
        self._last_rejected: str | None = None
        self._last_refreshed: str | None = None
        self._session = VerifiedSession()
        # pool_block: threads wait for a free connection rather than open more than
        # max_connections, which keeps a target under the service's concurrency limit.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max_connections, max_retries=0, pool_block=True
        )
        self._session.mount("https://", adapter)
        # No cookies: the server-affinity cookie pins every request to one web server, and the
        # service's limits are per server (Microsoft advises turning affinity off for throughput).
        self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._session.headers.update(
            {
                "User-Agent": user_agent,
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
            }
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> DataverseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        url_or_path: str,
        *,
        params: str | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        entity: str | None = None,
        stream: bool = False,
        idempotent: bool | None = None,
        max_retries: int | None = None,
        into: BinaryIO | None = None,
        answered: Callable[[], None] | None = None,
    ) -> requests.Response:
        """Send one Web API request, retrying as the policy says, and return a successful response.

        Args:
            method: ``GET``, ``POST``, ``PATCH``...
            url_or_path: a path below ``base_url`` (``accounts(<id>)``) or an absolute URL on the
                environment's host (an ``@odata.nextLink``).
            params: an already built query string (see :func:`dynamics_api.odata.build_query`).
            headers: extra headers (``Prefer``, ``If-Match``...); they override the defaults,
                except ``Authorization`` which is always the client's.
            json: a body to send as JSON.
            data: a raw body (``$batch``); give its ``Content-Type`` in ``headers``.
            entity: the table concerned, for error messages.
            stream: return before reading the body (the caller must close the response).
            idempotent: whether the request may be re-sent after a failure that could have
                happened after the service acted on it; default True for every method but POST.
                A POST that is safe to repeat (a ``$batch`` of upserts) may pass True.
            max_retries: retries of this request at most (default: the policy's); 0 sends it
                once, for a request whose failure does not matter (nothing is waited or logged).
            into: a file the successful response's body is written to as it comes (from its
                start: a body cut off and asked for again replaces what was written), instead of
                being held in memory; the response's ``content`` is then empty.
            answered: called once, before the body is read, when the response gives its length
                (the service made the body before sending it: its work is done, the transfer is
                left). A body cut off on its way is then asked for again after the call.

        Returns:
            The response (status < 400), its body already read unless ``stream``.

        Raises:
            ApiError: the service refused the request, or retries ran out.
            ConfigError: an absolute URL on another host.
            AuthError: from the token source.
            OSError: ``into`` could not be written.
        """
        method = method.upper()
        if json is not None and data is not None:
            raise ValueError("Pass either json or data, not both.")
        url = self._resolve(url_or_path, params)
        path = urlsplit(url).path
        body = orjson.dumps(json) if json is not None else data
        send_headers = self._headers_for(method, headers, has_json=json is not None)
        resend_ok = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        retries = 0
        limit = self.retry.max_retries if max_retries is None else max_retries
        refreshed = False
        token: str | None = None
        while True:
            if token is None:
                token = self._tokens.token()
            attempt_headers = dict(send_headers)
            attempt_headers["Authorization"] = f"Bearer {token}"
            lead = self._hold.enter(self._held)
            self.stats.add(requests=1)
            try:
                response = self._send(lead, method, url, attempt_headers, body)
            except NETWORK_ERRORS as exc:
                retries = self._after_network_error(
                    exc, method, path, entity, retries, resend_ok, limit
                )
                token = None
                continue
            status = response.status_code
            self.stats.count_status(status)
            if status < 400:
                if stream:
                    return response
                if answered is not None and "Content-Length" in response.headers:
                    answered()
                    answered = None
                try:  # read here, so a cut-off body is retried
                    read_into(response, into)
                except NETWORK_ERRORS as exc:
                    response.close()
                    retries = self._after_network_error(
                        exc, method, path, entity, retries, resend_ok, limit
                    )
                    token = None
                    continue
                except BaseException:  # the file could not be written: the connection goes
                    response.close()
                    raise
                return response
            error_body = read_error_body(response)
            if status == 401 and not refreshed:
                refreshed = True
                log.info("Dataverse refused the token (401) on %s %s: refreshing it", method, path)
                token = self._refresh(token)
                self.stats.add(token_refreshes=1)
                continue
            if status in RETRYABLE_STATUS:
                retries = self._after_retryable_status(
                    response, error_body, method, path, entity, retries, limit
                )
                token = None
                continue
            raise self._api_error(response, error_body, method, path, entity)

    def get_json(
        self,
        url_or_path: str,
        *,
        params: str | None = None,
        headers: Mapping[str, str] | None = None,
        entity: str | None = None,
    ) -> dict[str, Any]:
        """GET a JSON object (a collection page, a row, the service document).

        Args:
            url_or_path: as for :meth:`request`.
            params: an already built query string.
            headers: extra headers (``Prefer: odata.maxpagesize=...``).
            entity: the table concerned, for error messages.

        Returns:
            The parsed body (``{}`` for an empty body).

        Raises:
            ApiError: as for :meth:`request`, or the body is not a JSON object.
        """
        response = self.request("GET", url_or_path, params=params, headers=headers, entity=entity)
        content = response.content
        if not content:
            return {}
        try:
            parsed = orjson.loads(content)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise api_error(
                response.status_code,
                "GET",
                urlsplit(response.url).path,
                message="The response body is not a JSON object",
                entity=entity,
                hint="Check that environment_url points at a Dataverse environment.",
                request_id=request_id_of(response.headers),
            )
        return parsed

    def iter_bytes(
        self,
        url: str,
        chunk_size: int = 1 << 16,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        """Stream a (large) body, such as ``$metadata``, in chunks.

        The request is retried like any other; a download cut off before its first chunk is
        started again, one cut off later fails (the caller has already consumed part of it).

        Args:
            url: as for :meth:`request`.
            chunk_size: bytes per read.
            headers: extra headers (``Accept: application/xml`` for ``$metadata``).

        Yields:
            The body's bytes.

        Raises:
            ApiError: as for :meth:`request`, or the download was cut off.
        """
        attempts = 0
        while True:
            response = self.request("GET", url, headers=headers, stream=True)
            path = urlsplit(response.url).path
            started = False
            try:
                for chunk in response.iter_content(chunk_size):
                    started = True
                    yield chunk
                return
            except NETWORK_ERRORS as exc:
                if started or self.retry.exhausted(attempts):
                    raise api_error(
                        0,
                        "GET",
                        path,
                        message=f"the download was cut off ({describe(exc)})",
                        hint="Try again; if it keeps failing check the network or proxy.",
                    ) from None
                attempts += 1
                self._wait(
                    self.retry.backoff(attempts - 1),
                    f"Download of GET {log_path(path)} was cut off ({describe(exc)}): retry "
                    f"{attempts} of {self.retry.max_retries}",
                    throttled=False,
                    given=False,
                )
                self.stats.add(retries=1)
            finally:
                response.close()

    # -- helpers -----------------------------------------------------------------------------

    def _resolve(self, url_or_path: str, params: str | None) -> str:
        if "://" in url_or_path:
            parts = urlsplit(url_or_path)
            origin = ((parts.hostname or "").lower(), parts.port or 443)
            if parts.scheme != "https" or origin != self._origin:
                raise ConfigError(
                    f"The service linked to {parts.scheme}://{parts.netloc}, which is not the "
                    f"environment_url host {self.host}: set environment_url to the host the "
                    "service uses, so no token is sent elsewhere."
                )
            url = url_or_path
        else:
            url = f"{self.base_url}/{url_or_path.lstrip('/')}"
        if params:
            url += ("&" if "?" in url else "?") + params.lstrip("?&")
        return url

    def _headers_for(
        self, method: str, extra: Mapping[str, str] | None, *, has_json: bool
    ) -> dict[str, str]:
        headers: dict[str, str] = {}
        if method == "GET":
            # Microsoft's advice: defeats cached results of collection-valued navigation properties.
            headers["If-None-Match"] = "null"
        if has_json:
            headers["Content-Type"] = "application/json"
        for name, value in (extra or {}).items():
            if name.lower() == "authorization":
                continue
            for existing in [k for k in headers if k.lower() == name.lower()]:
                del headers[existing]
            headers[name] = value
        return headers

    def _refresh(self, rejected: str | None) -> str:
        """A new token after a 401; threads that were refused the same token share one refresh."""
        with self._refresh_lock:
            if rejected is not None and rejected == self._last_rejected and self._last_refreshed:
                return self._last_refreshed  # another thread already replaced this token
            fresh = self._tokens.token(force_refresh=True)
            self._last_rejected, self._last_refreshed = rejected, fresh
            return fresh

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now, from any thread (:class:`~.retry.Hold`)."""
        self._hold.start(seconds)

    def _held(self, seconds: float) -> None:
        log.debug("Waiting %.2f s: Dataverse asked this client to wait (Retry-After)", seconds)
        self.stats.add(waited_seconds=seconds, held_waits=1)
        self.retry.sleep(seconds)

    def _send(
        self, lead: bool, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> requests.Response:
        """One attempt; a 429's ``Retry-After`` holds the client before the answer is told to
        the hold (``lead``: the first request after a hold, the others wait for its answer)."""
        response: requests.Response | None = None
        try:
            response = self._session.request(
                method, url, headers=headers, data=body, timeout=self.timeout, stream=True
            )
            if response.status_code == 429:
                asked = parse_retry_after(response.headers.get("Retry-After"))
                if asked is not None and not self.retry.too_long(asked):
                    self._hold.start(asked)
            return response
        finally:
            self._hold.answered(lead, response is None or response.status_code == 429)

    @property
    def max_retries(self) -> int:
        """Retries of one request at most (the retry policy's)."""
        return self.retry.max_retries

    def _wait(self, seconds: float, what: str, *, throttled: bool, given: bool) -> None:
        self.stats.add(waited_seconds=seconds)
        self.retry.wait(seconds, what, throttled=throttled, given=given)

    def _after_retryable_status(
        self,
        response: requests.Response,
        error_body: bytes,
        method: str,
        path: str,
        entity: str | None,
        retries: int,
        limit: int,
    ) -> int:
        """Wait before the next attempt after a 429/5xx, or raise when the policy says stop."""
        status = response.status_code
        asked = parse_retry_after(response.headers.get("Retry-After"))
        stop = self.retry.gives_up(retries, limit, asked)
        if stop is not None:
            raise self._api_error(response, error_body, method, path, entity, hint=stop)
        wait = self.retry.delay(retries, asked)
        retries += 1
        if status == 429:
            self.stats.add(throttled_waits=1)  # the hold started when the answer came (_send)
        self.stats.add(retries=1)
        self._wait(
            wait,
            f"Dataverse answered {status} on {method} {log_path(path)}: retry {retries} of {limit}",
            throttled=status == 429,
            given=asked is not None,
        )
        return retries

    def _after_network_error(
        self,
        exc: BaseException,
        method: str,
        path: str,
        entity: str | None,
        retries: int,
        resend_ok: bool,
        limit: int,
    ) -> int:
        """Wait before the next attempt after a failed exchange, or raise."""
        self.stats.add(network_errors=1)
        self.stats.count_status(0)
        reason = describe(exc)
        before_send = is_connect_failure(exc)
        if is_certificate_failure(exc):
            raise self._unreachable(method, path, entity, reason) from None
        if not before_send and not resend_ok:
            hint = (
                "The request may or may not have been applied; it was not sent again "
                "because repeating it could apply it twice."
            )
            raise self._network_error(method, path, entity, reason, hint) from None
        if self.retry.exhausted(retries, limit):
            if before_send:
                raise self._unreachable(method, path, entity, reason) from None
            hint = (
                f"Gave up after {limit} retries: the connection to {self.host} keeps failing; "
                "check the network or proxy, or raise the timeout."
            )
            raise self._network_error(method, path, entity, reason, hint) from None
        wait = self.retry.backoff(retries)
        retries += 1
        self.stats.add(retries=1)
        self._wait(
            wait,
            f"{reason} on {method} {log_path(path)}: retry {retries} of {limit}",
            throttled=False,
            given=False,
        )
        return retries

    def _unreachable(self, method: str, path: str, entity: str | None, reason: str) -> ApiError:
        hint = (
            f"Cannot reach {self.host}: check environment_url (and REQUESTS_CA_BUNDLE for a "
            "private CA)."
        )
        return self._network_error(method, path, entity, reason, hint)

    @staticmethod
    def _network_error(
        method: str, path: str, entity: str | None, reason: str, hint: str
    ) -> ApiError:
        """The error of an exchange that got no HTTP answer (status 0)."""
        return api_error(0, method, path, message=reason, entity=entity, hint=hint)

    def _api_error(
        self,
        response: requests.Response,
        error_body: bytes,
        method: str,
        path: str,
        entity: str | None,
        *,
        hint: str | None = None,
    ) -> ApiError:
        status = response.status_code
        code, message = parse_error_body(error_body)
        if not message:
            message = response.reason or http.client.responses.get(status, "")
        match = _API_PATH_RE.search(path)
        table = entity or (match.group(1) if match else None)
        if hint is None and status == 401:
            hint = (
                "The token was refused: check that the app has permission for "
                f"environment_url {self.environment_url} (does an application user exist for "
                "it in this environment?)."
            )
        is_collection = (
            match is not None and match.group(2) is None and path[match.end() :].strip("/") == ""
        )
        return api_error(
            status,
            method,
            path,
            code=code,
            message=message,
            entity=table,
            hint=hint,
            is_collection=is_collection,
            request_id=request_id_of(response.headers),
            annotations=parse_error_annotations(error_body),
        )
