"""How each table is written: a bulk message or ``$batch``, learned once per table and mode.

``write_method`` says what the target may use: ``batch`` always sends ``$batch``; ``auto`` (the
default) sends the mode's bulk message (``UpsertMultiple``, ``UpdateMultiple``,
``CreateMultiple``) where the table supports it and ``$batch`` elsewhere; ``bulk`` insists on the
bulk message and stops the run, with one sentence, for a table that does not have it.

Whether a table has a message is asked once, before its first write, from ``sdkmessagefilters``
(as Microsoft documents). When that cannot be read (a user without read access to it), the first
bulk request finds out: a table without the message answers ``0x80040800``, and the table falls
back to ``$batch`` for the rest of the run (one INFO line either way).

Rows per request: ``bulk_size_rows`` (default 1,000) on a standard table, where a bulk request is
one transaction and bigger requests pay off; ``elastic_bulk_size_rows`` (default 100) on an elastic
table, where each row is written on its own and Microsoft advises 100 per request, in parallel.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import requests

from dynamics_api.errors import ApiError, ConfigError
from dynamics_api.odata import build_query, literal
from target_dynamics.plan import StreamPlan

__all__ = ["WRITE_METHODS", "Route", "Routes", "is_unsupported"]

log = logging.getLogger(__name__)

WRITE_METHODS = ("auto", "bulk", "batch")
#: The service's code for a message a table does not have (SdkEntityDoesNotSupportMessage).
UNSUPPORTED_CODE = "0x80040800"


@dataclass
class Route:
    """How one table is written in one mode; ``bulk`` may turn False once, mid-run."""

    table: str
    message: str
    bulk: bool
    rows: int
    elastic: bool = False
    batch_rows: int = 500

    def fall_back(self) -> None:
        """Write through ``$batch`` from now on."""
        self.bulk = False
        self.rows = self.batch_rows


def is_unsupported(err: ApiError, message: str) -> bool:
    """Whether ``err`` says the table does not have ``message``."""
    text = err.service_message.lower()
    return err.status in (400, 404, 405) and (
        err.code.lower() == UNSUPPORTED_CODE
        or "does not support entities of type" in text
        or f"microsoft.dynamics.crm.{message.lower()}" in text
    )


class Routes:
    """The routes of a run, learned once per (table, mode) and shared by every stream."""

    def __init__(
        self,
        request: Callable[..., requests.Response],
        *,
        method: str,
        bulk_rows: int,
        elastic_rows: int,
        batch_rows: int,
    ) -> None:
        if method not in WRITE_METHODS:
            raise ValueError(f"write_method must be one of {', '.join(WRITE_METHODS)}")
        self._request = request  # the writer's GET: DataverseClient.request through the flow
        self.method = method
        self.bulk_rows = bulk_rows
        self.elastic_rows = elastic_rows
        self.batch_rows = batch_rows
        self._routes: dict[tuple[str, str], Route] = {}
        self._lock = threading.Lock()

    def route(self, plan: StreamPlan) -> Route:
        """The route of ``plan``'s table and mode, asked of the service the first time.

        Raises:
            ConfigError: ``write_method`` is bulk and the table does not have the message.
        """
        message = plan.bulk_message
        with self._lock:
            found = self._routes.get((plan.table, message))
            if found is not None:
                return found
            route = Route(
                plan.table, message, False, self.batch_rows, plan.elastic, self.batch_rows
            )
            if self.method != "batch":
                supported = self._ask(plan.table, message)
                if supported is False:
                    self._refuse(route, "sdkmessagefilters")
                else:
                    route.bulk = True
                    route.rows = self.elastic_rows if route.elastic else self.bulk_rows
            self._routes[(plan.table, message)] = route
            return route

    def unsupported(self, route: Route) -> None:
        """The service answered that ``route``'s table does not have its message.

        Raises:
            ConfigError: ``write_method`` is bulk.
        """
        with self._lock:
            if route.bulk:
                self._refuse(route, "its answer to the first request")

    def _refuse(self, route: Route, source: str) -> None:
        if self.method == "bulk":
            raise ConfigError(
                f"write_method is bulk, but table '{route.table}' does not support "
                f"{route.message} (from {source}); set write_method to auto or batch."
            )
        route.fall_back()
        log.info(
            "Table '%s' does not support %s (from %s): its records go through $batch.",
            route.table,
            route.message,
            source,
        )

    def _ask(self, table: str, message: str) -> bool | None:
        """Whether ``table`` has ``message``, from ``sdkmessagefilters``; None when it cannot be
        read (the first request will tell)."""
        query = build_query(
            select="sdkmessagefilterid",
            filter="sdkmessageid/name eq @message and primaryobjecttypecode eq @table",
            extra={"@message": literal(message), "@table": literal(table)},
        )
        try:
            response = self._request("GET", "sdkmessagefilters", params=query, entity=table)
        except ApiError as err:
            if err.status in (0, 401) or err.retryable:
                raise
            log.info(
                "Could not read sdkmessagefilters (Dataverse answered %s %s); the first %s "
                "request to '%s' will tell whether the table supports it.",
                err.status,
                err.code,
                message,
                table,
            )
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        value = body.get("value") if isinstance(body, dict) else None
        return bool(value) if isinstance(value, list) else None
