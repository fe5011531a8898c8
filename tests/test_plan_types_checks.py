"""Pure-function tests of gateway/plan/types.py, checks.py and allowed.py: no engine,
no rooms, so each runs in microseconds (written to raise their mutation scores)."""

from __future__ import annotations

import copy
import math

import pytest
import sqlglot
from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan import allowed, checks, types
from gateway.plan.allowed import DATE_PARTS, EXTRACT_PARTS, function_name
from gateway.plan.checks import (check_pattern, date_part, interval_days, literal_moment, only, refuse_unknown,
                                 whole_number, window_spec)
from gateway.plan.types import BOOLEAN, NULL, UNBOUNDED, Kind, Range, Typed, engine_range, kind_of


def refused(rule, fn, *args):
    with pytest.raises(Refused) as info:
        fn(*args)
    assert info.value.rule == rule, info.value.rule
    return info.value


def expr(sql):
    return sqlglot.parse_one(f"SELECT {sql}", dialect="postgres").expressions[0]


# ---------------------------------------------------------------- types: kinds

@pytest.mark.parametrize("name,kind", [
    *[(n, Kind.INTEGER) for n in ("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT",
                                  "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT", "integer", " bigint ")],
    ("DECIMAL(18,3)", Kind.DECIMAL), ("DECIMAL", Kind.DECIMAL), ("NUMERIC(10, 2)", Kind.DECIMAL),
    ("DOUBLE", Kind.FLOAT), ("FLOAT", Kind.FLOAT), ("REAL", Kind.FLOAT),
    ("VARCHAR", Kind.STRING), ("VARCHAR(10)", Kind.STRING), ("TEXT", Kind.STRING), ("UUID", Kind.STRING),
    ("ENUM('a', 'b')", Kind.STRING), ("CHAR", Kind.STRING),
    ("DATE", Kind.DATE), ("TIMESTAMP", Kind.TIMESTAMP), ("TIMESTAMP WITH TIME ZONE", Kind.TIMESTAMP),
    ("DATETIME", Kind.TIMESTAMP), ("INTERVAL", Kind.INTERVAL),
    ("BOOLEAN", Kind.BOOLEAN), ("BOOL", Kind.BOOLEAN),
    ("INTEGER[]", Kind.OTHER), ("DECIMAL(10,2)[]", Kind.OTHER), ("VARCHAR(3)[2]", Kind.OTHER),
    ("STRUCT(a INTEGER)", Kind.OTHER), ("MAP(VARCHAR, INTEGER)", Kind.OTHER), ("LIST", Kind.OTHER),
    ("BLOB", Kind.OTHER), ("", Kind.OTHER),
])
def test_kind_of(name, kind):
    assert kind_of(name) is kind


def test_kind_properties():
    assert [k for k in Kind if k.numeric] == [Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT]
    assert [k for k in Kind if k.temporal] == [Kind.DATE, Kind.TIMESTAMP]
    assert Kind.STRING.numeric is False and Kind.STRING.temporal is False


# ---------------------------------------------------------------- types: engine ranges

@pytest.mark.parametrize("name,low,high", [
    ("TINYINT", -128, 127), ("SMALLINT", -32768, 32767), ("INTEGER", -2**31, 2**31 - 1),
    ("INT", -2**31, 2**31 - 1), ("BIGINT", -2.0**63, 2.0**63), ("HUGEINT", -2.0**127, 2.0**127),
    ("UTINYINT", 0, 255), ("USMALLINT", 0, 65535), ("UINTEGER", 0, 2**32 - 1), ("UBIGINT", 0, 2.0**64),
    ("UHUGEINT", 0, 2.0**128), (" tinyint ", -128, 127),
    ("DECIMAL(10,2)", -1e8, 1e8), ("DECIMAL(10, 2)", -1e8, 1e8), ("NUMERIC(5,1)", -1e4, 1e4),
    ("DECIMAL(4)", -1e4, 1e4), ("DECIMAL(3,3)", -1.0, 1.0), ("DECIMAL", -1e15, 1e15), ("numeric", -1e15, 1e15),
])
def test_engine_range(name, low, high):
    r = engine_range(name)
    assert (r.low, r.high) == (low, high)
    assert type(r) is Range


