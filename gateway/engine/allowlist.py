"""What SQL may contain, as an allow-list of sqlglot node types.

Anything not listed is refused: unknown functions, functions that raise on
demand or carry state (error, setseed, random, nextval, current_setting,
getenv), row generators and table functions never reach the engine because
they were never allowed, not because somebody remembered to deny them.
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.plan.allowed import AGGREGATES, NAMED_REFUSALS, function_name  # noqa: F401 (authorise reads them here)

# Scalar functions that cannot raise on a value (casts become TRY_CAST) and keep no state.
SCALAR_FUNCTIONS: frozenset[type[exp.Expression]] = frozenset(
    {
        exp.Abs,
        exp.Round,
        exp.Floor,
        exp.Ceil,
        exp.Greatest,
        exp.Least,
        exp.Coalesce,
        exp.Nullif,
        exp.If,
        exp.Case,
        exp.Lower,
        exp.Upper,
        exp.Length,
        exp.Substring,
        exp.Trim,
        exp.Concat,
        exp.DPipe,
        exp.DateTrunc,
        exp.TimestampTrunc,
        exp.Extract,
        exp.Year,
        exp.Month,
        exp.Day,
        exp.Cast,
        exp.TryCast,
        exp.CurrentDate,
    }
)

OPERATORS: frozenset[type[exp.Expression]] = frozenset(
    {
        exp.And,
        exp.Or,
        exp.Not,
        exp.Paren,
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.NullSafeEQ,
        exp.NullSafeNEQ,
        exp.Is,
        exp.In,
        exp.Between,
        exp.Like,
        exp.ILike,
        exp.Add,
        exp.Sub,
        exp.Mul,
        exp.Div,
        exp.IntDiv,
        exp.Mod,
        exp.Neg,
    }
)

# Leaves and clause nodes of the statement shapes the gateway understands.
STRUCTURE: frozenset[type[exp.Expression]] = frozenset(
    {
        exp.Select,
        exp.From,
        exp.Join,
        exp.Where,
        exp.Group,
        exp.Having,
        exp.Order,
        exp.Ordered,
        exp.Limit,
        exp.Offset,
        exp.Fetch,
        exp.Alias,
        exp.TableAlias,
        exp.Identifier,
        exp.Column,
        exp.Table,
        exp.Tuple,
        exp.Distinct,
        exp.Filter,
        exp.Literal,
        exp.Boolean,
        exp.Null,
        exp.Star,
        exp.Interval,
        exp.Escape,
        exp.DataType,
        exp.DataTypeParam,  # DECIMAL(18, 3)
        exp.Var,  # unit names in EXTRACT(year FROM ...) and intervals
        exp.When,
        exp.Whens,
        exp.Subquery,
        exp.With,
        exp.CTE,
        exp.Union,
        exp.Intersect,
        exp.Except,
    }
)

ALLOWED: frozenset[type[exp.Expression]] = (
    frozenset(AGGREGATES) | SCALAR_FUNCTIONS | OPERATORS | STRUCTURE
)

