"""The generated DuckDB SQL, written for Spark: done once per statement, at the execution
boundary (gateway/engine/executors.py), after verify has checked the DuckDB text.

sqlglot writes the Spark dialect; this module first rewrites the constructs whose meaning
differs between the two engines, so that Spark computes what DuckDB would, and refuses
(NotOnSpark) anything it does not know to be the same. Spark runs with ANSI mode on: an
overflow raises there, as in DuckDB, instead of wrapping around.

- relations: `"src_x"."schema"."t"` becomes the session's temp view `src_x.schema.t`
  (one identifier; gateway/spark/session.py registers it);
- QUALIFY: Spark resolves it against the output columns only, so the k test's QUALIFY
  becomes an outer query over the grouped one;
- ROW_NUMBER() OVER () needs an ORDER BY in Spark (any order: DuckDB's is arbitrary);
- `/` gives inf or NaN for a zero divisor in DuckDB (released as NULL), an error in Spark;
  `//` and `%` give NULL in DuckDB, an error in Spark: both are guarded;
- SUM of integers is 128-bit in DuckDB, 64-bit in Spark: the argument is widened to
  DECIMAL(38, 0) (an integer or decimal becomes DECIMAL(38, s), as DuckDB's sum; a double stays
  a double);
- AVG of a decimal is a double in DuckDB, a decimal in Spark: averaged as a double;
- a cast to an integer type rounds in DuckDB, truncates in Spark: it goes through
  DECIMAL(38, 0), which rounds half away from zero as DuckDB does;
- LIKE: Spark reads a backslash in the pattern as an escape, DuckDB does not;
- SUBSTRING from position 0 or below counts differently: refused unless the start is a
  positive literal;
- DuckDB's hash() (keyed choice of a unit's groups and values, DP bounding) becomes
  xxhash64(): another keyed 64-bit hash, so another, equally unsteerable choice;
- lists (DP bounding): min(x, n) (the n smallest), len() and [i] get their Spark spellings,
  out-of-range reads giving NULL as in DuckDB; list(), list_slice and flatten (DP
  quantiles) are refused;
- quantile_cont / quantile_disc become percentile / percentile_disc;
- types: HUGEINT is DECIMAL(38, 0); unsigned types are refused.

Anything else sqlglot would pass through untranslated (an unknown function, a node type
not listed here) is refused: the statement does not run rather than run differently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import SqlglotError

from gateway.errors import GatewayError
from gateway.models.files import FUNCTION_PREFIX as MODEL_FUNCTION_PREFIX
from gateway.plan.verify import SAFE_NODES


class NotOnSpark(GatewayError):
    """The statement is allowed, but it uses something the Spark engine cannot compute as
    DuckDB does; nothing ran and nothing was charged."""

    sqlstate = "0A000"  # feature_not_supported
    http_status = 422
    title = "Not supported on this engine"
    type_slug = "not-on-engine"

    def __init__(self, what: str):
        super().__init__(f"this gateway runs statements on Spark, which cannot compute {what} "
                         "as the clean room defines it", rule="engine.spark",
                         hint="rewrite the statement without it, or ask the operator about the DuckDB engine")


@dataclass(frozen=True)
class SparkStatement:
    sql: str  # Spark SQL
    relations: tuple[tuple[str, str, str], ...]  # (catalog, schema, name) of each source relation read


def view_name(catalog: str, schema: str, name: str) -> str:
    """The temp view standing for a source relation: one identifier, dots included."""
    return f"{catalog}.{schema}.{name}"


# Nodes this module emits on top of those verify allows.
_EMITTED = frozenset({exp.Anonymous, exp.WithinGroup, exp.DataType, exp.Literal})
_TYPES = {exp.DataType.Type.INT128: "DECIMAL(38, 0)"}
_REFUSED_TYPES = {exp.DataType.Type.UTINYINT, exp.DataType.Type.USMALLINT, exp.DataType.Type.UINT,
                  exp.DataType.Type.UBIGINT, exp.DataType.Type.UINT128, exp.DataType.Type.UINT256,
                  exp.DataType.Type.INT256, exp.DataType.Type.UUID, exp.DataType.Type.INTERVAL}
_INT_MAX = 2**31 - 1
# The DP bounding SQL's list columns (gateway/dp/bounding.py): len() of them is a list's size.
_LIST_COLUMNS = frozenset({"__low"})
_INTEGER_TYPES = {exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT, exp.DataType.Type.BIGINT}
_SPARK_FUNCTIONS = frozenset({"xxhash64", "percentile", "percentile_disc", "slice", "array_sort", "collect_list",
                              "try_element_at", "size", "flatten", "double"})


@functools.lru_cache(maxsize=1024)  # verify and execute both ask, and statements repeat
def to_spark(sql: str) -> SparkStatement:
    """The Spark form of generated DuckDB SQL, or NotOnSpark."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except SqlglotError:
        raise NotOnSpark("this statement (it does not parse)") from None
    relations = _point_at_views(tree)
    for select in list(tree.find_all(exp.Select)):
        if select.args.get("qualify") is not None:
            replacement = _without_qualify(select)
            if select is tree:
                tree = replacement
            else:
                select.replace(replacement)
    tree = _bottom_up(tree, _rewrite_node)
    _check(tree)
    try:
        text = tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except SqlglotError as error:
        raise NotOnSpark(f"this statement ({error})") from None
    return SparkStatement(text, tuple(sorted(relations)))


