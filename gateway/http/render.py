"""Answers as HTTP: a release as JSON (with its provenance and protection),
CSV or Arrow (provenance in headers), and the policy's tables and templates as
/v1/tables and /v1/templates list them.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import math

import pyarrow as pa
from flask import Response

from gateway.engine.types import Release
from gateway.http.requests import ARROW_TYPE, CSV_TYPE, JSON_TYPE


def release_response(release: Release, media_type: str) -> Response:
    if media_type == CSV_TYPE:
        response = Response(release_csv(release.table), mimetype=CSV_TYPE)
    elif media_type == ARROW_TYPE:
        response = Response(release_arrow(release.table), mimetype=ARROW_TYPE)
    else:
        body = json.dumps(release_json(release), allow_nan=False, separators=(",", ":"))
        return Response(body, mimetype=JSON_TYPE)
    # CSV and Arrow have no envelope: the release's provenance travels in headers.
    response.headers["X-Authorised-By"] = release.authorised_by
    if release.min_group_size is not None:
        response.headers["X-Min-Group-Size"] = str(release.min_group_size)
    for notice in release.notices:
        response.headers.add("X-Notice", json.dumps(notice)[1:-1])  # ASCII-safe header value
    return response


def release_json(release: Release) -> dict:
    table = release.table
    columns = [{"name": f.name, "type": sql_type(f.type)} for f in table.schema]
    rows = [list(map(json_value, row)) for row in zip(*(c.to_pylist() for c in table.columns))]
    if table.num_columns == 0:
        rows = [[] for _ in range(table.num_rows)]
    return {
        "columns": columns,
        "rows": rows,
        "row_count": table.num_rows,
        "request_id": release.request_id,
        "authorised_by": release.authorised_by,
        "min_group_size": release.min_group_size,
        "notices": list(release.notices),
        "protection": release.protection,  # differential privacy: how each noisy column was protected
    }


def release_csv(table: pa.Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(table.column_names)
    for row in zip(*(c.to_pylist() for c in table.columns)):
        writer.writerow(["" if v is None else csv_value(json_value(v)) for v in row])
    return out.getvalue()


def csv_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def release_arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def json_value(value):
    """One cell as JSON. Decimals become strings so no digit is lost. JSON has
    no NaN or infinity: they become null, as the engine's release already does."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def sql_type(arrow_type: pa.DataType) -> str:
    """Result column types in the SQL names /v1/tables uses (DuckDB's)."""
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return sql_type(arrow_type.value_type) + "[]"
    if pa.types.is_dictionary(arrow_type):
        return sql_type(arrow_type.value_type)
    for test, name in SQL_TYPE_NAMES:
        if test(arrow_type):
            return name
    return str(arrow_type).upper()


SQL_TYPE_NAMES = [
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_int8, "TINYINT"),
    (pa.types.is_int16, "SMALLINT"),
    (pa.types.is_int32, "INTEGER"),
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_uint8, "UTINYINT"),
    (pa.types.is_uint16, "USMALLINT"),
    (pa.types.is_uint32, "UINTEGER"),
    (pa.types.is_uint64, "UBIGINT"),
    (pa.types.is_float32, "FLOAT"),
    (pa.types.is_float64, "DOUBLE"),
    (pa.types.is_string, "VARCHAR"),
    (pa.types.is_large_string, "VARCHAR"),
    (lambda t: pa.types.is_string_view(t), "VARCHAR"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_time, "TIME"),
    (pa.types.is_duration, "INTERVAL"),
    (pa.types.is_interval, "INTERVAL"),
    (pa.types.is_binary, "BLOB"),
    (pa.types.is_large_binary, "BLOB"),
    (pa.types.is_struct, "STRUCT"),
    (pa.types.is_null, "NULL"),
]


# --- catalogue ---------------------------------------------------------------


def table_json(table) -> dict:
    return {
        "name": table.name,
        "owner": table.owner,
        "public": table.public,
        "description": table.description,
        "columns": [
            {
                "name": c.name,
                "type": c.type,
                "role": getattr(c.role, "value", c.role),
                "description": c.description,
                "values": json_value(list(c.values)) if c.values is not None else None,
                "bounds": {"lower": c.bounds.lower, "upper": c.bounds.upper} if c.bounds else None,
                "buckets": _buckets_json(c.buckets),
            }
            for c in table.columns
        ],
    }


def _buckets_json(buckets) -> dict | None:
    if buckets is None:
        return None
    return {"from": buckets.start.isoformat(), "to": buckets.end.isoformat(), "by": [u.value for u in buckets.units]}


def template_json(template) -> dict:
    return {
        "name": template.name,
        "description": template.description.strip(),
        "min_group_size": template.min_group_size,
        "parameters": [
            {
                "name": p.name,
                "type": getattr(p.type, "value", p.type),
                "description": p.description,
                "values": json_value(list(p.values)) if p.values is not None else None,
                "minimum": json_value(p.minimum),
                "maximum": json_value(p.maximum),
                "pattern": p.pattern,
                "default": json_value(p.default),
                "required": p.default is None,
            }
            for p in template.parameters
        ],
    }
