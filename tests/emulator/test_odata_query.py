"""Tests for dynamics_emulator.odata_query: OData query options -> SQLite SQL.

Filters are not compared as SQL text: each one runs against a real in-memory SQLite table laid out
as STORAGE.md describes, and the exact set of matching rows is asserted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynamics_emulator.model import Entity, standard_model
from dynamics_emulator.odata_query import parse_filter, parse_orderby, parse_select, parse_top
from dynamics_emulator.wire import NOT_SUPPORTED, ODATA_BAD_URL, ODataError

MODEL = standard_model()
ACCOUNT = MODEL["account"]
CONTACT = MODEL["contact"]

SQL_TYPES = {
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "picklist": "INTEGER",
    "state": "INTEGER",
    "status": "INTEGER",
    "boolean": "INTEGER",
    "decimal": "REAL",
    "money": "REAL",
    "double": "REAL",
}


def create_table(conn: sqlite3.Connection, entity: Entity) -> None:
    """The table STORAGE.md describes for ``entity``."""
    cols = ['"@rowid" INTEGER PRIMARY KEY']
    for attr in entity.attributes.values():
        decl = SQL_TYPES.get(attr.type, "TEXT")
        if attr.type in ("string", "memo"):
            decl += " COLLATE NOCASE"
        cols.append(f'"{attr.property_name}" {decl}')
        if attr.is_lookup and len(attr.targets) > 1:
            cols.append(f'"{attr.property_name}@lookuplogicalname" TEXT')
    conn.execute(f'CREATE TABLE "{entity.logical_name}" ({", ".join(cols)})')


def insert(conn: sqlite3.Connection, entity: Entity, row: dict[str, object]) -> None:
    # Table and column names come from the model, never from test input.
    names = ", ".join(f'"{k}"' for k in row)
    marks = ", ".join("?" for _ in row)
    sql = f'INSERT INTO "{entity.logical_name}" ({names}) VALUES ({marks})'  # noqa: S608
    conn.execute(sql, list(row.values()))


def select_ids(
    conn: sqlite3.Connection, entity: Entity, where: str, params: list[object]
) -> set[str]:
    """Primary keys of the rows matching ``where`` (SQL from the parser under test)."""
    query = f'SELECT "{entity.primary_id}" FROM "{entity.logical_name}" WHERE {where}'  # noqa: S608
    return {r[0] for r in conn.execute(query, params)}


def guid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012x}"


U1 = "5d6e8f6a-1b2c-4d3e-9f80-a1b2c3d4e5f6"
U2 = guid(0x222)
C1 = guid(0xC1)

ACCOUNT_COLUMNS = (
    "name",
    "accountnumber",
    "telephone1",
    "revenue",
    "numberofemployees",
    "creditonhold",
    "industrycode",
    "lastusedincampaign",
    "_ownerid_value",
    "description",
    "versionnumber",
    "_primarycontactid_value",
)
# fmt: off
ACCOUNT_ROWS: dict[str, tuple[object, ...]] = {
    "A": ("Contoso", "A-1", "contoso", 1000.0, 10, 0, 1, "2024-01-01T10:00:00Z", U1,
          "100% sure", 1000, None),
    "B": ("CONTOSO", "A-2", None, 2500.5, 200, 1, 7, "2024-01-01T10:00:01Z", U2,
          "100 percent", 2**40, C1),
    "C": ("Fabrikam_Inc", None, None, None, None, None, None, None, None,
          "under_score", None, None),
    "D": ("O'Brien & Co", "A-4", "o'brien & co", 0.1, 0, 0, 7, "2023-12-31T23:59:59Z", U1,
          "back\\slash", 5, None),
    "E": (None, "A-5", "x", 99.0, 5, 1, 2, "2024-06-15T12:30:00Z", U2,
          "FabrikamXInc", 7, None),
    "F": ("Fabrikam Inc", "A-6", "Fabrikam inc", -5.25, 10, 0, None, None, None,
          "50% off", None, None),
    "G": ("50% Off", "a-1", "other", None, 3, None, 7, None, None,
          None, None, None),
}
# fmt: on
ACCOUNT_IDS = {label: guid(0xA000 + i) for i, label in enumerate(ACCOUNT_ROWS)}
ALL_ACCOUNTS = frozenset(ACCOUNT_ROWS)

CONTACT_ROWS: dict[str, tuple[str | None, str | None]] = {
    "P": ("1990-05-01", ACCOUNT_IDS["A"]),
    "Q": ("2000-01-31", None),
    "R": (None, ACCOUNT_IDS["B"]),
}
CONTACT_IDS = {label: guid(0xC000 + i) for i, label in enumerate(CONTACT_ROWS)}


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    create_table(conn, ACCOUNT)
    create_table(conn, CONTACT)
    for label, values in ACCOUNT_ROWS.items():
        row = dict(zip(ACCOUNT_COLUMNS, values, strict=True))
        row["accountid"] = ACCOUNT_IDS[label]
        insert(conn, ACCOUNT, row)
    for label, (birthdate, parent) in CONTACT_ROWS.items():
        insert(
            conn,
            CONTACT,
            {
                "contactid": CONTACT_IDS[label],
                "lastname": label,
                "birthdate": birthdate,
                "_parentcustomerid_value": parent,
                "_parentcustomerid_value@lookuplogicalname": "account" if parent else None,
            },
        )
    yield conn
    conn.close()


def matching(
    conn: sqlite3.Connection,
    entity: Entity,
    text: str,
    aliases: dict[str, str] | None = None,
) -> set[str]:
    sql, params = parse_filter(text, entity, aliases)
    ids = select_ids(conn, entity, sql, params)
    labels = ACCOUNT_IDS if entity is ACCOUNT else CONTACT_IDS
    return {label for label, id_ in labels.items() if id_ in ids}


def p(text: str, expected: str, id: str) -> object:
    return pytest.param(text, set(expected), id=id)


DT = "lastusedincampaign"

ACCOUNT_FILTERS = [
    # strings: case-insensitive, quotes, nulls
    p("name eq 'contoso'", "AB", "string-eq-case-insensitive"),
    p("name eq 'CoNtOsO'", "AB", "string-eq-mixed-case"),
    p("name ne 'contoso'", "CDFG", "string-ne-drops-null-rows"),
    p("not (name eq 'contoso')", "CDFG", "not-eq-drops-null-rows"),
    p("name eq null", "E", "eq-null"),
    p("name ne null", "ABCDFG", "ne-null"),
    p("null eq name", "E", "null-on-the-left"),
    p("name eq 'O''Brien & Co'", "D", "doubled-quote"),
    p("name eq 'o''brien & co'", "D", "doubled-quote-case-insensitive"),
    p("name eq 'x'' or 1=1 --'", "", "injection-is-just-a-string"),
    p("name eq ''", "", "empty-string"),
    p("name gt 'd'", "CDF", "string-gt-nocase"),
    p("name lt 'CONTOSO'", "G", "string-lt-nocase"),
    p("name le 'contoso'", "ABG", "string-le-nocase"),
    p("accountnumber eq 'A-1'", "AG", "string-eq-with-dash"),
    # string functions
    p("contains(name,'brien')", "D", "contains"),
    p("contains(name,'BRIEN')", "D", "contains-case-insensitive"),
    p("contains(name,'_')", "C", "contains-underscore-literal"),
    p("contains(name,'%')", "G", "contains-percent-literal"),
    p("contains(name,'0%')", "G", "contains-percent-after-digit"),
    p("contains(description,'\\')", "D", "contains-backslash-literal"),
    p("contains(name,'')", "ABCDFG", "contains-empty-matches-non-null"),
    p("contains(name, 'o''b')", "D", "contains-quote"),
    p("endswith(name,'_inc')", "C", "endswith-underscore-literal"),
    p("endswith(name,'inc')", "CF", "endswith"),
    p("startswith(name,'fab')", "CF", "startswith"),
    p("startswith(name,'o''b')", "D", "startswith-quote"),
    p("startswith(description,'100%')", "A", "startswith-percent-literal"),
    p("startswith(description,'100')", "AB", "startswith-digits"),
    p("endswith(description,'Xinc')", "E", "endswith-x-not-wildcard"),
    p("not contains(name,'contoso')", "CDFG", "not-contains-drops-null"),
    p("not startswith(name,'fab') and name ne null", "ABDG", "not-function-and"),
    # column to column
    p("name eq telephone1", "ADF", "column-eq-column-nocase"),
    p("name ne telephone1", "G", "column-ne-column-drops-nulls"),
    p("numberofemployees lt industrycode", "DG", "column-lt-column-numbers"),
    p("revenue gt numberofemployees", "ABDE", "column-money-vs-integer"),
    # numbers
    p("numberofemployees gt 5", "ABF", "int-gt"),
    p("numberofemployees ge 5", "ABEF", "int-ge"),
    p("numberofemployees eq 0", "D", "int-eq-zero"),
    p("numberofemployees lt 5.5", "DEG", "int-vs-decimal-literal"),
    p("numberofemployees le -1", "", "negative-literal"),
    p("numberofemployees ne 10", "BDEG", "int-ne-drops-null"),
    p("5 lt numberofemployees", "ABF", "literal-on-the-left-flips"),
    p("revenue eq 0.1", "D", "decimal-eq"),
    p("revenue gt 1000", "B", "money-gt-int"),
    p("revenue ge 1000.0M", "AB", "decimal-suffix-m"),
    p("revenue ge 1000.0m", "AB", "decimal-suffix-lower-m"),
    p("revenue lt 0", "F", "money-negative"),
    p("revenue eq -5.25", "F", "money-eq-negative"),
    p("revenue eq 2500.5", "B", "money-eq-fraction"),
    p("revenue gt 1e3", "B", "exponent-literal"),
    p("revenue gt 999.5d", "AB", "double-suffix"),
    p("revenue eq +99", "E", "plus-sign"),
    p("versionnumber gt 2147483648", "B", "int64-literal"),
    p("versionnumber eq 1099511627776L", "B", "int64-suffix-l"),
    p("versionnumber lt 99999999999999999999999", "ABDE", "literal-beyond-int64"),
    # booleans and choices
    p("creditonhold eq true", "BE", "bool-true"),
    p("creditonhold eq false", "ADF", "bool-false"),
    p("creditonhold ne true", "ADF", "bool-ne-drops-null"),
    p("true eq creditonhold", "BE", "bool-literal-left"),
    p("industrycode eq 7", "BDG", "choice-eq"),
    p("industrycode ne 7", "AE", "choice-ne"),
    p("7 eq industrycode", "BDG", "choice-literal-left"),
    p("industrycode ge 2", "BDEG", "choice-ge"),
    # guids and lookups
    p(f"_ownerid_value eq {U1}", "AD", "lookup-unquoted-guid"),
    p(f"_ownerid_value eq {U1.upper()}", "AD", "lookup-upper-case-guid"),
    p(f"_ownerid_value eq '{U1.upper()}'", "AD", "lookup-quoted-guid"),
    p(f"_ownerid_value ne {U1}", "BE", "lookup-ne-drops-null"),
    p("_ownerid_value eq null", "CFG", "lookup-eq-null"),
    p(f"accountid eq {ACCOUNT_IDS['C']}", "C", "primary-key"),
    p(f"_primarycontactid_value eq {C1}", "B", "lookup-other"),
    p("_ownerid_value eq _ownerid_value", "ABDE", "guid-column-compare"),
    p("entityimage eq null", "ABCDEFG", "binary-eq-null"),
    # logic and precedence
    p(
        "name eq 'contoso' or numberofemployees eq 0 and creditonhold eq true",
        "AB",
        "and-binds-tighter-than-or",
    ),
    p(
        "(name eq 'contoso' or numberofemployees eq 0) and creditonhold eq false",
        "AD",
        "parentheses",
    ),
    p("not (name eq 'contoso' or name eq null)", "CDFG", "not-or"),
    p("not not (industrycode eq 7)", "BDG", "double-not"),
    p("not(industrycode eq 7)", "AE", "not-without-space"),
    p("numberofemployees gt 5 or revenue eq null", "ABCFG", "or-with-null-test"),
    p("((((industrycode eq 7))))", "BDG", "nested-parentheses"),
    p("  industrycode   eq   7  ", "BDG", "extra-whitespace"),
    p(
        "industrycode eq 7 and numberofemployees ne null and creditonhold eq false",
        "D",
        "three-way-and",
    ),
    # datetimes: whole seconds stored, fractions keep exact semantics
    p(f"{DT} ge 2024-01-01T10:00:00Z", "ABE", "datetime-ge"),
    p(f"{DT} gt 2024-01-01T10:00:00Z", "BE", "datetime-gt"),
    p(f"{DT} lt 2024-01-01T10:00:00Z", "D", "datetime-lt"),
    p(f"{DT} le 2024-01-01T10:00:00Z", "AD", "datetime-le"),
    p(f"{DT} eq 2024-01-01T10:00:00Z", "A", "datetime-eq"),
    p(f"{DT} ge 2024-01-01T10:00:00.5Z", "BE", "datetime-fraction-ge"),
    p(f"{DT} gt 2024-01-01T10:00:00.5Z", "BE", "datetime-fraction-gt"),
    p(f"{DT} le 2024-01-01T10:00:00.5Z", "AD", "datetime-fraction-le"),
    p(f"{DT} lt 2024-01-01T10:00:00.5Z", "AD", "datetime-fraction-lt"),
    p(f"{DT} lt 2024-01-01T10:00:00.000000001Z", "AD", "datetime-tiny-fraction"),
    p(f"{DT} eq 2024-01-01T10:00:00.9999999Z", "", "datetime-fraction-eq-never"),
    p(f"{DT} ne 2024-01-01T10:00:00.5Z", "ABDE", "datetime-fraction-ne-not-null"),
    p(f"not ({DT} eq 2024-01-01T10:00:00.5Z)", "ABDE", "datetime-fraction-not-eq"),
    p(f"not ({DT} ne 2024-01-01T10:00:00.5Z)", "", "datetime-fraction-not-ne"),
    p(f"{DT} gt 2024-01-01T10:00:00.000Z", "BE", "datetime-zero-fraction"),
    p(f"{DT} eq 2024-01-01T12:00:01+02:00", "B", "datetime-positive-offset"),
    p(f"{DT} eq 2024-01-01T05:00:00-05:00", "A", "datetime-negative-offset"),
    p(f"{DT} eq 2024-01-01T00:59:59+01:00", "D", "datetime-offset-crosses-year"),
    p(f"{DT} ge 2024-01-01T10:00Z", "ABE", "datetime-without-seconds"),
    p(f"{DT} eq null", "CFG", "datetime-null"),
    p(f"{DT} gt 2024-01-01T00:00:00Z and {DT} lt 2024-02-01T00:00:00Z", "AB", "datetime-range"),
]


@pytest.mark.parametrize(("text", "expected"), ACCOUNT_FILTERS)
def test_filter_account(db: sqlite3.Connection, text: str, expected: set[str]) -> None:
    assert matching(db, ACCOUNT, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        p("birthdate eq 2000-01-31", "Q", "date-eq"),
        p("birthdate lt 2000-01-01", "P", "date-lt"),
        p("birthdate ge 1990-05-01", "PQ", "date-ge"),
        p("birthdate ne 2000-01-31", "P", "date-ne-drops-null"),
        p("birthdate eq null", "R", "date-null"),
        p(f"_parentcustomerid_value eq {ACCOUNT_IDS['A']}", "P", "customer-lookup"),
        p(f"_parentcustomerid_value ne {ACCOUNT_IDS['A']}", "R", "customer-lookup-ne"),
        p("lastname eq 'q' or lastname eq 'R'", "QR", "or"),
    ],
)
def test_filter_contact(db: sqlite3.Connection, text: str, expected: set[str]) -> None:
    assert matching(db, CONTACT, text) == expected


def test_filter_parameter_aliases(db: sqlite3.Connection) -> None:
    aliases = {"@p1": "'contoso'", "@n": "7", "@o": U1}
    assert matching(db, ACCOUNT, "name eq @p1", aliases) == {"A", "B"}
    assert matching(db, ACCOUNT, "@n eq industrycode", aliases) == {"B", "D", "G"}
    assert matching(db, ACCOUNT, "_ownerid_value eq @o", aliases) == {"A", "D"}


def test_filter_sql_shape() -> None:
    sql, params = parse_filter("name eq 'x' and _ownerid_value eq null", ACCOUNT)
    assert sql == '(("name" = ? COLLATE NOCASE) AND ("_ownerid_value" IS NULL))'
    assert params == ["x"]
    _, params = parse_filter("contains(name,'50%_\\')", ACCOUNT)
    assert params == ["%50\\%\\_\\\\%"]


def test_many_terms_stay_within_sqlite_depth(db: sqlite3.Connection) -> None:
    text = " or ".join(f"numberofemployees eq {n}" for n in range(2500))
    assert matching(db, ACCOUNT, text) == {"A", "B", "D", "E", "F", "G"}


def unterminated(text: str) -> str:
    return f"There is an unterminated literal at position {len(text)} in '{text}'."


def unknown(name: str, entity: str = "account") -> str:
    return f"Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{entity}'."


def mismatch(left: str, right: str, kind: str = "Equal") -> str:
    return (
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{left}' and '{right}' for operator kind '{kind}'."
    )


BAD = ODATA_BAD_URL
NS = NOT_SUPPORTED


def e(text: str, code: str, message: str, id: str) -> object:
    return pytest.param(text, code, message, id=id)


FILTER_ERRORS = [
    # unknown properties (exact Dataverse text)
    e("foo eq 1", BAD, unknown("foo"), "unknown-property"),
    e(f"ownerid eq {U1}", BAD, unknown("ownerid"), "lookup-by-logical-name"),
    e("Name eq 'x'", BAD, unknown("Name"), "property-names-are-case-sensitive"),
    e("contains(nope,'x')", BAD, unknown("nope"), "unknown-property-in-function"),
    e("name.first eq 'x'", BAD, unknown("name.first"), "dotted-name"),
    # unterminated literals (exact Dataverse text)
    e("name eq 'O'Bryan'", BAD, unterminated("name eq 'O'Bryan'"), "unterminated-after-quote"),
    e("name eq 'abc", BAD, unterminated("name eq 'abc"), "unterminated"),
    e("name eq '", BAD, unterminated("name eq '"), "unterminated-lone-quote"),
    e("contains(name,'x)", BAD, unterminated("contains(name,'x)"), "unterminated-in-function"),
    # unsupported features
    e("primarycontactid/fullname eq 'x'", NS, "primarycontactid/fullname", "navigation-path"),
    e("ownerid/fullname eq 'x'", NS, "ownerid/fullname", "navigation-path-owner"),
    e("Account_Tasks/any(t:contains(t/subject,'x'))", NS, "any", "lambda-any"),
    e("Account_Tasks/all(t:t/subject eq 'x')", NS, "all", "lambda-all"),
    e("nothing/fullname eq 'x'", BAD, unknown("nothing"), "path-on-unknown-property"),
    e(
        "Microsoft.Dynamics.CRM.LastXDays(PropertyName='createdon',PropertyValue=3)",
        NS,
        "Microsoft.Dynamics.CRM.LastXDays",
        "crm-function",
    ),
    e(
        'Microsoft.Dynamics.CRM.In(PropertyName=\'name\',PropertyValues=["a","b"])',
        NS,
        "Microsoft.Dynamics.CRM.In",
        "crm-function-in",
    ),
    e("Microsoft.Dynamics.CRM.Today()", NS, "Microsoft.Dynamics.CRM.Today", "crm-function-empty"),
    e("tolower(name) eq 'x'", NS, "tolower", "odata-function-tolower"),
    e("year(createdon) eq 2024", NS, "year", "odata-function-year"),
    e("frobnicate(name)", BAD, "unknown function with name 'frobnicate'", "unknown-function"),
    e("Contains(name,'x')", BAD, "unknown function with name 'Contains'", "function-case"),
    e("numberofemployees add 1 eq 2", NS, "'add'", "arithmetic-add"),
    e("numberofemployees eq 1 sub 2", NS, "'sub'", "arithmetic-sub-right"),
    e("name in ('a','b')", NS, "'in'", "in-operator"),
    e(f"_ownerid_value gt {U1}", NS, "_ownerid_value", "guid-ordering"),
    e("name gt null", NS, "null", "gt-null"),
    e("creditonhold gt false", NS, "boolean", "bool-ordering"),
    e("entityimage eq 'abc'", NS, "Edm.Binary", "binary-compare"),
    e("creditonhold", NS, "bare boolean", "bare-boolean-property"),
    e("true", NS, "bare boolean", "bare-boolean-literal"),
    e("1 eq 1", NS, "two literals", "literal-vs-literal"),
    e("contains(name,'x') eq true", NS, "boolean expression", "function-compared"),
    e("name eq name eq name", NS, "comparison", "chained-comparison"),
    e("contains(name,name)", NS, "string literal", "contains-column-needle"),
    e("contains('abc',name)", NS, "string column", "contains-literal-haystack"),
    e("name eq @p1", BAD, "'@p1'", "missing-alias"),
    # type mismatches
    e("name eq 5", BAD, mismatch("Edm.String", "Edm.Int32"), "string-vs-int"),
    e("5 eq name", BAD, mismatch("Edm.Int32", "Edm.String"), "int-vs-string-flipped"),
    e("modifiedon eq 'abc'", BAD, mismatch("Edm.DateTimeOffset", "Edm.String"), "dt-vs-str"),
    e(
        "modifiedon gt '2024-01-01T00:00:00Z'",
        BAD,
        mismatch("Edm.DateTimeOffset", "Edm.String", "GreaterThan"),
        "dt-vs-quoted-dt",
    ),
    e("modifiedon eq 2024-01-01", BAD, mismatch("Edm.DateTimeOffset", "Edm.Date"), "dt-vs-date"),
    e("creditonhold eq 1", BAD, mismatch("Edm.Boolean", "Edm.Int32"), "bool-vs-int"),
    e("numberofemployees eq '5'", BAD, mismatch("Edm.Int32", "Edm.String"), "int-vs-str"),
    e("industrycode eq 'Consulting'", BAD, mismatch("Edm.Int32", "Edm.String"), "choice-vs-str"),
    e("_ownerid_value eq 'me'", BAD, mismatch("Edm.Guid", "Edm.String"), "guid-vs-str"),
    e("_ownerid_value eq 5", BAD, mismatch("Edm.Guid", "Edm.Int32"), "guid-vs-int"),
    e(f"name eq {U1}", BAD, mismatch("Edm.String", "Edm.Guid"), "string-vs-guid"),
    e("name eq numberofemployees", BAD, mismatch("Edm.String", "Edm.Int32"), "column-types"),
    e("revenue eq true", BAD, mismatch("Edm.Decimal", "Edm.Boolean"), "money-vs-bool"),
    e("contains(numberofemployees,'1')", BAD, "No function signature", "contains-on-int"),
    # syntax
    e("", BAD, "Expression expected at position 0 in ''.", "empty"),
    e("   ", BAD, "Expression expected", "blank"),
    e("name eq", BAD, "Expression expected at position 7", "missing-operand"),
    e("name eq 'x' and", BAD, "Expression expected", "dangling-and"),
    e("and name eq 'x'", BAD, "Expression expected", "leading-and"),
    e("(name eq 'x'", BAD, "')' or operator expected", "unclosed-paren"),
    e("name eq 'x')", BAD, "Syntax error at position 11", "extra-paren"),
    e("name eq 'x' 'y'", BAD, "Syntax error", "trailing-literal"),
    e("name eq 'x' & 1", BAD, "character '&' is not valid at position 12", "bad-character"),
    e("name == 'x'", BAD, "character '='", "double-equals"),
    e("name", BAD, "single boolean value", "bare-string-property"),
    e("not name eq 'x'", BAD, "single boolean value", "not-binds-tighter-than-eq"),
    e("name eq 'x' or 5", BAD, "single boolean value", "or-with-literal"),
    e("contains(name)", BAD, "takes 2 arguments", "contains-one-arg"),
    e("contains(name,'a','b')", BAD, "takes 2 arguments", "contains-three-args"),
    e("contains(name 'a')", BAD, "')' or ',' expected", "contains-missing-comma"),
    e("modifiedon gt 2024-11-01T00:00:00", BAD, "Unrecognized 'Edm.DateTimeOffset'", "no-offset"),
    e("modifiedon gt 2024-13-01T00:00:00Z", BAD, "Unrecognized", "bad-month"),
    e("modifiedon gt 2024-01-01T25:00:00Z", BAD, "Unrecognized", "bad-hour"),
    e("modifiedon gt 0001-01-01T00:00:00+01:00", BAD, "Unrecognized", "dt-underflows"),
    e("modifiedon gt 2024-01-01T00:00:00+01:99", BAD, "Unrecognized", "bad-offset"),
    e("birthdate eq 2024-02-30", BAD, "Unrecognized 'Edm.Date'", "bad-date"),
    e("numberofemployees eq 99999999999999999999999L", BAD, "Edm.Int64", "int64-overflow"),
    e("numberofemployees eq 1.5L", BAD, "Edm.Int64", "l-suffix-on-decimal"),
    e("revenue eq 1e999", BAD, "Unrecognized", "infinite-double"),
    e("numberofemployees eq 12abc", BAD, "Syntax error", "number-then-letters"),
    e("name eq guid'x'", BAD, unknown("guid"), "v3-typed-literal"),
    e("name eq 'a\x00b'", BAD, "U+0000", "nul-in-literal"),
    e("contains(name,'\ud800')", BAD, "U+D800", "lone-surrogate-in-literal"),
    e("(" * 150 + "industrycode eq 7" + ")" * 150, BAD, "nested too deeply", "deep-nesting"),
    e("not " * 150 + "(industrycode eq 7)", BAD, "nested too deeply", "deep-not"),
]


@pytest.mark.parametrize(("text", "code", "message"), FILTER_ERRORS)
def test_filter_errors(text: str, code: str, message: str) -> None:
    entity = CONTACT if "birthdate" in text else ACCOUNT
    with pytest.raises(ODataError) as info:
        parse_filter(text, entity)
    err = info.value
    assert err.status == 400
    assert err.code == code
    assert message in err.message


def test_unterminated_literal_message_from_the_docs() -> None:
    with pytest.raises(ODataError) as info:
        parse_filter("lastname eq 'O'Bryan'", CONTACT)
    assert info.value.message == (
        "There is an unterminated literal at position 21 in 'lastname eq 'O'Bryan''."
    )


def test_alias_must_be_a_single_literal() -> None:
    with pytest.raises(ODataError) as info:
        parse_filter("name eq @p1", ACCOUNT, {"@p1": "name"})
    assert info.value.code == NOT_SUPPORTED
    with pytest.raises(ODataError):
        parse_filter("name eq @p1", ACCOUNT, {"@p1": "'a' 'b'"})


# ---------------------------------------------------------------------------------------------
# $orderby, $select, $top
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name", [("name", False)], id="single"),
        pytest.param("name asc", [("name", False)], id="asc"),
        pytest.param("name desc", [("name", True)], id="desc"),
        pytest.param(
            "revenue desc,name asc", [("revenue", True), ("name", False)], id="two-columns"
        ),
        pytest.param(
            " createdon  desc , _ownerid_value ",
            [("createdon", True), ("_ownerid_value", False)],
            id="whitespace-and-lookup",
        ),
        pytest.param("accountid", [("accountid", False)], id="primary-key"),
    ],
)
def test_orderby(text: str, expected: list[tuple[str, bool]]) -> None:
    assert parse_orderby(text, ACCOUNT) == expected


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        e("foo", BAD, unknown("foo"), "unknown"),
        e("ownerid desc", BAD, unknown("ownerid"), "lookup-logical-name"),
        e("name,name desc", BAD, "Duplicate property named 'name'", "duplicate"),
        e("name sideways", BAD, "Syntax error", "bad-direction"),
        e("name DESC", BAD, "Syntax error", "direction-case-sensitive"),
        e("name desc extra", BAD, "Syntax error", "too-many-words"),
        e("", BAD, "Expression expected", "empty"),
        e("name,", BAD, "Expression expected", "trailing-comma"),
        e("primarycontactid/fullname", NS, "primarycontactid/fullname", "navigation-path"),
        e("length(name)", BAD, "Syntax error", "function"),
        e("entityimage", NS, "binary", "binary-column"),
        e("name;drop", BAD, "Syntax error", "garbage"),
    ],
)
def test_orderby_errors(text: str, code: str, message: str) -> None:
    with pytest.raises(ODataError) as info:
        parse_orderby(text, ACCOUNT)
    assert (info.value.status, info.value.code) == (400, code)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("name", ["name"], id="single"),
        pytest.param("name,revenue", ["name", "revenue"], id="two"),
        pytest.param(" name , _ownerid_value", ["name", "_ownerid_value"], id="lookup"),
        pytest.param("accountid", ["accountid"], id="primary-key"),
        pytest.param("name,name,revenue", ["name", "revenue"], id="duplicates-dropped"),
        pytest.param("*", list(ACCOUNT.by_property()), id="star"),
    ],
)
def test_select(text: str, expected: list[str]) -> None:
    assert parse_select(text, ACCOUNT) == expected


def test_select_primary_key_on_other_tables() -> None:
    for entity in MODEL.concrete():
        assert parse_select(entity.primary_id, entity) == [entity.primary_id]


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        e("ownerid", BAD, unknown("ownerid"), "lookup-logical-name"),
        e("name,primarycontactid", BAD, unknown("primarycontactid"), "nav-property"),
        e("foo", BAD, unknown("foo"), "unknown"),
        e("Name", BAD, unknown("Name"), "case-sensitive"),
        e("", BAD, "Expression expected", "empty"),
        e("name,", BAD, "Expression expected", "trailing-comma"),
        e("primarycontactid/fullname", NS, "primarycontactid/fullname", "navigation-path"),
        e("name desc", BAD, "Syntax error", "two-words"),
        e('name,"x"', BAD, "Syntax error", "quoted"),
    ],
)
def test_select_errors(text: str, code: str, message: str) -> None:
    with pytest.raises(ODataError) as info:
        parse_select(text, ACCOUNT)
    assert (info.value.status, info.value.code) == (400, code)
    assert message in info.value.message


def test_select_unknown_message_is_exact() -> None:
    with pytest.raises(ODataError) as info:
        parse_select("name,ownerid", ACCOUNT)
    assert info.value.message == (
        "Could not find a property named 'ownerid' on type 'Microsoft.Dynamics.CRM.account'."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("0", 0, id="zero"),
        pytest.param("5", 5, id="five"),
        pytest.param("5000", 5000, id="page"),
        pytest.param("007", 7, id="leading-zeros"),
    ],
)
def test_top(text: str, expected: int) -> None:
    assert parse_top(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("-1", id="negative"),
        pytest.param("abc", id="letters"),
        pytest.param("", id="empty"),
        pytest.param("1.5", id="decimal"),
        pytest.param(" 5", id="space"),
        pytest.param("+5", id="plus"),
        pytest.param("5\n", id="newline"),
        pytest.param("٣", id="non-ascii-digit"),
        pytest.param("99999999999999999999999", id="overflow"),
    ],
)
def test_top_errors(text: str) -> None:
    with pytest.raises(ODataError) as info:
        parse_top(text)
    assert info.value.status == 400
    assert f"Invalid value '{text}' for $top query option" in info.value.message


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    create_table(conn, ACCOUNT)
    yield conn
    conn.close()


ASCII_FOLD = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
)


def fold(s: str) -> str:
    """What SQLite's NOCASE and LIKE fold: ASCII letters only."""
    return "".join(c.lower() if c.isascii() else c for c in s)


