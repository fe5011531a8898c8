"""Unit tests of gateway/plan/arithmetic.py and gateway/plan/coercion.py on typed nodes built
by hand (no engine): the generated SQL, the result's annotation and the refusals' rule ids,
plus a DuckDB check that the generated SQL of extreme cases does not raise."""

from __future__ import annotations

import math

import duckdb
import pytest
from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan import arithmetic as ar
from gateway.plan import coercion as co
from gateway.plan.types import NULL, Kind, Range, Typed, engine_range

I8, I32, I64, I128 = (engine_range(t) for t in ("TINYINT", "INTEGER", "BIGINT", "HUGEINT"))
W32, W64, W128 = (w for _, w in ar.INTEGER_WIDTHS)
INF = Range(-math.inf, math.inf)
GUARD_D = "CASE WHEN {0} BETWEEN CAST('0001-01-01' AS DATE) AND CAST('9999-12-31' AS DATE) THEN {0} END"
GUARD_TS = ("CASE WHEN {0} BETWEEN CAST('0001-01-01' AS TIMESTAMP) AND CAST('9999-12-31 23:59:59' AS TIMESTAMP) "
            "THEN {0} END")


def col(name, kind, range_=None, width=None, aggregate=False, copies=0):
    node = exp.column(name, table="t", quoted=True)
    node.meta["typed"] = Typed(kind, range_, copies=copies, width=width, aggregate=aggregate)
    return node


def q(name):
    return f'"t"."{name}"'


def lit(text):
    return co.number_literal(text)


def raw_lit(text, kind=Kind.INTEGER):
    node = exp.Literal(this=text, is_string=False)
    node.meta["typed"] = Typed(kind, Range(float(text), float(text)))
    return node


def interval(text="1 day", days=1.0):
    return ar.mark(exp.Interval(this=exp.Literal.string(text)), Typed(Kind.INTERVAL, Range(-days, days)))


def date_lit(text="2020-01-01", kind=Kind.DATE):
    return ar.cast(exp.Literal.string(text), "DATE" if kind is Kind.DATE else "TIMESTAMP", Typed(kind))


def text(value):
    node = exp.Literal.string(value)
    node.meta["typed"] = Typed(Kind.STRING)
    return node


def sql(node):
    return node.sql(dialect="duckdb")


def t(node):
    return node.meta["typed"]


def refused(rule, fn, *args):
    with pytest.raises(Refused) as info:
        fn(*args)
    assert info.value.rule == rule
    return info.value


def op(kind, left, right, **flags):
    return ar.arithmetic(kind(**flags), left, right)


def test_plain_when_the_span_fits_the_narrowest_operand():
    node = op(exp.Add, col("a", Kind.INTEGER, Range(0, 10), I8), lit("5"))
    assert sql(node) == '"t"."a" + 5'
    assert t(node) == Typed(Kind.INTEGER, Range(5, 15), width=I8)
    node = op(exp.Sub, col("a", Kind.INTEGER, Range(0, 10), I32), col("b", Kind.INTEGER, Range(1, 2), I8))
    assert sql(node) == '"t"."a" - "t"."b"'
    assert t(node) == Typed(Kind.INTEGER, Range(-2, 9), width=I8)
    node = op(exp.Mul, col("a", Kind.INTEGER, Range(-3, 4), I8), col("b", Kind.INTEGER, Range(-5, 2), I32))
    assert t(node) == Typed(Kind.INTEGER, Range(-20, 15), width=I8)
    node = op(exp.Mul, col("a", Kind.INTEGER, Range(-3, 4), I32), col("b", Kind.INTEGER, Range(-5, 2), I8))
    assert t(node).width == I8


def test_literals_alone_are_planned_as_integer():
    node = op(exp.Add, lit("2"), lit("3"))
    assert sql(node) == "2 + 3"
    assert t(node) == Typed(Kind.INTEGER, Range(5, 5), width=W32)
    node = op(exp.Add, lit("3000000000"), lit("1"))
    assert sql(node) == "TRY_CAST(3000000000 AS BIGINT) + TRY_CAST(1 AS BIGINT)"
    assert t(node) == Typed(Kind.INTEGER, Range(3000000001, 3000000001), width=W64)
    node = op(exp.Add, lit("-2147483648"), lit("0"))  # the INT32 edge, inside
    assert t(node).width == W32
    assert op(exp.Add, lit("2147483647"), lit("0")).meta["typed"].width == W32
    assert t(op(exp.Add, lit("-2147483649"), lit("0"))).width == W64
    assert t(op(exp.Add, lit("2147483648"), lit("0"))).width == W64


