"""Arithmetic that no row's value can make fail.

DuckDB raises on integer overflow (in the operands' own width: a TINYINT plus
100 overflows at 127), on DECIMAL precision overflow, and on dates pushed out
of range; put behind a predicate on one row, such an error tells whether that
row exists. So each operation is typed here from the declared ranges of its
operands (measure bounds, a column's engine type, literals) and generated in a
type its result provably fits:

- integers: computed as they are when the result fits the narrowest operand's
  type, else with both operands cast to BIGINT or HUGEINT (one step wider for
  `//` and `%`, whose MIN // -1 overflows), else in DOUBLE;
- DECIMAL: computed in DOUBLE (it gives inf, never an error; inf is released
  as NULL);
- dates and timestamps: shifted only by literal intervals of at most 100 years
  or by whole days of a declared range that small, from a value guarded to the
  years 1 to 9999 (guard_moment), so a stored date near the end of DuckDB's
  range becomes NULL instead of an error.

Nothing here relies on DuckDB's try(): its fallback re-evaluates a vector row by
row when one row fails, which costs milliseconds per failing row (a timing
signal), and it cannot hold an aggregate or stop errors DuckDB raises while
planning from a column's statistics.
"""

from __future__ import annotations

import math

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan.allowed import MAX_INTERVAL_DAYS, function_name
from gateway.plan.types import NULL, UNBOUNDED, Kind, Range, Typed

# What each width holds, as floats with a margin: 2**63 - 1 rounds to 2**63 in a float, so a
# bound at the very edge is taken as not fitting, and the next width is used.
_MARGIN = 1 - 2.0 ** -40
INTEGER_WIDTHS = (("INTEGER", Range(-(2.0 ** 31), 2.0 ** 31 - 1)),
                  ("BIGINT", Range(-(2.0 ** 63) * _MARGIN, 2.0 ** 63 * _MARGIN)),
                  ("HUGEINT", Range(-(2.0 ** 127) * _MARGIN, 2.0 ** 127 * _MARGIN)))
_INT64 = INTEGER_WIDTHS[1][1]
SAFE_SUM_MAGNITUDE = 2.0 ** 62  # values below it sum without overflow in DuckDB's 128-bit SUM, at any row count
ORDER = (Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT)


def typed(node: exp.Expression) -> Typed:
    return node.meta["typed"]


def mark(node: exp.Expression, annotation: Typed) -> exp.Expression:
    node.meta["typed"] = annotation
    return node


def cast(node: exp.Expression, type_name: str, annotation: Typed) -> exp.Expression:
    """An explicit conversion that cannot fail for the values `node` can take."""
    return mark(exp.TryCast(this=node, to=exp.DataType.build(type_name)), annotation)


def arithmetic(node: exp.Expression, left: exp.Expression, right: exp.Expression) -> exp.Expression:
    """`node`'s operation over resolved operands, generated so it cannot raise."""
    a, b = typed(left), typed(right)
    flags = {k: node.args[k] for k in ("typed", "safe") if node.args.get(k) is not None}
    kind = type(node)
    aggregate = a.aggregate or b.aggregate
    if Kind.NULL in (a.kind, b.kind):
        other = b if a.kind is Kind.NULL else a
        return mark(kind(this=left, expression=right, **flags),
                    Typed(other.kind, other.range, width=other.width, aggregate=aggregate))
    if a.kind.numeric and b.kind.numeric:
        if isinstance(node, exp.Div) or Kind.FLOAT in (a.kind, b.kind) or Kind.DECIMAL in (a.kind, b.kind):
            # `/` divides in floating point in DuckDB; DECIMAL goes there too: inf, never an error
            left, right = (as_double(o) for o in (left, right))
            result = Typed(Kind.FLOAT, _range(node, a.range, b.range), aggregate=aggregate)
            return mark(kind(this=left, expression=right, **flags), result)
        return _integers(node, left, right, flags, aggregate)
    return _temporal(node, left, right, aggregate)


