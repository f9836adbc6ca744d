"""The rules rows follow: the per-row context the column generators share, the heuristics'
parameters (lookup targets and NULL shares, consistent state/status pairs, bulk-import seconds)
and the small value makers they use."""

from __future__ import annotations

import random
from collections.abc import Callable

from ..model import Entity
from .pools import (
    _ALL_FIRST,
    _ALL_LAST,
    _COUNTRY_LIST,
    _FREE_DOMAIN_LIST,
    _ISSUE_LIST,
    _PRODUCT_LIST,
    _SECTORS,
    _STEMS,
    _TEXTS,
    _City,
    _Country,
    _pick,
)
from .streams import _DAY


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


def _phone(c: _Ctx) -> str:
    city = c.city
    subs = city.phone_subs
    return city.phone_pre + subs[int(c.rand() * len(subs))]


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
