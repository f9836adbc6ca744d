"""The token cache's file lock: one writer at a time, across threads and processes.

* Where ``fcntl`` exists (Linux, macOS): an exclusive ``fcntl.flock`` on ``<path>.lock``. The
  kernel releases it when the holder exits, however it exits.
* Elsewhere (Windows): the lock is the file ``<path>.lockfile`` itself, created with
  ``O_CREAT | O_EXCL`` (atomic on every platform) and removed on release; it holds the holder's
  pid, host and a random nonce. A waiter polls (5 ms doubling to 250 ms). A lock file left by a
  holder that died is stale and is removed when its pid is gone from this host (checked where
  ``os.kill(pid, 0)`` is harmless, that is not on Windows, where it would end the process) or
  when it is older than :data:`STALE_AFTER` (the lock is held for one token request, whose
  connections time out long before). A waiter removes a stale lock only if the file still holds
  what it judged stale; the holder keeps the file open, which on Windows also stops its removal
  while the holder lives.

The two kinds do not exclude each other: processes sharing one cache file must run where the same
kind applies (one machine does). Never silently unlocked: there is no third way.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dynamics_api.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the lock file below
    fcntl = None  # type: ignore[assignment]

__all__ = ["STALE_AFTER", "token_cache_lock"]

#: A lock file older than this (seconds) is stale: one token request never holds it this long.
STALE_AFTER = 600.0
_FIRST_WAIT = 0.005
_MAX_WAIT = 0.25


def _cannot(what: str, path: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"The token cache lock file {str(path)!r} cannot be {what} "
        f"({exc.strerror or type(exc).__name__}): check token_cache_path."
    )


@contextmanager
def token_cache_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the token cache ``path`` (creating its directory).

    Every read-modify-write of a token cache file must run under it.

    Raises:
        ConfigError: the lock file cannot be created.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot("created", path.parent, exc) from None
    if fcntl is not None:
        with _flock(path.with_name(path.name + ".lock")):
            yield
    else:
        with _lock_file(path.with_name(path.name + ".lockfile")):
            yield


@contextmanager
def _flock(lock_path: Path) -> Iterator[None]:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _cannot("created", lock_path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextmanager
def _lock_file(lock_path: Path) -> Iterator[None]:
    """Hold ``lock_path`` by creating it exclusively (see the module's docstring)."""
    mine = f"{os.getpid()} {socket.gethostname()} {uuid.uuid4().hex}"
    wait = _FIRST_WAIT
    while True:
        try:
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not _remove_if_stale(lock_path):
                time.sleep(wait)
                wait = min(wait * 2, _MAX_WAIT)
            continue
        except OSError as exc:
            raise _cannot("created", lock_path, exc) from None
        break
    try:
        # Kept open while held: on Windows an open file cannot be removed, so no waiter can take
        # a live holder's lock for stale.
        os.write(fd, mine.encode("utf-8"))
        yield
    finally:
        os.close(fd)
        # Only our own lock: a waiter may have judged a slow holder stale and replaced it.
        if _read(lock_path) == mine:
            lock_path.unlink(missing_ok=True)


def _read(lock_path: Path) -> str | None:
    try:
        return lock_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _remove_if_stale(lock_path: Path) -> bool:
    """Remove the lock file if its holder is gone; whether it was removed."""
    content = _read(lock_path)
    try:
        age = time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return True  # released meanwhile: try again at once
    except OSError:
        return False
    if content is None or not (age > STALE_AFTER or _holder_gone(content)):
        return False
    if _read(lock_path) != content:
        return False
    try:
        lock_path.unlink()
    except FileNotFoundError:
        return True
    except OSError:  # Windows: the holder still has it open
        return False
    return True


def _holder_gone(content: str) -> bool:
    """Whether the lock's holder is a process of this host that no longer exists."""
    parts = content.split(" ")
    if len(parts) != 3 or not parts[0].isdigit() or parts[1] != socket.gethostname():
        return False
    if os.name == "nt":
        return False  # os.kill(pid, 0) would terminate the process there
    try:
        os.kill(int(parts[0]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's process)
    return False
