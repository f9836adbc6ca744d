"""The emulator's SQLite store: tables from the model, keyset paging, writes and change tracking.

Formats are described in STORAGE.md. Every write takes a new, organisation-wide version number (as
Dataverse's row versions are), which is what change tracking and ETags are built on.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from .model import Attribute, Entity, Model
from .wire import INVALID_PAGING_COOKIE, ODataError

SQL_TYPES = {
    "string": "TEXT COLLATE NOCASE",
    "memo": "TEXT COLLATE NOCASE",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "picklist": "INTEGER",
    "state": "INTEGER",
    "status": "INTEGER",
    "decimal": "REAL",
    "money": "REAL",
    "double": "REAL",
    "boolean": "INTEGER",
    "datetime": "TEXT",
    "dateonly": "TEXT",
    "uniqueidentifier": "TEXT",
    "lookup": "TEXT",
    "owner": "TEXT",
    "customer": "TEXT",
    "binary": "TEXT",
}

TOMBSTONES = "@tombstones"
INSERT_CHUNK = 5000


def q(name: str) -> str:
    """Quote an SQL identifier (our names never hold a double quote, but be strict anyway)."""
    if '"' in name:
        raise ValueError(f"bad identifier {name!r}")
    return f'"{name}"'


def utc_now_text(clock: Callable[[], float] = time.time) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))


@dataclass
class Page:
    """One page of a query: rows as tuples in the order of ``columns``."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    next_cookie: str | None
    count: int | None = None


@dataclass
class Tombstone:
    id: str
    version: int


# ---------------------------------------------------------------------------------------------
# Paging cookies, in the shape Dataverse uses:
#   <cookie pagenumber="2" pagingcookie="%3ccookie%20page%3d%221%22%3e%3caccountid%20last%3d...
#   %3e%3c%2fcookie%3e" istracking="False" />
# The inner cookie holds the last (and first) value of each ordered column and of the key.
# ---------------------------------------------------------------------------------------------

_OUTER_RE = re.compile(
    r'^<cookie pagenumber="(\d+)" pagingcookie="([^"]*)" istracking="(True|False)" />$'
)
_INNER_RE = re.compile(r'<([A-Za-z0-9_@]+) ((?:[a-z]+="[^"]*" ?)*)/>')
_ATTR_RE = re.compile(r'([a-z]+)="([^"]*)"')


def _lower_escapes(s: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), s)


