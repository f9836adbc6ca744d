"""Deterministic, realistic seed data for the emulator's tables.

Rows are produced on demand, one table at a time, in the storage format of ``STORAGE.md`` and in
the column order of ``Entity.storage_columns()``. Nothing is held in memory per row: a row is a
pure function of (seed, table, index, counts, now), so any slice of a table can be generated on
its own and equals the same slice of the whole table.

* ``row_id(table, j)`` is the GUID of row ``j`` of a table. Lookups point at ``row_id(target, j)``
  with ``j < counts[target]``, so references always hit rows that exist once every table is
  seeded with the same counts.
* ``default_counts(scale)`` is a realistic organisation size.
* ``generate_rows(model, entity, counts)`` yields the rows. It handles any ``Entity`` (the standard
  model's or one read from a real CSDL): column names drive realism heuristics (names, e-mails,
  phones, addresses, money, state/status pairs), everything else gets a value appropriate to its
  type and length.

Word lists live in the package's data files, read once at import: ``data/people.json`` (given and
family names by culture), ``data/places.json`` (countries, cities, streets, phone plans,
currencies) and ``data/vocabulary.json`` (companies, products, titles, subjects, sentences).

Time: ``createdon`` grows with the row index over the two years before ``now``; about 30 % of the
rows have their ``modifiedon`` in one of five "bulk import" seconds per table (half of them in the
most recent one), so many rows share a ``modifiedon`` second, as after a real data migration.
"""

from __future__ import annotations

import base64
import bisect
import datetime as _dt
import functools
import hashlib
import itertools
import json
import random
import struct
import unicodedata
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar

from .model import Attribute, Entity, Model

__all__ = ["DEFAULT_NOW", "default_counts", "generate_rows", "generic_rows", "row_id"]

DEFAULT_NOW = _dt.datetime(2026, 11, 1, tzinfo=_dt.UTC)

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_DAY = 86400
_T = TypeVar("_T")

# =============================================================================================
# Word lists (written for this project), in the package's data files.
# =============================================================================================


def _load(name: str) -> Any:
    """``dynamics_emulator/data/<name>.json``, read once at import."""
    text = resources.files("dynamics_emulator").joinpath("data", f"{name}.json").read_text("utf-8")
    return json.loads(text)


_PEOPLE = _load("people")  # cultures: weight, countries (iso -> weight), given and family names
_PLACES = _load("places")  # countries with their cities, currencies
_VOCABULARY = _load("vocabulary")  # companies, products, titles, subjects, sentences, ...

# Currencies, seed-independent so every table agrees with the transactioncurrency rows.
# (iso code, name, symbol, precision, units per base unit); USD is the base currency.
_CURRENCIES: list[tuple[str, str, str, int, float]] = [
    (c["code"], c["name"], c["symbol"], c["precision"], c["rate"]) for c in _PLACES["currencies"]
]
_CURRENCY_WEIGHTS = [55.0, 20.0, 15.0, 10.0]  # USD, EUR, GBP, JPY; others 2 each
_CURRENCY_INDEX = {c[0]: j for j, c in enumerate(_CURRENCIES)}
_COUNTRY_CURRENCY = {
    iso: _CURRENCY_INDEX[code] for iso, code in _PLACES["country_currency"].items()
}

_ORG_DOMAIN = "contoso.onmicrosoft.com"
_UTC_CODES = (4, 20, 35, 85, 110, 105, 235, 190, 150, 65)
_POSTAL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def _ascii_slug(text: str, sep: str = "") -> str:
    """Lower-case ASCII for e-mail addresses and domains: ``Zoë Müller`` -> ``zoemuller``."""
    text = (
        text.replace("ß", "ss")
        .replace("ø", "o")
        .replace("Ø", "O")
        .replace("æ", "ae")
        .replace("Æ", "Ae")
        .replace("ł", "l")
        .replace("Ł", "L")
        .replace("ı", "i")
        .replace("đ", "d")
    )
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    out: list[str] = []
    for ch in norm.lower():
        if ch.isalnum():
            out.append(ch)
        elif ch in " -" and out and out[-1] != sep and sep:
            out.append(sep)
    slug = "".join(out).strip(sep) if sep else "".join(out)
    return slug or "x"


# =============================================================================================
# Prepared pools
# =============================================================================================

_Name = tuple[str, str]  # (display, ascii slug)


def _names(names: list[str]) -> tuple[_Name, ...]:
    return tuple((display, _ascii_slug(display)) for display in names)


class _City:
    """A city, with pools of street lines, postcodes, coordinates and phone numbers that are
    filled once (``_prepare``) so that rows only pick from them."""

    __slots__ = (
        "area",
        "base",
        "coords",
        "kind",
        "lat",
        "lines",
        "lon",
        "name",
        "phone_pre",
        "phone_subs",
        "postals",
        "region",
    )

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name: str = spec["name"]
        self.region: str = spec["region"]
        self.kind: str = spec["postal"][0]
        self.base: int | str = spec["postal"][1]  # first postcode, or its fixed part
        self.lat: float = spec["at"][0]
        self.lon: float = spec["at"][1]
        self.area: str = spec["area"]
        self.lines: tuple[str, ...] = ()
        self.postals: tuple[str, ...] = ()
        self.coords: tuple[tuple[float, float], ...] = ()
        self.phone_pre = ""
        self.phone_subs: tuple[str, ...] = ()


class _Country:
    __slots__ = (
        "cities",
        "currency",
        "iso",
        "legal",
        "name",
        "phone",
        "street_fmt",
        "streets",
        "tld",
    )

    def __init__(self, iso: str, spec: dict[str, Any]) -> None:
        self.iso = iso
        self.name: str = spec["name"]
        self.tld: str = spec["tld"]
        self.legal = tuple(spec["legal_forms"])
        self.street_fmt: str = spec["street_format"]
        self.streets = tuple(spec["streets"])
        plan = spec["phone"]
        # ("nanp",) | ("uk",) | (country code, digit groups of the subscriber number)
        self.phone: tuple[object, ...] = (
            (plan["plan"],) if "plan" in plan else (plan["country_code"], tuple(plan["groups"]))
        )
        self.cities = tuple(_City(c) for c in spec["cities"])
        self.currency = _COUNTRY_CURRENCY.get(iso, 0)


class _Weighted:
    """Pick an item with probability proportional to its weight from one uniform float."""

    __slots__ = ("cum", "items", "last")

    def __init__(self, items: Sequence[_T], weights: Sequence[float]) -> None:
        total = float(sum(weights)) or 1.0
        acc = 0.0
        cum: list[float] = []
        for w in weights:
            acc += w
            cum.append(acc / total)
        self.cum = cum
        self.items: Sequence[object] = items
        self.last = len(items) - 1

    def index(self, u: float) -> int:
        k = bisect.bisect_right(self.cum, u)
        return k if k < self.last else self.last


_COUNTRIES: dict[str, dict[str, Any]] = _PLACES["countries"]
_COUNTRY: dict[str, _Country] = {iso: _Country(iso, spec) for iso, spec in _COUNTRIES.items()}
_COUNTRY_LIST = tuple(_COUNTRY.values())
_COUNTRY_PICK = _Weighted(_COUNTRY_LIST, [spec["weight"] for spec in _COUNTRIES.values()])


class _Culture:
    __slots__ = ("countries", "female", "last", "male", "pick_country")

    def __init__(self, spec: dict[str, Any]) -> None:
        countries: dict[str, float] = spec["countries"]
        self.countries = tuple(_COUNTRY[iso] for iso in countries)
        self.pick_country = _Weighted(self.countries, list(countries.values()))
        self.male = _names(spec["male"])
        self.female = _names(spec["female"])
        self.last = _names(spec["last"])


