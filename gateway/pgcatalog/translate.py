"""A catalog statement, rewritten for the catalog database (build.py): catalog
relations become the pgc (pg_catalog) and pgi (information_schema) schemas,
PostgreSQL's functions their pgw_ macros or constants, its operators, casts and
type names DuckDB's.

One small function per kind of node, found by the node's class (REWRITES);
sqlglot's transform() calls them over the tree until nothing changes.
"""

from __future__ import annotations

import re

from typing import Callable, Collection, NamedTuple

from sqlglot import expressions as exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from gateway.pgcatalog.detect import catalog_table, cast_target, cte_names
from gateway.pgcatalog.emulate import FUNCTIONS, VERSION_TEXT
from gateway.pgcatalog.postgres_text import array_elements, format_concat, name_projections

# regproc columns hold the function's name here (pg_proc.proname); PostgreSQL compares them as oids.
REGPROC_COLUMNS = frozenset({"typinput", "typoutput", "typreceive", "typsend"})
RENAMED = {"json_build_object": "json_object", "jsonb_build_object": "json_object", "to_json": "to_json"}
REGEX_OPERATORS = {"~": exp.RegexpLike, "~*": exp.RegexpILike}
# Expressions that give text: cast to regclass, they name a relation (Metabase: FORMAT('%I.%I', ...)::regclass).
TEXT_NODES = (exp.Format, exp.Concat, exp.DPipe)
OBJECT_TYPES = ("regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regrole")
NUMBER_LIKE = ("oid", "xid", "cid", "tid", "regoper", "int2vector", "oidvector", "xid8")
TEXT_LIKE = ("name", "text", "char", "bpchar", "varchar", "character varying", "regconfig", "unknown")


class Scope(NamedTuple):
    """What a rewrite may need to know besides the node."""

    user: str
    database: str
    room_tables: Collection[str]
    ctes: set[str]


def translate(tree: exp.Expression, user: str, database: str, room_tables: Collection[str]) -> exp.Expression:
    """The statement (changed in place) as the catalog database runs it."""
    tree = normalize_identifiers(tree, dialect="postgres")  # `AS DATA_TYPE` names a column data_type
    scope = Scope(user, database, room_tables, cte_names(tree))
    name_projections(tree)

    def rewrite(node: exp.Expression) -> exp.Expression:
        for kind in type(node).__mro__:  # the most specific class with a rewrite
            step = REWRITES.get(kind)
            if step is not None:
                return step(node, scope)
        return node

    # transform() does not descend into the nodes it returns: repeat until nothing changes.
    before = None
    for _ in range(6):
        tree = tree.transform(rewrite, copy=False)
        after = tree.sql(dialect="duckdb")
        if after == before:
            break
        before = after
    return tree


# -- one rewrite per kind of node ---------------------------------------------------------


def _table(node: exp.Table, scope: Scope) -> exp.Expression:
    if not isinstance(node.this, exp.Identifier):  # a table function: generate_series(...), unnest(...)
        if isinstance(node.this, exp.Dot):
            node.set("this", node.this.expression)
        node.set("db", None)
        node.set("catalog", None)
        alias = node.args.get("alias")
        if alias is not None and alias.name and not alias.columns:  # PostgreSQL: f(...) s names its column s
            alias.set("columns", [exp.to_identifier(alias.name)])
        return node
    if catalog_table(node, scope.room_tables, scope.ctes):
        schema = "pgi" if node.db.lower() == "information_schema" else "pgc"
        node.set("db", exp.to_identifier(schema))
        node.set("catalog", None)
        node.set("this", exp.to_identifier(node.name.lower()))
        if not node.alias:
            node.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
    return node


def _data_type(node: exp.DataType, scope: Scope) -> exp.Expression:
    if not (isinstance(node.args.get("kind"), exp.Dot) and node.this == exp.DataType.Type.USERDEFINED):
        return node
    name = node.args["kind"].expression.name.lower()  # pg_catalog.<type>
    if name in ("text", "name", "char", "bpchar", "varchar", "regclass", "regtype", "regproc", "unknown"):
        name = "varchar"
    elif name in ("oid", "xid", "regclass", "int2vector", "oidvector"):
        name = "bigint"
    return exp.DataType.build(name, dialect="postgres")


def _dot(node: exp.Dot, scope: Scope) -> exp.Expression:
    if isinstance(node.this, exp.Identifier) and node.this.name.lower() == "pg_catalog" \
            and isinstance(node.expression, exp.Func):
        return node.expression  # pg_catalog.f(...) is f(...)
    return node


def _column(node: exp.Column, scope: Scope) -> exp.Expression:
    if node.args.get("db") is not None and node.args["db"].name.lower() in ("pg_catalog", "information_schema"):
        node.set("db", None)  # pg_catalog.pg_class.relname: the table is aliased by its name
        node.set("catalog", None)
    return node


def _constant(value: Callable[[Scope], exp.Expression]):
    return lambda node, scope: value(scope)


def _public(scope: Scope) -> exp.Expression:
    return exp.Literal.string("public")


def _user(scope: Scope) -> exp.Expression:
    return exp.Literal.string(scope.user)


def _database(scope: Scope) -> exp.Expression:
    return exp.Literal.string(scope.database)


def _version(scope: Scope) -> exp.Expression:
    return exp.Literal.string(VERSION_TEXT)