def _xml_attr(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def _xml_unattr(value: str) -> str:
    return (
        value.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )


def _cookie_value(attr: Attribute | None, value: Any) -> str:
    if attr is not None and attr.edm_type == "Edm.Guid" and isinstance(value, str):
        return "{" + value.upper() + "}"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def encode_cookie(
    page: int,
    columns: Sequence[tuple[str, Attribute | None]],
    last: tuple[Any, ...],
    first: tuple[Any, ...],
) -> str:
    parts = [f'<cookie page="{page}">']
    for (name, attr), lv, fv in zip(columns, last, first, strict=True):
        attrs = []
        attrs.append(
            'lastnull="1"' if lv is None else f'last="{_xml_attr(_cookie_value(attr, lv))}"'
        )
        attrs.append(
            'firstnull="1"' if fv is None else f'first="{_xml_attr(_cookie_value(attr, fv))}"'
        )
        parts.append(f"<{name} {' '.join(attrs)} />")
    parts.append("</cookie>")
    inner = _lower_escapes(quote("".join(parts), safe=""))
    return f'<cookie pagenumber="{page + 1}" pagingcookie="{inner}" istracking="False" />'


def decode_cookie(
    token: str, columns: Sequence[tuple[str, Attribute | None]]
) -> tuple[int, tuple[Any, ...]]:
    """Return (page number, last values of ``columns``) or raise the service's cookie error."""

    def bad() -> ODataError:
        return ODataError(400, INVALID_PAGING_COOKIE, "Invalid page number in paging cookie.")

    m = _OUTER_RE.match(token.strip())
    if not m:
        raise bad()
    inner = unquote(m.group(2))
    if "<!" in inner:
        raise bad()
    found = {}
    for em in _INNER_RE.finditer(inner):
        found[em.group(1)] = dict(_ATTR_RE.findall(em.group(2)))
    values: list[Any] = []
    for name, attr in columns:
        entry = found.get(name)
        if entry is None:
            raise bad()
        if entry.get("lastnull") == "1":
            values.append(None)
            continue
        if "last" not in entry:
            raise bad()
        values.append(_cookie_parse(attr, _xml_unattr(entry["last"]), bad))
    return int(m.group(1)), tuple(values)


def _cookie_parse(attr: Attribute | None, raw: str, bad: Callable[[], ODataError]) -> Any:
    if attr is None:
        return raw
    sql_type = SQL_TYPES[attr.type]
    try:
        if attr.edm_type == "Edm.Guid":
            return raw.strip("{}").lower()
        if sql_type == "INTEGER":
            return int(raw)
        if sql_type == "REAL":
            return float(raw)
    except ValueError:
        raise bad() from None
    return raw


# ---------------------------------------------------------------------------------------------


class Store:
    """The organisation's rows, in SQLite, safe to use from the server's threads."""

    def __init__(
        self,
        model: Model,
        path: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self.clock = clock
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="dynamics-emulator-")
            path = Path(self._tmpdir.name) / "org.sqlite"
        self.path = Path(path)
        self.conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA temp_store=MEMORY")
        self.conn.execute("PRAGMA cache_size=-65536")  # 64 MB page cache, bounded
        self.lock = threading.RLock()
        self._version = 1_000_000
        self._create_schema()

    # -- schema -------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        c = self.conn
        for e in self.model.concrete():
            cols = ['"@rowid" INTEGER PRIMARY KEY']
            for a in e.attributes.values():
                cols.append(f"{q(a.property_name)} {SQL_TYPES[a.type]}")
                if a.is_lookup and len(a.targets) > 1:
                    cols.append(f"{q(a.property_name + '@lookuplogicalname')} TEXT")
            c.execute(f"CREATE TABLE IF NOT EXISTS {q(e.logical_name)} ({', '.join(cols)})")
            c.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {q(e.logical_name + '@pk')} "
                f"ON {q(e.logical_name)} ({q(e.primary_id)})"
            )
            if "modifiedon" in e.attributes:
                c.execute(
                    f"CREATE INDEX IF NOT EXISTS {q(e.logical_name + '@modifiedon')} "
                    f"ON {q(e.logical_name)} (modifiedon, {q(e.primary_id)})"
                )
                if "createdon" in e.attributes:
                    # The order a client reads a second of bulk-updated rows in (by createdon
                    # within the second): without it, each page of such a second sorts all of it.
                    c.execute(
                        f"CREATE INDEX IF NOT EXISTS {q(e.logical_name + '@modifiedon-createdon')} "
                        f"ON {q(e.logical_name)} (modifiedon, createdon, {q(e.primary_id)})"
                    )
            if "versionnumber" in e.attributes:
                c.execute(
                    f"CREATE INDEX IF NOT EXISTS {q(e.logical_name + '@version')} "
                    f"ON {q(e.logical_name)} (versionnumber)"
                )
            for key_name, key_cols in e.alternate_keys:
                props = [q(e.attributes[k].property_name) for k in key_cols]
                c.execute(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS {q(e.logical_name + '@' + key_name)} "
                    f"ON {q(e.logical_name)} ({', '.join(props)})"
                )
        c.execute(
            f"CREATE TABLE IF NOT EXISTS {q(TOMBSTONES)} "
            "(entity TEXT, id TEXT, version INTEGER, deletedon TEXT)"
        )
        c.execute(
            f"CREATE INDEX IF NOT EXISTS {q(TOMBSTONES + '@v')} "
            f"ON {q(TOMBSTONES)} (entity, version)"
        )
        self._create_activity_view()

    def _create_activity_view(self) -> None:
        if "activitypointer" not in self.model:
            return
        pointer = self.model["activitypointer"]
        tables = self.model.activity_tables()
        if not tables:
            return
        selects = []
        cols = pointer.storage_columns()
        for t in tables:
            tcols = set(t.storage_columns())
            parts = []
            for col in cols:
                parts.append(q(col) if col in tcols else f"NULL AS {q(col)}")
            selects.append(f"SELECT {', '.join(parts)} FROM {q(t.logical_name)}")
        self.conn.execute("DROP VIEW IF EXISTS activitypointer")
        self.conn.execute(f"CREATE VIEW activitypointer AS {' UNION ALL '.join(selects)}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    # -- bulk load ----------------------------------------------------------------------------

    def insert_rows(self, entity: Entity, rows: Iterable[tuple[Any, ...]]) -> int:
        """Insert seed rows (tuples in ``entity.storage_columns()`` order); returns the count."""
        cols = entity.storage_columns()
        sql = (
            f"INSERT INTO {q(entity.logical_name)} ({', '.join(q(c) for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})"
        )
        n = 0
        with self.lock:
            it = iter(rows)
            while True:
                chunk = []
                for row in it:
                    chunk.append(row)
                    if len(chunk) >= INSERT_CHUNK:
                        break
                if not chunk:
                    break
                self.conn.execute("BEGIN")
                self.conn.executemany(sql, chunk)
                self.conn.execute("COMMIT")
                n += len(chunk)
            self._sync_version()
        return n

    def _sync_version(self) -> None:
        top = self._version
        for e in self.model.concrete():
            if "versionnumber" in e.attributes:
                (v,) = self.conn.execute(
                    f"SELECT MAX(versionnumber) FROM {q(e.logical_name)}"
                ).fetchone()
                if v is not None and v > top:
                    top = v
        (tv,) = self.conn.execute(f"SELECT MAX(version) FROM {q(TOMBSTONES)}").fetchone()
        if tv is not None and tv > top:
            top = tv
        self._version = top

    def next_version(self) -> int:
        with self.lock:
            self._version += 1
            return self._version

    @property
    def current_version(self) -> int:
        return self._version

    def count(self, entity: Entity, where: str | None = None, params: Sequence[Any] = ()) -> int:
        sql = f"SELECT COUNT(*) FROM {q(entity.logical_name)}"
        if where:
            sql += f" WHERE {where}"
        with self.lock:
            (n,) = self.conn.execute(sql, list(params)).fetchone()
        return int(n)

    # -- reads --------------------------------------------------------------------------------

    def query_page(
        self,
        entity: Entity,
        columns: list[str],
        *,
        where: str | None,
        params: Sequence[Any],
        orderby: list[tuple[str, bool]],
        limit: int,
        cookie: str | None,
        page_number_hint: int = 1,
    ) -> Page:
        """One page of rows ordered by ``orderby`` plus the primary key, after ``cookie``.

        ``columns`` are the storage columns to return; the ordered columns are added to them.
        """
        props = entity.by_property()
        order = list(orderby)
        if not any(p == entity.primary_id for p, _ in order):
            order.append((entity.primary_id, False))
        order_cols = [(p, props.get(p)) for p, _ in order]
        out_cols = list(dict.fromkeys([*columns, *(p for p, _ in order)]))
        conds: list[str] = []
        args: list[Any] = []
        if where:
            conds.append(f"({where})")
            args.extend(params)
        page_no = 1
        if cookie is not None:
            page_no, last = decode_cookie(cookie, order_cols)
            cond, cargs = _keyset_condition(order, last)
            conds.append(cond)
            args.extend(cargs)
        sql = f"SELECT {', '.join(q(c) for c in out_cols)} FROM {q(entity.logical_name)}"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY " + ", ".join(f"{q(p)} {'DESC' if d else 'ASC'}" for p, d in order)
        sql += " LIMIT ?"
        args.append(limit + 1)
        with self.lock:
            rows = self.conn.execute(sql, args).fetchall()
        next_cookie = None
        if len(rows) > limit:
            rows = rows[:limit]
            idx = [out_cols.index(p) for p, _ in order]
            last_vals = tuple(rows[-1][i] for i in idx)
            first_vals = tuple(rows[0][i] for i in idx)
            next_cookie = encode_cookie(page_no, order_cols, last_vals, first_vals)
        return Page(out_cols, rows, next_cookie)

    def get_row(
        self, entity: Entity, key: dict[str, Any], columns: list[str] | None = None
    ) -> dict[str, Any] | None:
        cols = columns or entity.storage_columns()
        where = " AND ".join(f"{q(k)} = ?" for k in key)
        sql = (
            f"SELECT {', '.join(q(c) for c in cols)} FROM {q(entity.logical_name)} "
            f"WHERE {where} LIMIT 2"
        )
        with self.lock:
            rows = self.conn.execute(sql, list(key.values())).fetchall()
        if not rows:
            return None
        return dict(zip(cols, rows[0], strict=True))

    def names_of(self, entity: Entity, ids: Iterable[str]) -> dict[str, str | None]:
        """Primary names of rows by id (for lookup display names)."""
        ids = list(dict.fromkeys(i for i in ids if i))
        if not ids or entity.primary_name is None:
            return {}
        table = entity.logical_name
        out: dict[str, str | None] = {}
        with self.lock:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                sql = (
                    f"SELECT {q(entity.primary_id)}, {q(entity.primary_name)} FROM {q(table)} "
                    f"WHERE {q(entity.primary_id)} IN ({', '.join('?' for _ in chunk)})"
                )
                for rid, name in self.conn.execute(sql, chunk):
                    out[rid] = name
        return out

    # -- change tracking -----------------------------------------------------------------------

    def changed_rows(
        self, entity: Entity, columns: list[str], after_version: int, limit: int
    ) -> list[tuple[Any, ...]]:
        cols = list(dict.fromkeys([*columns, "versionnumber"]))
        sql = (
            f"SELECT {', '.join(q(c) for c in cols)} FROM {q(entity.logical_name)} "
            f"WHERE versionnumber > ? ORDER BY versionnumber LIMIT ?"
        )
        with self.lock:
            return self.conn.execute(sql, [after_version, limit]).fetchall()

    def tombstones(self, entity: Entity, after_version: int, limit: int) -> list[Tombstone]:
        names = [entity.logical_name]
        if entity.logical_name == "activitypointer":
            names += [t.logical_name for t in self.model.activity_tables()]
        sql = (
            f"SELECT id, version FROM {q(TOMBSTONES)} WHERE entity IN "
            f"({', '.join('?' for _ in names)}) AND version > ? ORDER BY version LIMIT ?"
        )
        with self.lock:
            rows = self.conn.execute(sql, [*names, after_version, limit]).fetchall()
        return [Tombstone(r[0], r[1]) for r in rows]

    # -- writes -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """An atomic unit (a write, or a whole change set); nests through savepoints."""
        with self.lock:
            name = f"sp{threading.get_ident()}_{id(object())}"
            self.conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
                raise
            self.conn.execute(f"RELEASE {name}")

    def insert(self, entity: Entity, values: dict[str, Any]) -> None:
        cols = list(values)
        sql = (
            f"INSERT INTO {q(entity.logical_name)} ({', '.join(q(c) for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})"
        )
        with self.lock:
            self.conn.execute(sql, [values[c] for c in cols])

    def update(self, entity: Entity, row_id: str, values: dict[str, Any]) -> None:
        if not values:
            return
        sets = ", ".join(f"{q(c)} = ?" for c in values)
        sql = f"UPDATE {q(entity.logical_name)} SET {sets} WHERE {q(entity.primary_id)} = ?"
        with self.lock:
            self.conn.execute(sql, [*values.values(), row_id])

    def delete(self, entity: Entity, row_id: str) -> bool:
        with self.lock:
            cur = self.conn.execute(
                f"DELETE FROM {q(entity.logical_name)} WHERE {q(entity.primary_id)} = ?", [row_id]
            )
            if cur.rowcount == 0:
                return False
            self.conn.execute(
                f"INSERT INTO {q(TOMBSTONES)} (entity, id, version, deletedon) VALUES (?, ?, ?, ?)",
                [entity.logical_name, row_id, self.next_version(), utc_now_text(self.clock)],
            )
            return True

    def find_table_of(self, row_id: str, candidates: Iterable[str]) -> str | None:
        """Which of ``candidates`` (logical names) holds a row with this primary id."""
        with self.lock:
            for name in candidates:
                e = self.model.entities.get(name)
                if e is None or e.abstract:
                    continue
                row = self.conn.execute(
                    f"SELECT 1 FROM {q(name)} WHERE {q(e.primary_id)} = ? LIMIT 1", [row_id]
                ).fetchone()
                if row:
                    return name
        return None


def _keyset_condition(
    order: list[tuple[str, bool]], last: tuple[Any, ...]
) -> tuple[str, list[Any]]:
    """Rows strictly after ``last`` in ``order`` (SQLite sorts NULL first ascending)."""
    if all(not d for _, d in order) and all(v is not None for v in last):
        # The common case; a row-value comparison lets SQLite walk the index.
        cols = ", ".join(q(p) for p, _ in order)
        marks = ", ".join("?" for _ in order)
        return f"(({cols}) > ({marks}))", list(last)
    ors: list[str] = []
    args: list[Any] = []
    for i, (p, desc) in enumerate(order):
        ands: list[str] = []
        a: list[Any] = []
        for j in range(i):
            ands.append(f"{q(order[j][0])} IS ?")
            a.append(last[j])
        v = last[i]
        if not desc:
            if v is None:
                ands.append(f"{q(p)} IS NOT NULL")
            else:
                ands.append(f"{q(p)} > ?")
                a.append(v)
        else:
            if v is None:
                continue
            ands.append(f"({q(p)} < ? OR {q(p)} IS NULL)")
            a.append(v)
        ors.append("(" + " AND ".join(ands) + ")")
        args.extend(a)
    if not ors:
        return "0", []
    return "(" + " OR ".join(ors) + ")", args


def delta_token(version: int, clock: Callable[[], float] = time.time) -> str:
    """A delta token in the service's shape: ``<version>!<MM/dd/yyyy HH:mm:ss>`` (UTC)."""
    return f"{version}!{time.strftime('%m/%d/%Y %H:%M:%S', time.gmtime(clock()))}"


def parse_delta_token(token: str) -> tuple[int, datetime]:
    version, _, stamp = token.partition("!")
    when = datetime.strptime(stamp, "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)
    return int(version), when