@pytest.mark.parametrize("name", ["DOUBLE", "FLOAT", "VARCHAR", "DATE", "TIMESTAMP", "INTEGER[]", "BOOLEAN", ""])
def test_engine_range_none(name):
    assert engine_range(name) is None


# ---------------------------------------------------------------- types: Range

def R(a, b):
    return Range(a, b)


def test_range_validity():
    assert R(1, 1) == Range(1.0, 1.0)
    for a, b in [(2, 1), (math.nan, 1), (1, math.nan), (math.nan, math.nan), (math.inf, -math.inf)]:
        with pytest.raises(ValueError):
            Range(a, b)


def test_range_arithmetic():
    assert R(1, 2) + R(10, 20) == R(11, 22)
    assert R(1, 2) - R(10, 30) == R(-29, -8)
    assert R(2, 3) * R(4, 5) == R(8, 15)
    assert R(-2, 3) * R(4, 5) == R(-10, 15)
    assert R(-2, -1) * R(-5, 4) == R(-8, 10)
    assert R(2, 4) * R(0.5, 1) == R(1, 4)
    assert R(0, 0) * R(1, math.inf) == R(0, 0)  # 0 * inf: the zero bound wins
    assert R(0, 1) * UNBOUNDED == UNBOUNDED
    assert R(2, 3) * R(0, math.inf) == R(0, math.inf)
    assert -R(1, 5) == R(-5, -1)
    assert R(1, 2).hull(R(-3, 0)) == R(-3, 2)
    assert R(-3, 0).hull(R(1, 2)) == R(-3, 2)


def test_range_intersect():
    assert R(0, 10).intersect(R(5, 20)) == R(5, 10)
    assert R(5, 20).intersect(R(0, 10)) == R(5, 10)
    assert R(1, 2).intersect(R(2, 3)) == R(2, 2)
    assert R(1, 2).intersect(R(3, 4)) == R(1, 2)  # disjoint: unchanged


def test_range_abs():
    assert R(2, 5).abs() == R(2, 5)
    assert R(0.5, 2).abs() == R(0.5, 2)
    assert R(-5, -2).abs() == R(2, 5)
    assert R(-5, 0.5).abs() == R(0, 5)
    assert R(-5, 0).abs() == R(0, 5)
    assert R(-2, 7).abs() == R(0, 7)
    assert R(-7, 2).abs() == R(0, 7)


def test_range_finite_and_unbounded():
    assert R(-1, 1).finite is True
    assert R(-math.inf, 1).finite is False
    assert R(1, math.inf).finite is False
    assert (UNBOUNDED.low, UNBOUNDED.high) == (-math.inf, math.inf)


def test_typed():
    t = Typed(Kind.STRING)
    assert (t.range, t.copies, t.width, t.aggregate) == (None, 0, None, False)
    u = t.with_(copies=3, aggregate=True)
    assert u == Typed(Kind.STRING, copies=3, aggregate=True)
    assert t.copies == 0
    assert Typed(Kind.INTEGER, R(0, 1)).with_(kind=Kind.DECIMAL) == Typed(Kind.DECIMAL, R(0, 1))
    assert BOOLEAN == Typed(Kind.BOOLEAN) and NULL == Typed(Kind.NULL)


def test_typed_not_deep_copied():
    t = Typed(Kind.INTEGER, R(0, 1))
    assert copy.deepcopy(t) is t
    node = exp.column("a")
    node.meta["typed"] = t
    assert node.copy().meta["typed"] is t


# ---------------------------------------------------------------- allowed

def test_limits():
    assert allowed.LIKE_MAX_PERCENT == 4
    assert allowed.MAX_STRING_COPIES == 8
    assert allowed.MAX_INTERVAL_DAYS == 36_525
    assert DATE_PARTS < EXTRACT_PARTS
    assert {"dow", "doy", "epoch", "isoyear", "year", "century"} <= EXTRACT_PARTS
    assert "epoch" not in DATE_PARTS