def test_int32_edges_against_an_int32_column():
    node = op(exp.Add, col("a", Kind.INTEGER, I32, I32), lit("0"))
    assert sql(node) == '"t"."a" + 0'
    node = op(exp.Add, col("a", Kind.INTEGER, I32, I32), lit("1"))
    assert sql(node) == 'TRY_CAST("t"."a" AS BIGINT) + TRY_CAST(1 AS BIGINT)'
    assert t(node) == Typed(Kind.INTEGER, Range(-(2.0 ** 31) + 1, 2.0 ** 31), width=W64)
    node = op(exp.Sub, col("a", Kind.INTEGER, I32, I32), lit("1"))
    assert t(node).width == W64


def test_fits_the_operand_but_not_int32_is_cast():
    node = op(exp.Add, col("a", Kind.INTEGER, Range(0, 3e9), I64), lit("1"))
    assert sql(node) == 'TRY_CAST("t"."a" AS BIGINT) + TRY_CAST(1 AS BIGINT)'
    cast_left = node.this
    assert t(cast_left) == Typed(Kind.INTEGER, Range(0, 3e9), width=W64)
    assert t(node.expression) == Typed(Kind.INTEGER, Range(1, 1), width=W64)


def test_overflowing_the_narrowest_goes_to_bigint_then_hugeint_then_double():
    node = op(exp.Add, col("a", Kind.INTEGER, I8, I8), lit("100"))
    assert sql(node) == 'TRY_CAST("t"."a" AS BIGINT) + TRY_CAST(100 AS BIGINT)'
    assert t(node) == Typed(Kind.INTEGER, Range(-28, 227), width=W64)
    node = op(exp.Mul, col("a", Kind.INTEGER, Range(-1e10, 1e10), I64), col("b", Kind.INTEGER, Range(-1e10, 1e10), I64))
    assert sql(node) == 'TRY_CAST("t"."a" AS INT128) * TRY_CAST("t"."b" AS INT128)'
    assert t(node) == Typed(Kind.INTEGER, Range(-1e20, 1e20), width=W128)
    node = op(exp.Mul, col("a", Kind.INTEGER, I128, I128), lit("2"))
    assert sql(node) == 'TRY_CAST("t"."a" AS DOUBLE) * TRY_CAST(2 AS DOUBLE)'
    assert t(node) == Typed(Kind.FLOAT, Range(-(2.0 ** 128), 2.0 ** 128))
    assert t(node.this) == Typed(Kind.FLOAT, I128)


def test_bigint_and_hugeint_edges_with_their_margin():
    inside, outside = 2.0 ** 63 * (1 - 1.5 * 2.0 ** -40), 2.0 ** 63 * (1 - 0.25 * 2.0 ** -40)
    for value, width in ((inside, W64), (-inside, W64), (outside, W128), (-outside, W128)):
        node = op(exp.Add, col("a", Kind.INTEGER, Range(min(value, 0), max(value, 0)), I128), lit("0"))
        assert t(node).width == width, value
    assert t(op(exp.Add, col("a", Kind.INTEGER, I64, I64), lit("0"))).width == W128  # 2**63 - 1 is 2**63
    inside, outside = 2.0 ** 127 * (1 - 1.5 * 2.0 ** -40), 2.0 ** 127 * (1 - 0.25 * 2.0 ** -40)
    for value, kind in ((inside, Kind.INTEGER), (-inside, Kind.INTEGER), (outside, Kind.FLOAT),
                        (-outside, Kind.FLOAT)):
        node = op(exp.Add, col("a", Kind.INTEGER, Range(min(value, 0), max(value, 0)), I128), lit("0"))
        assert t(node).kind is kind, value
    assert W32 == Range(-(2.0 ** 31), 2.0 ** 31 - 1)
    assert 0 < 1 - ar._MARGIN <= 2.0 ** -30  # a tiny margin below the edge, no wider
    assert W64 == Range(-(2.0 ** 63) * ar._MARGIN, 2.0 ** 63 * ar._MARGIN)


def test_unknown_integer_range_is_computed_in_double():
    node = op(exp.Add, col("a", Kind.INTEGER), lit("1"))
    assert sql(node) == 'TRY_CAST("t"."a" AS DOUBLE) + TRY_CAST(1 AS DOUBLE)'
    assert t(node) == Typed(Kind.FLOAT, INF)
    node = op(exp.Add, lit("1"), col("a", Kind.INTEGER))
    assert t(node) == Typed(Kind.FLOAT, INF)


def test_int_div_and_mod_go_one_step_wider():
    node = op(exp.IntDiv, col("a", Kind.INTEGER, Range(0, 10), I32), lit("3"))
    assert sql(node) == 'TRY_CAST("t"."a" AS INT128) // TRY_CAST(3 AS INT128)'
    assert t(node) == Typed(Kind.INTEGER, Range(-10, 10), width=W128)
    node = op(exp.Mod, col("a", Kind.INTEGER, Range(-20, 10), I32), col("b", Kind.INTEGER, Range(1, 100), I32))
    assert sql(node) == 'TRY_CAST("t"."a" AS INT128) % TRY_CAST("t"."b" AS INT128)'
    assert t(node) == Typed(Kind.INTEGER, Range(-20, 20), width=W128)
    node = op(exp.Mod, col("a", Kind.INTEGER, I64, I64), lit("-1"))
    assert sql(node) == 'TRY_CAST("t"."a" AS DOUBLE) % TRY_CAST(-1 AS DOUBLE)'
    assert t(node).kind is Kind.FLOAT


