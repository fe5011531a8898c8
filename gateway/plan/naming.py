"""What things of a query are called: identifiers as PostgreSQL spells them, the
names of output columns a BI tool sees, columns renamed by an alias list, and the
refusal of a relation the analyst may not name (gateway.plan.resolve binds them)."""

from __future__ import annotations

import difflib
from dataclasses import replace

from sqlglot import expressions as exp

from gateway.errors import Refused, UnknownTable
from gateway.plan.allowed import function_name
from gateway.plan.scope import Column, fold

SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "main", "system", "temp", "memory"})
SYSTEM_PREFIXES = ("pg_", "duckdb_", "sqlite_")
ANALYST_SCHEMAS = frozenset({"", "public"})  # what BI tools put before a table name
SET_OPERATIONS = (exp.Union, exp.Intersect, exp.Except)


def identifier(node: exp.Identifier | str) -> str:
    """A name as PostgreSQL spells it: unquoted names fold to lower case."""
    if isinstance(node, exp.Identifier):
        return node.this if node.quoted else node.this.lower()
    return str(node)


# PostgreSQL's names for unaliased output columns, so BI tools see `count`, not `count_star()`.
FUNCTION_OUTPUT_NAMES = {exp.TimestampTrunc: "date_trunc", exp.DateTrunc: "date_trunc", exp.Case: "case", exp.If: "case",
                         exp.PercentileCont: "percentile_cont", exp.PercentileDisc: "percentile_disc"}


def output_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Column):
        return identifier(node.this) if isinstance(node.this, exp.Identifier) else node.name
    if isinstance(node, (exp.Paren, exp.Filter, exp.Window, exp.WithinGroup)):
        return output_name(node.this)  # count(*) FILTER (...) is "count", as in PostgreSQL
    if isinstance(node, (exp.Cast, exp.TryCast)):
        inner = output_name(node.this)
        return inner if inner != "?column?" else node.to.sql(dialect="postgres").lower()
    for kind, name in FUNCTION_OUTPUT_NAMES.items():
        if isinstance(node, kind):
            return name
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()  # quantile_cont(x, q)
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary):
        return node.sql_name().lower()
    return "?column?"


def renamed(query: exp.Expression | None, columns: list[Column], names) -> list[Column]:
    """A relation's columns under an alias column list: `AS p(a, b)` renames the first
    two columns, in the order the analyst sees them; the generated SQL renames
    a subquery's outputs and keeps a table's own names."""
    if not names:
        return columns
    if len(names) > len(columns):
        raise Refused(f"the alias lists {len(names)} columns for a relation of {len(columns)}",
                      rule="bind.alias_columns")
    renamed = []
    for i, column in enumerate(columns):
        if i >= len(names):
            renamed.append(column)
            continue
        name = identifier(names[i] if isinstance(names[i], exp.Identifier) else names[i].this)
        if query is None:  # a table or CTE: the SQL keeps the original name
            renamed.append(replace(column, name=name, sql_name=column.sql_name or column.name))
        else:
            renamed.append(replace(column, name=name))
    if query is not None:
        select = query
        while isinstance(select, SET_OPERATIONS):
            select = select.this
        for projection, column in zip(select.expressions, renamed):
            projection.set("alias", exp.to_identifier(column.name, quoted=True))
    return renamed


def table_function(node: exp.Expression) -> Refused:
    return Refused(f"table functions and file readers are not allowed ({function_name(node)})",
                   rule="source.table_function", hint="query the clean room's tables by name")


def refuse_relation(name: str, schema: str, catalog: str, visible=()):
    system = fold(name).startswith(SYSTEM_PREFIXES)
    if catalog or fold(schema) in SYSTEM_SCHEMAS or system:
        qualified = ".".join(p for p in (catalog, schema, name) if p)
        raise Refused(f"the engine's system catalogs are not available ({qualified})", rule="source.system_catalog",
                      hint="GET /v1/tables lists what you may query")
    if fold(schema) not in ANALYST_SCHEMAS:
        raise UnknownTable(f'relation "{schema}.{name}" does not exist', rule="bind.unknown_table")
    close = difflib.get_close_matches(fold(name), sorted(visible), n=1, cutoff=0.75)  # only what the analyst may read
    raise UnknownTable(f'relation "{name}" does not exist', rule="bind.unknown_table",
                       hint=f'did you mean "{close[0]}"?' if close else "GET /v1/tables lists what you may query")