@pytest.mark.parametrize("sql,name", [
    ("a + b", "+"), ("a - b", "-"), ("a * b", "*"), ("a = b", "="), ("a <> b", "<>"), ("a || b", "||"),
    ("-a", "unary -"), ("a LIKE 'x'", "LIKE"), ("a AND b", "AND"), ("NOT a", "NOT"),
    ("setseed(1)", "setseed"), ("MyFunc(1)", "myfunc"), ("random()", "random"), ("abs(a)", "abs"),
    ("a", "COLUMN"), ("'a'", "LITERAL"),
])
def test_function_name(sql, name):
    assert function_name(expr(sql)) == name


# ---------------------------------------------------------------- checks: LIKE patterns

@pytest.mark.parametrize("pattern", ["", "abc", "%", "%a%b%c%", "%%%%", "a_b", "_", "a_%", "%_", "__%__"])
def test_pattern_allowed(pattern):
    assert check_pattern(pattern) is None


@pytest.mark.parametrize("pattern", ["%%%%%", "%a%b%c%d%", "%_%", "_%%", "%%_", "a%b_c%"])
def test_pattern_refused(pattern):
    refused("expr.pattern", check_pattern, pattern)


# ---------------------------------------------------------------- checks: date parts

@pytest.mark.parametrize("part", sorted(DATE_PARTS))
def test_date_part_each(part):
    for node in (exp.Var(this=part.upper()), exp.Identifier(this=part), exp.Literal.string(part.title())):
        assert date_part(node, DATE_PARTS, "date_trunc") == part


def test_date_part_forms():
    assert date_part(expr("extract(dow FROM d)").this, EXTRACT_PARTS, "extract") == "dow"
    assert date_part(expr("date_trunc('Month', d)").args["unit"], DATE_PARTS, "date_trunc") == "month"
    for node in (exp.Var(this="dow"), exp.Literal.string("epoch"), exp.Literal.string("yearz"),
                 exp.Literal.number(1), exp.Literal(this="year", is_string=False), exp.column("year"), None,
                 expr("'year' || ''")):
        e = refused("expr.date_part", date_part, node, DATE_PARTS, "date_trunc")
        assert "century, day, decade" in str(e)


# ---------------------------------------------------------------- checks: intervals

@pytest.mark.parametrize("text,days", [
    ("1 microsecond", 1 / 86_400_000_000), ("1 millisecond", 1 / 86_400_000), ("1 second", 1 / 86_400),
    ("1 minute", 1 / 1440), ("1 hour", 1 / 24), ("1 day", 1), ("1 week", 7), ("1 month", 30.44),
    ("1 year", 365.25), ("1 decade", 3652.5), ("1 century", 36525), ("3 days", 3), ("90 min", 90 / 1440),
    ("2 mins", 2 / 1440), ("-2 hours", 2 / 24), ("+1 day", 1), ("1.5 days", 1.5), ("  1 DAY  ", 1),
    ("1 day 12 hours", 1.5), ("1 year -1 day", 366.25), ("1day", 1), ("100 years", 36525), ("0 days", 0),
])
def test_interval_days(text, days):
    assert interval_days(text) == pytest.approx(days, rel=1e-12, abs=0)


def test_interval_limit():
    assert interval_days("36525 days") == 36525
    assert interval_days("1 century") == 36525
    refused("expr.interval", interval_days, "36526 days")
    refused("expr.interval", interval_days, "100 years 1 second")
    refused("expr.interval", interval_days, "101 years")


@pytest.mark.parametrize("text", ["", "   ", "day", "1", "1 fortnight", "1 days x", "one day", "1 day,", "1 ms",
                                  "1 sec", "1 d"])
def test_interval_garbage(text):
    refused("expr.interval", interval_days, text)


