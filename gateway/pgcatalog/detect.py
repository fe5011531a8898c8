"""Which statements read only the PostgreSQL catalog: pg_catalog and
information_schema relations, catalog functions (version(), format_type(), ...),
casts to regclass and friends, and table functions such as generate_series.

A statement that also names a clean-room table is not a catalog statement: it is
left to the resolver, which refuses it (source.system_catalog).
"""

from __future__ import annotations

from typing import Collection

from sqlglot import expressions as exp

from gateway.pgcatalog.emulate import FUNCTIONS

VALUE_NODES = (exp.CurrentDatabase, exp.CurrentSchema, exp.CurrentUser, exp.SessionUser, exp.CurrentVersion,
               exp.CurrentSchemas)
TABLE_FUNCTIONS = {"unnest", "generate_series", "generate_subscripts", "pg_get_keywords", "pg_show_all_settings"}
OBJECT_CASTS = ("regclass", "regtype", "regproc", "regnamespace", "oid")


def reads_only_catalog(tree: exp.Expression, room_tables: Collection[str]) -> bool:
    """True when the statement reads the catalog and nothing else (room_tables: the
    clean room's table names, which a pg_-prefixed name must not be)."""
    ctes = cte_names(tree)
    catalog_seen = False
    for node in tree.find_all(exp.Table):
        kind = catalog_table(node, room_tables, ctes)
        if kind is False:
            return False
        catalog_seen = catalog_seen or bool(kind)
    if catalog_seen:
        return True
    for node in tree.walk():
        if isinstance(node, VALUE_NODES):
            return True
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name.lower() == "pg_catalog":
            return True
        if isinstance(node, exp.Anonymous) and node.name.lower() in FUNCTIONS:
            return True
        if isinstance(node, exp.Cast) and cast_target(node.to) in OBJECT_CASTS:
            return True
    return False


def cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def catalog_table(node: exp.Table, room_tables: Collection[str], ctes: set[str]) -> bool | None:
    """True for a catalog relation, None for a CTE, False for anything else."""
    name, schema = node.name.lower(), node.db.lower()
    if not isinstance(node.this, exp.Identifier):
        function = node.this.expression if isinstance(node.this, exp.Dot) else node.this
        if isinstance(function, (exp.GenerateSeries, exp.ExplodingGenerateSeries, exp.Unnest, exp.Explode)):
            return True
        return _function_name(node.this) in TABLE_FUNCTIONS
    if node.catalog:
        return False
    if schema in ("pg_catalog", "information_schema"):
        return True
    if not schema and name in ctes:
        return None
    if not schema and name.startswith("pg_") and name not in room_tables:
        return True
    return False


def _function_name(node) -> str:
    if isinstance(node, exp.Dot):
        node = node.expression
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return ""


def cast_target(to: exp.Expression) -> str:
    """The lower-case type name of a cast: regclass, text, name, numeric, ..."""
    if isinstance(to, exp.ObjectIdentifier):
        return to.name.lower()
    if isinstance(to, exp.DataType):
        kind = to.args.get("kind")
        if to.this == exp.DataType.Type.USERDEFINED and kind is not None:
            if isinstance(kind, exp.Dot):
                return kind.expression.name.lower()
            return kind.name.lower()
        if to.this == exp.DataType.Type.NAME:
            return "name"
        return to.this.value.lower() if hasattr(to.this, "value") else str(to.this).lower()
    return to.sql().lower()
