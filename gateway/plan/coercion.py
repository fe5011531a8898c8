"""Which values may meet in one comparison, CASE, COALESCE, GREATEST, LEAST or
NULLIF, and how they are made to meet without a conversion that could fail on a
row: DuckDB converts text to a number or date per row (and fails on a row that
does not convert), a DATE to a TIMESTAMP per row (and fails past the year
294,247), a HUGEINT to a DECIMAL (and fails past 10**35).

So text literals are converted here, once, when the statement is resolved;
dates compared with timestamps are guarded to the years 1 to 9999; large
integers meet decimals in floating point; anything else must be of one kind.
"""

from __future__ import annotations

import math

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan.allowed import function_name
from gateway.plan.arithmetic import as_double as _as_double
from gateway.plan.arithmetic import cast, guard_moment, mark, typed
from gateway.plan.checks import interval_days, literal_moment
from gateway.plan.types import NULL, Kind, Range, Typed

EXACT_IN_DECIMAL = 1e15  # integers beyond it may not convert to the DECIMAL they meet


def compared(where: exp.Expression, left: exp.Expression, right: exp.Expression):
    """`left` and `right` made comparable without a conversion per row; refused otherwise."""
    left, right = _literal_for(right, left), _literal_for(left, right)
    a, b = typed(left), typed(right)
    if Kind.NULL in (a.kind, b.kind) or a.kind is b.kind:
        return left, right
    if a.kind.numeric and b.kind.numeric:
        if _large_integer(a) or _large_integer(b):
            return _as_double(left), _as_double(right)
        return left, right
    if a.kind.temporal and b.kind.temporal:
        return guard_moment(left), guard_moment(right)
    raise Refused(f"cannot compare {a.kind.value} with {b.kind.value} in {function_name(where)}", rule="expr.type",
                  hint="cast one side explicitly")


def common(where: exp.Expression, parts: list[exp.Expression]) -> Typed:
    """The type of CASE, COALESCE, GREATEST, LEAST and NULLIF over `parts`: one kind, or
    numbers that convert exactly (DuckDB would convert per row otherwise)."""
    kinds = [typed(p) for p in parts if typed(p).kind is not Kind.NULL]
    if not kinds:
        return NULL
    first = kinds[0]
    for other in kinds[1:]:
        compatible = other.kind is first.kind or (other.kind.numeric and first.kind.numeric)
        if not compatible:
            raise Refused(f"{function_name(where)} mixes {first.kind.value} and {other.kind.value}", rule="expr.type",
                          hint="cast the branches to one type")
    numeric = [k for k in kinds if k.kind.numeric]
    kind = first.kind
    if numeric:
        order = (Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT)
        kind = max((k.kind for k in numeric), key=order.index)
        if kind is Kind.DECIMAL and any(_large_integer(k) for k in numeric):
            raise Refused(f"{function_name(where)} mixes large integers with decimals", rule="expr.type",
                          hint="cast the branches to DOUBLE")
    value = None
    if numeric and all(k.range is not None for k in kinds):
        value = kinds[0].range
        for k in kinds[1:]:
            value = value.hull(k.range)
    widths = [k.width for k in kinds if k.width is not None]
    width = max(widths, key=lambda w: w.high) if kind is Kind.INTEGER and widths else None
    return Typed(kind, value, copies=max(k.copies for k in kinds), width=width)


def _literal_for(other: exp.Expression, value: exp.Expression) -> exp.Expression:
    """A text literal compared with another kind, converted now: a number literal, a
    checked date or timestamp, a boolean or an interval. Refused if it does not convert."""
    target = typed(other).kind
    if not (isinstance(value, exp.Literal) and value.is_string) or target in (Kind.STRING, Kind.NULL):
        return value
    text = value.this.strip()
    if target.numeric:
        return number_literal(text.lstrip("+"))
    if target.temporal:
        literal_moment(text, target.value)
        return cast(exp.Literal.string(text), "DATE" if target is Kind.DATE else "TIMESTAMP", Typed(target))
    if target is Kind.BOOLEAN and text.lower() in ("true", "false", "t", "f"):
        return mark(exp.Boolean(this=text.lower() in ("true", "t")), Typed(Kind.BOOLEAN))
    if target is Kind.INTERVAL:
        days = interval_days(text)
        return mark(exp.Interval(this=exp.Literal.string(text)), Typed(Kind.INTERVAL, Range(-days, days)))
    raise Refused(f"cannot compare text with {target.value}", rule="expr.type", hint="cast one side explicitly")


def number_literal(text: str) -> exp.Expression:
    """A finite number, typed: an integer or a decimal, its value its own range (a literal
    has no engine width: DuckDB gives it the type of what it meets)."""
    try:
        number = float(text)
    except ValueError:
        raise Refused(f"{text!r} is not a number", rule="expr.type") from None
    if not math.isfinite(number):
        raise Refused(f"{text} is not a finite number", rule="expr.type")
    kind = Kind.INTEGER if text.lstrip("-").isdigit() else Kind.DECIMAL
    return mark(exp.Literal.number(text), Typed(kind, Range(number, number)))


def _large_integer(annotation: Typed) -> bool:
    if annotation.kind is not Kind.INTEGER:
        return False
    span = annotation.range
    return span is None or not span.finite or max(abs(span.low), abs(span.high)) > EXACT_IN_DECIMAL
