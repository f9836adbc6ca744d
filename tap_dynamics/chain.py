"""One ``@odata.nextLink`` chain read a request at a time, the next page fetched while the caller
works on the pages before it (a table read without windows, and change-tracking reads)."""

from __future__ import annotations

import queue
import threading
import time
import typing as t
from collections.abc import Callable, Iterator

from tap_dynamics.parallel import HANDOFF, PREFETCH

__all__ = ["chain"]


def chain(
    fetch: Callable[[str, str | None], tuple[bytes, str | None, str | None]],
    url: str,
    params: str | None,
    *,
    name: str,
    prefetch: int = PREFETCH,
) -> Iterator[tuple[bytes, str | None]]:
    """One ``@odata.nextLink`` chain, one request at a time: ``(body, delta link)`` per page.

    The next request leaves as soon as the page's links are read (a thread fetches while the
    caller works on the pages before it, at most ``prefetch`` pages ahead).
    """
    results: queue.Queue[tuple[str, t.Any]] = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def producer() -> None:
        nxt: str | None = url
        p = params
        try:
            while nxt and not stop.is_set():
                body, nxt, delta = fetch(nxt, p)
                results.put(("page", (body, delta)))
                del body  # not kept during the next request
                p = None  # the next link is used as given
            results.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            results.put(("error", exc))

    worker = threading.Thread(target=producer, name=f"fetch-{name}", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = results.get()
            if kind == "page":
                # Let the fetching thread send the next request before this thread takes the GIL
                # for the page (decoding holds it for tens of ms at a time).
                time.sleep(HANDOFF)
                yield item
                del item  # not kept while waiting for the next page
            elif kind == "done":
                return
            else:
                raise item
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue, then let it finish.
        while worker.is_alive():
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
