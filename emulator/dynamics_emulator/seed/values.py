"""Column values: how each column that no step fills gets its value, from its name and type."""

from __future__ import annotations

import base64
import datetime as _dt
import random
from collections.abc import Mapping

from ..model import Attribute, Entity, Model
from .pools import (
    _BOUNDS,
    _CATEGORY_LIST,
    _FREE_DOMAIN_LIST,
    _IMAGES,
    _ISSUE_LIST,
    _JOB_LIST,
    _LETTER_DIGIT,
    _MAILBOXES,
    _OPPORTUNITY_LIST,
    _ORG_DOMAIN,
    _PRODUCT_LIST,
    _PROJECT_LIST,
    _STEMS,
    _SUBCATEGORY_LIST,
    _SUBJECTS,
    _TEAM_LIST,
    _USER_TITLE_LIST,
    _UTC_CODES,
    _WORDS,
    _currency,
    _pick,
    _prepare,
)
from .rules import (
    Step,
    ValueFn,
    _any_email,
    _base36,
    _const,
    _fill,
    _nullable,
    _person_email,
    _phone,
    _Table,
    _text,
)
from .streams import _DAY, _M64, _date, _epoch, _mix64, _random_guid, _salt, _ts


class _ColumnValues:
    """A table's plan in the making: what it knows of the table, and the generator of each
    column's value from its name and type (names, e-mails, phones, codes, amounts, dates, ...)."""

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
