"""Public time buckets: `GROUP BY date_trunc('week', shown_at)` as public group keys.

A date or timestamp dimension may declare a public range and the periods
analysts may group it by (policy `buckets: {from, to, by}`). A group key that is
one of those periods of that column is then enumerable from the policy alone,
like a dimension's declared `values`: every period of the range is a candidate
group, released with noise whether or not rows fall in it, and nothing is
selected privately, so no threshold (and no delta) applies.

Recognised as a bucket (after the resolver, which normalises aliases and
ordinals to the expression itself and guards temporal values it truncates):
- date_trunc('day' | 'week' | 'month', column), the unit declared for the column;
- the column itself, for a DATE column that declares `day`.
Anything else (another unit, a cast, arithmetic, another column) is not a public
key: its groups are selected privately, as before.

Rows outside the declared range never reach a bucketed result: the rows stage
keeps only rows whose raw column lies inside the range, before contribution
bounding, so they use up no unit's group slots either. A week or month at an
edge of the range is released with only the range's days in it.

The WHERE clause's plain comparisons of the same column with constants narrow
the released periods to those they can match (public: text and policy only).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan.types import Kind
from gateway.policy.model import BucketUnit, Role, TimeBuckets

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class PublicKeys:
    """The enumerable values of one group key, and the rows-stage condition that
    keeps exactly the rows whose key can be one of them."""

    values: tuple
    condition: exp.Expression


@dataclass(frozen=True)
class Interval:
    """Moments (datetimes; a DATE is its midnight) between low and high; None: unbounded."""

    low: datetime.datetime | None = None
    low_open: bool = False
    high: datetime.datetime | None = None
    high_open: bool = False

    def meet(self, other: "Interval") -> "Interval":
        low, low_open = self.low, self.low_open
        if other.low is not None and (low is None or other.low > low or (other.low == low and other.low_open)):
            low, low_open = other.low, other.low_open
        high, high_open = self.high, self.high_open
        if other.high is not None and (high is None or other.high < high or (other.high == high and other.high_open)):
            high, high_open = other.high, other.high_open
        return Interval(low, low_open, high, high_open)

    @property
    def empty(self) -> bool:
        if self.low is None or self.high is None:
            return False
        return self.low > self.high or (self.low == self.high and (self.low_open or self.high_open))

    def days(self) -> tuple[datetime.date | None, datetime.date | None]:
        """The first and last calendar day holding a moment of the interval."""
        first = self.low.date() if self.low is not None else None
        last = None
        if self.high is not None:
            at_midnight = self.high.time() == datetime.time()
            last = (self.high - _DAY).date() if self.high_open and at_midnight else self.high.date()
        return first, last


def declared_range(buckets: TimeBuckets, kind: Kind) -> Interval:
    """The moments a column's declared range holds: whole days from `from` to `to`."""
    start = datetime.datetime.combine(buckets.start, datetime.time())
    end = datetime.datetime.combine(buckets.end, datetime.time())
    if kind is Kind.DATE:
        return Interval(start, False, end, False)
    return Interval(start, False, end + _DAY, True)


def time_column(node: exp.Expression) -> exp.Column | None:
    """The column a temporal expression is, as is: the column itself, or the resolver's
    guard around it (CASE WHEN col BETWEEN <first> AND <last> THEN col END: the column,
    or NULL outside years 1 to 9999)."""
    if isinstance(node, exp.Column):
        return node
    if isinstance(node, exp.Case) and node.args.get("this") is None and node.args.get("default") is None:
        ifs = node.args.get("ifs") or []
        if len(ifs) == 1 and isinstance(ifs[0].this, exp.Between):
            column = ifs[0].args.get("true")
            if isinstance(column, exp.Column) and ifs[0].this.this == column:
                return column
    return None


def bucketed(column: exp.Column) -> TimeBuckets | None:
    """The buckets a column of the query declares, if it is a declared dimension with them."""
    declared = column.meta.get("declared")
    spec = declared.spec if declared is not None else None
    if spec is None or spec.role is not Role.DIMENSION:
        return None
    return spec.buckets


def column_kind(column: exp.Column) -> Kind | None:
    typed = column.meta.get("typed")
    return typed.kind if typed is not None else None


def same_column(a: exp.Column, b: exp.Column) -> bool:
    return (a.table, a.name) == (b.table, b.name)


def bucket_of(expression: exp.Expression) -> tuple[exp.Column, BucketUnit, bool] | None:
    """(column, unit, keys are DATEs) when `expression` is a period declared for its
    column; None otherwise. date_trunc gives TIMESTAMPs in DuckDB, a DATE column DATEs."""
    if isinstance(expression, (exp.TimestampTrunc, exp.DateTrunc)):
        if any(value for key, value in expression.args.items() if key not in ("this", "unit")):
            return None  # a time zone, or anything else that would move the periods
        unit = expression.args.get("unit")
        name = unit.name.lower() if isinstance(unit, (exp.Var, exp.Literal)) else None
        column = time_column(expression.this)
        if column is None or name not in BucketUnit._value2member_map_:
            return None
        wanted, as_dates = BucketUnit(name), False
    elif isinstance(expression, exp.Column) and column_kind(expression) is Kind.DATE:
        column, wanted, as_dates = expression, BucketUnit.DAY, True
    else:
        return None
    buckets = bucketed(column)
    if buckets is None or wanted not in buckets.units or column_kind(column) not in (Kind.DATE, Kind.TIMESTAMP):
        return None
    return column, wanted, as_dates