def negate(node: exp.Expression, value: exp.Expression) -> exp.Expression:
    """-x and abs(x): the smallest integer of a type has no negative in that type."""
    annotation = typed(value)
    if annotation.kind is Kind.NULL:
        return mark(type(node)(this=value), NULL)
    if annotation.kind is Kind.INTERVAL and isinstance(node, exp.Neg):
        return mark(exp.Neg(this=value), annotation)
    if not annotation.kind.numeric:
        raise Refused(f"{function_name(node)} takes a number, not {annotation.kind.value}", rule="expr.type")
    if isinstance(value, exp.Literal) and annotation.range is not None:  # -10 is a number, not an operation
        text = value.this[1:] if value.this.startswith("-") else "-" + value.this
        low = -annotation.range.high if isinstance(node, exp.Neg) else abs(annotation.range.high)
        return mark(exp.Literal.number(text if isinstance(node, exp.Neg) else value.this.lstrip("-")),
                    annotation.with_(range=Range(low, low)))
    if annotation.kind is not Kind.INTEGER:
        value = as_double(value)
        result = -annotation.range if annotation.range and isinstance(node, exp.Neg) else (
            annotation.range.abs() if annotation.range else None)
        return mark(type(node)(this=value), Typed(Kind.FLOAT, result, aggregate=annotation.aggregate))
    value_range = annotation.range or UNBOUNDED
    span = value_range.hull(-value_range)
    result = -value_range if isinstance(node, exp.Neg) else value_range.abs()
    name, width = _width(span, wider=False)
    if name is None:
        return mark(type(node)(this=as_double(value)), Typed(Kind.FLOAT, result, aggregate=annotation.aggregate))
    plain = annotation.width is not None and _inside(span, annotation.width) and _inside(span, INTEGER_WIDTHS[0][1])
    if plain:  # DuckDB negates in the value's own type, which holds the result
        width = annotation.width
    else:
        value = cast(value, name, annotation.with_(width=width))
    return mark(type(node)(this=value), Typed(Kind.INTEGER, result, width=width, aggregate=annotation.aggregate))


def summable(value: exp.Expression) -> exp.Expression:
    """The argument of SUM, AVG or a quantile, in a type whose total cannot overflow:
    DuckDB sums integers and DECIMALs in 128 bits, enough below 2**62 per value."""
    annotation = typed(value)
    if annotation.kind not in (Kind.INTEGER, Kind.DECIMAL):
        return value
    magnitude = annotation.range
    if magnitude is not None and magnitude.finite and max(abs(magnitude.low), abs(magnitude.high)) < SAFE_SUM_MAGNITUDE:
        return value
    return as_double(value)


def _integers(node, left, right, flags, aggregate) -> exp.Expression:
    a, b = typed(left), typed(right)
    divides = isinstance(node, (exp.IntDiv, exp.Mod))
    range_a, range_b = a.range or UNBOUNDED, b.range or UNBOUNDED
    result = _range(node, range_a, range_b)
    span = range_a.hull(range_b).hull(result)
    name, width = _width(span, wider=divides)
    narrowest = _narrowest(a, b) or INTEGER_WIDTHS[0][1]  # literals alone are planned as INTEGER
    if narrowest is not None and not divides and _inside(span, narrowest) and _inside(span, INTEGER_WIDTHS[0][1]):
        return mark(type(node)(this=left, expression=right, **flags),
                    Typed(Kind.INTEGER, result, width=narrowest, aggregate=aggregate))
    if name is None:
        left, right = as_double(left), as_double(right)
        return mark(type(node)(this=left, expression=right, **flags), Typed(Kind.FLOAT, result, aggregate=aggregate))
    left = cast(left, name, a.with_(width=width))
    right = cast(right, name, b.with_(width=width))
    return mark(type(node)(this=left, expression=right, **flags),
                Typed(Kind.INTEGER, result, width=width, aggregate=aggregate))


def _temporal(node, left, right, aggregate) -> exp.Expression:
    a, b = typed(left), typed(right)
    if aggregate:
        raise Refused("date arithmetic over an aggregate is not supported", rule="expr.type",
                      hint="shift the values before they are aggregated")
    kind = type(node)
    if kind in (exp.Add, exp.Sub):
        if a.kind.temporal and b.kind is Kind.INTERVAL or (kind is exp.Add and a.kind is Kind.INTERVAL
                                                             and b.kind.temporal):
            left, right = _literal_interval(left), _literal_interval(right)
            return mark(kind(this=guard_moment(left), expression=guard_moment(right)), Typed(Kind.TIMESTAMP))
        if a.kind is Kind.DATE and b.kind is Kind.INTEGER or (kind is exp.Add and a.kind is Kind.INTEGER
                                                             and b.kind is Kind.DATE):
            days = b if b.kind is Kind.INTEGER else a
            if days.range is None or max(abs(days.range.low), abs(days.range.high)) > MAX_INTERVAL_DAYS:
                raise Refused("a date moves by at most 36,525 days (100 years), known when the statement is "
                              "planned", rule="expr.interval", hint="add a literal number of days or an INTERVAL")
            left, right = (cast(o, "INTEGER", typed(o)) if typed(o).kind is Kind.INTEGER else guard_moment(o)
                           for o in (left, right))
            return mark(kind(this=left, expression=right), Typed(Kind.DATE))
        if kind is exp.Sub and a.kind is b.kind is Kind.DATE:  # whole days between years 1 and 9999
            return mark(kind(this=guard_moment(left), expression=guard_moment(right)),
                        Typed(Kind.INTEGER, Range(-4e6, 4e6), width=_INT64))
        if kind is exp.Sub and a.kind.temporal and b.kind.temporal:  # infinite timestamps cannot be subtracted
            return mark(kind(this=guard_moment(left), expression=guard_moment(right)), Typed(Kind.INTERVAL))
        if a.kind is b.kind is Kind.INTERVAL:
            return mark(kind(this=_literal_interval(left), expression=_literal_interval(right)),
                        Typed(Kind.INTERVAL))
    if Kind.INTERVAL in (a.kind, b.kind):
        raise Refused("intervals are added or subtracted as literals, not computed", rule="expr.interval",
                      hint="write the interval you mean, e.g. INTERVAL '3 months'")
    raise Refused(f"{function_name(node)} does not apply to {a.kind.value} and {b.kind.value}", rule="expr.type")


