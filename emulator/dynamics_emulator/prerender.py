"""Pre-rendered pages: repeated identical GETs answered from the bytes rendered the first time.

The emulator renders about 11,000 rows a second, so a benchmark that compares a client with a raw
loop over the same pages would otherwise measure the emulator. With the cache on, the first walk of
a query renders and keeps each page; a later identical request (same caller, same URL with its
``$skiptoken``, same ``Prefer`` and ``If-None-Match``) gets the same bytes. The cost model still
charges each answer its full server time, so latency and budgets are unchanged.

Any write through the Web API (every request but a GET) and the emulator's own row hooks empty the
cache, so it never answers with rows that changed. Delta requests (``$deltatoken``) are never
cached. Pages are admitted until ``max_bytes``; past it they are rendered each time (``rejected``
counts them).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

from .wire import Response

CacheKey = tuple[str, str, str, tuple[tuple[str, str], ...], str, str]


@dataclass
class PageCache:
    """The rendered pages, by request. Thread-safe; off unless ``enabled``."""

    enabled: bool = False
    max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[CacheKey, Response] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.rejected = 0

    def key(
        self,
        method: str,
        caller: str,
        base_url: str,
        raw_path: str,
        raw_query: str,
        headers: Mapping[str, str],
    ) -> CacheKey | None:
        """What identifies an answer, or None when it must not be cached."""
        if not self.enabled or method != "GET":
            return None
        query = tuple(parse_qsl(raw_query, keep_blank_values=True))
        if any(k == "$deltatoken" for k, _ in query):
            return None
        return (
            caller,
            base_url,
            raw_path,
            query,
            headers.get("prefer", ""),
            headers.get("if-none-match", ""),
        )

    def get(self, key: CacheKey) -> Response | None:
        """A copy of the kept answer (its headers may be added to), or None."""
        with self._lock:
            res = self._pages.get(key)
            if res is None:
                self.misses += 1
                return None
            self.hits += 1
        return replace(res, headers=list(res.headers))

    def put(self, key: CacheKey, res: Response) -> None:
        """Keep a rendered page of rows (a 200 that read rows); others are not worth keeping."""
        if res.status != 200 or res.work is None:
            return
        with self._lock:
            if key in self._pages:
                return
            if self.bytes + len(res.body) > self.max_bytes:
                self.rejected += 1
                return
            self._pages[key] = replace(res, headers=list(res.headers))
            self.bytes += len(res.body)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self.bytes = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": self.enabled,
                "pages": len(self._pages),
                "bytes": self.bytes,
                "hits": self.hits,
                "misses": self.misses,
                "rejected": self.rejected,
            }
