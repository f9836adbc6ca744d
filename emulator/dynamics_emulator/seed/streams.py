"""Ids, hashing, per-row random streams and time formatting: what makes a row a pure function of
(seed, table, index, now)."""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import itertools
import random
from collections.abc import Callable

DEFAULT_NOW = _dt.datetime(2026, 11, 1, tzinfo=_dt.UTC)

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_DAY = 86400

_SALTS: dict[str, tuple[int, int]] = {}
_M96 = (1 << 96) - 1
_K96 = 0x9E3779B97F4A7C15F39CC061  # odd
_VARIANT = {ch: "89ab"[int(ch, 16) & 3] for ch in "0123456789abcdef"}


def _salt(name: str) -> tuple[int, int]:
    s = _SALTS.get(name)
    if s is None:
        d = hashlib.blake2b(name.encode("utf-8"), digest_size=16, person=b"dyn-emu-seed").digest()
        s = (int.from_bytes(d[:4], "big"), int.from_bytes(d[4:], "big"))
        _SALTS[name] = s
    return s


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a bijection on 64-bit integers that scrambles every bit."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


_TAILS: dict[str, tuple[str, ...]] = {}
_HEX4 = tuple("%04x" % k for k in range(65536))  # noqa: UP031 (formatting ints is slow)


def _tails(logical_name: str) -> tuple[str, ...]:
    """The table's constant GUID tails, one per 'generation' (like SQL sequential GUIDs)."""
    t = _TAILS.get(logical_name)
    if t is None:
        _s32, s96 = _salt(logical_name)
        node = f"{0x8000 | ((s96 >> 48) & 0x3FFF):04x}-{s96 & 0xFFFFFFFFFFFF:012x}"
        t = tuple(f"-{g}11-{node}" for g in ("ec", "ed", "ee", "ef"))
        _TAILS[logical_name] = t
    return t


def row_id(logical_name: str, index: int) -> str:
    """The GUID of row ``index`` (0-based) of a table, lower-case.

    Shaped like Dataverse's sequential GUIDs (``5f3a9c21-7d4e-ee11-9b1c-000d3a1f2b4c``): the
    first group is a bijection of the index (a Fibonacci hash xor the table's salt), so ids are
    unique within a table for any index below 2**32; the last two groups are the table's own
    constant "node", so different tables never share an id.
    """
    tails = _TAILS.get(logical_name) or _tails(logical_name)
    x = ((index * 0x9E3779B1) ^ _SALTS[logical_name][0]) & _M32
    h = _HEX4
    return f"{h[x >> 16]}{h[x & 0xFFFF]}-{h[(x ^ (x >> 11) * 40503) & 0xFFFF]}{tails[x >> 30]}"


_POOL_MAX = 5000


@functools.lru_cache(maxsize=64)
def _id_pool(logical_name: str, n: int) -> tuple[str, ...]:
    return tuple(row_id(logical_name, j) for j in range(n))


def _id_getter(logical_name: str, n: int) -> Callable[[int], str]:
    """index -> id of a table of n rows: a precomputed tuple for small tables."""
    if n <= _POOL_MAX:
        return _id_pool(logical_name, n).__getitem__
    return functools.partial(row_id, logical_name)


def _random_guid(rand: Callable[[], float]) -> str:
    h = "%016x%016x" % (int(rand() * 2**64), int(rand() * 2**64))  # noqa: UP031
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# Per-row random streams. Seeding a Mersenne Twister per row costs more than a whole row's
# values, so every row instead reads a strided slice of one pool of floats drawn once per seed:
# row i reads pool[off + k * stride] for k = 0, 1, ... with (off, stride) the top 20 bits of a
# Fibonacci hash of (table, seed, i): about a million distinct streams per table. The pool is
# kept small (~1 MB) so that it stays in the CPU cache.
_POOL_BITS = 14
_POOL_SIZE = 1 << _POOL_BITS
_STRIDES = 64
_FAST_DRAWS = 512  # draws served by one slice; longer rows fall back to a modular stream


@functools.lru_cache(maxsize=2)
def _float_pool(seed: int) -> list[float]:
    rnd = random.Random(_mix64((seed & _M64) ^ 0xF1047F1047)).random
    return [rnd() for _ in range(_POOL_SIZE + _FAST_DRAWS * _STRIDES)]


def _slow_stream(pool: list[float], off: int, stride: int) -> Callable[[], float]:
    n = len(pool)
    return (pool[j % n] for j in itertools.count(off, stride)).__next__


_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_TOD: list[str] = []
_DAY_T: dict[int, str] = {}
_DAY_D: dict[int, str] = {}


def _tod() -> list[str]:
    if not _TOD:
        _TOD.extend(
            f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)
        )
    return _TOD


def _date(day: int) -> str:
    """Epoch day -> ``YYYY-MM-DD`` (cached)."""
    s = _DAY_D.get(day)
    if s is None:
        if len(_DAY_D) > 200_000:
            _DAY_D.clear()
        s = _dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
        _DAY_D[day] = s
    return s


def _ts(t: int) -> str:
    """Epoch seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (cached per day and per second of day)."""
    day, sod = divmod(t, _DAY)
    p = _DAY_T.get(day)
    if p is None:
        if len(_DAY_T) > 200_000:
            _DAY_T.clear()
        p = _date(day) + "T"
        _DAY_T[day] = p
    return p + _TOD[sod]


def _epoch(now: _dt.datetime | None) -> int:
    if now is None:
        now = DEFAULT_NOW
    if now.tzinfo is None:
        now = now.replace(tzinfo=_dt.UTC)
    return int(now.timestamp())