def test_whole_number():
    assert whole_number(exp.Literal.number(5)) == 5
    assert whole_number(expr("-5")) == -5
    assert whole_number(expr("- -7")) == 7
    assert whole_number(expr("0")) == 0
    for node in (expr("1.5"), expr("'5'"), expr("-'5'"), expr("-a"), expr("a"), expr("1 + 1")):
        assert whole_number(node) is None


# ---------------------------------------------------------------- checks: literal moments

@pytest.mark.parametrize("text,kind", [
    ("2024-02-29", "date"), (" 0001-01-01 ", "date"), ("9999-12-31", "date"),
    ("2024-01-01 10:00:00", "timestamp"), ("2024-01-01T10:00:00.5", "timestamp"), ("2024-01-01", "timestamp"),
])
def test_literal_moment_ok(text, kind):
    assert literal_moment(text, kind) is None


@pytest.mark.parametrize("text,kind", [
    ("2023-02-29", "date"), ("0000-01-01", "date"), ("10000-01-01", "date"), ("garbage", "date"),
    ("2024-01-01 10:00:00", "date"), ("0000-01-01 00:00:00", "timestamp"), ("10000-01-01 00:00", "timestamp"),
    ("x", "timestamp"), ("2024-01-01 25:00", "timestamp"),
])
def test_literal_moment_refused(text, kind):
    e = refused("expr.type", literal_moment, text, kind)
    assert e.__cause__ is None and e.__suppress_context__


# ---------------------------------------------------------------- checks: window frames

def frame(sql):
    return sqlglot.parse_one(f"SELECT sum(x) OVER (ORDER BY y {sql}) FROM t", dialect="postgres").find(exp.WindowSpec)


@pytest.mark.parametrize("sql,args", [
    ("ROWS BETWEEN 3 PRECEDING AND CURRENT ROW",
     {"kind": "ROWS", "start": 3, "start_side": "PRECEDING", "end": "CURRENT ROW"}),
    ("RANGE BETWEEN UNBOUNDED PRECEDING AND 2 FOLLOWING",
     {"kind": "RANGE", "start": "UNBOUNDED", "start_side": "PRECEDING", "end": 2, "end_side": "FOLLOWING"}),
    ("ROWS UNBOUNDED PRECEDING", {"kind": "ROWS", "start": "UNBOUNDED", "start_side": "PRECEDING"}),
    ("ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING",
     {"kind": "ROWS", "start": "CURRENT ROW", "end": "UNBOUNDED", "end_side": "FOLLOWING"}),
    ("ROWS BETWEEN 1000000 PRECEDING AND 0 FOLLOWING",
     {"kind": "ROWS", "start": 1_000_000, "start_side": "PRECEDING", "end": 0, "end_side": "FOLLOWING"}),
])
def test_window_spec(sql, args):
    out = window_spec(frame(sql))
    got = {k: (int(v.this) if isinstance(v, exp.Literal) else v) for k, v in out.args.items() if v is not None}
    assert got == args
    for key in ("start", "end"):
        if isinstance(out.args.get(key), exp.Literal):
            assert out.args[key].is_int


def test_window_spec_lowercase_and_none():
    assert window_spec(None) is None
    spec = exp.WindowSpec(kind="rows", start="unbounded", start_side="preceding", end="current row")
    assert window_spec(spec).args == {"kind": "ROWS", "start": "UNBOUNDED", "start_side": "PRECEDING",
                                      "end": "CURRENT ROW"}
    assert window_spec(exp.WindowSpec()).args == {"kind": None}


@pytest.mark.parametrize("spec", [
    frame("GROUPS BETWEEN 1 PRECEDING AND 1 FOLLOWING"),
    frame("ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW"),
    frame("ROWS BETWEEN y PRECEDING AND 1 FOLLOWING"),
    frame("ROWS BETWEEN 1000001 PRECEDING AND CURRENT ROW"),
    frame("ROWS BETWEEN CURRENT ROW AND 1.5 FOLLOWING"),
    frame("ROWS BETWEEN CURRENT ROW AND '1' FOLLOWING"),
    exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="BACKWARDS"),
    exp.WindowSpec(kind="ROWS", start="CURRENT ROW", end="UNBOUNDED", end_side="SIDEWAYS"),
    exp.WindowSpec(kind="ROWS", start="FIRST"),
    exp.WindowSpec(kind="ROWS", start=exp.column("x")),
])
def test_window_spec_refused(spec):
    refused("bind.unsupported", window_spec, spec)


