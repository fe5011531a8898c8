"""Pass 2, bind: resolve every table and column against the policy catalog the
analyst may see. Hidden columns and tables outside the analyst's reach do not
exist here, so they fail exactly like misspelt names."""

from __future__ import annotations

import re

from sqlglot import expressions as exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify import qualify

from gateway.engine.allowlist import function_name
from gateway.engine.state import QueryState, TableUse
from gateway.errors import Refused, SyntaxProblem, UnknownColumn, UnknownTable
from gateway.policy.model import Analyst, CleanRoom, Table

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "main", "system", "temp", "memory"})
SYSTEM_PREFIXES = ("pg_", "duckdb_", "sqlite_")
ANALYST_SCHEMAS = frozenset({"", "public"})  # what BI tools put before a table name


def visible_tables(cleanroom: CleanRoom, analyst: Analyst) -> dict[str, Table]:
    """Tables an analyst may name: its own collaborator's and those of its granted rules."""
    names = {t.name for t in cleanroom.tables.values() if t.owner == analyst.collaborator}
    for rule in analyst.rules:
        names.update(cleanroom.rules[rule].tables)
    return {n: cleanroom.tables[n] for n in sorted(names)}


def bind(state: QueryState) -> QueryState:
    tree = normalize_identifiers(state.tree, dialect="postgres")
    if state.template is not None:
        reachable = dict(state.cleanroom.tables)  # an approved template may read what it names
    else:
        reachable = visible_tables(state.cleanroom, state.analyst)
    tables_read = _resolve_tables(tree, reachable)
    _name_outputs(tree)
    tree = tree.transform(_as_quantile, copy=False)
    types = state.context.column_types[state.cleanroom.name]
    schema = {
        name: {col: types[name][col] for col in table.visible()}
        for name, table in reachable.items()
    }
    try:
        tree = qualify(tree, schema=schema, dialect="postgres", validate_qualify_columns=True)
    except OptimizeError as error:
        message = str(error).split(". Line")[0]
        unresolved = re.search(r"Column '(.+?)' could not be resolved", message)
        if unresolved:
            raise UnknownColumn(f'column "{unresolved.group(1)}" does not exist', rule="bind.unknown_column") from None
        raise SyntaxProblem(message, rule="bind.invalid") from None
    return state.evolve(
        tree=tree,
        uses=outer_uses(tree, state.cleanroom),
        tables_read=frozenset(tables_read),
        canonical_sql=tree.sql(dialect="duckdb"),
    )


def _resolve_tables(tree: exp.Expression, reachable: dict[str, Table]) -> set[str]:
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    read = set()
    for node in tree.find_all(exp.Table):
        if not isinstance(node.this, exp.Identifier):
            raise Refused(
                f"table functions and file readers are not allowed ({function_name(node.this)})",
                rule="source.table_function",
                hint="query the clean room's tables by name",
            )
        name, schema, catalog = node.name, node.db, node.catalog
        system_name = name.lower().startswith(SYSTEM_PREFIXES) and name not in reachable
        if catalog or schema.lower() in SYSTEM_SCHEMAS or system_name:
            raise Refused(
                f"the engine's system catalogs are not available ({node.sql(dialect='postgres')})",
                rule="source.system_catalog",
                hint="GET /v1/tables lists what you may query",
            )
        if schema.lower() not in ANALYST_SCHEMAS:
            raise UnknownTable(f'relation "{schema}.{name}" does not exist', rule="bind.unknown_table")
        if not schema and name in cte_names:
            continue
        if name not in reachable:
            raise UnknownTable(f'relation "{name}" does not exist', rule="bind.unknown_table")
        node.set("db", None)
        read.add(name)
    for column in tree.find_all(exp.Column):  # Metabase writes "public"."purchases"."region"
        if column.args.get("db") is not None and column.db.lower() in ANALYST_SCHEMAS and not column.catalog:
            column.set("db", None)
    return read


# PostgreSQL's names for unaliased output columns, so BI tools see `count`, not `count_star()`.
FUNCTION_OUTPUT_NAMES = {exp.TimestampTrunc: "date_trunc", exp.DateTrunc: "date_trunc", exp.Case: "case", exp.If: "case"}


def output_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Paren):
        return output_name(node.this)
    if isinstance(node, (exp.Cast, exp.TryCast)):
        inner = output_name(node.this)
        return inner if inner != "?column?" else node.to.sql(dialect="postgres").lower()
    for kind, name in FUNCTION_OUTPUT_NAMES.items():
        if isinstance(node, kind):
            return name
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary):
        return node.sql_name().lower()
    return "?column?"


def _name_outputs(tree: exp.Expression) -> None:
    for select in tree.find_all(exp.Select):
        projections = []
        for projection in select.expressions:
            if not isinstance(projection, (exp.Alias, exp.Star, exp.Column)):
                projection = exp.alias_(projection, output_name(projection), quoted=True)
            projections.append(projection)
        select.set("expressions", projections)


def _as_quantile(node: exp.Expression) -> exp.Expression:
    """percentile_cont(q) WITHIN GROUP (ORDER BY x) becomes QUANTILE(x, q): one
    node whose argument is `this`, which authorise checks like any aggregate's.
    Other ordered-set aggregates keep their form and are refused."""
    if not (isinstance(node, exp.WithinGroup) and isinstance(node.this, exp.PercentileCont)):
        return node
    order = node.expression
    fraction = node.this.this
    if not (isinstance(order, exp.Order) and len(order.expressions) == 1 and isinstance(fraction, exp.Literal)
            and not fraction.is_string and 0 <= float(fraction.this) <= 1):
        raise Refused("percentile_cont takes one fraction between 0 and 1 and one ORDER BY expression",
                      rule="aggregate.quantile")
    return exp.Quantile(this=order.expressions[0].this, quantile=fraction)


def optional_aliases(select: exp.Select) -> set[str]:
    """Aliases of the outermost FROM that an outer join may leave out of a row:
    the right side of a LEFT join, both sides of a FULL join, and everything
    before a RIGHT or FULL join."""
    entries = [(select.args["from_"].this, "")] if select.args.get("from_") else []
    entries += [(j.this, (j.side or "").upper()) for j in select.args.get("joins") or []]
    optional = set()
    for i, (node, side) in enumerate(entries):
        later = {s for _, s in entries[i + 1 :]}
        if side in ("LEFT", "FULL") or later & {"RIGHT", "FULL"}:
            optional.add(node.alias_or_name)
    return optional


def outer_uses(tree: exp.Expression, cleanroom: CleanRoom) -> tuple[TableUse, ...]:
    """Policy tables in the outermost FROM, and whether an outer join may leave them out."""
    if not isinstance(tree, exp.Select) or tree.args.get("from_") is None:
        return ()
    cte_names = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    optional = optional_aliases(tree)
    sources = [tree.args["from_"].this] + [j.this for j in tree.args.get("joins") or []]
    return tuple(
        TableUse(alias=node.alias_or_name, table=cleanroom.tables[node.name], nullable=node.alias_or_name in optional)
        for node in sources
        if isinstance(node, exp.Table) and node.name in cleanroom.tables and (node.db or node.name not in cte_names)
    )
