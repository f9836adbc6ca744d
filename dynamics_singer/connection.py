"""The client and the entity model of a run, made from the plugin's settings the same way for the
tap and the target (one factory, so the two cannot drift)."""

from __future__ import annotations

import typing as t
from pathlib import Path

from dynamics_api.auth import TokenProvider
from dynamics_api.cloud import normalize_environment_url
from dynamics_api.errors import ConfigError
from dynamics_api.http import DEFAULT_USER_AGENT, DataverseClient
from dynamics_api.metadata import EntityModel, MetadataCache, fetch_metadata
from dynamics_singer.settings import DEFAULT_CACHE_DIR

__all__ = ["api_version", "client_from_config", "load_model"]


def api_version(config: t.Mapping[str, t.Any]) -> str:
    """The Web API version the settings ask for (``9.2`` by default)."""
    return str(config.get("api_version") or "9.2").lstrip("vV")


def client_from_config(
    config: t.Mapping[str, t.Any],
    *,
    plugin: str,
    user_agent: str = DEFAULT_USER_AGENT,
    max_connections: int = 16,
) -> DataverseClient:
    """The Web API client for these settings.

    Args:
        config: the plugin's settings.
        plugin: ``tap-dynamics`` or ``target-dynamics``, for the message about missing settings.
        user_agent: the ``User-Agent`` header.
        max_connections: the connection pool size (most requests in flight).

    Raises:
        ConfigError: ``environment_url`` or ``client_id`` (unless ``managed_identity``) is
            missing, or a setting is invalid.
    """
    needed = (
        ("environment_url",) if config.get("managed_identity") else ("environment_url", "client_id")
    )
    missing = [k for k in needed if not config.get(k)]
    if missing:
        names = " and ".join(missing)
        prefix = plugin.upper().replace("-", "_")
        envs = ", ".join(f"{prefix}_{k.upper()}" for k in missing)
        one = len(missing) == 1
        raise ConfigError(
            f"{names} {'is' if one else 'are'} not set: add {'it' if one else 'them'} to the "
            f"config file (with Meltano: `meltano config set {plugin} ...` or {envs})."
        )
    url = normalize_environment_url(str(config["environment_url"]))
    tokens = TokenProvider.from_config({**config, "environment_url": url})
    timeout = float(config.get("request_timeout") or 120)
    return DataverseClient(
        url,
        tokens,
        api_version=api_version(config),
        timeout=(min(10.0, timeout), timeout),
        max_retries=int(config.get("max_retries", 6)),
        max_connections=max_connections,
        user_agent=user_agent,
    )


def load_model(
    client: DataverseClient, config: t.Mapping[str, t.Any], wanted: list[str] | None = None
) -> EntityModel:
    """The environment's tables from ``$metadata`` (only ``wanted`` ones, or all), through the
    metadata cache unless ``metadata_cache_ttl`` is 0.

    Raises:
        ApiError: the document could not be fetched.
        MetadataError: it is not a CSDL document, or a hostile one.
    """
    ttl = float(config.get("metadata_cache_ttl", 86400))
    cache = None
    if ttl > 0:
        cache = MetadataCache(Path(config.get("metadata_cache_dir") or DEFAULT_CACHE_DIR), ttl)

    def open_stream(url: str) -> t.Iterator[bytes]:
        return client.iter_bytes(url, headers={"Accept": "application/xml"})

    return fetch_metadata(
        open_stream, client.environment_url, wanted, cache, api_version=api_version(config)
    )