_CULTURES: list[dict[str, Any]] = _PEOPLE["cultures"]
_CULTURE_LIST = tuple(_Culture(spec) for spec in _CULTURES)
_CULTURE_PICK = _Weighted(_CULTURE_LIST, [spec["weight"] for spec in _CULTURES])
_ALL_LAST = tuple(n for cu in _CULTURE_LIST for n in cu.last)
_ALL_FIRST = tuple(n for cu in _CULTURE_LIST for n in cu.male + cu.female)


def _words(name: str) -> tuple[str, ...]:
    return tuple(_VOCABULARY[name])


_STEMS = tuple((s, _ascii_slug(s)) for s in _words("company_stems"))
_SECTORS = tuple((s, _ascii_slug(s)) for s in _words("company_sectors"))
_PRODUCT_LIST = _words("products")
_ISSUE_LIST = _words("case_titles")
_OPPORTUNITY_LIST = _words("opportunity_names")
_PROJECT_LIST = _words("project_names")
_JOB_LIST = _words("job_titles")
_USER_TITLE_LIST = _words("user_titles")
_TEAM_LIST = ("Contoso Service", *_words("teams"))
_SENTENCE_LIST = _words("sentences")
_SUBJECTS = {kind: tuple(subjects) for kind, subjects in _VOCABULARY["subjects"].items()}
_CATEGORY_LIST = _words("categories")
_SUBCATEGORY_LIST = _words("subcategories")
_WORDS = _words("generic_words")
_SURNAME_FIRM_LIST = _words("surname_firms")
_FREE_DOMAIN_LIST = _words("free_mail_domains")
_MAILBOXES = _words("mailboxes")
_LETTER_DIGIT = tuple(f"{a}{d}" for a in "ABCDEFGHJKLMNPQRSTUVWXYZ" for d in range(10))


def _png(rgb: tuple[int, int, int], size: int = 8) -> str:
    """A tiny solid-colour PNG, base64: what an ``entityimage`` holds."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode("ascii")


_IMAGES = tuple(
    _png(c) for c in ((0, 120, 212), (16, 124, 16), (216, 59, 1), (135, 100, 184), (0, 0, 0))
)


# =============================================================================================
# Ids, hashing, time formatting
# =============================================================================================

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


def _currency(j: int) -> tuple[str, str, str, int, float]:
    """Currency row j: the real ones first, then synthetic ``X..`` codes (unique)."""
    if j < len(_CURRENCIES):
        return _CURRENCIES[j]
    k = j - len(_CURRENCIES)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    if k < 26 * 26:
        code = "X" + letters[k // 26] + letters[k % 26]
    else:
        k -= 26 * 26
        code = "Y" + "".join(letters[(k // 26**p) % 26] for p in (3, 2, 1, 0))
    return (code, f"Test Currency {code}", "¤", 2, round(0.5 + (k % 97) * 0.37, 4))


# =============================================================================================
# Counts
# =============================================================================================

_DEFAULT_COUNTS = {
    "account": 500,
    "contact": 1200,
    "incident": 800,
    "email": 1500,
    "phonecall": 800,
    "task": 1000,
    "opportunity": 300,
    "lead": 400,
    "new_project": 60,
}


def default_counts(scale: int = 1) -> dict[str, int]:
    """Row counts of a realistic organisation; business tables grow linearly with ``scale``,
    users and teams with its square root, currencies not at all."""
    scale = max(1, int(scale))
    counts = {name: n * scale for name, n in _DEFAULT_COUNTS.items()}
    counts["systemuser"] = round(25 * scale**0.5)
    counts["team"] = round(6 * scale**0.5)
    counts["transactioncurrency"] = 4
    return counts


# =============================================================================================
# Row generation
# =============================================================================================


class _Ctx:
    """Per-row state shared by the column generators of one row."""

    __slots__ = (
        "bulk",
        "city",
        "closed",
        "closed_at",
        "company",
        "country",
        "created",
        "domain",
        "duration",
        "first",
        "flag",
        "fslug",
        "gender",
        "i",
        "id",
        "last",
        "lslug",
        "modified",
        "rand",
        "rate",
        "sched",
        "start_day",
        "state",
    )

    def __init__(self) -> None:
        self.rand: Callable[[], float] = random.Random(0).random
        self.i = 0
        self.id = ""
        self.created = 0
        self.modified = 0
        self.bulk = 0
        self.flag = 0.0
        self.sched = 0
        self.duration = 30
        self.start_day = 0
        self.state = 0
        self.closed = False
        self.closed_at = 0
        self.country: _Country = _COUNTRY_LIST[0]
        self.city: _City = self.country.cities[0]
        self.first = ""
        self.last = ""
        self.fslug = ""
        self.lslug = ""
        self.gender = 1
        self.company = ""
        self.domain = ""
        self.rate: float | None = None


Step = Callable[[list[object], _Ctx], None]
ValueFn = Callable[[_Ctx], object]

# Relative weights of the targets of polymorphic lookups, by column name.
_TARGET_WEIGHTS: dict[str, dict[str, float]] = {
    "ownerid": {"systemuser": 4, "team": 1},
    "customerid": {"account": 6, "contact": 4},
    "parentcustomerid": {"account": 9, "contact": 1},
    "regardingobjectid": {"incident": 35, "account": 25, "contact": 20, "opportunity": 10},
    "emailsender": {"contact": 5, "account": 1, "systemuser": 4},
}
# Probability that a lookup is empty, by column name (default 0.3).
_LOOKUP_NULLS: dict[str, float] = {
    "createdby": 0.0,
    "modifiedby": 0.0,
    "customerid": 0.0,
    "administratorid": 0.0,
    "new_accountid": 0.0,
    "parentcustomerid": 0.15,
    "primarycontactid": 0.15,
    "parentaccountid": 0.7,
    "parentcontactid": 0.5,
    "parentcaseid": 0.9,
    "parentsystemuserid": 0.1,
    "originatingleadid": 0.7,
    "preferredsystemuserid": 0.6,
    "regardingobjectid": 0.08,
    "emailsender": 0.1,
}
# Consistent (statecode, allowed statuscodes, weight) triples for well-known tables.
_STATE_RULES: dict[str, list[tuple[int, tuple[int, ...], float]]] = {
    "incident": [(0, (1, 2, 3, 4), 0.5), (1, (5, 1000), 0.38), (2, (6, 2000), 0.12)],
    "activitypointer": [(0, (1, 2, 3, 4, 7), 0.3), (1, (5,), 0.6), (2, (6,), 0.1)],
    "opportunity": [(0, (1, 2), 0.5), (1, (3,), 0.3), (2, (4, 5), 0.2)],
    "lead": [(0, (1, 2), 0.45), (1, (3,), 0.35), (2, (4, 5, 6, 7), 0.2)],
    "transactioncurrency": [(0, (1,), 1.0)],
}
_BULK_DAYS = (2, 9, 33, 120, 300)  # days before `now` of the five bulk-import seconds
_BULK_SHARE = 0.30  # share of rows whose modifiedon is a bulk-import second
_TWO_YEARS = 730 * _DAY

_ADDRESS_FIELDS = frozenset(
    {
        "line1",
        "line2",
        "line3",
        "city",
        "stateorprovince",
        "postalcode",
        "country",
        "county",
        "composite",
        "latitude",
        "longitude",
        "name",
        "postofficebox",
    }
)


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    while True:
        n, k = divmod(n, 36)
        out = digits[k] + out
        if not n:
            return out


def _pick(seq: Sequence[_T], rand: Callable[[], float]) -> _T:
    return seq[int(rand() * len(seq))]


def _postal(city: _City, rand: Callable[[], float]) -> str:
    kind, base = city.kind, city.base
    letters = _POSTAL_LETTERS
    if kind == "us":
        return f"{int(base) + int(rand() * 20):05d}"
    if kind == "d5":
        return f"{int(base) + int(rand() * 40):05d}"
    if kind == "d4":
        return f"{int(base) + int(rand() * 30):04d}"
    if kind == "uk":
        return f"{base} {int(rand() * 9) + 1}{_pick(letters, rand)}{_pick(letters, rand)}"
    if kind == "ca":
        return f"{base} {int(rand() * 10)}{_pick(letters, rand)}{int(rand() * 10)}"
    if kind == "ie":
        return f"{base} {_pick(letters, rand)}{int(rand() * 900) + 100}"
    if kind == "nl":
        return f"{int(base) + int(rand() * 60)} {_pick(letters, rand)}{_pick(letters, rand)}"
    n = int(base)
    if kind == "se":
        n += int(rand() * 50)
        return f"{n // 100:03d} {n % 100:02d}"
    if kind == "pl":
        n += int(rand() * 50)
        return f"{n // 1000:02d}-{n % 1000:03d}"
    if kind == "jp":
        return f"{n:03d}-{int(rand() * 10000):04d}"
    if kind == "br":
        return f"{n:05d}-{int(rand() * 1000):03d}"
    return f"{n + int(rand() * 50):06d}"  # "in"


def _phone_pool(country: _Country, city: _City, rand: Callable[[], float]) -> None:
    """Fill the city's phone prefix and subscriber numbers (fiction ranges where they exist)."""
    spec = country.phone
    kind = spec[0]
    if kind == "nanp":
        city.phone_pre = f"+1 {city.area}-"
        city.phone_subs = tuple(f"555-01{k:02d}" for k in range(100))
        return
    if kind == "uk":
        city.phone_pre = f"+44 {city.area} "
        local = "7946 0" if city.area == "20" else "496 0"
        city.phone_subs = tuple(f"{local}{k:03d}" for k in range(1000))
        return
    city.phone_pre = f"+{kind} {city.area} " if city.area else f"+{kind} "
    groups: tuple[int, ...] = spec[1]  # type: ignore[assignment]
    subs = []
    for _ in range(500):
        subs.append(" ".join(str(10 ** (g - 1) + int(rand() * 9 * 10 ** (g - 1))) for g in groups))
    city.phone_subs = tuple(subs)


