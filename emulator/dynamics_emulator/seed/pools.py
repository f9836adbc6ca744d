"""What rows pick from: the word lists of the data files (people, places, vocabulary), turned
into pools once per process (cities with their streets, postcodes, coordinates and phone numbers;
names with their ASCII slugs; notes), and the currencies."""

from __future__ import annotations

import base64
import bisect
import json
import random
import struct
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

from .streams import _tod

_T = TypeVar("_T")


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


_TEXTS: list[str] = []


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
