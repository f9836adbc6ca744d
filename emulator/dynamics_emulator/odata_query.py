"""OData query options (``$filter``, ``$orderby``, ``$select``, ``$top``) -> SQLite SQL.

Pure functions, no I/O. Every function takes the text of one query option (already URL-decoded)
and the :class:`~dynamics_emulator.model.Entity` being queried, validates it against the entity's
Web API properties and either returns something the store can execute or raises
:class:`~dynamics_emulator.wire.ODataError` (status 400) with a Dataverse-style message.

Columns are referenced as double-quoted Web API property names (``"_ownerid_value"``), which is how
``STORAGE.md`` names them; column names only ever come from the entity's known properties and every
value goes through a positional ``?`` parameter, so nothing from the request is spliced into SQL.

``$filter`` semantics (see the protocol notes, section 2.3):

* Null handling. Dataverse drops a row when the filter "is false **or null**", and its ``ne``
  (FetchXML ``ne``, SQL ``<>``) does not return rows where the column is null. That is SQL
  three-valued logic, so the generated SQL keeps it: ``name ne 'x'`` is ``"name" <> ?`` and does
  *not* match a null ``name``; ``not (name eq 'x')`` does not match it either (``NOT NULL`` is
  null); ``name eq null`` / ``name ne null`` are ``IS NULL`` / ``IS NOT NULL``. This differs from
  the OData specification, where ``null ne 'x'`` is true: the emulator follows Dataverse.
* Datetimes are stored as whole-second UTC text (``YYYY-MM-DDTHH:MM:SSZ``). Literals are
  normalised to UTC. A literal with a non-zero fraction of a second keeps its exact meaning
  against whole-second values: with ``s`` the literal truncated to the second, ``gt``/``ge``
  become ``> s``, ``lt``/``le`` become ``<= s``, ``eq`` is false and ``ne`` is true for every
  non-null row (and both stay null for null rows, so ``not`` still drops them).
* String comparisons are case-insensitive (``COLLATE NOCASE`` on the parameter side too);
  ``contains``/``startswith``/``endswith`` use ``LIKE ... ESCAPE '\\'`` with ``%``, ``_`` and ``\\``
  in the value escaped, so they are literal characters. SQLite folds ASCII case only (SQL Server's
  ``Latin1_General_CI_AI`` also folds non-ASCII case and accents): a known approximation.
* Anything the emulator cannot evaluate exactly (navigation paths, lambdas, query functions,
  arithmetic, ordering comparisons on GUIDs, ...) is refused with a 400 rather than approximated.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .model import Attribute, Entity
from .wire import NOT_SUPPORTED, ODATA_BAD_URL, ODataError, bad_request

__all__ = ["parse_filter", "parse_orderby", "parse_select", "parse_top"]

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def _unknown_property(name: str, entity: Entity) -> ODataError:
    return bad_request(
        f"Could not find a property named '{name}' on type "
        f"'Microsoft.Dynamics.CRM.{entity.logical_name}'.",
        ODATA_BAD_URL,
    )


def _not_supported(message: str) -> ODataError:
    return bad_request(message, NOT_SUPPORTED)


def _syntax(message: str) -> ODataError:
    return bad_request(message, ODATA_BAD_URL)


def _quote_column(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

_HEX = "[0-9A-Fa-f]"
_GUID_RE = re.compile(
    rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}(?![\w.\-])", re.ASCII
)
_GUID_FULL_RE = re.compile(
    rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}", re.ASCII
)
# Anything that starts like a DateTimeOffset; validated strictly by _DATETIME_FULL_RE.
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9A-Za-z:.+\-]*", re.ASCII)
_DATETIME_FULL_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,12}))?)?"
    r"(Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?![\w:.\-])", re.ASCII)
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[MmDdFfLl]?(?![\w.])", re.ASCII)
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)
_ALIAS_RE = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_PUNCT = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA", "/": "SLASH", ":": "COLON"}

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class _Token:
    kind: str  # STR GUID DATETIME DATE NUM IDENT ALIAS LPAREN RPAREN COMMA SLASH COLON EOF
    text: str
    pos: int
    value: object = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    try:
        _scan(text, tokens)
    except ODataError:
        # A query function's arguments (``PropertyName='x'``, ``["a","b"]``) are not valid in the
        # grammar the emulator knows; say that the function is unsupported rather than blame
        # a character inside it.
        for k, t in enumerate(tokens[:-1]):
            if t.kind == "IDENT" and tokens[k + 1].kind == "LPAREN":
                _refuse_function(t.text)
        raise
    return tokens


def _scan(text: str, tokens: list[_Token]) -> None:
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            j = i + 1
            chars: list[str] = []
            while True:
                if j >= n:
                    raise _syntax(f"There is an unterminated literal at position {n} in '{text}'.")
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        chars.append("'")
                        j += 2
                        continue
                    break
                chars.append(text[j])
                j += 1
            bad = next((c for c in chars if c == "\x00" or "\ud800" <= c <= "\udfff"), None)
            if bad is not None:
                # SQLite compares and LIKE-matches text only up to a NUL, and a lone surrogate
                # cannot be stored: refuse rather than give a wrong answer or crash.
                raise _syntax(
                    f"The character U+{ord(bad):04X} is not allowed in the literal at position "
                    f"{i} in '{text}'."
                )
            tokens.append(_Token("STR", text[i : j + 1], i, "".join(chars)))
            i = j + 1
            continue
        if ch in _PUNCT:
            tokens.append(_Token(_PUNCT[ch], ch, i))
            i += 1
            continue
        m = _GUID_RE.match(text, i)
        if m:
            tokens.append(_Token("GUID", m.group(), i, m.group().lower()))
            i = m.end()
            continue
        m = _DATETIME_RE.match(text, i)
        if m:
            tokens.append(_Token("DATETIME", m.group(), i, _datetime_value(m.group(), i, text)))
            i = m.end()
            continue
        m = _DATE_RE.match(text, i)
        if m:
            tokens.append(_Token("DATE", m.group(), i, _date_value(m.group(), i, text)))
            i = m.end()
            continue
        m = _NUMBER_RE.match(text, i)
        if m:
            tokens.append(_Token("NUM", m.group(), i, _number_value(m.group(), i, text)))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            tokens.append(_Token("IDENT", m.group(), i))
            i = m.end()
            continue
        m = _ALIAS_RE.match(text, i)
        if m:
            tokens.append(_Token("ALIAS", m.group(), i))
            i = m.end()
            continue
        raise _syntax(f"Syntax error: character '{ch}' is not valid at position {i} in '{text}'.")
    tokens.append(_Token("EOF", "", n))


@dataclass(frozen=True)
class _DateTimeValue:
    utc_seconds: str  # YYYY-MM-DDTHH:MM:SSZ, truncated to the second
    has_fraction: bool


def _unrecognized(edm: str, literal: str, pos: int, text: str) -> ODataError:
    return _syntax(f"Unrecognized '{edm}' literal '{literal}' at '{pos}' in '{text}'.")


def _datetime_value(literal: str, pos: int, text: str) -> _DateTimeValue:
    m = _DATETIME_FULL_RE.fullmatch(literal)
    if not m:
        raise _unrecognized("Edm.DateTimeOffset", literal, pos, text)
    year, month, day, hour, minute = (int(m.group(k)) for k in range(1, 6))
    second = int(m.group(6) or 0)
    fraction = m.group(7) or ""
    offset = m.group(8)
    try:
        if offset == "Z":
            tz = dt.UTC
        else:
            sign = -1 if offset[0] == "-" else 1
            oh, om = int(offset[1:3]), int(offset[4:6])
            if om >= 60:
                raise ValueError("offset minutes")
            tz = dt.timezone(sign * dt.timedelta(hours=oh, minutes=om))
        value = dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
        utc = value.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise _unrecognized("Edm.DateTimeOffset", literal, pos, text) from exc
    return _DateTimeValue(utc.strftime("%Y-%m-%dT%H:%M:%SZ"), fraction.strip("0") != "")


def _date_value(literal: str, pos: int, text: str) -> str:
    try:
        return dt.date.fromisoformat(literal).isoformat()
    except ValueError as exc:
        raise _unrecognized("Edm.Date", literal, pos, text) from exc


@dataclass(frozen=True)
class _Number:
    value: int | float
    edm: str


def _number_value(literal: str, pos: int, text: str) -> _Number:
    body, suffix = literal, ""
    if literal[-1] in "MmDdFfLl":
        body, suffix = literal[:-1], literal[-1].upper()
    is_integral = "." not in body and "e" not in body.lower()
    if suffix == "L" and not is_integral:
        raise _unrecognized("Edm.Int64", literal, pos, text)
    if is_integral and suffix in ("", "L"):
        iv = int(body)
        if INT32_MIN <= iv <= INT32_MAX and suffix == "":
            return _Number(iv, "Edm.Int32")
        if INT64_MIN <= iv <= INT64_MAX:
            return _Number(iv, "Edm.Int64")
        if suffix == "L":
            raise _unrecognized("Edm.Int64", literal, pos, text)
    fv = float(body)
    if fv in (float("inf"), float("-inf")):
        raise _unrecognized("Edm.Double", literal, pos, text)
    edm = "Edm.Double" if suffix in ("D", "F") or "e" in body.lower() else "Edm.Decimal"
    return _Number(fv, edm)


# ---------------------------------------------------------------------------------------------
# $filter parser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bool:
    """A boolean SQL expression (already parenthesised when compound)."""

    sql: str
    params: list[object] = field(default_factory=list)


@dataclass(frozen=True)
class _Prop:
    attr: Attribute
    pos: int


@dataclass(frozen=True)
class _Lit:
    edm: str  # Edm.String, Edm.Int32, ..., or "null"
    value: object
    pos: int


_Operand = _Bool | _Prop | _Lit

_COMPARISONS = {
    "eq": ("=", "Equal"),
    "ne": ("<>", "NotEqual"),
    "gt": (">", "GreaterThan"),
    "ge": (">=", "GreaterThanOrEqual"),
    "lt": ("<", "LessThan"),
    "le": ("<=", "LessThanOrEqual"),
}
_FLIPPED = {"eq": "eq", "ne": "ne", "gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
_ARITHMETIC = frozenset({"add", "sub", "mul", "div", "divby", "mod"})
_OTHER_OPERATORS = frozenset({"has", "in"})
_STRING_FUNCTIONS = frozenset({"contains", "startswith", "endswith"})
_OTHER_ODATA_FUNCTIONS = frozenset(
    {
        "length",
        "indexof",
        "substring",
        "tolower",
        "toupper",
        "trim",
        "concat",
        "matchesPattern",
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "second",
        "fractionalseconds",
        "totalseconds",
        "date",
        "time",
        "totaloffsetminutes",
        "now",
        "mindatetime",
        "maxdatetime",
        "round",
        "floor",
        "ceiling",
        "cast",
        "isof",
        "geo.distance",
        "geo.intersects",
        "geo.length",
    }
)
_MAX_DEPTH = 100

_STRING_TYPES = frozenset({"string", "memo"})
_INTEGER_TYPES = frozenset({"integer", "bigint", "picklist", "state", "status"})
_NUMERIC_TYPES = _INTEGER_TYPES | {"decimal", "money", "double"}
_GUID_TYPES = frozenset({"uniqueidentifier", "lookup", "owner", "customer"})
_NUMERIC_LITERALS = frozenset({"Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"})


def _refuse_function(name: str) -> None:
    """Raise for any function name but the supported string functions."""
    if name in _STRING_FUNCTIONS:
        return
    if name.startswith("Microsoft.Dynamics.CRM."):
        raise _not_supported(f"The query function '{name}' is not supported by the emulator.")
    if name in _OTHER_ODATA_FUNCTIONS:
        raise _not_supported(f"The function '{name}' is not supported in $filter.")
    raise _syntax(
        f"An unknown function with name '{name}' was found. This may also be a function "
        "import or a key lookup on a navigation property, which is not allowed."
    )


def _family(attr: Attribute) -> str:
    if attr.type in _STRING_TYPES:
        return "string"
    if attr.type in _NUMERIC_TYPES:
        return "number"
    if attr.type in _GUID_TYPES:
        return "guid"
    return attr.type  # boolean, datetime, dateonly, binary


def _join(op: str, parts: list[_Bool]) -> _Bool:
    """``(a OP b OP ...)`` as a balanced tree, so SQLite's expression depth stays logarithmic."""
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    left, right = _join(op, parts[:mid]), _join(op, parts[mid:])
    return _Bool(f"({left.sql} {op} {right.sql})", [*left.params, *right.params])