def _phone(c: _Ctx) -> str:
    city = c.city
    subs = city.phone_subs
    return city.phone_pre + subs[int(c.rand() * len(subs))]


_PREPARED: list[bool] = []
_BOUNDS: dict[str, int] = {}


def _prepare() -> None:
    """Fill the per-city pools and the time-of-day table (once per process; deterministic)."""
    if _PREPARED:
        return
    _tod()
    rand = random.Random(20261101).random
    for country in _COUNTRY_LIST:
        for city in country.cities:
            city.lines = tuple(_street(country, rand) for _ in range(96))
            city.postals = tuple(_postal(city, rand) for _ in range(48))
            city.coords = tuple(
                (
                    round(city.lat + (rand() - 0.5) * 0.08, 6),
                    round(city.lon + (rand() - 0.5) * 0.08, 6),
                )
                for _ in range(64)
            )
            _phone_pool(country, city, rand)
    for _ in range(1024):
        k = 1 + int(rand() * 3)
        _TEXTS.append(" ".join(_pick(_SENTENCE_LIST, rand) for _ in range(k)))
    cities = [city for country in _COUNTRY_LIST for city in country.cities]
    first = max(len(n) for n, _ in _ALL_FIRST)
    last = max(len(n) for n, _ in _ALL_LAST)
    fslug = max(len(s) for _, s in _ALL_FIRST)
    lslug = max(len(s) for _, s in _ALL_LAST)
    stem = max(len(s) for s, _ in _STEMS)
    sector = max(len(s) for s, _ in _SECTORS)
    firm = max(len(s) for s in _SURNAME_FIRM_LIST)
    legal = max(len(x) for country in _COUNTRY_LIST for x in country.legal)
    tld = max(len(country.tld) for country in _COUNTRY_LIST)
    slug = max(len(s) for _, s in _STEMS) + max(len(s) for _, s in _SECTORS)
    domain = max(slug + lslug, max(len(d) for d in _FREE_DOMAIN_LIST)) + tld + 12
    line = max(len(x) for city in cities for x in city.lines)
    region = max(len(city.region) for city in cities)
    postal = max(len(x) for city in cities for x in city.postals)
    cname = max(len(city.name) for city in cities)
    country_len = max(len(co.name) for co in _COUNTRY_LIST)
    _BOUNDS.update(
        first=first,
        last=last,
        company=max(stem + sector, last + firm) + legal + 2,
        line1=line,
        line2=24,
        city=cname,
        region=region,
        postalcode=postal,
        country=country_len,
        composite=line + 24 + cname + region + postal + country_len + 12,
        phone=max(len(city.phone_pre) + len(x) for city in cities for x in city.phone_subs),
        email=fslug + lslug + 24 + domain,
        job=max(len(x) for x in _JOB_LIST + _USER_TITLE_LIST),
        text=max(len(x) for x in _TEXTS),
    )
    _PREPARED.append(True)


def _street(country: _Country, rand: Callable[[], float]) -> str:
    s = _pick(country.streets, rand)
    n = int(rand() * rand() * 400) + 1
    return country.street_fmt.format(s=s, n=n, m=int(rand() * 9) + 1, k=int(rand() * 30) + 1)


def _short_company(rand: Callable[[], float]) -> str:
    return f"{_pick(_STEMS, rand)[0]} {_pick(_SECTORS, rand)[0]}"


def _fill(template: str, c: _Ctx) -> str:
    rand = c.rand
    return template.format(
        p=_pick(_PRODUCT_LIST, rand),
        c=_short_company(rand),
        h=f"{int(rand() * 65536):04X}",
        inv=f"INV-{int(rand() * 90000) + 10000}",
        num=int(rand() * 900000) + 100000,
        k=int(rand() * 48) + 2,
        ser=f"SN{int(rand() * 10**8):08d}",
        cas=f"CAS-{int(rand() * 100000):05d}",
        ph=int(rand() * 3) + 1,
        t=_pick(_ISSUE_LIST, rand).replace("{", "(").replace("}", ")"),
    )


_TEXTS: list[str] = []


def _text(c: _Ctx) -> str:
    """A note of one to three sentences (from a pool built by ``_prepare``)."""
    return _TEXTS[int(c.rand() * len(_TEXTS))]


def _person_email(c: _Ctx) -> str:
    """A unique-per-row address: the row index ends the local part."""
    rand = c.rand
    if rand() < 0.3:
        dom = _pick(_FREE_DOMAIN_LIST, rand)
    else:
        dom = f"{_pick(_STEMS, rand)[1]}.{c.country.tld}"
    return f"{c.fslug}.{c.lslug}{c.i}@{dom}"


def _any_email(rand: Callable[[], float]) -> str:
    f = _pick(_ALL_FIRST, rand)[1]
    la = _pick(_ALL_LAST, rand)[1]
    return f"{f}.{la}@{_pick(_STEMS, rand)[1]}.com"


