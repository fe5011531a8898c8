"""A second, independent look at the SQL that will run, after every rewrite.

The resolver generates statements that only read declared tables; this check
does not trust that. It parses the final text again and refuses it unless every
relation is an attached source relation of a table the statement was resolved
to read, or a CTE the statement itself defines, and every function and node is
on the lists below. A refusal here is a bug in the gateway, never the analyst's
doing: it is logged and the statement does not run.
"""

from __future__ import annotations

import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import SqlglotError

from gateway.errors import Refused
from gateway.plan.allowed import AGGREGATES

# Functions the rewrite and the DP bounding SQL add (bookkeeping, keyed hashes, lists).
INTERNAL_FUNCTIONS = frozenset({"hash", "list_slice", "flatten", "len", "quantile_cont", "quantile_disc", "min"})  # list(): ArrayAgg

SAFE_NODES: frozenset[type] = frozenset({
    exp.Select, exp.From, exp.Join, exp.Where, exp.Group, exp.Having, exp.Qualify, exp.Order, exp.Ordered,
    exp.Limit, exp.Offset, exp.Alias, exp.TableAlias, exp.Identifier, exp.Column, exp.Table, exp.Distinct,
    exp.Filter, exp.Literal, exp.Boolean, exp.Null, exp.Star, exp.Interval, exp.DataType, exp.DataTypeParam,
    exp.Var, exp.Subquery, exp.With, exp.CTE, exp.Union, exp.Intersect, exp.Except, exp.Values, exp.Tuple,
    exp.Window, exp.WindowSpec, exp.Paren, exp.Neg, exp.Not, exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE,
    exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike,
    exp.Escape, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.DPipe, exp.Case, exp.If,
    exp.Cast, exp.TryCast, exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least, exp.Abs, exp.Round,
    exp.Floor, exp.Ceil, exp.Lower, exp.Upper, exp.Length, exp.Substring, exp.Trim, exp.Concat,
    exp.DateTrunc, exp.TimestampTrunc, exp.Extract, exp.Year, exp.Month, exp.Day, exp.CurrentDate,
    exp.RowNumber, exp.Rank, exp.DenseRank, exp.Exists, exp.Bracket, exp.Array, exp.Flatten, exp.ArraySlice,
    exp.ArraySize, exp.ArrayAgg, exp.Quantile, exp.Median, exp.PercentileCont, exp.Min, exp.Max,
    *AGGREGATES,
})


def check_generated(sql: str, relations: set[tuple[str, str, str]], models: frozenset[str] = frozenset()) -> None:
    """Refuse `sql` unless it reads only `relations` (catalog, schema, name) and its own
    CTEs and uses only known nodes; `models`: the scoring functions of the clean room's
    models (gateway.plan.scoring). Raises Refused(rule="sql.unverified")."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except SqlglotError:
        _fail("the generated SQL does not parse")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for node in tree.walk():
        kind = type(node)
        if kind is exp.Table:
            _check_relation(node, ctes, relations)
        elif kind is exp.Anonymous:
            if node.name.lower() not in INTERNAL_FUNCTIONS and node.name.lower() not in models:
                _fail(f"function {node.name} in the generated SQL")
        elif kind is exp.Values:
            if any(isinstance(leaf, (exp.Column, exp.Func, exp.Select)) for leaf in node.walk() if leaf is not node):
                _fail("VALUES of anything but literals")
        elif kind not in SAFE_NODES:
            _fail(f"{kind.__name__} in the generated SQL")


def _check_relation(node: exp.Table, ctes: set[str], relations: set[tuple[str, str, str]]) -> None:
    if not isinstance(node.this, exp.Identifier):
        _fail("a table function in the generated SQL")
    if not node.catalog and not node.db and node.name in ctes:
        return
    if (node.catalog, node.db, node.name) in relations:
        return
    _fail(f"relation {node.sql(dialect='duckdb')} is not an attached source the statement may read")


def _fail(reason: str):
    raise Refused(f"internal check failed: {reason}", rule="sql.unverified",
                  hint="this is a gateway bug; the statement did not run and the request id is logged")