# Text a URL can carry: no lone surrogates; NUL is refused by the parser (tested above).
LITERAL_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=LITERAL_TEXT)
def test_string_literal_round_trips(scratch: sqlite3.Connection, value: str) -> None:
    scratch.execute("DELETE FROM account")
    names = [value, value + "x", "x" + value, value.translate(ASCII_FOLD), value + "%_"]
    for n, name in enumerate(names):
        insert(scratch, ACCOUNT, {"accountid": guid(n), "name": name})
    insert(scratch, ACCOUNT, {"accountid": guid(99), "name": None})
    literal = "'" + value.replace("'", "''") + "'"
    v = fold(value)
    folded = {guid(n): fold(name) for n, name in enumerate(names)}
    for text, predicate in [
        (f"name eq {literal}", lambda s: s == v),
        (f"name ne {literal}", lambda s: s != v),
        (f"startswith(name,{literal})", lambda s: s.startswith(v)),
        (f"endswith(name,{literal})", lambda s: s.endswith(v)),
        (f"contains(name,{literal})", lambda s: v in s),
    ]:
        sql, params = parse_filter(text, ACCOUNT)
        expected = {id_ for id_, name in folded.items() if predicate(name)}
        assert select_ids(scratch, ACCOUNT, sql, params) == expected, text
    # The row holding exactly the value is always found by eq.
    sql, params = parse_filter(f"name eq {literal}", ACCOUNT)
    assert guid(0) in select_ids(scratch, ACCOUNT, sql, params)