# ---------------------------------------------------------------- checks: only / refuse_unknown

def test_only():
    node = exp.Literal(this="x", is_string=True, a=None, b=False, c=[], d="")
    assert only(node, "this", "is_string") is None
    assert only(exp.Literal(this="x", is_string=False), "this") is None
    e = refused("bind.unsupported", only, exp.Literal(this="x", is_string=True, a=1, b=exp.column("c")), "this")
    assert str(e) == "LITERAL with is_string, a, b is not supported"
    assert e.hint == "rewrite the statement with plainer SQL"
    refused("bind.unsupported", only, exp.Literal(this="x", is_string=True, b=True), "this", "is_string")


@pytest.mark.parametrize("node,rule", [
    (exp.Window(this=exp.column("x")), "query.window_function"),
    (exp.Rollup(), "query.grouping_sets"), (exp.Cube(), "query.grouping_sets"),
    (exp.Values(), "query.row_generator"), (exp.Unnest(), "query.row_generator"),
    (exp.Lateral(), "query.lateral"), (exp.Placeholder(), "query.unbound_parameter"),
    (exp.Lambda(), "query.lambda"),
    (expr("setseed(0.5)"), "function.not_allowed"), (expr("random()"), "function.not_allowed"),
    (expr("abs(a)"), "function.not_allowed"),
    (expr("a SIMILAR TO 'x'"), "expr.pattern"), (expr("regexp_matches(a, 'x')"), "function.not_allowed"),
    (exp.Glob(this=exp.column("a"), expression=exp.Literal.string("x")), "expr.pattern"),
    (expr("x[1]"), "bind.row_reference"), (exp.Dot(this=exp.column("a"), expression=exp.to_identifier("b")),
                                            "bind.row_reference"),
    (exp.Tuple(expressions=[exp.column("a")]), "bind.row_reference"),
    (exp.Star(), "bind.row_reference"),
    (expr("a"), "bind.unsupported"), (expr("a + b"), "bind.unsupported"), (expr("1"), "bind.unsupported"),
])
def test_refuse_unknown(node, rule):
    refused(rule, refuse_unknown, node)


@pytest.mark.parametrize("node", [
    expr("a ~ 'x'"), exp.RegexpILike(this=exp.column("a"), expression=exp.Literal.string("x")),
    exp.RegexpExtract(this=exp.column("a"), expression=exp.Literal.string("x")), exp.Struct(),
])
def test_refuse_unknown_func_subclasses(node):
    # RegexpLike/RegexpILike/RegexpExtract/Struct are sqlglot Func subclasses, so today the
    # Func branch answers (function.not_allowed) before the expr.pattern / bind.row_reference
    # branches meant for them; either rule refuses.
    with pytest.raises(Refused) as info:
        refuse_unknown(node)
    assert info.value.rule in ("function.not_allowed", "expr.pattern", "bind.row_reference")


def test_refuse_unknown_messages():
    assert str(refused("query.window_function", refuse_unknown, exp.Window())) == "window functions are not allowed"
    e = refused("function.not_allowed", refuse_unknown, expr("setseed(1)"))
    assert str(e) == "function setseed() is not allowed"
    assert str(refused("bind.unsupported", refuse_unknown, expr("a"))) == "COLUMN is not supported"
    long = exp.Dot(this=exp.column("a" * 70), expression=exp.to_identifier("b"))
    assert str(refused("bind.row_reference", refuse_unknown, long)) == "a" * 60 + " is not a column"
    assert str(refused("bind.row_reference", refuse_unknown, expr("x[1]"))) == "x[1] is not a column"