def test_division_decimal_and_float_are_computed_in_double():
    node = op(exp.Div, col("a", Kind.INTEGER, Range(0, 10), I32), lit("4"), typed=True, safe=True)
    assert sql(node) == 'TRY_CAST("t"."a" AS DOUBLE) / NULLIF(TRY_CAST(4 AS DOUBLE), 0)'  # safe division
    assert sql(op(exp.Div, lit("1"), lit("4"))) == "TRY_CAST(1 AS DOUBLE) / TRY_CAST(4 AS DOUBLE)"
    assert node.args["typed"] is True and node.args["safe"] is True
    assert t(node) == Typed(Kind.FLOAT, None)
    node = op(exp.Add, col("a", Kind.DECIMAL, Range(0, 10)), lit("2"))
    assert sql(node) == 'TRY_CAST("t"."a" AS DOUBLE) + TRY_CAST(2 AS DOUBLE)'
    assert t(node) == Typed(Kind.FLOAT, Range(2, 12))
    node = op(exp.Mul, lit("3"), col("a", Kind.DECIMAL, Range(0, 10)))
    assert t(node) == Typed(Kind.FLOAT, Range(0, 30))
    node = op(exp.Sub, col("f", Kind.FLOAT, Range(0, 1)), col("a", Kind.INTEGER, Range(0, 10), I32, aggregate=True))
    assert sql(node) == '"t"."f" - TRY_CAST("t"."a" AS DOUBLE)'
    assert t(node) == Typed(Kind.FLOAT, Range(-10, 1), aggregate=True)
    node = op(exp.Sub, col("a", Kind.INTEGER, Range(0, 10), I32, aggregate=True), col("f", Kind.FLOAT))
    assert sql(node) == 'TRY_CAST("t"."a" AS DOUBLE) - "t"."f"'
    assert t(node) == Typed(Kind.FLOAT, None, aggregate=True)
    node = op(exp.Add, col("a", Kind.INTEGER, Range(0, 1), I32), lit("1.5"))
    assert t(node).kind is Kind.FLOAT
    node = op(exp.Mod, col("a", Kind.INTEGER, Range(0, 1), I32), col("d", Kind.DECIMAL, Range(1, 2)))
    assert t(node) == Typed(Kind.FLOAT, Range(-1, 1))
    node = op(exp.Div, col("a", Kind.INTEGER, Range(0, 1), I32), ar.mark(exp.Null(), NULL))
    assert sql(node) == '"t"."a" / NULL'


def test_aggregate_flag_and_flags_carry_through():
    node = op(exp.Add, col("a", Kind.INTEGER, Range(0, 10), I32, aggregate=True), lit("1"))
    assert t(node).aggregate is True
    node = op(exp.Add, lit("1"), col("a", Kind.INTEGER, Range(0, 10), I32, aggregate=True))
    assert t(node).aggregate is True and sql(node) == '1 + "t"."a"'
    node = op(exp.Add, lit("1"), col("a", Kind.INTEGER, I64, I64, aggregate=True))
    assert t(node) == Typed(Kind.INTEGER, Range(1 - 2.0 ** 63, 2.0 ** 63), width=W128, aggregate=True)
    node = op(exp.Add, lit("1"), col("a", Kind.INTEGER, aggregate=True))
    assert t(node).aggregate is True and t(node).kind is Kind.FLOAT


def test_null_operand_takes_the_other_side():
    null = ar.mark(exp.Null(), NULL)
    node = op(exp.Add, null, col("a", Kind.INTEGER, Range(0, 10), I8, aggregate=True))
    assert sql(node) == 'NULL + "t"."a"'
    assert t(node) == Typed(Kind.INTEGER, Range(0, 10), width=I8, aggregate=True)
    node = op(exp.Div, col("d", Kind.DATE), ar.mark(exp.Null(), NULL), typed=True, safe=True)
    assert sql(node) == '"t"."d" / NULLIF(NULL, 0)'
    assert t(node) == Typed(Kind.DATE) and node.args["typed"] is True and node.args["safe"] is True
    node = op(exp.Add, col("d", Kind.DECIMAL, Range(1, 2)), ar.mark(exp.Null(), NULL))
    assert t(node) == Typed(Kind.DECIMAL, Range(1, 2))