def _point_at_views(tree: exp.Expression) -> set[tuple[str, str, str]]:
    relations = set()
    for table in list(tree.find_all(exp.Table)):
        if not table.catalog:
            continue  # a CTE: verify allowed nothing else unqualified
        key = (table.catalog, table.db, table.name)
        relations.add(key)
        view = exp.Table(this=exp.to_identifier(view_name(*key), quoted=True), alias=table.args.get("alias"))
        table.replace(view)
    return relations


def _without_qualify(select: exp.Select) -> exp.Select:
    """SELECT e1 .. en FROM .. QUALIFY c ORDER BY o LIMIT l  ->
    SELECT __c1 AS a1 .. FROM (SELECT e1 AS __c1 .. en AS __cn, <c's parts> AS __q.., <o's parts>
    FROM ..) WHERE c' ORDER BY o' LIMIT l. Every window, aggregate and column of the QUALIFY
    and ORDER BY moves into the inner query, where its names resolve."""
    inner = select.copy()
    for key in ("qualify", "order", "limit", "offset", "distinct"):
        inner.set(key, None)
    outer_columns, inner_columns, names = [], [], []
    for i, projection in enumerate(select.expressions):
        if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and projection.is_star):
            raise NotOnSpark("* next to a QUALIFY")
        hidden = f"__c{i}"
        name = projection.alias_or_name
        names.append(name)
        inner_columns.append(exp.alias_(projection.unalias().copy(), hidden, quoted=True))
        outer_columns.append(exp.alias_(exp.column(hidden, quoted=True), name, quoted=True))
    moved: list[exp.Expression] = []

    def hoist(expression: exp.Expression) -> exp.Expression:
        def move(node: exp.Expression) -> exp.Expression:
            if isinstance(node, (exp.Window, exp.AggFunc, exp.Column)):
                if isinstance(node, exp.Column) and not node.table and node.name in names:
                    return exp.column(f"__c{names.index(node.name)}", quoted=True)  # an output alias
                moved.append(exp.alias_(node.copy(), f"__q{len(moved)}", quoted=True))
                return exp.column(f"__q{len(moved) - 1}", quoted=True)
            return node

        return _transform_outermost(expression.copy(), move)

    condition = hoist(select.args["qualify"].this)
    orders = []
    for ordered in (select.args["order"].expressions if select.args.get("order") else []):
        key = ordered.this
        if isinstance(key, exp.Literal) and key.is_int:  # a position in the select list: the same outside
            orders.append(ordered.copy())
        else:
            orders.append(exp.Ordered(this=hoist(key), desc=ordered.args.get("desc"),
                                      nulls_first=ordered.args.get("nulls_first")))
    inner.set("expressions", inner_columns + moved)
    outer = exp.select(*outer_columns).from_(exp.Subquery(this=inner, alias=exp.TableAlias(
        this=exp.to_identifier("__qualified", quoted=True)))).where(condition)
    if select.args.get("distinct"):
        if moved and orders:
            raise NotOnSpark("SELECT DISTINCT ordered by a computed value next to a QUALIFY")
        outer.set("distinct", select.args["distinct"].copy())
    if orders:
        outer.set("order", exp.Order(expressions=orders))
    for key in ("limit", "offset"):
        if select.args.get(key) is not None:
            outer.set(key, select.args[key].copy())
    return outer


def _transform_outermost(node: exp.Expression, move) -> exp.Expression:
    """Apply `move` top-down, not descending into what it replaced."""
    replaced = move(node)
    if replaced is not node:
        return replaced
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _transform_outermost(value, move))
        elif isinstance(value, list):
            node.set(key, [_transform_outermost(v, move) if isinstance(v, exp.Expression) else v for v in value])
    return node