def _like_pattern(value: str, kind: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if kind == "contains":
        return f"%{escaped}%"
    if kind == "startswith":
        return f"{escaped}%"
    return f"%{escaped}"


class _FilterParser:
    def __init__(self, text: str, entity: Entity, aliases: Mapping[str, str] | None) -> None:
        self.text = text
        self.entity = entity
        self.props = entity.by_property()
        self.nav_names = {nav for a in entity.lookups() for nav in a.nav_names.values()}
        self.aliases = aliases or {}
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    # -- token helpers ------------------------------------------------------------------------

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def peek(self, k: int = 1) -> _Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        t = self.tokens[self.i]
        if t.kind != "EOF":
            self.i += 1
        return t

    def is_word(self, *words: str) -> bool:
        return self.tok.kind == "IDENT" and self.tok.text in words

    def expression_expected(self) -> ODataError:
        return _syntax(f"Expression expected at position {self.tok.pos} in '{self.text}'.")

    # -- grammar ------------------------------------------------------------------------------

    def parse(self) -> _Bool:
        if self.tok.kind == "EOF":
            raise self.expression_expected()
        result = self.boolean(self.parse_or(), self.tokens[0].pos)
        if self.tok.kind != "EOF":
            raise _syntax(f"Syntax error at position {self.tok.pos} in '{self.text}'.")
        return result

    def nested(self, fn: Callable[[], _Operand]) -> _Operand:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _syntax(f"The $filter expression is nested too deeply (limit {_MAX_DEPTH}).")
        try:
            return fn()
        finally:
            self.depth -= 1

    def parse_or(self) -> _Operand:
        first = self.parse_and()
        if not self.is_word("or"):
            return first
        parts = [self.boolean(first, self.tok.pos)]
        while self.is_word("or"):
            pos = self.advance().pos
            parts.append(self.boolean(self.parse_and(), pos))
        return _join("OR", parts)

    def parse_and(self) -> _Operand:
        first = self.parse_comparison()
        if not self.is_word("and"):
            return first
        parts = [self.boolean(first, self.tok.pos)]
        while self.is_word("and"):
            pos = self.advance().pos
            parts.append(self.boolean(self.parse_comparison(), pos))
        return _join("AND", parts)

    def parse_comparison(self) -> _Operand:
        left = self.parse_unary()
        self.refuse_operator()
        if self.tok.kind == "IDENT" and self.tok.text in _COMPARISONS:
            op_tok = self.advance()
            right = self.parse_unary()
            self.refuse_operator()
            result: _Operand = self.compare(left, op_tok.text, right, op_tok.pos)
            if self.tok.kind == "IDENT" and self.tok.text in _COMPARISONS:
                raise _not_supported(
                    f"Comparing the result of a comparison ('{self.tok.text}' at position "
                    f"{self.tok.pos} in '{self.text}') is not supported."
                )
            return result
        return left

    def refuse_operator(self) -> None:
        if self.tok.kind == "IDENT" and self.tok.text in _ARITHMETIC:
            raise _not_supported(
                f"The arithmetic operator '{self.tok.text}' is not supported in $filter."
            )
        if self.tok.kind == "IDENT" and self.tok.text in _OTHER_OPERATORS:
            raise _not_supported(
                f"The operator '{self.tok.text}' is not supported in $filter; use the "
                "Microsoft.Dynamics.CRM query functions."
            )

    def parse_unary(self) -> _Operand:
        return self.nested(self._parse_unary)

    def _parse_unary(self) -> _Operand:
        if self.is_word("not"):
            pos = self.advance().pos
            inner = self.boolean(self.parse_unary(), pos)
            return _Bool(f"(NOT {inner.sql})", inner.params)
        return self.parse_primary()

    def parse_primary(self) -> _Operand:
        t = self.tok
        if t.kind == "LPAREN":
            self.advance()
            inner = self.nested(self.parse_or)
            if self.tok.kind != "RPAREN":
                raise _syntax(
                    f"')' or operator expected at position {self.tok.pos} in '{self.text}'."
                )
            self.advance()
            return inner
        if t.kind in ("STR", "GUID", "DATETIME", "DATE", "NUM"):
            self.advance()
            return self.literal(t)
        if t.kind == "ALIAS":
            self.advance()
            return self.alias(t)
        if t.kind == "IDENT":
            if t.text in ("null", "true", "false"):
                self.advance()
                return self.literal(t)
            if self.peek().kind == "LPAREN":
                return self.function_call()
            if self.peek().kind == "SLASH":
                raise self.path_error()
            self.advance()
            if t.text in ("and", "or", "not", *_COMPARISONS, *_ARITHMETIC):
                raise _syntax(f"Expression expected at position {t.pos} in '{self.text}'.")
            attr = self.props.get(t.text)
            if attr is None:
                raise _unknown_property(t.text, self.entity)
            return _Prop(attr, t.pos)
        if t.kind == "EOF":
            raise self.expression_expected()
        raise _syntax(f"Syntax error at position {t.pos} in '{self.text}'.")

    def literal(self, t: _Token) -> _Lit:
        if t.kind == "STR":
            return _Lit("Edm.String", t.value, t.pos)
        if t.kind == "GUID":
            return _Lit("Edm.Guid", t.value, t.pos)
        if t.kind == "DATETIME":
            return _Lit("Edm.DateTimeOffset", t.value, t.pos)
        if t.kind == "DATE":
            return _Lit("Edm.Date", t.value, t.pos)
        if t.kind == "NUM":
            assert isinstance(t.value, _Number)
            return _Lit(t.value.edm, t.value.value, t.pos)
        if t.text == "null":
            return _Lit("null", None, t.pos)
        return _Lit("Edm.Boolean", t.text == "true", t.pos)

    def alias(self, t: _Token) -> _Lit:
        value = self.aliases.get(t.text)
        if value is None:
            raise _syntax(f"The parameter alias '{t.text}' in $filter has no value.")
        tokens = _tokenize(value)
        if len(tokens) != 2:
            raise _not_supported(
                f"The value of parameter alias '{t.text}' must be a single literal."
            )
        lit = tokens[0]
        if lit.kind not in ("STR", "GUID", "DATETIME", "DATE", "NUM") and not (
            lit.kind == "IDENT" and lit.text in ("null", "true", "false")
        ):
            raise _not_supported(
                f"The value of parameter alias '{t.text}' must be a single literal."
            )
        return _Lit(self.literal(lit).edm, self.literal(lit).value, t.pos)

    def path_error(self) -> ODataError:
        segments = [self.tok.text]
        j = self.i + 1
        while self.tokens[j].kind == "SLASH" and self.tokens[j + 1].kind == "IDENT":
            segments.append(self.tokens[j + 1].text)
            j += 2
        path = "/".join(segments)
        if any(s in ("any", "all") for s in segments[1:]):
            return _not_supported(
                f"Lambda operators (any/all) are not supported by the emulator: '{path}'."
            )
        if segments[0] in self.nav_names:
            return _not_supported(
                f"Filtering on a navigation property path is not supported by the emulator: "
                f"'{path}'."
            )
        return _unknown_property(segments[0], self.entity)

    def function_call(self) -> _Bool:
        name_tok = self.advance()
        name = name_tok.text
        _refuse_function(name)
        self.advance()  # (
        args: list[_Operand] = []
        if self.tok.kind != "RPAREN":
            while True:
                args.append(self.nested(self.parse_or))
                if self.tok.kind == "COMMA":
                    self.advance()
                    continue
                break
        if self.tok.kind != "RPAREN":
            raise _syntax(f"')' or ',' expected at position {self.tok.pos} in '{self.text}'.")
        self.advance()
        if len(args) != 2:
            raise _syntax(
                f"The function '{name}' takes 2 arguments; {len(args)} given at position "
                f"{name_tok.pos} in '{self.text}'."
            )
        target, needle = args
        if not isinstance(target, _Prop):
            raise _not_supported(
                f"The first argument of '{name}' must be a string column of the table."
            )
        if target.attr.type not in _STRING_TYPES:
            raise _syntax(
                f"No function signature for the function with name '{name}' matches the "
                f"specified arguments. The function signatures considered are: {name}"
                f"(Edm.String Nullable=true, Edm.String Nullable=true); found "
                f"{target.attr.edm_type}."
            )
        if not isinstance(needle, _Lit) or needle.edm != "Edm.String":
            raise _not_supported(f"The second argument of '{name}' must be a string literal.")
        assert isinstance(needle.value, str)
        column = _quote_column(target.attr.property_name)
        return _Bool(f"({column} LIKE ? ESCAPE '\\')", [_like_pattern(needle.value, name)])

    def boolean(self, operand: _Operand, pos: int) -> _Bool:
        if isinstance(operand, _Bool):
            return operand
        edm = operand.attr.edm_type if isinstance(operand, _Prop) else operand.edm
        if edm == "Edm.Boolean":
            raise _not_supported(
                "A bare boolean property or literal used as a condition is not supported; "
                "compare it with true or false."
            )
        raise _syntax(
            f"The $filter expression must evaluate to a single boolean value "
            f"(position {pos} in '{self.text}')."
        )

    # -- comparisons --------------------------------------------------------------------------

    def mismatch(self, left: str, right: str, op: str) -> ODataError:
        return _syntax(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{left}' and '{right}' for operator kind '{_COMPARISONS[op][1]}'."
        )

    def compare(self, left: _Operand, op: str, right: _Operand, pos: int) -> _Bool:
        if isinstance(left, _Bool) or isinstance(right, _Bool):
            raise _not_supported(
                f"Comparing a boolean expression with '{op}' (position {pos} in "
                f"'{self.text}') is not supported."
            )
        if isinstance(left, _Lit) and isinstance(right, _Lit):
            raise _not_supported(
                f"Comparing two literals (position {pos} in '{self.text}') is not supported; "
                "one side must be a column."
            )
        if isinstance(left, _Lit):
            assert isinstance(right, _Prop)
            return self.compare_literal(right, _FLIPPED[op], left, op, flipped=True)
        if isinstance(right, _Lit):
            return self.compare_literal(left, op, right, op, flipped=False)
        return self.compare_columns(left, op, right)

    def compare_columns(self, left: _Prop, op: str, right: _Prop) -> _Bool:
        fam = _family(left.attr)
        if fam != _family(right.attr):
            raise self.mismatch(left.attr.edm_type, right.attr.edm_type, op)
        if fam == "binary":
            raise _not_supported("Binary columns cannot be compared in $filter.")
        if fam in ("guid", "boolean") and op not in ("eq", "ne"):
            raise _not_supported(
                f"Only 'eq' and 'ne' are supported between {left.attr.edm_type} columns."
            )
        a = _quote_column(left.attr.property_name)
        b = _quote_column(right.attr.property_name)
        collate = " COLLATE NOCASE" if fam == "string" else ""
        return _Bool(f"({a} {_COMPARISONS[op][0]} {b}{collate})")

    def compare_literal(
        self, prop: _Prop, op: str, lit: _Lit, written_op: str, *, flipped: bool
    ) -> _Bool:
        """``prop op lit``; ``written_op`` and ``flipped`` say how it was written, for messages."""
        attr = prop.attr
        column = _quote_column(attr.property_name)
        sql_op = _COMPARISONS[op][0]
        if lit.edm == "null":
            if op == "eq":
                return _Bool(f"({column} IS NULL)")
            if op == "ne":
                return _Bool(f"({column} IS NOT NULL)")
            raise _not_supported(
                f"Only 'eq' and 'ne' can compare with null (found '{written_op}' in '{self.text}')."
            )

        def mismatch() -> ODataError:
            if flipped:
                return self.mismatch(lit.edm, attr.edm_type, written_op)
            return self.mismatch(attr.edm_type, lit.edm, written_op)

        fam = _family(attr)
        if fam == "string":
            if lit.edm != "Edm.String":
                raise mismatch()
            return _Bool(f"({column} {sql_op} ? COLLATE NOCASE)", [lit.value])
        if fam == "number":
            if lit.edm not in _NUMERIC_LITERALS:
                raise mismatch()
            return _Bool(f"({column} {sql_op} ?)", [lit.value])
        if fam == "boolean":
            if lit.edm != "Edm.Boolean":
                raise mismatch()
            if op not in ("eq", "ne"):
                raise _not_supported("Only 'eq' and 'ne' are supported on boolean columns.")
            return _Bool(f"({column} {sql_op} ?)", [1 if lit.value else 0])
        if fam == "guid":
            if lit.edm == "Edm.Guid":
                value = lit.value
            elif lit.edm == "Edm.String" and _GUID_FULL_RE.fullmatch(str(lit.value)):
                value = str(lit.value).lower()
            else:
                raise mismatch()
            if op not in ("eq", "ne"):
                # SQL Server orders uniqueidentifier by a byte order text comparison can't mimic.
                raise _not_supported(
                    f"Only 'eq' and 'ne' are supported on {attr.edm_type} columns "
                    f"('{attr.property_name}')."
                )
            return _Bool(f"({column} {sql_op} ?)", [value])
        if fam == "dateonly":
            if lit.edm != "Edm.Date":
                raise mismatch()
            return _Bool(f"({column} {sql_op} ?)", [lit.value])
        if fam == "datetime":
            if lit.edm != "Edm.DateTimeOffset":
                raise mismatch()
            assert isinstance(lit.value, _DateTimeValue)
            return self.compare_datetime(column, op, lit.value)
        raise _not_supported(
            f"Columns of type {attr.edm_type} ('{attr.property_name}') can only be compared "
            "with null."
        )

    @staticmethod
    def compare_datetime(column: str, op: str, value: _DateTimeValue) -> _Bool:
        s = value.utc_seconds
        if not value.has_fraction:
            return _Bool(f"({column} {_COMPARISONS[op][0]} ?)", [s])
        # Stored values are whole seconds, the literal lies strictly between s and s+1.
        if op in ("gt", "ge"):
            return _Bool(f"({column} > ?)", [s])
        if op in ("lt", "le"):
            return _Bool(f"({column} <= ?)", [s])
        # eq: false for every stored value, ne: true; both null for a null column.
        result = "0" if op == "eq" else "1"
        return _Bool(f"(CASE WHEN {column} IS NULL THEN NULL ELSE {result} END)")


def parse_filter(
    text: str, entity: Entity, aliases: Mapping[str, str] | None = None
) -> tuple[str, list[object]]:
    """Translate a ``$filter`` expression into a SQLite boolean expression and its parameters.

    Args:
        text: the URL-decoded ``$filter`` value.
        entity: the table queried.
        aliases: parameter aliases of the request (``{"@p1": "'Contoso'"}``); each value must be
            a single literal.

    Returns:
        ``(sql, params)``: ``sql`` is usable as a ``WHERE`` clause, with ``?`` placeholders
        matching ``params`` in order.

    Raises:
        ODataError: status 400 for syntax errors, unknown properties, type mismatches and
            anything the emulator does not support.
    """
    result = _FilterParser(text, entity, aliases).parse()
    return result.sql, list(result.params)


# ---------------------------------------------------------------------------------------------
# $orderby, $select, $top
# ---------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def _check_name(item: str, option: str, text: str) -> str:
    if "/" in item:
        raise _not_supported(
            f"Navigation property paths in {option} are not supported by the emulator: '{item}'."
        )
    if "(" in item or not _NAME_RE.fullmatch(item):
        raise _syntax(f"Syntax error in {option} at '{item}' in '{text}'.")
    return item


def parse_orderby(text: str, entity: Entity) -> list[tuple[str, bool]]:
    """Parse ``$orderby`` into ``(property_name, descending)`` pairs, in order.

    Lookups are returned as their ``_x_value`` property (Dataverse orders them by the related
    row's primary name; that is the caller's business).
    """
    props = entity.by_property()
    result: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for raw in text.split(","):
        parts = raw.split()
        if not parts:
            raise _syntax(f"Expression expected in $orderby '{text}'.")
        if len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise _syntax(f"Syntax error in $orderby at '{raw.strip()}' in '{text}'.")
        name = _check_name(parts[0], "$orderby", text)
        attr = props.get(name)
        if attr is None:
            raise _unknown_property(name, entity)
        if attr.type == "binary":
            raise _not_supported(f"Ordering by the binary column '{name}' is not supported.")
        if name in seen:
            raise _syntax(f"Duplicate property named '{name}' is not supported in $orderby.")
        seen.add(name)
        result.append((name, len(parts) == 2 and parts[1] == "desc"))
    return result


def parse_select(text: str, entity: Entity) -> list[str]:
    """Parse ``$select`` into property names (duplicates dropped, order kept).

    ``*`` selects every property. Lookups must be named by their ``_x_value`` property.
    """
    props = entity.by_property()
    result: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise _syntax(f"Expression expected in $select '{text}'.")
        if item == "*":
            names = list(props)
            if entity.primary_id not in props:
                names.insert(0, entity.primary_id)
            result.extend(n for n in names if n not in result)
            continue
        name = _check_name(item, "$select", text)
        if name not in props and name != entity.primary_id:
            raise _unknown_property(name, entity)
        if name not in result:
            result.append(name)
    return result


def parse_top(text: str) -> int:
    """Parse ``$top``: a non-negative integer."""
    if not re.fullmatch(r"[0-9]+", text, re.ASCII) or int(text) > INT64_MAX:
        raise _syntax(
            f"Invalid value '{text}' for $top query option found. The $top query option "
            "requires a non-negative integer value."
        )
    return int(text)
