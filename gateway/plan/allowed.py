"""What statements may contain, as allow-lists of sqlglot node types and of
argument values, with the limits that keep a row's value from deciding whether a
statement fails or how long it runs.

Anything not listed is refused: unknown functions, functions that raise on
demand or carry state (error, setseed, random, nextval, current_setting,
getenv), row generators and table functions never reach the engine because
they were never allowed, not because somebody remembered to deny them.
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.plan.types import Kind
from gateway.policy.aggregates import BY_NODE

# Aggregates by policy name, from their registry; COUNT(DISTINCT x) is checked separately.
AGGREGATES: dict[type[exp.Expression], str] = {node: kind.name for node, kind in BY_NODE.items()}

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
    exp.Lambda: ("query.lambda", "lambda functions are not allowed"),
}

# date_trunc parts, and the parts EXTRACT / date_part may take: literals only, so a
# wrong part fails when the statement is planned, not when a row is evaluated.
DATE_PARTS = frozenset({"year", "quarter", "month", "week", "day", "hour", "minute", "second", "decade", "century"})
EXTRACT_PARTS = DATE_PARTS | frozenset({"dow", "dayofweek", "doy", "dayofyear", "isodow", "isoyear", "epoch",
                                        "millisecond", "microsecond"})

# Cast targets, by sqlglot type name; casts run as TRY_CAST.
TYPE_NAMES: dict[str, Kind] = {
    **{name: Kind.INTEGER for name in ("TINYINT", "SMALLINT", "INT", "BIGINT", "HUGEINT")},
    **{name: Kind.DECIMAL for name in ("DECIMAL", "NUMERIC")},
    **{name: Kind.FLOAT for name in ("DOUBLE", "FLOAT", "REAL")},
    **{name: Kind.STRING for name in ("VARCHAR", "TEXT", "CHAR", "NVARCHAR", "NCHAR", "BPCHAR")},
    "DATE": Kind.DATE,
    "TIMESTAMP": Kind.TIMESTAMP,
    "DATETIME": Kind.TIMESTAMP,
    "BOOLEAN": Kind.BOOLEAN,
    "INTERVAL": Kind.INTERVAL,
    # opaque to every operator here; drivers' type tests cast literals to them
    **{name: Kind.OTHER for name in ("UUID", "JSON", "JSONB")},
}

LIKE_MAX_PERCENT = 4  # '%' in a pattern without '_'; with '_', at most one (bench numbers: docs/analysts.md)
MAX_STRING_COPIES = 8  # copies of row text one expression may concatenate
MAX_INTERVAL_DAYS = 36_525  # 100 years: date arithmetic stays far from DuckDB's range


OPERATOR_NAMES = {exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=",
                  exp.NullSafeEQ: "IS NOT DISTINCT FROM", exp.NullSafeNEQ: "IS DISTINCT FROM", exp.Add: "+",
                  exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.IntDiv: "//", exp.Mod: "%", exp.DPipe: "||",
                  exp.Neg: "unary -", exp.Between: "BETWEEN", exp.In: "IN", exp.Case: "CASE", exp.If: "CASE",
                  exp.Like: "LIKE", exp.ILike: "ILIKE", exp.And: "AND", exp.Or: "OR", exp.Not: "NOT", exp.Is: "IS"}


# PostgreSQL spellings of functions sqlglot parses into its own nodes, whose names
# (str_to_date, unix_to_time) the analyst never wrote.
SPELLINGS = {exp.StrToDate: "to_date", exp.StrToTime: "to_timestamp", exp.UnixToTime: "to_timestamp",
             exp.TsOrDsToDate: "to_date", exp.TimeToStr: "to_char", exp.StrPosition: "strpos",
             exp.ArrayAgg: "array_agg", exp.GroupConcat: "string_agg", exp.RegexpLike: "regexp_like",
             exp.CurrentTimestamp: "now", exp.Rand: "random"}


def function_name(node: exp.Expression) -> str:
    """The name an analyst wrote, for messages (e.g. 'setseed', 'random', '+')."""
    if type(node) in OPERATOR_NAMES:
        return OPERATOR_NAMES[type(node)]
    if type(node) in SPELLINGS:
        return SPELLINGS[type(node)]
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return node.key.upper()
