"""The PostgreSQL types of result columns that Arrow carries as plain strings.

DuckDB exports UUID and JSON columns to Arrow as strings (its lossless
conversion, which would use arrow.uuid and arrow.json, is a setting the locked
engine cannot change). When the engine names a field's DuckDB type in its
metadata (gateway.pgwire.types.DUCKDB_TYPE_KEY) or Arrow's extension types say
it, that is used. Otherwise, for results with string columns only, the session
asks once per statement text: the statement is compiled (every policy pass,
nothing executed) and DuckDB binds the generated SQL (LIMIT 0 never scans),
which names each column's type. `::jsonb` in the analyst's outer SELECT makes
a column jsonb (DuckDB has one JSON type).
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import expressions as exp

from gateway.pgwire import types as t

_BY_NAME = {"UUID": t.UUID, "JSON": t.JSON}


def needs_lookup(schema: pa.Schema) -> bool:
    """True when some string column might really be uuid or json."""
    for field in schema:
        if (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) and \
                t.DUCKDB_TYPE_KEY not in (field.metadata or {}):
            return True
    return False


def declared_oids(engine, request) -> dict[str, int]:
    """Column name -> uuid/json/jsonb OID for the string columns that are one of those."""
    state = engine.compile(request, describing=True)  # the parameters may be stand-ins
    if state.release is not None or not state.generated_sql:  # answered by the catalog: text it is
        return {}
    cursor = engine.database.cursor()
    try:
        relation = cursor.sql(state.generated_sql).limit(0)
        names, kinds = relation.columns, [str(k).upper() for k in relation.types]
    finally:
        cursor.close()
    oids = {name: _BY_NAME[kind] for name, kind in zip(names, kinds) if kind in _BY_NAME}
    if oids and state.tree is not None:
        for name in _jsonb_outputs(state.tree):
            if oids.get(name) == t.JSON:
                oids[name] = t.JSONB
    return oids


def _jsonb_outputs(tree: exp.Expression) -> list[str]:
    names = []
    for projection in getattr(tree, "selects", []) or []:
        node = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(node, (exp.Cast, exp.TryCast)) and node.to.this == exp.DataType.Type.JSONB:
            names.append(projection.alias_or_name)
    return names


def field_oids(schema: pa.Schema, declared: dict[str, int] | None) -> list[int]:
    oids = [t.field_oid(f) for f in schema]
    if declared:
        oids = [declared.get(f.name, oid) if oid == t.TEXT else oid for f, oid in zip(schema, oids)]
    return oids
