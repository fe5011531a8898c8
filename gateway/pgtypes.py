"""The PostgreSQL types the gateway speaks: one table of OIDs, names and sizes,
read by the wire protocol (gateway.pgwire.types: RowDescription, parameters)
and by the catalog (gateway.pgcatalog: pg_type, pg_attribute,
information_schema), so a column's type is the same in both.

Data only: it imports nothing of the gateway, so every layer may import it.
"""

from __future__ import annotations

from typing import NamedTuple


class PgType(NamedTuple):
    name: str  # pg_type.typname
    length: int  # pg_type.typlen: bytes, -1 variable, -2 C string
    category: str  # pg_type.typcategory
    display: str  # format_type()'s text, information_schema's data_type


# OIDs (pg_type.dat)
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, JSON_ARRAY, FLOAT4, FLOAT8, UNKNOWN = 114, 199, 700, 701, 705
INT4_ARRAY, TEXT_ARRAY, VARCHAR = 1007, 1009, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, NUMERIC = 1082, 1083, 1114, 1184, 1186, 1700
RECORD, UUID, UUID_ARRAY, JSONB, JSONB_ARRAY = 2249, 2950, 2951, 3802, 3807

TYPES: dict[int, PgType] = {
    BOOL: PgType("bool", 1, "B", "boolean"),
    BYTEA: PgType("bytea", -1, "U", "bytea"),
    CHAR: PgType("char", 1, "Z", '"char"'),
    NAME: PgType("name", 64, "S", "name"),
    INT8: PgType("int8", 8, "N", "bigint"),
    INT2: PgType("int2", 2, "N", "smallint"),
    INT4: PgType("int4", 4, "N", "integer"),
    TEXT: PgType("text", -1, "S", "text"),
    OID: PgType("oid", 4, "N", "oid"),
    JSON: PgType("json", -1, "U", "json"),
    FLOAT4: PgType("float4", 4, "N", "real"),
    FLOAT8: PgType("float8", 8, "N", "double precision"),
    VARCHAR: PgType("varchar", -1, "S", "character varying"),
    DATE: PgType("date", 4, "D", "date"),
    TIME: PgType("time", 8, "D", "time without time zone"),
    TIMESTAMP: PgType("timestamp", 8, "D", "timestamp without time zone"),
    TIMESTAMPTZ: PgType("timestamptz", 8, "D", "timestamp with time zone"),
    INTERVAL: PgType("interval", 16, "T", "interval"),
    NUMERIC: PgType("numeric", -1, "N", "numeric"),
    UUID: PgType("uuid", 16, "U", "uuid"),
    RECORD: PgType("record", -1, "P", "record"),
    UNKNOWN: PgType("unknown", -2, "X", "unknown"),
    TEXT_ARRAY: PgType("_text", -1, "A", "text[]"),
    INT4_ARRAY: PgType("_int4", -1, "A", "integer[]"),
    JSONB: PgType("jsonb", -1, "U", "jsonb"),
    UUID_ARRAY: PgType("_uuid", -1, "A", "uuid[]"),
    JSON_ARRAY: PgType("_json", -1, "A", "json[]"),
    JSONB_ARRAY: PgType("_jsonb", -1, "A", "jsonb[]"),
}
ARRAY_OF = {TEXT: TEXT_ARRAY, INT4: INT4_ARRAY, UUID: UUID_ARRAY, JSON: JSON_ARRAY, JSONB: JSONB_ARRAY}

# RowDescription's type size: pg_type.typlen (-1 for a type we do not list).
TYPE_SIZES = {oid: pg_type.length for oid, pg_type in TYPES.items()}

# DuckDB type names, as the engine describes columns, to the OID the catalog lists them as:
# the OID the wire sends for the Arrow type DuckDB exports them as (tests/test_pgcatalog.py).
DUCKDB_TYPES = {
    "BOOLEAN": BOOL, "TINYINT": INT2, "SMALLINT": INT2, "INTEGER": INT4, "BIGINT": INT8,
    "UTINYINT": INT2, "USMALLINT": INT4, "UINTEGER": INT8, "UBIGINT": NUMERIC, "HUGEINT": NUMERIC,
    "UHUGEINT": NUMERIC, "FLOAT": FLOAT4, "DOUBLE": FLOAT8, "VARCHAR": TEXT, "DATE": DATE, "TIME": TIME,
    "TIME WITH TIME ZONE": TIME,  # Arrow's time has no zone
    "TIMESTAMP": TIMESTAMP, "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ, "INTERVAL": INTERVAL,
    "BLOB": BYTEA, "BIT": BYTEA, "UUID": UUID, "JSON": JSON,
}


def duckdb_type_oid(name: str) -> int:
    """The OID of a DuckDB type name (DECIMAL(10,2), TIMESTAMP_MS, ...); text for what we do not map."""
    upper = name.upper()
    if upper.startswith("DECIMAL") or upper.startswith("NUMERIC"):
        return NUMERIC
    if upper.startswith("TIMESTAMP") and "TIME ZONE" not in upper:
        return TIMESTAMP
    return DUCKDB_TYPES.get(upper, TEXT)


def numeric_typmod(precision: int, scale: int) -> int:
    """atttypmod / RowDescription's type modifier of numeric(precision, scale)."""
    return ((precision << 16) | scale) + 4


def duckdb_typmod(name: str) -> int:
    """The type modifier of a DuckDB type name: numeric's precision and scale, else -1."""
    upper = name.upper()
    if upper.startswith("DECIMAL(") and upper.endswith(")"):
        precision, _, scale = upper[8:-1].partition(",")
        return numeric_typmod(int(precision), int(scale or 0))
    if upper in ("HUGEINT", "UHUGEINT"):  # exported to Arrow as decimal(38, 0)
        return numeric_typmod(38, 0)
    return -1


# Template parameter types (policy) as PostgreSQL types: the argument types of the
# templates' functions in pg_proc, and the parameter types a wire client is told.
PARAMETER_TYPES = {"integer": INT8, "number": FLOAT8, "date": DATE, "enum": TEXT, "string": TEXT}


def parameter_oid(parameter) -> int:
    """The PostgreSQL type of a template parameter (gateway.policy.model.Parameter)."""
    kind = getattr(parameter.type, "value", parameter.type)
    if kind == "enum" and parameter.values and all(isinstance(v, int) and not isinstance(v, bool)
                                                   for v in parameter.values):
        return INT8
    return PARAMETER_TYPES.get(kind, TEXT)