def test_negate_literals():
    node = ar.negate(exp.Neg(), lit("5"))
    assert sql(node) == "-5" and t(node) == Typed(Kind.INTEGER, Range(-5, -5))
    node = ar.negate(exp.Neg(), raw_lit("-5"))
    assert sql(node) == "5" and t(node) == Typed(Kind.INTEGER, Range(5, 5))
    node = ar.negate(exp.Abs(), raw_lit("-5"))
    assert sql(node) == "5" and t(node) == Typed(Kind.INTEGER, Range(5, 5))
    node = ar.negate(exp.Abs(), raw_lit("2.5", Kind.DECIMAL))
    assert sql(node) == "2.5" and t(node) == Typed(Kind.DECIMAL, Range(2.5, 2.5))
    node = ar.negate(exp.Neg(), raw_lit("2.5", Kind.DECIMAL))
    assert sql(node) == "-2.5" and t(node).range == Range(-2.5, -2.5)


def test_negate_null_interval_and_refusals():
    node = ar.negate(exp.Neg(), ar.mark(exp.Null(), NULL))
    assert sql(node) == "-NULL" and t(node) is NULL
    node = ar.negate(exp.Abs(), ar.mark(exp.Null(), NULL))
    assert sql(node) == "ABS(NULL)" and t(node) is NULL
    node = ar.negate(exp.Neg(), interval("3 days", 3))
    assert sql(node) == "-INTERVAL '3 days'" and t(node) == Typed(Kind.INTERVAL, Range(-3, 3))
    refused("expr.type", ar.negate, exp.Abs(), interval())
    refused("expr.type", ar.negate, exp.Neg(), col("s", Kind.STRING))
    refused("expr.type", ar.negate, exp.Neg(), col("d", Kind.DATE))


def test_negate_decimal_and_float_in_double():
    node = ar.negate(exp.Neg(), col("d", Kind.DECIMAL, Range(-2, 3), aggregate=True))
    assert sql(node) == '-TRY_CAST("t"."d" AS DOUBLE)'
    assert t(node) == Typed(Kind.FLOAT, Range(-3, 2), aggregate=True)
    node = ar.negate(exp.Abs(), col("d", Kind.DECIMAL, Range(-2, 3)))
    assert sql(node) == 'ABS(TRY_CAST("t"."d" AS DOUBLE))'
    assert t(node) == Typed(Kind.FLOAT, Range(0, 3))
    node = ar.negate(exp.Neg(), col("f", Kind.FLOAT))
    assert sql(node) == '-"t"."f"' and t(node) == Typed(Kind.FLOAT, None)
    assert t(ar.negate(exp.Abs(), col("f", Kind.FLOAT))) == Typed(Kind.FLOAT, None)


def test_negate_integers():
    node = ar.negate(exp.Neg(), col("a", Kind.INTEGER, Range(0, 10), I8))
    assert sql(node) == '-"t"."a"'
    assert t(node) == Typed(Kind.INTEGER, Range(-10, 0), width=I8)  # left in its own type, which holds it
    node = ar.negate(exp.Abs(), col("a", Kind.INTEGER, Range(-10, 3), I8, aggregate=True))
    assert sql(node) == 'ABS("t"."a")'
    assert t(node) == Typed(Kind.INTEGER, Range(0, 10), width=I8, aggregate=True)
    node = ar.negate(exp.Neg(), col("a", Kind.INTEGER, I8, I8))  # -(-128) is not a TINYINT
    assert sql(node) == '-TRY_CAST("t"."a" AS BIGINT)'
    assert t(node.this) == Typed(Kind.INTEGER, I8, width=W64)
    node = ar.negate(exp.Neg(), col("a", Kind.INTEGER, I32, I32))
    assert sql(node) == '-TRY_CAST("t"."a" AS BIGINT)'
    assert sql(ar.negate(exp.Neg(), col("a", Kind.INTEGER, Range(-2147483647, 2147483647), I32))) == '-"t"."a"'
    node = ar.negate(exp.Neg(), col("a", Kind.INTEGER, Range(0, 10)))  # no engine width: cast
    assert sql(node) == '-TRY_CAST("t"."a" AS BIGINT)'
    node = ar.negate(exp.Neg(), col("a", Kind.INTEGER, Range(0, 3e9), I64))  # not INT32
    assert sql(node) == '-TRY_CAST("t"."a" AS BIGINT)'
    node = ar.negate(exp.Abs(), col("a", Kind.INTEGER, I64, I64))
    assert sql(node) == 'ABS(TRY_CAST("t"."a" AS INT128))'
    assert t(node) == Typed(Kind.INTEGER, Range(0, 2.0 ** 63), width=W128)
    node = ar.negate(exp.Neg(), col("a", Kind.INTEGER, I128, I128, aggregate=True))
    assert sql(node) == '-TRY_CAST("t"."a" AS DOUBLE)'
    assert t(node) == Typed(Kind.FLOAT, -I128, aggregate=True)
    node = ar.negate(exp.Abs(), col("a", Kind.INTEGER))
    assert sql(node) == 'ABS(TRY_CAST("t"."a" AS DOUBLE))'
    assert t(node) == Typed(Kind.FLOAT, Range(0, math.inf))