def public_buckets(tree: exp.Select, expression: exp.Expression) -> PublicKeys | None:
    """The periods a group key releases, when it is a declared bucket; None otherwise."""
    found = bucket_of(expression)
    if found is None:
        return None
    column, unit, as_dates = found
    buckets, kind = bucketed(column), column_kind(column)
    declared = declared_range(buckets, kind)
    reach = declared.meet(where_interval(tree, column))
    if reach.empty:
        # public_filters refused such a statement already, unless it is only being
        # described with stand-in parameters: then any periods do, nothing runs
        reach = declared
    first, last = reach.days()
    starts = buckets.starts(unit, first, last)
    values = starts if as_dates else tuple(datetime.datetime.combine(d, datetime.time()) for d in starts)
    return PublicKeys(values, _inside(column, declared, kind))


def _inside(column: exp.Column, declared: Interval, kind: Kind) -> exp.Expression:
    """The raw column inside the declared range (NULL and everything outside: false)."""
    if kind is Kind.DATE:
        return exp.Between(this=column.copy(), low=_moment(declared.low, kind), high=_moment(declared.high, kind))
    return exp.and_(exp.GTE(this=column.copy(), expression=_moment(declared.low, kind)),
                    exp.LT(this=column.copy(), expression=_moment(declared.high, kind)))


def _moment(moment: datetime.datetime, kind: Kind) -> exp.Expression:
    if kind is Kind.DATE:
        return exp.cast(exp.Literal.string(moment.date().isoformat()), exp.DataType.build("DATE"))
    return exp.cast(exp.Literal.string(moment.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))


def outside_range(column: exp.Column, buckets: TimeBuckets) -> Refused:
    declared = column.meta.get("declared")
    name = f"{declared.table}.{declared.column}" if declared is not None else column.name
    return Refused(
        f"the filter on {name} matches nothing inside its declared range {buckets.start} to {buckets.end}, "
        "so the policy alone says the answer is empty; nothing was charged",
        rule="filter.outside_range",
        hint=f"filter {name} within {buckets.start} .. {buckets.end}",
    )


# -- what a WHERE clause says of one column ------------------------------------------


def conjuncts(condition: exp.Expression | None) -> list[exp.Expression]:
    """The top-level AND terms of a condition, parentheses removed."""
    if condition is None:
        return []
    condition = condition.unnest() if isinstance(condition, exp.Paren) else condition
    if isinstance(condition, exp.And):
        return conjuncts(condition.this) + conjuncts(condition.expression)
    return [condition]


def where_interval(tree: exp.Select, column: exp.Column) -> Interval:
    """The moments of `column` the WHERE clause's top-level terms let through."""
    where = tree.args.get("where")
    return conjunction_interval(conjuncts(where.this if where is not None else None), column)


def conjunction_interval(terms: list[exp.Expression], column: exp.Column) -> Interval:
    reach = Interval()
    for term in terms:
        found = comparison_interval(term, column)
        if found is not None:
            reach = reach.meet(found)
    return reach


_FLIPPED = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT, exp.LTE: exp.GTE, exp.EQ: exp.EQ}


def comparison_interval(term: exp.Expression, column: exp.Column) -> Interval | None:
    """The moments a plain comparison of `column` with constants lets through; None
    when the term is anything else (it then narrows nothing)."""
    if isinstance(term, exp.Between):
        side = time_column(term.this)
        low, high = constant_moment(term.args.get("low")), constant_moment(term.args.get("high"))
        if side is None or not same_column(side, column) or low is None or high is None:
            return None
        return Interval(low, False, high, False)
    kind = type(term)
    if kind not in _FLIPPED:
        return None
    left, right = term.this, term.expression
    side, moment = time_column(left), constant_moment(right)
    if side is None or moment is None:
        side, moment, kind = time_column(right), constant_moment(left), _FLIPPED[kind]
    if side is None or moment is None or not same_column(side, column):
        return None
    if kind is exp.EQ:
        return Interval(moment, False, moment, False)
    if kind in (exp.GT, exp.GTE):
        return Interval(low=moment, low_open=kind is exp.GT)
    return Interval(high=moment, high_open=kind is exp.LT)


def constant_moment(node: exp.Expression | None) -> datetime.datetime | None:
    """A date or timestamp constant as the resolver writes it: CAST('...' AS DATE|TIMESTAMP)."""
    if not isinstance(node, (exp.Cast, exp.TryCast)) or not isinstance(node.this, exp.Literal):
        return None
    if not node.this.is_string or not node.to.is_type(exp.DataType.Type.DATE, exp.DataType.Type.TIMESTAMP):
        return None
    try:
        moment = datetime.datetime.fromisoformat(node.this.this.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return None
    if node.to.is_type(exp.DataType.Type.DATE):
        moment = datetime.datetime.combine(moment.date(), datetime.time())  # DuckDB drops a time part
    return moment