def state_rules(entity: Entity) -> list[tuple[int, tuple[int, ...], float]]:
    """(statecode, allowed statuscodes, weight) for the table, restricted to its options."""
    state = next((a for a in entity.attributes.values() if a.type == "state"), None)
    status = next((a for a in entity.attributes.values() if a.type == "status"), None)
    states = sorted(state.options) if state and state.options else [0, 1]
    statuses = sorted(status.options) if status and status.options else None
    key = "activitypointer" if entity.base_type == "activitypointer" else entity.logical_name
    rules = []
    for s, allowed, w in _STATE_RULES.get(key, []):
        ok = tuple(v for v in allowed if statuses is None or v in statuses)
        if s in states and ok:
            rules.append((s, ok, w))
    if rules:
        return rules
    # Generic: split the sorted status values over the sorted states, first state most likely.
    if statuses is None:
        return [(s, (s + 1,), 0.85 if k == 0 else 0.15) for k, s in enumerate(states[:2])]
    out = []
    per = max(1, len(statuses) // len(states))
    for k, s in enumerate(states):
        chunk = statuses[k * per : (k + 1) * per] if k < len(states) - 1 else statuses[k * per :]
        if chunk:
            w = 0.85 if k == 0 else 0.15 / max(1, len(states) - 1)
            out.append((s, tuple(chunk), w))
    return out or [(states[0], (statuses[0],), 1.0)]


class _Table:
    """A choice column drawn from a 64-entry table of values (with a share ``rate`` of NULLs)."""

    __slots__ = ("rate", "table")

    def __init__(self, rate: float, table: tuple[int, ...]) -> None:
        self.rate = rate
        self.table = table

    def __call__(self, c: _Ctx) -> object:
        rand = c.rand
        return None if rand() < self.rate else self.table[int(rand() * 64)]


class _Nullable:
    """A column value function with a share ``rate`` of NULLs (unwrapped by the row loop, which
    draws the NULL itself: one Python call per column instead of two)."""

    __slots__ = ("fn", "rate")

    def __init__(self, rate: float, fn: ValueFn) -> None:
        self.rate = rate
        self.fn = fn

    def __call__(self, c: _Ctx) -> object:
        return None if c.rand() < self.rate else self.fn(c)


def _nullable(rate: float, fn: ValueFn) -> ValueFn:
    """``fn`` with a share ``rate`` of NULLs."""
    return _Nullable(rate, fn) if rate > 0.0 else fn


def _const(v: object) -> ValueFn:
    def value(c: _Ctx) -> object:
        return v

    return value


class _Plan:
    """How to build the rows of one table: a list of steps, each filling related columns."""

    def __init__(
        self,
        model: Model,
        entity: Entity,
        counts: Mapping[str, int],
        seed: int,
        now: _dt.datetime | None,
    ) -> None:
        _prepare()
        self.model = model
        self.entity = entity
        self.counts = counts
        self.cols = entity.storage_columns()
        self.pos = {c: k for k, c in enumerate(self.cols)}
        self.width = len(self.cols)
        self.now = _epoch(now)
        self.n = max(1, int(counts.get(entity.logical_name, 0)))
        _s32, s64 = _salt(entity.logical_name)
        mixed = _mix64((seed & _M64) ^ s64 ^ 0x5EED5EED)
        self.seed = seed
        self.stream_base = mixed  # row i's stream: Fibonacci hash of (stream_base + i)
        self.prng = random.Random(mixed)  # table-level choices (bulk-import seconds)
        self.bounds: dict[str, int] = {}  # column -> longest string its generator can produce
        self.steps: list[Step] = []
        self.finish: Step | None = None
        self.flags: list[tuple[int, float]] = []  # booleans: (position, share of 1)
        self.picks: list[tuple[int, float, tuple[int, ...]]] = []  # choices: (pos, nulls, table)
        self.values: list[tuple[int, float, ValueFn]] = []
        self.copies: list[tuple[int, int]] = []
        self.trunc: list[tuple[int, int]] = []
        self.done: set[str] = set()
        attrs = entity.attributes
        self.person = any(
            n in attrs and attrs[n].type == "string" for n in ("firstname", "lastname", "fullname")
        )
        self.company_like = entity.primary_name == "name" and any(
            n in attrs for n in ("accountnumber", "websiteurl", "tickersymbol", "address1_line1")
        )
        self.needs_company = self.company_like or "companyname" in attrs
        self._build()

    # -- helpers ---------------------------------------------------------------------------

    def attr(self, name: str, *types: str) -> Attribute | None:
        a = self.entity.attributes.get(name)
        if a is None or a.name in self.done or (types and a.type not in types):
            return None
        return a

    def take(self, name: str, *types: str) -> int | None:
        """The storage position of a not-yet-handled column, marking it handled."""
        a = self.attr(name, *types)
        if a is None:
            return None
        self.done.add(a.name)
        return self.pos[a.property_name]

    def count(self, table: str) -> int:
        return max(0, int(self.counts.get(table, 0)))

    # -- building --------------------------------------------------------------------------

    def _build(self) -> None:
        self._id_step()
        self._time_step()
        self._state_step()
        self._who_step()
        self._owner_step()
        self._money_step()
        self._address_steps()
        e = self.entity
        for a in e.attributes.values():
            if a.name in self.done:
                continue
            self.done.add(a.name)
            if a.is_lookup:
                self._lookup(a)
                continue
            if a.type == "boolean" and self._bool_share(a.name.lower()) is not None:
                share = self._bool_share(a.name.lower())
                assert share is not None
                self.flags.append((self.pos[a.property_name], share))
                continue
            fn = self._value_fn(a)
            if isinstance(fn, _Table):
                self.picks.append((self.pos[a.property_name], fn.rate, fn.table))
            elif isinstance(fn, _Nullable):
                self.values.append((self.pos[a.property_name], fn.rate, fn.fn))
            elif fn is not None:
                self.values.append((self.pos[a.property_name], 0.0, fn))
        self._simple_step()
        if self.finish is not None:
            self.steps.append(self.finish)
        for a in e.attributes.values():
            limit = a.max_length
            if a.type in ("string", "memo") and limit and self.bounds.get(a.name, 1 << 30) > limit:
                self.trunc.append((self.pos[a.property_name], limit))

    def _simple_step(self) -> None:
        """Booleans and plain choice columns, in one loop (no call per column)."""
        flags = tuple(self.flags)
        picks = tuple(self.picks)
        if not flags and not picks:
            return

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            for p, share in flags:
                row[p] = 1 if rand() < share else 0
            for p, null, table in picks:
                if null and rand() < null:
                    continue
                row[p] = table[int(rand() * 64)]

        self.steps.append(step)

    def _id_step(self) -> None:
        e = self.entity
        positions: list[int] = []
        p = self.take(e.primary_id, "uniqueidentifier")
        if p is not None:
            positions.append(p)
        own = self.take("ownerid", "uniqueidentifier")  # systemuser/team: the principal id
        if own is not None:
            positions.append(own)
        name = e.logical_name
        pos = tuple(positions)

        def step(row: list[object], c: _Ctx) -> None:
            c.id = v = row_id(name, c.i)
            for p in pos:
                row[p] = v

        self.steps.append(step)

    def _time_step(self) -> None:
        now = self.now
        t0 = now - _TWO_YEARS
        span = _TWO_YEARS - _DAY
        tmax = t0 + span
        per_row = span / self.n
        prng = self.prng
        bulk = tuple(now - d * _DAY + prng.randrange(-_DAY // 2, _DAY // 2) for d in _BULK_DAYS)
        b0 = bulk[0]
        durations = (15, 30, 30, 45, 60, 60, 90, 120)

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            created = t0 + int((c.i + rand()) * per_row)
            if created > tmax:
                created = tmax - int(rand() * _DAY)
            k = 0
            modified = 0
            if rand() < _BULK_SHARE:
                u = rand()
                b = bulk[
                    0 if u < 0.5 else 1 if u < 0.7 else 2 if u < 0.83 else 3 if u < 0.93 else 4
                ]
                if b < created:
                    b = b0
                if b >= created:
                    modified = b
                    k = 1 if b == b0 else bulk.index(b) + 1
            if not k:
                u = rand()
                modified = created if u < 0.35 else created + int((now - created) * u * u)
                if modified >= now:
                    modified = now - 1
            c.created = created
            c.modified = modified
            c.bulk = k
            c.flag = rand()
            c.sched = (created + int(rand() * 14 * _DAY)) // 900 * 900
            c.duration = durations[int(rand() * 8)]
            c.start_day = created // _DAY + int(rand() * 60)
            c.state = 0
            c.closed = False

        self.steps.append(step)
        self.take("overriddencreatedon")  # always NULL
        pc = self.take("createdon")
        pm = self.take("modifiedon")
        pv = self.take("versionnumber")
        pi = self.take("importsequencenumber")

        def finish(row: list[object], c: _Ctx) -> None:
            """Runs after every other step (the state step may move ``modifiedon``)."""
            if pc is not None:
                row[pc] = _ts(c.created)
            if pm is not None:
                row[pm] = _ts(c.modified)
            if pv is not None:
                row[pv] = 1_000_000 + c.i
            if pi is not None and c.bulk:
                row[pi] = c.bulk

        self.finish = finish

    def _state_step(self) -> None:
        e = self.entity
        st = next((a for a in e.attributes.values() if a.type == "state"), None)
        ss = next((a for a in e.attributes.values() if a.type == "status"), None)
        if st is None and ss is None:
            return
        ps = self.take(st.name) if st else None
        pss = self.take(ss.name) if ss else None
        rules = state_rules(e)
        pick = _Weighted(rules, [w for _, _, w in rules])
        first = rules[0][0]
        now = self.now

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            s, allowed, _w = rules[pick.index(rand())]
            if ps is not None:
                row[ps] = s
            if pss is not None:
                row[pss] = allowed[int(rand() * len(allowed))]
            c.state = s
            if s != first:
                c.closed = True
                span = c.modified - c.created
                if span < 600 and not c.bulk:
                    c.modified = min(c.created + 600 + int(rand() * 30 * _DAY), now - 1)
                    span = c.modified - c.created
                c.closed_at = c.created + 1 + int(max(span - 1, 0) * (0.3 + 0.7 * rand()))

        self.steps.append(step)

    def _who_step(self) -> None:
        """Country and city of the row, the person (first/last name) and the company name."""
        person = self.person
        company = self.needs_company
        pf = self.take("firstname", "string") if person else None
        pl = self.take("lastname", "string") if person else None
        pfull = self.take("fullname", "string") if person else None
        yf = self.take("yomifirstname", "string") if person else None
        yl = self.take("yomilastname", "string") if person else None
        yfull = self.take("yomifullname", "string") if person else None
        b = _BOUNDS
        for name, bound in (
            ("firstname", b["first"]),
            ("lastname", b["last"]),
            ("yomifirstname", b["first"]),
            ("yomilastname", b["last"]),
            ("fullname", b["first"] + b["last"] + 1),
            ("yomifullname", b["first"] + b["last"] + 1),
        ):
            if person:
                self.bounds[name] = bound

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            if person:
                cu = _CULTURE_LIST[_CULTURE_PICK.index(rand())]
                co = cu.countries[cu.pick_country.index(rand())]
                if rand() < 0.5:
                    c.gender = 1
                    first, c.fslug = _pick(cu.male, rand)
                else:
                    c.gender = 2
                    first, c.fslug = _pick(cu.female, rand)
                last, c.lslug = _pick(cu.last, rand)
                c.first = first
                c.last = last
                if pf is not None:
                    row[pf] = first
                if pl is not None:
                    row[pl] = last
                if pfull is not None:
                    row[pfull] = f"{first} {last}"
                if yf is not None:
                    row[yf] = first
                if yl is not None:
                    row[yl] = last
                if yfull is not None:
                    row[yfull] = f"{first} {last}"
            else:
                co = _COUNTRY_LIST[_COUNTRY_PICK.index(rand())]
            c.country = co
            c.city = _pick(co.cities, rand)
            if company:
                if rand() < 0.12:
                    surname, sslug = _pick(_ALL_LAST, rand)
                    base = f"{surname} {_pick(_SURNAME_FIRM_LIST, rand)}"
                    slug = sslug
                else:
                    stem, stem_slug = _pick(_STEMS, rand)
                    sector, sector_slug = _pick(_SECTORS, rand)
                    base = f"{stem} {sector}"
                    slug = stem_slug + sector_slug if rand() < 0.5 else stem_slug
                c.company = f"{base} {_pick(co.legal, rand)}"
                c.domain = f"{slug}.{co.tld}"

        self.steps.append(step)

    def _owner_step(self) -> None:
        a = self.attr("ownerid", "owner", "lookup")
        if a is None:
            return
        targets = [t for t in a.targets if self.count(t) > 0]
        p = self.take("ownerid")
        assert p is not None
        pl = self.pos.get(f"{a.property_name}@lookuplogicalname")
        pu = self.take("owninguser", "lookup")
        pt = self.take("owningteam", "lookup")
        nu = self.count("systemuser") if "systemuser" in targets else 0
        nt = self.count("team") if "team" in targets else 0
        if not nu and not nt:
            return
        users = _id_getter("systemuser", nu)
        teams = _id_getter("team", nt)
        team_share = 0.0 if not nu else 0.2 if nt else 0.0

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            if nt and (not nu or rand() < team_share):
                v = teams(int(rand() * nt))
                row[p] = v
                if pl is not None:
                    row[pl] = "team"
                if pt is not None:
                    row[pt] = v
            else:
                v = users(int(rand() * nu))
                row[p] = v
                if pl is not None:
                    row[pl] = "systemuser"
                if pu is not None:
                    row[pu] = v

        self.steps.append(step)

    def _money_step(self) -> None:
        e = self.entity
        attrs = e.attributes
        monies = [a for a in attrs.values() if a.type == "money" and a.name not in self.done]
        cur_attr = self.attr("transactioncurrencyid", "lookup")
        if not monies and cur_attr is None:
            return
        pc = self.take("transactioncurrencyid", "lookup") if cur_attr is not None else None
        px = self.take("exchangerate") if cur_attr is not None else None
        ncur = self.count("transactioncurrency") if cur_attr is not None else 0
        cur_ids = _id_getter("transactioncurrency", ncur)
        rates = [_currency(j)[4] for j in range(min(ncur, 1000))]
        weights = [
            _CURRENCY_WEIGHTS[j] if j < len(_CURRENCY_WEIGHTS) else 2.0 for j in range(len(rates))
        ]
        cur_pick = _Weighted(range(len(rates)), weights) if rates else None
        specs: list[tuple[int, int | None, float, float, float, bool]] = []
        for a in monies:
            if a.name.endswith("_base") and a.name[:-5] in attrs:
                continue
            n = a.name.lower()
            lo, hi, null = 10.0, 1e5, 0.3
            for key, rng in (
                ("revenue", (1e5, 5e8, 0.1)),
                ("creditlimit", (5e3, 1e6, 0.3)),
                ("marketcap", (1e6, 5e10, 0.7)),
                ("income", (2e4, 3e5, 0.5)),
                ("estimatedvalue", (5e3, 2e6, 0.05)),
                ("actualvalue", (5e3, 2e6, 0.0)),
                ("budget", (1e4, 5e6, 0.1)),
                ("price", (5.0, 5e3, 0.2)),
            ):
                if key in n:
                    lo, hi, null = rng
                    break
            if n.startswith("open"):
                null = 0.5
            base = attrs.get(a.name + "_base")
            pb = self.take(base.name) if base is not None and base.type == "money" else None
            p = self.take(a.name)
            assert p is not None
            specs.append((p, pb, lo, hi / lo, null, n.startswith("actual")))
        for a in monies:  # left-over _base columns whose value column is elsewhere
            self.done.add(a.name)
        spec_t = tuple(specs)
        has_cur = cur_attr is not None

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            rate: float | None = 1.0
            if has_cur:
                if cur_pick is not None:
                    j = c.country.currency
                    if j >= len(rates) or rand() < 0.2:
                        j = cur_pick.index(rand())
                    rate = rates[j]
                    if pc is not None:
                        row[pc] = cur_ids(j)
                    if px is not None:
                        row[px] = rate
                else:
                    rate = None
            c.rate = rate
            for p, pb, lo, ratio, null, actual in spec_t:
                if actual:
                    if c.state != 1:
                        continue
                elif rand() < null:
                    continue
                u = rand()
                if u < 0.1:  # a few values with 4 decimals
                    v = int(lo * ratio ** (u * 10.0) * (rate or 1.0) * 10000.0 + 0.5) / 10000.0
                else:
                    v = int(lo * ratio ** ((u - 0.1) / 0.9) * (rate or 1.0) * 100.0 + 0.5) / 100.0
                row[p] = v
                if pb is not None and rate:
                    row[pb] = v if rate == 1.0 else int(v / rate * 10000.0 + 0.5) / 10000.0

        self.steps.append(step)

    def _address_steps(self) -> None:
        attrs = self.entity.attributes
        prefixes = sorted(
            {
                n.rsplit("_", 1)[0]
                for n in attrs
                if "_" in n
                and n.rsplit("_", 1)[1] in _ADDRESS_FIELDS
                and any(f"{n.rsplit('_', 1)[0]}_{f}" in attrs for f in ("line1", "city"))
            }
        )
        for k, prefix in enumerate(prefixes):
            pos = {f: self.take(f"{prefix}_{f}") for f in sorted(_ADDRESS_FIELDS)}
            for f in ("line1", "line2", "city", "postalcode", "country", "composite"):
                self.bounds[f"{prefix}_{f}"] = _BOUNDS[f]
            self.bounds[f"{prefix}_stateorprovince"] = _BOUNDS["region"]
            for f in ("telephone1", "telephone2", "telephone3", "fax"):
                self.bounds[f"{prefix}_{f}"] = _BOUNDS["phone"]
            phones = [
                self.take(f"{prefix}_{f}", "string")
                for f in ("telephone1", "telephone2", "telephone3", "fax")
            ]
            pphones = tuple(p for p in phones if p is not None)
            self._address_step(pos, 0.05 if k == 0 else 0.7, k == 0, pphones)

    def _address_step(
        self, pos: dict[str, int | None], null: float, primary: bool, pphones: tuple[int, ...]
    ) -> None:
        p1, p2 = pos["line1"], pos["line2"]
        pcity, preg, ppost = pos["city"], pos["stateorprovince"], pos["postalcode"]
        pco, pcomp, plat, plon = pos["country"], pos["composite"], pos["latitude"], pos["longitude"]
        extras = (
            "Suite 200",
            "Floor 3",
            "Building B",
            "c/o Accounts Payable",
            "Unit 7",
            "Bâtiment C",
        )

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            if rand() < null:
                return
            if primary:
                co, city = c.country, c.city
            elif rand() < 0.7:
                co = c.country
                city = co.cities[int(rand() * len(co.cities))]
            else:
                co = _COUNTRY_LIST[_COUNTRY_PICK.index(rand())]
                city = co.cities[int(rand() * len(co.cities))]
            lines = city.lines
            line1 = lines[int(rand() * len(lines))]
            line2 = extras[int(rand() * 6)] if rand() < 0.15 else None
            postals = city.postals
            postal = postals[int(rand() * len(postals))]
            if p1 is not None:
                row[p1] = line1
            if p2 is not None:
                row[p2] = line2
            if pcity is not None:
                row[pcity] = city.name
            if preg is not None:
                row[preg] = city.region or None
            if ppost is not None:
                row[ppost] = postal
            if pco is not None:
                row[pco] = co.name
            if pcomp is not None:
                region = (
                    f"{city.name}, {city.region} {postal}"
                    if city.region
                    else f"{city.name} {postal}"
                )
                row[pcomp] = (
                    f"{line1}\r\n{line2}\r\n{region}\r\n{co.name}"
                    if line2
                    else f"{line1}\r\n{region}\r\n{co.name}"
                )
            if plat is not None or plon is not None:
                coords = city.coords
                lat, lon = coords[int(rand() * len(coords))]
                if plat is not None:
                    row[plat] = lat
                if plon is not None:
                    row[plon] = lon
            for pp in pphones:
                if rand() < 0.3:
                    subs = city.phone_subs
                    row[pp] = city.phone_pre + subs[int(rand() * len(subs))]

        self.steps.append(step)

    def _lookup(self, a: Attribute) -> None:
        p = self.pos[a.property_name]
        pl = self.pos.get(f"{a.property_name}@lookuplogicalname")
        own = self.entity.logical_name
        choices: list[tuple[str, int, Callable[[int], str], bool]] = []
        weights: list[float] = []
        wmap = _TARGET_WEIGHTS.get(a.name, {})
        for t in a.targets:
            n = self.count(t)
            if n > 0:
                choices.append((t, n, _id_getter(t, n), t == own))
                weights.append(wmap.get(t, 1.0))
        if not choices:
            return
        null = _LOOKUP_NULLS.get(a.name, 0.95 if "onbehalfby" in a.name else 0.3)
        pick = _Weighted(choices, weights)
        single = choices[0] if len(choices) == 1 else None

        def step(row: list[object], c: _Ctx) -> None:
            rand = c.rand
            if null and rand() < null:
                return
            t, n, get, self_ref = single or choices[pick.index(rand())]
            if self_ref:  # hierarchies point at earlier rows only: no cycles
                n = min(n, c.i)
                if n <= 0:
                    return
            row[p] = get(int(rand() * n))
            if pl is not None:
                row[pl] = t

        self.steps.append(step)

    # -- single-column values --------------------------------------------------------------

    def _value_fn(self, a: Attribute) -> ValueFn | None:
        n = a.name.lower()
        t = a.type
        if n == "timezoneruleversionnumber":
            return _nullable(0.2, lambda c: 4 if c.rand() < 0.8 else 0)
        if n == "utcconversiontimezonecode":
            return _nullable(0.7, lambda c: _pick(_UTC_CODES, c.rand))
        if t in ("string", "memo"):
            fn = self._string_fn(a, n)
            bound = self._string_bound(a, n)
            if bound is not None:
                self.bounds[a.name] = bound
            return fn
        if t in ("integer", "bigint"):
            return self._int_fn(a, n)
        if t in ("decimal", "double", "money"):
            return self._number_fn(a, n)
        if t == "boolean":
            return self._bool_fn(n)
        if t == "datetime":
            return self._datetime_fn(n)
        if t == "dateonly":
            return self._date_fn(n)
        if t in ("picklist", "state", "status"):
            return self._choice_fn(a, n)
        if t == "uniqueidentifier":
            return _nullable(0.3, lambda c: _random_guid(c.rand))
        if t == "binary":
            if "image" in n:
                return lambda c: _pick(_IMAGES, c.rand) if c.rand() < 0.03 else None
            return _nullable(
                0.7,
                lambda c: base64.b64encode(
                    bytes(int(c.rand() * 256) for _ in range(8 + int(c.rand() * 40)))
                ).decode("ascii"),
            )
        return None

    def _string_fn(self, a: Attribute, n: str) -> ValueFn | None:
        e = self.entity
        attrs = e.attributes
        if n == "activitytypecode":
            return _const(e.activity_type or e.logical_name)
        if a.name == e.primary_name:
            return self._primary_fn(a)
        if n.startswith("yomi"):
            src = attrs.get(n[4:]) or (
                attrs.get(e.primary_name) if n == "yominame" and e.primary_name else None
            )
            if src is not None:
                self.copies.append((self.pos[a.property_name], self.pos[src.property_name]))
                return None
        person, company_like = self.person, self.company_like
        if n == "middlename":
            return _nullable(0.8, lambda c: f"{_pick('ABCDEFGHJKLMNPRSTW', c.rand)}.")
        if n == "domainname":
            if person:
                return lambda c: f"{c.fslug}.{c.lslug}@{_ORG_DOMAIN}"
            return lambda c: f"user{c.i}@{_ORG_DOMAIN}"
        if "email" in n and not n.startswith(("donot", "follow", "is", "allow")):
            if person and n == "emailaddress1":
                return _person_email
            if person and n == "internalemailaddress":
                return lambda c: f"{c.fslug}.{c.lslug}@{_ORG_DOMAIN}"
            if person:
                return _nullable(
                    0.6, lambda c: f"{c.fslug[0]}{c.lslug}@{_pick(_FREE_DOMAIN_LIST, c.rand)}"
                )
            if company_like:
                return _nullable(0.1, lambda c: f"{_pick(_MAILBOXES, c.rand)}@{c.domain}")
            return _nullable(0.3, lambda c: _any_email(c.rand))
        if "phone" in n or "fax" in n:
            null = 0.3
            for key, rate in (
                ("telephone1", 0.05),
                ("mobilephone", 0.3),
                ("telephone2", 0.6),
                ("fax", 0.7),
                ("telephone3", 0.85),
                ("phonenumber", 0.05),
            ):
                if n.endswith(key):
                    null = rate
                    break
            return _nullable(null, _phone)
        if n.endswith("url"):
            if company_like:
                return _nullable(0.1, lambda c: f"https://www.{c.domain}")
            return _nullable(0.7, lambda c: f"https://www.{_pick(_STEMS, c.rand)[1]}.com")
        if n == "accountnumber":
            return lambda c: f"ACC-{c.i + 1:06d}"
        if n == "ticketnumber":
            return lambda c: (
                f"CAS-{(c.i + 1) % 100000:05d}-{_pick(_LETTER_DIGIT, c.rand)}"
                f"{_pick(_LETTER_DIGIT, c.rand)}{_pick(_LETTER_DIGIT, c.rand)}"
            )
        if n == "tickersymbol":
            return _nullable(0.8, lambda c: c.domain.split(".")[0][:4].upper() or "TICK")
        if n == "sic":
            return _nullable(0.5, lambda c: str(1000 + int(c.rand() * 9000)))
        if n in ("jobtitle", "title"):
            titles = _USER_TITLE_LIST if e.base_type == "principal" else _JOB_LIST
            return _nullable(0.15, lambda c: _pick(titles, c.rand))
        if n == "companyname" and self.needs_company:
            return _nullable(0.05, lambda c: c.company)
        if n == "subject":
            return lambda c: f"Interested in {_pick(_PRODUCT_LIST, c.rand)}"
        if n == "sender":
            return lambda c: _any_email(c.rand)
        if n in ("torecipients", "to", "cc", "bcc", "ccrecipients", "bccrecipients"):
            return lambda c: "; ".join(_any_email(c.rand) for _ in range(1 + int(c.rand() * 3)))
        if n == "messageid":
            return lambda c: f"<{c.id}@mail.contoso.com>"
        if n == "category":
            return _nullable(0.4, lambda c: _pick(_CATEGORY_LIST, c.rand))
        if n == "subcategory":
            return _nullable(0.5, lambda c: _pick(_SUBCATEGORY_LIST, c.rand))
        if n in ("currencyname", "isocurrencycode", "currencysymbol"):
            k = ("isocurrencycode", "currencyname", "currencysymbol").index(n)
            return lambda c: _currency(c.i)[k]
        if n.endswith(("number", "code")) and a.type == "string":
            prefix = self._code_prefix()
            if (a.max_length or 20) >= 12:
                return lambda c: f"{prefix}-{c.i + 1:05d}"
            return lambda c: _base36(c.i + 1)  # short columns: still unique
        if a.type == "memo" or "description" in n:
            return _nullable(0.3, lambda c: _text(c))
        return _nullable(0.3, lambda c: f"{_pick(_WORDS, c.rand).title()} {_pick(_WORDS, c.rand)}")

    def _string_bound(self, a: Attribute, n: str) -> int | None:
        """The longest value ``_string_fn`` can produce for the column (None: unknown)."""
        b = _BOUNDS
        if a.name == self.entity.primary_name:
            return b["company"] if self.company_like else None
        if n == "domainname" or n == "internalemailaddress" or n == "messageid":
            return b["email"]
        if "email" in n and not n.startswith(("donot", "follow", "is", "allow")):
            return b["email"]
        if "phone" in n or "fax" in n:
            return b["phone"]
        if n.endswith("url"):
            return b["email"]
        if n in ("accountnumber", "ticketnumber", "tickersymbol", "sic", "middlename"):
            return 20
        if n in ("jobtitle", "title"):
            return b["job"]
        if n in ("category", "subcategory", "currencysymbol", "isocurrencycode", "currencyname"):
            return 24
        if n == "companyname":
            return b["company"]
        if a.type == "memo" or "description" in n:
            return b["text"]
        return None

    def _code_prefix(self) -> str:
        stem = self.entity.logical_name.split("_", 1)[-1]
        letters = [ch for ch in stem.upper() if "A" <= ch <= "Z"]
        if len(letters) >= 3:
            consonants = [ch for ch in letters[1:] if ch not in "AEIOU"]
            return letters[0] + "".join((consonants + letters[1:])[:2])
        return ("".join(letters) + "XXX")[:3]

    def _primary_fn(self, a: Attribute) -> ValueFn:
        e = self.entity
        ln = e.logical_name
        if self.company_like:
            return lambda c: c.company
        if ln == "team" or (e.base_type == "principal" and a.name == "name"):
            teams = _TEAM_LIST
            return lambda c: (
                teams[c.i]
                if c.i < len(teams)
                else f"{teams[c.i % len(teams)]} {c.i // len(teams) + 1}"
            )
        if a.name == "currencyname":
            return lambda c: _currency(c.i)[1]
        if ln == "incident" or a.name == "title":
            return lambda c: _fill(_pick(_ISSUE_LIST, c.rand), c)
        if ln == "opportunity":
            return lambda c: _fill(_pick(_OPPORTUNITY_LIST, c.rand), c)
        if e.base_type == "activitypointer" or a.name == "subject":
            subjects = _SUBJECTS.get(e.activity_type or ln, _SUBJECTS["task"])
            return lambda c: _fill(_pick(subjects, c.rand), c)
        if "project" in ln:
            return lambda c: _fill(_pick(_PROJECT_LIST, c.rand), c)
        label = ln.split("_", 1)[-1].replace("_", " ")
        return lambda c: f"{_pick(_WORDS, c.rand).title()} {label} {c.i + 1}"

    def _int_fn(self, a: Attribute, n: str) -> ValueFn | None:
        if n == "numberofemployees":
            return _nullable(0.15, lambda c: int(5 * 40000 ** c.rand()))
        if n == "sharesoutstanding":
            return _nullable(0.8, lambda c: int(1e5 * 1e4 ** c.rand()))
        if n == "numberofchildren":
            return _nullable(0.4, lambda c: int(c.rand() ** 2 * 5))
        if "percent" in n:
            return lambda c: 100 if c.closed and c.state == 1 else int(c.rand() * 10) * 10
        if n == "closeprobability":
            return lambda c: 100 if c.state == 1 else 0 if c.closed else 10 + int(c.rand() * 9) * 10
        if n == "actualdurationminutes":
            return lambda c: c.duration if c.closed else None
        if "durationminutes" in n:
            return lambda c: c.duration
        if n == "opencount":
            return lambda c: int(c.rand() ** 2 * 12)
        if n == "currencyprecision":
            return lambda c: _currency(c.i)[3]
        if "serviceunits" in n:
            return _nullable(0.5, lambda c: int(c.rand() * 20))
        if a.type == "bigint":
            return _nullable(0.3, lambda c: int(c.rand() * 10**12))
        return _nullable(0.3, lambda c: int(c.rand() ** 2 * 1000))

    def _number_fn(self, a: Attribute, n: str) -> ValueFn | None:
        places = a.precision if a.precision is not None else (4 if a.type == "double" else 2)
        if n == "exchangerate":
            if "isocurrencycode" in self.entity.attributes:
                return lambda c: _currency(c.i)[4]
            return lambda c: c.rate
        if "latitude" in n:
            return _nullable(0.2, lambda c: _pick(c.city.coords, c.rand)[0])
        if "longitude" in n:
            return _nullable(0.2, lambda c: _pick(c.city.coords, c.rand)[1])
        if "completion" in n or "percent" in n:
            return lambda c: 1.0 if c.closed else round(c.rand() * 0.95, min(places, 4))
        if "hours" in n:
            return _nullable(0.2, lambda c: round(8 + c.rand() * 1500, min(places, 2)))
        return _nullable(0.3, lambda c: round(c.rand() * 1000, min(places, 4)))

    def _bool_fn(self, n: str) -> ValueFn:
        if n == "isdefault":
            return lambda c: 1 if c.i == 0 else 0
        if n == "isescalated":
            return lambda c: 1 if c.flag < 0.15 else 0
        share = self._bool_share(n) or 0.5
        return lambda c: 1 if c.rand() < share else 0

    @staticmethod
    def _bool_share(n: str) -> float | None:
        """The share of 1s of an independent yes/no column (None: derived from the row)."""
        if n in ("isdefault", "isescalated"):
            return None
        share = 0.5
        for key, v in (
            ("donotemail", 0.1),
            ("donotphone", 0.1),
            ("donot", 0.05),
            ("creditonhold", 0.05),
            ("followemail", 0.8),
            ("isdisabled", 0.08),
            ("directioncode", 0.6),
            ("leftvoicemail", 0.2),
            ("isbilled", 0.1),
            ("isregularactivity", 1.0),
            ("isbillable", 0.7),
        ):
            if key in n:
                share = v
                break
        return share

    def _datetime_fn(self, n: str) -> ValueFn | None:
        now = self.now
        resolved = 1 if self.entity.logical_name == "incident" else None
        if n == "resolvedon":
            return lambda c: (
                _ts(c.closed_at) if c.closed and (resolved is None or c.state == resolved) else None
            )
        if n == "actualend":
            return lambda c: _ts(c.closed_at) if c.closed else None
        if n == "actualstart":
            return lambda c: (
                _ts(max(c.created, c.closed_at - c.duration * 60)) if c.closed else None
            )
        if n == "scheduledstart":
            return lambda c: _ts(c.sched)
        if n == "scheduledend":
            return lambda c: _ts(c.sched + c.duration * 60)
        if n == "escalatedon":
            return lambda c: (
                _ts(c.created + int((c.modified - c.created) * c.rand())) if c.flag < 0.15 else None
            )
        if n == "followupby":
            return _nullable(0.6, lambda c: _ts(c.created + int((1 + c.rand() * 6) * _DAY)))
        if n == "resolveby":
            return _nullable(0.2, lambda c: _ts(c.created + int((1 + c.rand() * 4) * _DAY)))
        if n == "lastusedincampaign":
            return _nullable(0.75, lambda c: _ts(c.created + int((now - c.created) * c.rand())))
        return _nullable(0.4, lambda c: _ts(c.created + int((now - c.created) * c.rand())))

    def _date_fn(self, n: str) -> ValueFn | None:
        today = self.now // _DAY
        if "birth" in n:
            return _nullable(0.4, lambda c: _date(today - int((18 + c.rand() * 57) * 365.25)))
        if n == "estimatedclosedate":
            return _nullable(0.05, lambda c: _date(c.created // _DAY + 14 + int(c.rand() * 170)))
        if n == "actualclosedate":
            return lambda c: _date(c.closed_at // _DAY) if c.closed else None
        if "start" in n:
            return lambda c: _date(c.start_day)
        if "end" in n:
            return lambda c: _date(c.start_day + 30 + int(c.rand() * 370))
        return _nullable(0.3, lambda c: _date(c.created // _DAY + int(c.rand() * 365)))

    def _choice_fn(self, a: Attribute, n: str) -> ValueFn | None:
        opts = tuple(sorted(a.options)) if a.options else (1, 2, 3)
        m = len(opts)
        if n == "gendercode" and 1 in opts and 2 in opts:
            return _nullable(0.15, lambda c: c.gender)
        if "priority" in n and a.options:
            normal = [k for k, v in a.options.items() if v.lower() == "normal"]
            if normal:
                nv = normal[0]
                return lambda c: nv if c.rand() < 0.7 else _pick(opts, c.rand)
        if "phase" in n or "stage" in n:
            last = opts[-1]
            rest = opts[:-1] or opts
            return lambda c: last if c.closed else _pick(rest, c.rand)
        if n == "accessmode":
            return lambda c: opts[0] if c.rand() < 0.9 else _pick(opts, c.rand)
        if n == "teamtype":
            return lambda c: opts[0] if c.i == 0 or c.rand() < 0.6 else _pick(opts, c.rand)
        required = any(k in n for k in ("priority", "severity", "origin", "type", "stage"))
        # Skewed: the first options are the common ones.
        return _Table(
            0.0 if required else 0.15, tuple(opts[int((k / 64) ** 1.6 * m)] for k in range(64))
        )

    # -- running ---------------------------------------------------------------------------

    def rows(self, start: int, stop: int) -> Iterator[tuple[object, ...]]:
        pool = _float_pool(self.seed)
        c = _Ctx()
        base = self.stream_base
        steps = tuple(self.steps)
        values = tuple(self.values)
        copies = tuple(self.copies)
        trunc = tuple(self.trunc)
        blank: list[object] = [None] * self.width
        draws = 48 + self.width  # slice length; doubled when a row needs more
        for i in range(start, stop):
            h = ((base + i) * 0x9E3779B97F4A7C15) & _M64
            off = h >> (64 - _POOL_BITS)
            stride = ((h >> (58 - _POOL_BITS)) & (_STRIDES - 1)) + 1
            c.i = i
            while True:
                if draws <= _FAST_DRAWS:
                    rand = iter(pool[off : off + draws * stride : stride]).__next__
                else:
                    rand = _slow_stream(pool, off, stride)
                c.rand = rand
                row = blank.copy()
                try:
                    for step in steps:
                        step(row, c)
                    for p, null, fn in values:
                        if null and rand() < null:
                            continue
                        row[p] = fn(c)
                except StopIteration:
                    draws *= 2
                    continue
                except RuntimeError as exc:  # StopIteration inside a generator expression
                    if not isinstance(exc.__cause__, StopIteration):
                        raise
                    draws *= 2
                    continue
                break
            for p, q in copies:
                row[p] = row[q]
            for p, ml in trunc:
                v = row[p]
                if isinstance(v, str) and len(v) > ml:
                    row[p] = v[:ml]
            yield tuple(row)


def generate_rows(
    model: Model,
    entity: Entity,
    counts: Mapping[str, int],
    *,
    seed: int = 42,
    start: int = 0,
    stop: int | None = None,
    now: _dt.datetime | None = None,
) -> Iterator[tuple[object, ...]]:
    """Rows ``start..stop-1`` of ``entity`` as tuples in ``entity.storage_columns()`` order.

    ``stop`` defaults to ``counts[entity]``. A row depends only on (seed, table, index, counts,
    now), never on ``start``/``stop``: generating in chunks gives the same rows. Lookups point at
    ``row_id(target, j)`` with ``j < counts[target]`` (NULL when the target has no rows).
    """
    if stop is None:
        stop = int(counts.get(entity.logical_name, 0))
    start = max(0, start)
    if stop <= start:
        return iter(())
    return _Plan(model, entity, counts, seed, now).rows(start, stop)


def generic_rows(
    model: Model,
    entity: Entity,
    counts: Mapping[str, int],
    *,
    seed: int = 42,
    start: int = 0,
    stop: int | None = None,
    now: _dt.datetime | None = None,
) -> Iterator[tuple[object, ...]]:
    """Rows of any table, e.g. one read from a real CSDL: the same as ``generate_rows``, which
    relies on column names and types only (no table is special-cased beyond name heuristics)."""
    return generate_rows(model, entity, counts, seed=seed, start=start, stop=stop, now=now)