def test_summable():
    for node in (col("f", Kind.FLOAT), col("s", Kind.STRING), col("a", Kind.INTEGER, Range(0, 10), I32),
                 col("d", Kind.DECIMAL, Range(-1e6, 1e6)),
                 col("a", Kind.INTEGER, Range(-(2.0 ** 62) * 0.99, 2.0 ** 62 * 0.99), I64)):
        assert ar.summable(node) is node
    for node in (col("a", Kind.INTEGER, None, I64), col("a", Kind.INTEGER, Range(0, math.inf)),
                 col("a", Kind.INTEGER, Range(-math.inf, 0)),
                 col("a", Kind.INTEGER, Range(0, 2.0 ** 62), I64), col("a", Kind.INTEGER, Range(-(2.0 ** 62), 0), I64),
                 col("d", Kind.DECIMAL, Range(-(2.0 ** 63), 0))):
        out = ar.summable(node)
        assert sql(out) == f'TRY_CAST({q(node.name)} AS DOUBLE)'
        assert t(out).kind is Kind.FLOAT and t(out).width is None


def test_guard_moment():
    node = col("d", Kind.DATE)
    out = ar.guard_moment(node)
    assert sql(out) == GUARD_D.format(q("d")) and t(out) == Typed(Kind.DATE)
    out = ar.guard_moment(col("ts", Kind.TIMESTAMP))
    assert sql(out) == GUARD_TS.format(q("ts")) and t(out) == Typed(Kind.TIMESTAMP)
    agg = ar.mark(exp.Max(this=exp.Literal.string("x")), Typed(Kind.DATE, aggregate=True))
    assert sql(ar.guard_moment(agg)) == GUARD_D.format("MAX('x')")
    for node in (date_lit(), col("a", Kind.INTEGER, Range(0, 1), I32), col("s", Kind.STRING)):
        assert ar.guard_moment(node) is node


def test_date_plus_interval():
    node = op(exp.Add, col("d", Kind.DATE), interval())
    assert sql(node) == GUARD_D.format(q("d")) + " + INTERVAL '1 day'"
    assert t(node) == Typed(Kind.TIMESTAMP)
    node = op(exp.Add, interval(), col("ts", Kind.TIMESTAMP))
    assert sql(node) == "INTERVAL '1 day' + " + GUARD_TS.format(q("ts"))
    node = op(exp.Sub, col("ts", Kind.TIMESTAMP), interval())
    assert sql(node) == GUARD_TS.format(q("ts")) + " - INTERVAL '1 day'"
    node = op(exp.Add, date_lit(), interval())
    assert sql(node) == "TRY_CAST('2020-01-01' AS DATE) + INTERVAL '1 day'"
    refused("expr.interval", op, exp.Sub, interval(), col("d", Kind.DATE))
    refused("expr.interval", op, exp.Add, col("d", Kind.DATE), col("i", Kind.INTERVAL))
    refused("expr.interval", op, exp.Add, col("i", Kind.INTERVAL), date_lit())
    max_interval = ar.mark(exp.Max(this=exp.Literal.string("x")), Typed(Kind.INTERVAL))
    refused("expr.interval", op, exp.Add, date_lit(), max_interval)
    refused("expr.interval", op, exp.Mul, col("d", Kind.DATE), interval())
    refused("expr.interval", op, exp.Mul, interval(), lit("2"))


def test_interval_plus_interval():
    node = op(exp.Add, interval(), interval("2 days", 2))
    assert sql(node) == "INTERVAL '1 day' + INTERVAL '2 days'" and t(node) == Typed(Kind.INTERVAL)
    node = op(exp.Sub, interval(), interval("2 days", 2))
    assert sql(node) == "INTERVAL '1 day' - INTERVAL '2 days'"
    refused("expr.interval", op, exp.Sub, interval(), col("i", Kind.INTERVAL))
    refused("expr.interval", op, exp.Add, col("i", Kind.INTERVAL), interval())


def test_date_plus_days():
    node = op(exp.Add, col("d", Kind.DATE), lit("30"))
    assert sql(node) == GUARD_D.format(q("d")) + " + TRY_CAST(30 AS INT)"
    assert t(node) == Typed(Kind.DATE)
    assert t(node.expression) == Typed(Kind.INTEGER, Range(30, 30))
    node = op(exp.Add, col("n", Kind.INTEGER, Range(-36525, 36525), I32), col("d", Kind.DATE))
    assert sql(node) == 'TRY_CAST("t"."n" AS INT) + ' + GUARD_D.format(q("d"))
    node = op(exp.Sub, date_lit(), col("n", Kind.INTEGER, Range(-36525, 0), I64))
    assert sql(node) == "TRY_CAST('2020-01-01' AS DATE) - TRY_CAST(\"t\".\"n\" AS INT)"
    for days in (Range(0, 36526), Range(-36526, 0), None):
        refused("expr.interval", op, exp.Add, col("d", Kind.DATE), col("n", Kind.INTEGER, days, I32))
        refused("expr.interval", op, exp.Add, col("n", Kind.INTEGER, days, I32), col("d", Kind.DATE))
    refused("expr.interval", op, exp.Sub, col("d", Kind.DATE), lit("36526"))
    refused("expr.type", op, exp.Sub, lit("1"), col("d", Kind.DATE))
    refused("expr.type", op, exp.Add, col("ts", Kind.TIMESTAMP), lit("1"))
    refused("expr.type", op, exp.Add, lit("1"), col("ts", Kind.TIMESTAMP))


