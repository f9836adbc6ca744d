"""The token cache's file lock serialises threads and processes, with ``fcntl`` and, as on Windows,
without it (the module the cache uses is patched: ``dynamics_api.auth.lock.fcntl = None``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msal
import pytest

import dynamics_api.auth.lock as lock_module
from dynamics_api.auth import TokenCacheFile, token_cache_lock
from dynamics_api.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["fcntl", "lock-file"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "lock-file":
        monkeypatch.setattr(lock_module, "fcntl", None)
    return str(request.param)


def _bump(counter: Path) -> None:
    """Read, pause, write back: without mutual exclusion, concurrent bumps get lost."""
    value = int(counter.read_text()) if counter.exists() else 0
    time.sleep(0.0005)  # widens the window a missing lock would leave open; asserts nothing
    counter.write_text(str(value + 1))


def test_threads_take_turns(kind: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    counter = tmp_path / "counter"
    inside = 0
    most_inside = 0
    guard = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        nonlocal inside, most_inside
        try:
            for _ in range(25):
                with token_cache_lock(cache):
                    with guard:
                        inside += 1
                        most_inside = max(most_inside, inside)
                    _bump(counter)
                    with guard:
                        inside -= 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert most_inside == 1
    assert counter.read_text() == "150"
    if kind == "lock-file":
        assert not cache.with_name("cache.json.lockfile").exists()  # released
        assert not cache.with_name("cache.json.lock").exists()  # and flock was not used
    else:
        assert cache.with_name("cache.json.lock").exists()


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import dynamics_api.auth.lock as lock_module
    if sys.argv[3] == "lock-file":
        lock_module.fcntl = None
    cache, counter = Path(sys.argv[1]), Path(sys.argv[2])
    for _ in range(40):
        with lock_module.token_cache_lock(cache):
            value = int(counter.read_text()) if counter.exists() else 0
            time.sleep(0.0005)
            counter.write_text(str(value + 1))
    """
)


def test_processes_take_turns(kind: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache.json"
    counter = tmp_path / "counter"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(cache), str(counter), kind],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert counter.read_text() == "160"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _held_by(lock_file: Path, pid: int, host: str | None = None) -> None:
    lock_file.write_text(f"{pid} {host or socket.gethostname()} 0123456789abcdef")


def test_a_lock_left_by_a_dead_process_is_taken_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lock_module, "fcntl", None)
    cache = tmp_path / "cache.json"
    lock_file = cache.with_name("cache.json.lockfile")
    _held_by(lock_file, _dead_pid())
    with token_cache_lock(cache):
        assert lock_file.read_text().startswith(f"{os.getpid()} ")
    assert not lock_file.exists()


def test_an_old_lock_is_taken_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(lock_module, "fcntl", None)
    cache = tmp_path / "cache.json"
    lock_file = cache.with_name("cache.json.lockfile")
    _held_by(lock_file, os.getpid(), host="another-host")  # liveness unknown: age decides
    old = time.time() - lock_module.STALE_AFTER - 5
    os.utime(lock_file, (old, old))
    with token_cache_lock(cache):
        assert "another-host" not in lock_file.read_text()


def test_a_live_holders_lock_is_not_stale(tmp_path: Path) -> None:
    lock_file = tmp_path / "cache.json.lockfile"
    _held_by(lock_file, os.getpid())
    assert lock_module._remove_if_stale(lock_file) is False
    _held_by(lock_file, os.getpid(), host="another-host")  # another machine's: age decides
    assert lock_module._remove_if_stale(lock_file) is False
    lock_file.write_text("")  # being written by its creator
    assert lock_module._remove_if_stale(lock_file) is False
    assert lock_file.exists()
    _held_by(lock_file, _dead_pid())
    assert lock_module._remove_if_stale(lock_file) is True
    assert not lock_file.exists()


def test_a_waiter_gets_the_lock_when_the_holder_releases_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lock_module, "fcntl", None)
    cache = tmp_path / "cache.json"
    order: list[str] = []
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with token_cache_lock(cache):
            order.append("holder in")
            holding.set()
            release.wait(60)
            order.append("holder out")

    def waiter() -> None:
        holding.wait(60)
        with token_cache_lock(cache):
            order.append("waiter in")

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    holding.wait(60)
    release.set()
    for t in threads:
        t.join(60)
    assert order == ["holder in", "holder out", "waiter in"]


def test_the_token_cache_file_without_fcntl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two runs sharing one cache file, each adding a token in its own transaction: neither
    loses the other's."""
    monkeypatch.setattr(lock_module, "fcntl", None)
    path = tmp_path / "tokens.json"
    runs = [TokenCacheFile(path), TokenCacheFile(path)]

    def add(run: TokenCacheFile, n: int) -> None:
        for i in range(10):
            with run.transaction() as cache:
                cache.add(
                    {
                        "client_id": f"client-{n}-{i}",
                        "scope": ["https://org.example/.default"],
                        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
                        "response": {"access_token": f"at-{n}-{i}", "expires_in": 3600},
                        "params": {},
                        "data": {},
                    }
                )

    threads = [threading.Thread(target=add, args=(run, n)) for n, run in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = TokenCacheFile(path).cache
    found = {
        e["client_id"] for e in final.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, query={})
    }
    assert found == {f"client-{n}-{i}" for n in range(2) for i in range(10)}
    assert not path.with_name("tokens.json.lockfile").exists()


def test_a_lock_that_cannot_be_created_is_one_sentence(kind: str, tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(ConfigError) as info, token_cache_lock(not_a_directory / "cache.json"):
        pass
    assert "cannot be created" in str(info.value) and "\n" not in str(info.value)
