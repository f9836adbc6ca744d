"""The plan of a table's rows: steps that fill related columns together (ids, times, state and
status, people, owners, money, addresses, lookups), then the row loop."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Mapping

from ..model import Attribute, Entity, Model
from .pools import (
    _ALL_LAST,
    _BOUNDS,
    _COUNTRY_LIST,
    _COUNTRY_PICK,
    _CULTURE_LIST,
    _CULTURE_PICK,
    _CURRENCY_WEIGHTS,
    _SECTORS,
    _STEMS,
    _SURNAME_FIRM_LIST,
    _currency,
    _pick,
    _Weighted,
)
from .rules import (
    _ADDRESS_FIELDS,
    _BULK_DAYS,
    _BULK_SHARE,
    _LOOKUP_NULLS,
    _TARGET_WEIGHTS,
    _TWO_YEARS,
    _Ctx,
    _Nullable,
    _Table,
    state_rules,
)
from .streams import (
    _DAY,
    _FAST_DRAWS,
    _M64,
    _POOL_BITS,
    _STRIDES,
    _float_pool,
    _id_getter,
    _slow_stream,
    _ts,
    row_id,
)
from .values import _ColumnValues


class _Plan(_ColumnValues):
    """How to build the rows of one table: a list of steps, each filling related columns."""

    def __init__(
        self,
        model: Model,
        entity: Entity,
        counts: Mapping[str, int],
        seed: int,
        now: _dt.datetime | None,
    ) -> None:
        super().__init__(model, entity, counts, seed, now)
        self._build()

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
