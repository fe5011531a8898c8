"""What SQL may contain, as an allow-list of sqlglot node types.

Anything not listed is refused: unknown functions, functions that raise on
demand or carry state (error, setseed, random, nextval, current_setting,
getenv), row generators and table functions never reach the engine because
they were never allowed, not because somebody remembered to deny them.
"""

from __future__ import annotations

from sqlglot import expressions as exp

# Aggregates by policy name; COUNT(DISTINCT x) is checked separately.
AGGREGATES: dict[type[exp.Expression], str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Median: "median",
    exp.Quantile: "median",  # percentile_cont(q) WITHIN GROUP (ORDER BY x), normalised by bind
}

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

# Constructs refused with their own reason, for a message the analyst can act on.
NAMED_REFUSALS: dict[type[exp.Expression], tuple[str, str]] = {
    exp.Window: ("query.window_function", "window functions are not allowed"),
    exp.GroupingSets: ("query.grouping_sets", "GROUPING SETS are not allowed"),
    exp.Rollup: ("query.grouping_sets", "ROLLUP is not allowed"),
    exp.Cube: ("query.grouping_sets", "CUBE is not allowed"),
    exp.Values: ("query.row_generator", "VALUES lists are not allowed"),
    exp.Explode: ("query.row_generator", "UNNEST is not allowed"),
    exp.Unnest: ("query.row_generator", "UNNEST is not allowed"),
    exp.ExplodingGenerateSeries: ("query.row_generator", "generate_series is not allowed"),
    exp.GenerateSeries: ("query.row_generator", "generate_series is not allowed"),
    exp.Lateral: ("query.lateral", "LATERAL is not allowed"),
    exp.Parameter: ("query.unbound_parameter", "a parameter was left unbound"),
    exp.Placeholder: ("query.unbound_parameter", "a parameter was left unbound"),
}


def function_name(node: exp.Expression) -> str:
    """The name an analyst wrote, for messages (e.g. 'setseed', 'random')."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return type(node).__name__
