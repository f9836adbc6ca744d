"""Fetching ``$metadata``: from the cache when it answers, else streamed through the parser."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from dynamics_api.metadata.cache import MetadataCache, normalize_environment
from dynamics_api.metadata.model import EntityModel, wanted_names
from dynamics_api.metadata.parser import CHUNK, parse_chunks
from dynamics_api.metadata.resolve import MissingBaseTypesError

logger = logging.getLogger(__name__)

__all__ = ["OpenStream", "fetch_metadata", "metadata_url"]


class _SessionLike(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any:  # a requests.Session, for example
        """Starts a GET."""


OpenStream = Callable[[str], Iterable[bytes]]


def metadata_url(environment_url: str, api_version: str) -> str:
    """``{environment}/api/data/v{version}/$metadata?annotations=true``.

    Args:
        environment_url: ``https://<org>.crm<N>.dynamics.com``.
        api_version: the Web API version, ``9.2`` (a leading ``v`` is accepted).
    """
    base = normalize_environment(environment_url)
    return f"{base}/api/data/v{api_version.lstrip('vV')}/$metadata?annotations=true"


def _session_stream(session: _SessionLike, url: str) -> Iterator[bytes]:
    response = session.get(url, stream=True, headers={"Accept": "application/xml"})
    try:
        response.raise_for_status()
        yield from response.iter_content(chunk_size=CHUNK)
    finally:
        response.close()


def fetch_metadata(
    get: OpenStream | _SessionLike,
    environment_url: str,
    wanted: Iterable[str] | None = None,
    cache: MetadataCache | None = None,
    *,
    api_version: str,
) -> EntityModel:
    """The environment's entity model, from the cache or streamed from ``$metadata``.

    Args:
        get: ``open_stream(url) -> Iterable[bytes]`` (the HTTP layer's streaming GET), or a
            session-like object with ``get(url, stream=True, headers=...)`` returning a
            ``requests``-style response.
        environment_url: ``https://<org>.crm<N>.dynamics.com``.
        wanted: entity type logical names to keep (plus their base types); None keeps all.
        cache: where a parsed model is looked up first and saved after a fetch.
        api_version: Web API version of the URL, the one the client uses (``9.2``); required,
            so the metadata always describes the API the rows are read and written through.

    Returns:
        The entity model. A cached model may hold more entity types than ``wanted``; a fetched
        one is saved to the cache as parsed (so a later, wider ``wanted`` fetches again).

    Raises:
        MetadataError: the document is hostile, malformed or not CSDL. HTTP errors raised by
            ``get`` propagate unchanged.
    """
    names = wanted_names(wanted)
    if cache is not None:
        cached = cache.load(environment_url, names)
        if cached is not None:
            return cached
    url = metadata_url(environment_url, api_version)
    opener: OpenStream
    if callable(get):
        opener = get
    else:
        session = get

        def opener(target: str) -> Iterable[bytes]:
            return _session_stream(session, target)

    logger.info("Fetching %s", url)
    try:
        model = parse_chunks(opener(url), names, url)
    except MissingBaseTypesError as missing:
        logger.info("Fetching the $metadata again for base types %s", sorted(missing.wanted))
        model = parse_chunks(opener(url), missing.wanted, url)
    if cache is not None:
        cache.save(environment_url, model)
    return model
