"""The persisted token cache (``token_cache_path``): msal's ``SerializableTokenCache`` in a file.

The file is written with mode 0600, atomically through a temporary file, and a file found readable
by others is restricted to its owner. Every read-modify-write runs under the file's exclusive lock
(:mod:`dynamics_api.auth.lock`: ``fcntl.flock``, or a lock file where there is no ``fcntl``):
:meth:`TokenCacheFile.transaction` takes the lock,
re-reads the file, lets msal talk to Entra ID, and writes back what msal changed, so two runs
sharing the file each start from the newest rotated refresh token and neither loses the other's.
Without a path the cache lives in memory only and a transaction is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msal

from dynamics_api.auth.lock import token_cache_lock
from dynamics_api.errors import ConfigError

__all__ = ["TokenCacheFile", "load_token_cache", "save_token_cache", "token_cache_lock"]

logger = logging.getLogger(__name__)


class TokenCacheFile:
    """msal's token cache, kept in ``path`` between runs (in memory only when ``path`` is None).

    The file's content is read at construction (under the lock).

    Args:
        path: the ``token_cache_path`` setting (``~`` is expanded).

    Raises:
        ConfigError: the file or its lock file cannot be read or created.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self.cache = msal.SerializableTokenCache()
        if self.path is not None:
            with token_cache_lock(self.path):
                load_token_cache(self.cache, self.path)

    @contextmanager
    def transaction(self) -> Iterator[msal.SerializableTokenCache]:
        """Lock the file, re-read it into :attr:`cache`, yield, then write back what changed.

        Run every msal call that may reach Entra ID inside one (msal writes rotated and new
        tokens into the cache). The file is written even when the body raises: msal may have
        changed the cache before the error.

        Raises:
            ConfigError: the file cannot be read or written.
        """
        if self.path is None:
            yield self.cache
            return
        with token_cache_lock(self.path):
            load_token_cache(self.cache, self.path)
            try:
                yield self.cache
            finally:
                save_token_cache(self.cache, self.path)

    def has_refresh_token(self, client_id: str) -> bool:
        """Whether the cache holds a refresh token for ``client_id`` (left by a sign-in)."""
        entries = self.cache.search(
            msal.TokenCache.CredentialType.REFRESH_TOKEN, query={"client_id": client_id}
        )
        return any(entry.get("secret") for entry in entries)

    def __repr__(self) -> str:
        return f"TokenCacheFile({str(self.path) if self.path else None!r})"


def load_token_cache(cache: msal.SerializableTokenCache, path: Path) -> None:
    """Replace ``cache``'s content by the file's (caller holds :func:`token_cache_lock`).

    A missing or empty file leaves ``cache`` as it is; a file readable by others is restricted to
    its owner (0600) with a warning; invalid content is ignored with a warning.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(
            f"The token cache {str(path)!r} cannot be read "
            f"({exc.strerror or type(exc).__name__}): check token_cache_path."
        ) from None
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        if os.fstat(handle.fileno()).st_mode & 0o077:
            logger.warning(
                "The token cache %s was readable by others; restricting it to its owner",
                path,
            )
            os.fchmod(handle.fileno(), 0o600)
        text = handle.read()
    if not text.strip():
        return
    try:
        state = json.loads(text)
    except ValueError:
        logger.warning("The token cache %s is not valid JSON; ignoring its content", path)
        return
    if not isinstance(state, dict):
        logger.warning("The token cache %s is not an msal token cache; ignoring it", path)
        return
    cache.deserialize(text)


def save_token_cache(cache: msal.SerializableTokenCache, path: Path) -> None:
    """Write ``cache`` if msal changed it (caller holds :func:`token_cache_lock`): mode 0600,
    atomically through a temporary file.

    Raises:
        ConfigError: the file cannot be written.
    """
    if not cache.has_state_changed:
        return
    data = cache.serialize()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"The token cache {str(path)!r} cannot be written "
            f"({exc.strerror or type(exc).__name__}): check token_cache_path."
        ) from None
    logger.debug("Saved the token cache to %s", path)