def test_date_and_timestamp_differences():
    node = op(exp.Sub, col("d", Kind.DATE), col("e", Kind.DATE))
    guarded = "CASE WHEN \"t\".\"{0}\" BETWEEN CAST('0001-01-01' AS DATE) AND CAST('9999-12-31' AS DATE) " \
              "THEN \"t\".\"{0}\" END"
    assert sql(node) == f"{guarded.format('d')} - {guarded.format('e')}"  # years 1-9999: within the range below
    assert t(node) == Typed(Kind.INTEGER, Range(-4e6, 4e6), width=W64)
    node = op(exp.Sub, col("ts", Kind.TIMESTAMP), col("us", Kind.TIMESTAMP))
    assert sql(node) == GUARD_TS.format(q("ts")) + " - " + GUARD_TS.format(q("us"))
    assert t(node) == Typed(Kind.INTERVAL)
    node = op(exp.Sub, col("ts", Kind.TIMESTAMP), col("d", Kind.DATE))
    assert sql(node) == GUARD_TS.format(q("ts")) + " - " + GUARD_D.format(q("d"))
    node = op(exp.Sub, col("d", Kind.DATE), col("ts", Kind.TIMESTAMP))
    assert t(node) == Typed(Kind.INTERVAL)
    refused("expr.type", op, exp.Add, col("d", Kind.DATE), col("e", Kind.DATE))
    refused("expr.type", op, exp.Add, col("ts", Kind.TIMESTAMP), col("d", Kind.DATE))


def test_temporal_refusals():
    error = refused("expr.type", op, exp.Mul, col("d", Kind.DATE), lit("2"))
    assert "*" in str(error)
    refused("expr.type", op, exp.Add, text("a"), lit("1"))
    refused("expr.type", op, exp.Add, col("b", Kind.BOOLEAN), lit("1"))
    refused("expr.type", op, exp.Add, col("d", Kind.DATE, aggregate=True), interval())
    refused("expr.type", op, exp.Sub, col("d", Kind.DATE), col("e", Kind.DATE, aggregate=True))
    refused("expr.type", op, exp.Add, lit("1"), col("s", Kind.STRING, aggregate=True))


def test_number_literal():
    node = lit("42")
    assert sql(node) == "42" and t(node) == Typed(Kind.INTEGER, Range(42, 42))
    assert t(lit("-7")) == Typed(Kind.INTEGER, Range(-7, -7))
    assert t(lit("1.5")) == Typed(Kind.DECIMAL, Range(1.5, 1.5))
    assert t(lit("1e3")) == Typed(Kind.DECIMAL, Range(1000, 1000))
    for bad in ("abc", "inf", "nan", "-inf", ""):
        refused("expr.type", co.number_literal, bad)


def test_compared_same_kind_and_nulls_unchanged():
    pairs = [(col("a", Kind.INTEGER, Range(0, 1), I32), col("b", Kind.INTEGER)),
             (ar.mark(exp.Null(), NULL), col("s", Kind.STRING)), (col("s", Kind.STRING), ar.mark(exp.Null(), NULL)),
             (col("s", Kind.STRING), text("x")), (text("x"), ar.mark(exp.Null(), NULL)),
             (col("a", Kind.INTEGER, Range(0, 1), I32), col("d", Kind.DECIMAL, Range(0, 1))),
             (col("a", Kind.INTEGER, Range(-1e15, 1e15), I64), col("d", Kind.DECIMAL))]
    for left, right in pairs:
        out = co.compared(exp.EQ(), left, right)
        assert out[0] is left and out[1] is right