def _search_path(scope: Scope) -> exp.Expression:
    return exp.Array(expressions=[exp.Literal.string("pg_catalog"), exp.Literal.string("public")])


ANONYMOUS_CONSTANTS = {"version": _version, "current_database": _database, "current_user": _user,
                       "session_user": _user, "user": _user, "current_schema": _public}


def _anonymous(node: exp.Anonymous, scope: Scope) -> exp.Expression:
    name = node.name.lower()
    constant = ANONYMOUS_CONSTANTS.get(name)
    if constant is not None:
        return constant(scope)
    if name in FUNCTIONS:
        node.set("this", f"pgw_{name}")
    elif name in RENAMED:
        node.set("this", RENAMED[name])
    return node


def _operator(node: exp.Operator, scope: Scope) -> exp.Expression:
    """OPERATOR(pg_catalog.~) and friends, as psql writes them."""
    operator = str(node.args.get("operator") or "").split(".")[-1].strip()
    left, right = node.this, node.expression
    if isinstance(right, exp.Collate):
        right = right.this
    if operator in REGEX_OPERATORS:
        return REGEX_OPERATORS[operator](this=left, expression=right)
    if operator in ("!~", "!~*"):
        return exp.Not(this=REGEX_OPERATORS[operator[1:]](this=left, expression=right))
    if operator == "~~":
        return exp.Like(this=left, expression=right)
    if operator == "=":
        return exp.EQ(this=left, expression=right)
    if operator == "<>":
        return exp.NEQ(this=left, expression=right)
    return node


def _collate(node: exp.Collate, scope: Scope) -> exp.Expression:
    return node.this  # one collation here


def _format(node: exp.Format, scope: Scope) -> exp.Expression:
    if isinstance(node.this, exp.Literal) and node.this.is_string:
        return format_concat(node.this.name, node.expressions) or node
    return node


def _equals(node: exp.EQ, scope: Scope) -> exp.Expression:
    """proc.oid = typ.typreceive: the function is named by the regproc column.
    x = ANY(array) is list_contains(array, x): DuckDB reads ANY(array) as a subquery, which it cannot
    put in an outer join's ON (SQLAlchemy 1.4's index reflection: a.attnum = ANY(ix.indkey))."""
    if isinstance(node.expression, exp.Any):
        array = node.expression.this
        while isinstance(array, exp.Paren):
            array = array.this
        if not isinstance(array, (exp.Query, exp.Subquery)):
            return exp.ArrayContains(this=array, expression=node.this)
    for side in ("this", "expression"):  # pol.polroles = '{0}' (psql's \d): PostgreSQL's array text as a list
        literal = node.args.get(side)
        if isinstance(literal, exp.Literal) and literal.is_string and re.fullmatch(r"\{-?\d+(,-?\d+)*\}", literal.this):
            node.set(side, exp.Array(expressions=[exp.Literal.number(v) for v in literal.this[1:-1].split(",")]))
    for oid, function in ((node.this, node.expression), (node.expression, node.this)):
        if isinstance(oid, exp.Column) and oid.name.lower() == "oid" and isinstance(function, exp.Column) \
                and function.name.lower() in REGPROC_COLUMNS:
            oid.set("this", exp.to_identifier("proname"))
    return node


def _cast(node: exp.Cast, scope: Scope) -> exp.Expression:
    target = cast_target(node.to)
    inner = node.this
    if target in OBJECT_TYPES:
        if (isinstance(inner, exp.Literal) and inner.is_string) or isinstance(inner, TEXT_NODES):
            return exp.Anonymous(this=f"pgw_to_{target}", expressions=[inner])  # a name, to look up
        return exp.Anonymous(this=f"pgw_{target}_name", expressions=[inner])
    if target in NUMBER_LIKE:
        node.set("to", exp.DataType.build("BIGINT" if target not in ("int2vector", "oidvector") else "VARCHAR"))
        return node  # changed in place, so transform() still visits its operand
    if target in TEXT_LIKE:
        node.set("to", exp.DataType.build("VARCHAR"))
        return node
    if target in ("text[]", "_text", "name[]"):
        node.set("to", exp.DataType.build("VARCHAR[]"))
        return node
    if target == "array" and isinstance(inner, exp.Literal) and inner.is_string and inner.name.startswith("{"):
        elements = exp.Array(expressions=[exp.Literal.string(v) for v in array_elements(inner.name)])
        node.set("this", elements)  # '{a,b}'::text[] (DBeaver): the list [a, b], cast to the array type
        return node
    to = node.to
    if isinstance(to, exp.DataType) and isinstance(to.args.get("kind"), exp.Dot):
        node.set("to", exp.DataType.build(to.args["kind"].expression.name, dialect="postgres"))
    return node


REWRITES: dict[type, Callable[[exp.Expression, Scope], exp.Expression]] = {
    exp.Table: _table,
    exp.DataType: _data_type,
    exp.Dot: _dot,
    exp.Column: _column,
    exp.CurrentVersion: _constant(_version),
    exp.CurrentDatabase: _constant(_database),
    exp.CurrentSchema: _constant(_public),
    exp.CurrentSchemas: _constant(_search_path),
    exp.CurrentUser: _constant(_user),
    exp.SessionUser: _constant(_user),
    exp.Anonymous: _anonymous,
    exp.Operator: _operator,
    exp.Collate: _collate,
    exp.Format: _format,
    exp.EQ: _equals,
    exp.Cast: _cast,
}