def guard_moment(node: exp.Expression) -> exp.Expression:
    """A date or timestamp as NULL outside the years 1 to 9999 (infinities included):
    what shifts it by at most 100 years, truncates it or compares it with the other
    temporal type then stays inside DuckDB's range. Literals were checked already."""
    annotation = typed(node)
    if not annotation.kind.temporal or not any(isinstance(n, (exp.Column, exp.AggFunc)) for n in node.walk()):
        return node
    name, last = ("DATE", "9999-12-31") if annotation.kind is Kind.DATE else ("TIMESTAMP", "9999-12-31 23:59:59")
    low = exp.Cast(this=exp.Literal.string("0001-01-01"), to=exp.DataType.build(name))
    high = exp.Cast(this=exp.Literal.string(last), to=exp.DataType.build(name))
    inside = exp.Between(this=node.copy(), low=low, high=high)
    return mark(exp.Case(ifs=[exp.If(this=inside, true=node)]), annotation)


def _literal_interval(node: exp.Expression) -> exp.Expression:
    """Intervals are literals (at most 100 years, checked when resolved), never computed:
    an interval column's extreme fields could overflow a shift."""
    if typed(node).kind is Kind.INTERVAL and any(isinstance(n, (exp.Column, exp.AggFunc)) for n in node.walk()):
        raise Refused("intervals are added or subtracted as literals, not read from data", rule="expr.interval",
                      hint="write the interval you mean, e.g. INTERVAL '3 months'")
    return node


def _range(node: exp.Expression, a: Range | None, b: Range | None) -> Range | None:
    if a is None or b is None:
        return None
    if isinstance(node, exp.Add):
        return a + b
    if isinstance(node, exp.Sub):
        return a - b
    if isinstance(node, exp.Mul):
        return a * b
    if isinstance(node, (exp.IntDiv, exp.Mod)):  # never larger in magnitude than the dividend
        largest = max(abs(a.low), abs(a.high))
        return Range(-largest, largest)
    return None  # `/` can approach any value near a zero divisor


def _width(span: Range, wider: bool) -> tuple[str | None, Range | None]:
    """The narrowest of BIGINT and HUGEINT holding `span` (one step wider if asked);
    (None, None) when only floating point does."""
    fitting = [i for i, (_, width) in enumerate(INTEGER_WIDTHS) if _inside(span, width)]
    if not fitting:
        return None, None
    index = max(fitting[0], 1) + (1 if wider else 0)
    if index >= len(INTEGER_WIDTHS):
        return None, None
    return INTEGER_WIDTHS[index]


def _narrowest(a: Typed, b: Typed) -> Range | None:
    """The range of the narrowest engine type among non-literal operands: DuckDB computes
    in the widest operand type, and a literal takes the other side's type."""
    widths = [t.width for t in (a, b) if t.width is not None]
    if not widths:
        return None
    return min(widths, key=lambda w: w.high)


def _inside(span: Range, width: Range) -> bool:
    return math.isfinite(span.low) and math.isfinite(span.high) and width.low <= span.low and span.high <= width.high


def as_double(node: exp.Expression) -> exp.Expression:
    annotation = typed(node)
    if annotation.kind in (Kind.FLOAT, Kind.NULL):
        return node
    return cast(node, "DOUBLE", annotation.with_(kind=Kind.FLOAT, width=None))