def test_compared_large_integers_meet_decimals_in_double():
    for left, right in ((col("a", Kind.INTEGER, Range(0, 1e15 + 1), I64), col("d", Kind.DECIMAL)),
                        (col("d", Kind.DECIMAL), col("a", Kind.INTEGER, Range(-1e15 - 2, 0), I64)),
                        (col("d", Kind.DECIMAL), col("a", Kind.INTEGER, None, I64)),
                        (col("a", Kind.INTEGER, Range(0, math.inf)), col("d", Kind.DECIMAL))):
        out = co.compared(exp.LT(), left, right)
        assert [sql(o) for o in out] == [f"TRY_CAST({q(o.name)} AS DOUBLE)" for o in (left, right)]
        assert [t(o).kind for o in out] == [Kind.FLOAT, Kind.FLOAT] and t(out[0]).width is None
    f = col("f", Kind.FLOAT)
    out = co.compared(exp.LT(), f, col("a", Kind.INTEGER, I64, I64))
    assert out[0] is f and sql(out[1]) == 'TRY_CAST("t"."a" AS DOUBLE)'
    assert t(out[1]) == Typed(Kind.FLOAT, I64)


def test_compared_date_with_timestamp_is_guarded():
    out = co.compared(exp.EQ(), col("d", Kind.DATE), col("ts", Kind.TIMESTAMP))
    assert [sql(o) for o in out] == [GUARD_D.format(q("d")), GUARD_TS.format(q("ts"))]
    refused("expr.type", co.compared, exp.EQ(), col("d", Kind.DATE), col("a", Kind.INTEGER, Range(0, 1), I32))
    error = refused("expr.type", co.compared, exp.EQ(), col("s", Kind.STRING), col("a", Kind.INTEGER))
    assert "=" in str(error)


def test_compared_text_literals_are_converted():
    left, right = co.compared(exp.EQ(), col("a", Kind.INTEGER, Range(0, 100), I32), text(" +42 "))
    assert sql(right) == "42" and t(right) == Typed(Kind.INTEGER, Range(42, 42))
    left, right = co.compared(exp.EQ(), text("1.5"), col("a", Kind.DECIMAL))
    assert sql(left) == "1.5" and t(left).kind is Kind.DECIMAL
    left, right = co.compared(exp.EQ(), col("d", Kind.DATE), text(" 2020-02-29 "))
    assert sql(right) == "TRY_CAST('2020-02-29' AS DATE)" and t(right) == Typed(Kind.DATE)
    left, right = co.compared(exp.EQ(), text("2020-02-29 10:00:00"), col("ts", Kind.TIMESTAMP))
    assert sql(left) == "TRY_CAST('2020-02-29 10:00:00' AS TIMESTAMP)" and t(left) == Typed(Kind.TIMESTAMP)
    for value, expected in (("true", "TRUE"), ("T", "TRUE"), ("False", "FALSE"), ("f", "FALSE")):
        left, right = co.compared(exp.EQ(), col("b", Kind.BOOLEAN), text(value))
        assert sql(right) == expected and t(right) == Typed(Kind.BOOLEAN)
    left, right = co.compared(exp.EQ(), col("i", Kind.INTERVAL), text("3 days"))
    assert sql(right) == "INTERVAL '3 days'" and t(right) == Typed(Kind.INTERVAL, Range(-3, 3))


def test_compared_text_literals_that_do_not_convert():
    refused("expr.type", co.compared, exp.EQ(), col("a", Kind.INTEGER), text("abc"))
    refused("expr.type", co.compared, exp.EQ(), text("2020-02-30"), col("d", Kind.DATE))
    refused("expr.type", co.compared, exp.EQ(), col("ts", Kind.TIMESTAMP), text("noon"))
    refused("expr.type", co.compared, exp.EQ(), col("b", Kind.BOOLEAN), text("yes"))
    refused("expr.interval", co.compared, exp.EQ(), col("i", Kind.INTERVAL), text("200 years"))
    refused("expr.type", co.compared, exp.EQ(), col("o", Kind.OTHER), text("x"))
    refused("expr.type", co.compared, exp.EQ(), col("d", Kind.DATE), lit("20200101"))