T = TypeVar("T")


def attempt(fn: Callable[[], T]) -> tuple[T | None, ODataError | None]:
    """Run ``fn``: its result, or the ODataError it raised (any other exception propagates)."""
    try:
        return fn(), None
    except ODataError as err:
        return None, err


FILTER_PIECES = [
    "name",
    "revenue",
    "creditonhold",
    "createdon",
    "birthdate",
    "_ownerid_value",
    "industrycode",
    "eq",
    "ne",
    "gt",
    "le",
    "and",
    "or",
    "not",
    "add",
    "null",
    "true",
    "(",
    ")",
    ",",
    "/",
    ":",
    "'a''b'",
    "'",
    "5",
    "-1.5",
    "1e3",
    "2L",
    "2024-01-01",
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00.5+01:00",
    U1,
    "contains",
    "startswith",
    "tolower",
    "Microsoft.Dynamics.CRM.In",
    "any",
    "@p",
    "$",
    "[",
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.lists(st.sampled_from(FILTER_PIECES), max_size=12).map(" ".join),
        st.lists(st.sampled_from(FILTER_PIECES), max_size=12).map("".join),
    )
)
def test_garbage_parses_or_raises_odata_error(scratch: sqlite3.Connection, text: str) -> None:
    result, error = attempt(lambda: parse_filter(text, ACCOUNT, {"@p": "1"}))
    if result is None:
        assert error is not None
        assert error.status == 400
        return
    # Whatever parses must be valid SQL for the table.
    sql, params = result
    select_ids(scratch, ACCOUNT, sql, params)


@settings(max_examples=200)
@given(text=st.text(max_size=40))
def test_other_options_never_crash(text: str) -> None:
    for fn in (parse_orderby, parse_select):
        result, error = attempt(lambda fn=fn: fn(text, ACCOUNT))  # type: ignore[misc]
        assert result is not None or (error is not None and error.status == 400)
    top, error = attempt(lambda: parse_top(text))
    assert (top is not None and top >= 0) or (error is not None and error.status == 400)
