"""Types for a statement's $n when the client leaves them unspecified, and
stand-in values to describe a statement before its real values arrive."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import SqlglotError

from gateway import pgtypes
from gateway.pgwire import types as t


def infer_parameter_types(sql: str, count: int, columns: dict[str, dict[str, int]]) -> list[int]:
    """A type for each $n from what it is compared with or cast to; text when unknown."""
    types = [t.TEXT] * count
    if not count:
        return types
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (SqlglotError, ValueError, RecursionError):
        return types
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        aliases[(table.alias_or_name or "").lower()] = table.name.lower()
    by_column: dict[str, int] = {}
    for table, cols in columns.items():
        for name, oid in cols.items():
            by_column.setdefault(name.lower(), oid)

    def column_oid(node: exp.Expression) -> int | None:
        if isinstance(node, exp.Column):
            table = aliases.get(node.table.lower(), node.table.lower()) if node.table else None
            if table and table in columns:
                return columns[table].get(node.name) or columns[table].get(node.name.lower())
            return by_column.get(node.name.lower())
        return None

    for node in tree.find_all(exp.Parameter):
        name = node.name
        if not name.isdigit() or not (1 <= int(name) <= count):
            continue
        index = int(name) - 1
        parent = node.parent
        oid = None
        if isinstance(parent, (exp.Cast, exp.TryCast)):
            oid = pgtypes.duckdb_type_oid(parent.to.sql(dialect="duckdb"))
        elif isinstance(parent, (exp.Limit, exp.Offset, exp.Fetch)):
            oid = t.INT8
        elif isinstance(parent, exp.Binary):
            other = parent.expression if parent.this is node else parent.this
            oid = column_oid(other)
        elif isinstance(parent, exp.In):
            oid = column_oid(parent.this)
        elif isinstance(parent, exp.Between):
            oid = column_oid(parent.this)
        if oid:
            types[index] = oid
    return types


def dummy_value(oid: int):
    """A value of type `oid` that binds: describing never runs the statement, but
    the engine still checks the SQL it would run (LIMIT 0)."""
    if oid in (t.INT2, t.INT4, t.INT8, t.OID):
        return 1
    if oid in (t.FLOAT4, t.FLOAT8):
        return 1.0
    if oid == t.NUMERIC:
        return Decimal(1)
    if oid == t.BOOL:
        return True
    if oid == t.DATE:
        return dt.date(2000, 1, 1)
    if oid in (t.TIMESTAMP, t.TIMESTAMPTZ):
        return dt.datetime(2000, 1, 1)
    if oid == t.UUID:
        return "00000000-0000-0000-0000-000000000000"
    if oid in (t.JSON, t.JSONB):
        return "{}"
    return "x"


def sample_value(parameter, oid: int):
    """A value a template's parameter accepts, of the wire type `oid`, to describe a
    template call before its arguments arrive (its default, first allowed value or lower bound)."""
    if parameter.default is not None:
        return parameter.default
    if parameter.values:
        return parameter.values[0]
    kind = getattr(parameter.type, "value", parameter.type)
    if kind == "date":
        return dt.date.fromisoformat(str(parameter.minimum)) if parameter.minimum is not None else dt.date(2000, 1, 1)
    if kind in ("integer", "number"):
        low = parameter.minimum if parameter.minimum is not None else (parameter.maximum if parameter.maximum is not None else 1)
        return int(low) if kind == "integer" else float(low)
    return dummy_value(oid)