def test_common():
    assert co.common(exp.Coalesce(), []) is NULL
    assert co.common(exp.Coalesce(), [ar.mark(exp.Null(), NULL)]) is NULL
    a8 = col("a", Kind.INTEGER, Range(0, 10), I8, copies=0)
    a32 = col("b", Kind.INTEGER, Range(-5, 3), I32)
    assert co.common(exp.Coalesce(), [ar.mark(exp.Null(), NULL), a8]) == Typed(Kind.INTEGER, Range(0, 10), width=I8)
    assert co.common(exp.Coalesce(), [a8, a32]) == Typed(Kind.INTEGER, Range(-5, 10), width=I32)
    assert co.common(exp.Coalesce(), [a32, a8, lit("20")]) == Typed(Kind.INTEGER, Range(-5, 20), width=I32)
    assert co.common(exp.Coalesce(), [lit("1"), lit("2")]) == Typed(Kind.INTEGER, Range(1, 2))
    dec = col("d", Kind.DECIMAL, Range(-1, 1))
    assert co.common(exp.Coalesce(), [a8, dec]) == Typed(Kind.DECIMAL, Range(-1, 10))
    assert co.common(exp.Coalesce(), [dec, a8]) == Typed(Kind.DECIMAL, Range(-1, 10))
    assert co.common(exp.Coalesce(), [dec, col("f", Kind.FLOAT), a8]) == Typed(Kind.FLOAT, None)
    big = col("a", Kind.INTEGER, I64, I64)
    assert co.common(exp.Coalesce(), [big, col("f", Kind.FLOAT, Range(0, 1))]) == Typed(Kind.FLOAT, I64)
    assert co.common(exp.Coalesce(), [col("a", Kind.INTEGER, Range(-1e15, 1e15), I64), dec]).kind is Kind.DECIMAL
    refused("expr.type", co.common, exp.Coalesce(), [big, dec])
    refused("expr.type", co.common, exp.Coalesce(), [dec, col("a", Kind.INTEGER)])
    refused("expr.type", co.common, exp.Coalesce(), [a8, col("s", Kind.STRING)])
    refused("expr.type", co.common, exp.Coalesce(), [col("s", Kind.STRING), a8])
    refused("expr.type", co.common, exp.Coalesce(), [col("d", Kind.DATE), col("ts", Kind.TIMESTAMP)])
    strings = [col("s", Kind.STRING, copies=1), col("u", Kind.STRING, copies=3), col("v", Kind.STRING, copies=2)]
    assert co.common(exp.Coalesce(), strings) == Typed(Kind.STRING, copies=3)
    assert co.common(exp.Coalesce(), [interval(), interval("2 days", 2)]) == Typed(Kind.INTERVAL)
    assert co.common(exp.Coalesce(), [a8, col("n", Kind.INTEGER, None, I32)]) == Typed(Kind.INTEGER, None, width=I32)
    assert co.common(exp.Coalesce(), [col("n", Kind.INTEGER), a8]) == Typed(Kind.INTEGER, None, width=I8)


@pytest.fixture(scope="module")
def duck():
    con = duckdb.connect()
    con.execute("""CREATE TABLE t AS SELECT 9223372036854775807::BIGINT AS big, (-9223372036854775807 - 1)::BIGINT
        AS small, 2147483647::INTEGER AS i, (-128)::TINYINT AS ti, 170141183460469231731687303715884105727::HUGEINT
        AS h, 999999999999999.999::DECIMAL(18,3) AS dec, DATE '5881580-07-10' AS d, DATE '2020-01-01' AS e,
        TIMESTAMP 'infinity' AS ts, TIMESTAMP '2020-01-01' AS us""")
    yield con
    con.close()


def test_generated_sql_does_not_raise_in_duckdb(duck):
    big, small = col("big", Kind.INTEGER, I64, I64), col("small", Kind.INTEGER, I64, I64)
    i, ti, h = col("i", Kind.INTEGER, I32, I32), col("ti", Kind.INTEGER, I8, I8), col("h", Kind.INTEGER, I128, I128)
    dec = col("dec", Kind.DECIMAL, engine_range("DECIMAL(18,3)"))
    d, e, ts, us = col("d", Kind.DATE), col("e", Kind.DATE), col("ts", Kind.TIMESTAMP), col("us", Kind.TIMESTAMP)
    expressions = [
        op(exp.Add, big, big), op(exp.Sub, small, big), op(exp.Mul, big, small), op(exp.Mul, i, i),
        op(exp.IntDiv, small, lit("-1")), op(exp.Mod, small, lit("-1")), op(exp.Mul, h, h), op(exp.Add, h, lit("1")),
        op(exp.Add, ti, lit("100")), op(exp.Sub, ti, lit("1")), op(exp.Mul, dec, dec), op(exp.Add, dec, big),
        op(exp.Div, small, lit("0")),
        ar.negate(exp.Neg(), small), ar.negate(exp.Abs(), small), ar.negate(exp.Neg(), ti),
        ar.negate(exp.Abs(), ti), ar.negate(exp.Neg(), h), ar.negate(exp.Neg(), dec),
        ar.summable(big), ar.summable(h),
        op(exp.Add, d, interval("100 years", 36525)), op(exp.Sub, ts, interval("100 years", 36525)),
        op(exp.Add, d, lit("36525")), op(exp.Sub, d, lit("36525")), op(exp.Sub, d, e),
        op(exp.Sub, ts, us), op(exp.Sub, us, d), op(exp.Add, interval(), interval()),
    ]
    for node in expressions:
        duck.execute(f"SELECT {sql(node)} FROM t").fetchall()
    for pair in (co.compared(exp.EQ(), d, ts), co.compared(exp.LT(), big, dec), co.compared(exp.EQ(), h, dec)):
        duck.execute(f"SELECT {sql(pair[0])} < {sql(pair[1])} FROM t").fetchall()
    row = duck.execute(f"SELECT {sql(op(exp.Add, d, interval()))}, {sql(ar.negate(exp.Neg(), small))} FROM t").fetchone()
    assert row == (None, 2 ** 63)