def _bottom_up(node: exp.Expression, rewrite) -> exp.Expression:
    """Rewrite the children, then the node (sqlglot's transform skips what it replaced)."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _bottom_up(value, rewrite))
        elif isinstance(value, list):
            node.set(key, [_bottom_up(v, rewrite) if isinstance(v, exp.Expression) else v for v in value])
    return rewrite(node)


def _rewrite_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Window) and isinstance(node.this, (exp.RowNumber, exp.Rank, exp.DenseRank)) \
            and node.args.get("order") is None:
        node.set("order", exp.Order(expressions=[exp.Ordered(this=exp.Literal.number(1))]))
        return node
    if isinstance(node, exp.Div):
        return _guarded_division(node)
    if isinstance(node, (exp.IntDiv, exp.Mod)):
        divisor = node.expression.copy()
        return exp.Case(ifs=[exp.If(this=exp.EQ(this=divisor, expression=exp.Literal.number(0)), true=exp.null())],
                        default=node)
    if isinstance(node, exp.Sum):
        zero = exp.Cast(this=exp.Literal.number(0), to=exp.DataType.build("DECIMAL(38, 0)"))
        node.set("this", exp.Add(this=exp.paren(node.this.copy(), copy=False), expression=zero))
        return node
    if isinstance(node, (exp.Like, exp.ILike)):
        return _like(node)
    if isinstance(node, exp.Substring):
        return _substring(node)
    if isinstance(node, exp.Literal) and node.is_int:
        return _integer(node)
    if isinstance(node, (exp.Limit, exp.Offset)):
        amount = _int_value(node.expression)
        if amount is not None and amount > _INT_MAX:
            raise NotOnSpark(f"a LIMIT or OFFSET above {_INT_MAX}")
        return node
    if isinstance(node, exp.DataType):
        return _data_type(node)
    if isinstance(node, (exp.Cast, exp.TryCast)) and node.to.this in _INTEGER_TYPES \
            and not isinstance(node.this, exp.Literal):
        return _to_integer(node)
    if isinstance(node, exp.Min) and node.args.get("count") is not None:  # DuckDB's top-n: the n smallest, ascending
        return _smallest(node.this, node.args["count"])
    if isinstance(node, exp.Avg):
        node.set("this", exp.TryCast(this=node.this.copy(), to=exp.DataType.build("DOUBLE"), safe=True))
        return node
    if isinstance(node, exp.Anonymous):
        return _function(node)
    if isinstance(node, exp.Bracket):
        return _element(node)
    if isinstance(node, exp.Length) and isinstance(node.this, exp.Column) and node.this.name in _LIST_COLUMNS:
        return exp.Anonymous(this="size", expressions=[node.this])
    if isinstance(node, exp.ArraySize):
        return exp.Anonymous(this="size", expressions=[node.this])
    if isinstance(node, exp.ArrayAgg):
        return _collect_list(node)
    if isinstance(node, exp.ArraySlice):
        raise NotOnSpark("a list slice")
    return node


def _to_integer(node: exp.Cast) -> exp.Expression:
    """DuckDB rounds a fraction to the nearest integer (half away from zero), Spark truncates;
    through DECIMAL(38, 0) Spark rounds half up, which is the same thing."""
    rounded = exp.TryCast(this=node.this, to=exp.DataType.build("DECIMAL(38, 0)"), safe=True)
    return type(node)(this=rounded, to=node.to, safe=node.args.get("safe"))


def _guarded_division(node: exp.Div) -> exp.Expression:
    """a / b as DuckDB computes it in floating point: a zero divisor gives +-inf, or NaN
    for 0 / 0 (IEEE), where Spark would raise. (A divisor of -0.0 gives the sign of +0.0.)"""
    divisor = node.expression.copy()
    infinity = exp.Anonymous(this="double", expressions=[exp.Literal.string("Infinity")])
    at_zero = exp.Mul(this=exp.paren(node.this.copy(), copy=False), expression=infinity)
    return exp.Case(ifs=[exp.If(this=exp.EQ(this=divisor, expression=exp.Literal.number(0)), true=at_zero)],
                    default=node)


def _like(node: exp.Expression) -> exp.Expression:
    pattern = node.expression
    if isinstance(node.parent, exp.Escape):  # an explicit ESCAPE means the same in both
        return node
    if isinstance(pattern, exp.Literal) and pattern.is_string:
        if "\\" in pattern.name:  # a literal backslash for Spark
            node.set("expression", exp.Literal.string(pattern.name.replace("\\", "\\\\")))
        return node
    literals = [leaf for leaf in pattern.walk() if isinstance(leaf, exp.Literal) and leaf.is_string]
    if pattern.find(exp.Column) or any("\\" in leaf.name for leaf in literals):
        raise NotOnSpark("LIKE with a pattern computed from a column or holding a backslash")
    return node


def _substring(node: exp.Substring) -> exp.Expression:
    """From a positive position, the same in both; from 0 or from far before the end (a
    negative start), and with a negative length, they differ."""
    start, length = _int_value(node.args.get("start")), node.args.get("length")
    if start is None or not 1 <= start <= _INT_MAX:
        raise NotOnSpark("SUBSTRING from a position below 1, a computed one or one beyond 32 bits")
    if length is not None and not (0 <= (_int_value(length) if _int_value(length) is not None else -1) <= _INT_MAX):
        raise NotOnSpark("SUBSTRING of a negative, computed or beyond-32-bit length")
    return node


def _int_value(node) -> int | None:
    """The value of an integer literal (or its negation), else None."""
    sign = 1
    while isinstance(node, (exp.Neg, exp.Paren)):
        sign, node = (-sign if isinstance(node, exp.Neg) else sign), node.this
    if isinstance(node, exp.Literal) and node.is_int:
        return sign * int(node.name)
    return None


def _integer(node: exp.Literal) -> exp.Expression:
    """Spark reads an integer literal of more than 38 digits as nothing it can hold; DuckDB
    only ever uses one as a double here (the arithmetic types it so), so it is spelt as
    the string a cast to DOUBLE reads exactly."""
    if len(node.name.lstrip("-")) <= 38:
        return node
    parent = node.parent
    if isinstance(parent, (exp.Cast, exp.TryCast)) and parent.to.this in (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
        return exp.Literal.string(node.name)
    raise NotOnSpark("an integer literal of more than 38 digits")


def _data_type(node: exp.DataType) -> exp.Expression:
    kind = node.this
    if kind in _REFUSED_TYPES:
        raise NotOnSpark(f"the type {node.sql(dialect='duckdb')}")
    if kind in _TYPES:
        return exp.DataType.build(_TYPES[kind], dialect="spark")
    return node


def _function(node: exp.Anonymous) -> exp.Expression:
    name, args = node.name.lower(), node.expressions
    if name == "hash":
        return exp.Anonymous(this="xxhash64", expressions=args)
    if name == "quantile_cont" and len(args) == 2:
        return exp.Anonymous(this="percentile", expressions=args)
    if name == "quantile_disc" and len(args) == 2:
        return exp.WithinGroup(this=exp.Anonymous(this="percentile_disc", expressions=[args[1]]),
                               expression=exp.Order(expressions=[exp.Ordered(this=args[0])]))
    if name == "min" and len(args) == 2:
        return _smallest(*args)
    if name == "len" and len(args) == 1:
        return exp.Anonymous(this="size", expressions=args)
    if name in ("list_slice", "flatten"):
        raise NotOnSpark(f"{name}()")
    if name.startswith(MODEL_FUNCTION_PREFIX):  # score(): a model the executors register in DuckDB only
        raise NotOnSpark("score() (a model of the policy)")
    if name in _SPARK_FUNCTIONS:
        return node
    raise NotOnSpark(f"{node.name}()")


def _smallest(value: exp.Expression, count: exp.Expression) -> exp.Expression:
    """DuckDB's min(x, n): the n smallest values, ascending (collect_list skips NULLs, as it does)."""
    ordered = exp.Anonymous(this="array_sort", expressions=[exp.Anonymous(this="collect_list", expressions=[value])])
    return exp.Anonymous(this="slice", expressions=[ordered, exp.Literal.number(1), count])


def _element(node: exp.Bracket) -> exp.Expression:
    """DuckDB's list[i] counts from 1 and gives NULL out of range; so does try_element_at.
    (sqlglot holds the index from 0.)"""
    if len(node.expressions) != 1:
        raise NotOnSpark("a list slice")
    index = node.expressions[0]
    one_based = exp.Literal.number(int(index.name) + 1) if isinstance(index, exp.Literal) and index.is_int \
        else exp.Add(this=exp.paren(index, copy=False), expression=exp.Literal.number(1))
    return exp.Anonymous(this="try_element_at", expressions=[node.this, one_based])


def _collect_list(node: exp.ArrayAgg) -> exp.Expression:
    raise NotOnSpark("list()")


def _check(tree: exp.Expression) -> None:
    for node in tree.walk():
        kind = type(node)
        if kind is exp.Anonymous and node.name.lower() not in _SPARK_FUNCTIONS:
            raise NotOnSpark(f"{node.name}()")
        if kind not in SAFE_NODES and kind not in _EMITTED:
            raise NotOnSpark(f"{kind.__name__}")
