"""The Spark engine (`engine: {kind: spark, remote: "sc://host:15002"}`): an executor process
(gateway/executor_main.py) holds one Spark Connect session instead of running statements
in its DuckDB, and keeps the DuckDB for what is decided on the gateway's side.

- Sources become temp views of the session, one per source relation, named as the
  generated SQL names it (spark_sql.view_name): Parquet and CSV paths when the session
  opens, PostgreSQL and MySQL/MariaDB tables over JDBC the first time a statement reads
  them. Every column is cast to the Spark type of what DuckDB reads there, so both engines
  compute over the same types (a CSV's columns are DuckDB's guess, never Spark's).
- Results take DuckDB's types: the DuckDB of the executor plans the same statement with
  LIMIT 0 (reading no rows), and Spark's Arrow result is cast to that schema, so a client
  sees the same column types on either engine.
- The session is locked down as far as Spark allows: ANSI mode (an overflow raises, as in
  DuckDB), UTC, and no SQL over file paths (spark.sql.runSQLOnFiles=false), each read back.
  Only statements generated and checked by the gateway reach it (spark_sql._check).
- Each statement carries a tag; when the parent kills an executor (deadline, cancel), it
  runs `python -m gateway.spark.session interrupt` to stop the session's operations on the
  server, so the cluster stops working too, and to release the session.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
import threading
import warnings

import duckdb
import pyarrow as pa

from gateway import sources
from gateway.config_model import GatewayConfig, Source

log = logging.getLogger("gateway.spark")

# Session settings, each read back after it is set.
SESSION_CONF = {
    "spark.sql.ansi.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.runSQLOnFiles": "false",
}
JDBC_DRIVERS = {"postgres": "org.postgresql.Driver", "mysql": "org.mariadb.jdbc.Driver"}
INTERRUPT_SECONDS = 60.0


def connect(remote: str, session_id: str):
    """A Spark Connect session with this id (the parent interrupts it by the same id)."""
    warnings.filterwarnings("ignore", module="pyspark")  # e.g. pandas 3 support notes, on stderr
    for name in ("pyspark", "SQLQueryContextLogger"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the parent logs failures itself
    from pyspark.sql.connect.session import SparkSession

    separator = ";" if "/" in remote[len("sc://"):] else "/;"
    return SparkSession.builder.remote(f"{remote}{separator}session_id={session_id}").create()


class SparkRunner:
    """One executor's Spark session, its views and its statements."""

    def __init__(self, config: GatewayConfig, database: duckdb.DuckDBPyConnection, session_id: str):
        self.config = config
        self.database = database
        self.session = connect(config.engine.remote, session_id)
        self.views: set[tuple[str, str, str]] = set()
        self._lock_session()
        for source in config.sources.values():
            if source.kind in ("parquet", "csv"):
                self._register((sources.MEMORY_CATALOG, sources.source_namespace(source.name), source.name))

    def _lock_session(self) -> None:
        for key, value in SESSION_CONF.items():
            self.session.conf.set(key, value)
            got = str(self.session.conf.get(key)).lower()
            if got != value.lower():
                raise RuntimeError(f"Spark setting {key} = {value} did not apply (it reads {got})")

    def run(self, duckdb_sql: str, spark_sql: str, relations, tag: str, max_rows: int) -> pa.Table | None:
        """The result with DuckDB's schema, or None when it has more than max_rows rows."""
        for relation in relations:
            if tuple(relation) not in self.views:
                self._register(tuple(relation))
        schema = result_schema(self.database, duckdb_sql)
        self.session.addTag(tag)
        try:
            table = self.session.sql(spark_sql).limit(max_rows + 1).toArrow()
        finally:
            self.session.removeTag(tag)
        if table.num_rows > max_rows:
            return None
        return conform(table, schema)

    def _register(self, relation: tuple[str, str, str]) -> None:
        from gateway.spark.sql import view_name

        source = _source_of(self.config, relation)
        columns = self.database.execute(f"DESCRIBE {_duckdb_name(relation)}").fetchall()
        frame = self._read(source, relation, columns)
        casts = [f"CAST({_quote(name)} AS {spark_type(kind)}) AS {_quote(name)}" if spark_type(kind) else _quote(name)
                 for name, kind, *_ in columns]
        frame.selectExpr(*casts).createOrReplaceTempView(_quote(view_name(*relation)))
        self.views.add(relation)

    def _read(self, source: Source, relation: tuple[str, str, str], columns):
        reader = self.session.read
        path = str(_resolve(self.config, source.path)) if source.path is not None else None
        if source.kind == "parquet":
            return reader.parquet(path)
        if source.kind == "csv":
            schema = ", ".join(f"{_quote(name)} {spark_type(kind) or 'STRING'}" for name, kind, *_ in columns)
            options = {"header": str(bool(source.options.get("header", True))).lower(),
                       "sep": str(source.options.get("delim", ",")), "mode": "FAILFAST"}
            return reader.options(**options).schema(schema).csv(path)
        if source.kind in JDBC_DRIVERS:
            url, properties = jdbc_url(source)
            table = ".".join(_jdbc_quote(source.kind, part) for part in relation[1:])
            return reader.jdbc(url, table, properties={**properties, "driver": JDBC_DRIVERS[source.kind]})
        raise RuntimeError(f"the spark engine cannot read a {source.kind} source ({source.name})")

    def close(self) -> None:
        try:
            self.session.stop()  # releases the session on the server
        except Exception:  # the server may be gone; nothing to release then
            pass


def result_schema(database: duckdb.DuckDBPyConnection, sql: str) -> pa.Schema:
    """The Arrow schema DuckDB gives this statement's result, planned with LIMIT 0."""
    cursor = database.cursor()
    try:
        return cursor.execute(f"SELECT * FROM ({sql}) LIMIT 0").arrow().schema
    finally:
        cursor.close()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Spark's result with DuckDB's names and types (a value that does not fit raises)."""
    if table.num_columns != len(schema):
        raise RuntimeError(f"Spark returned {table.num_columns} columns, DuckDB plans {len(schema)}")
    columns = [column.cast(field.type, safe=True) if column.type != field.type else column
               for column, field in zip(table.columns, schema)]
    return pa.Table.from_arrays(columns, schema=schema)


# DuckDB type -> Spark type, for the casts that give a view DuckDB's column types.
_SPARK_TYPES = {
    "BOOLEAN": "BOOLEAN", "TINYINT": "TINYINT", "SMALLINT": "SMALLINT", "INTEGER": "INT", "BIGINT": "BIGINT",
    "HUGEINT": "DECIMAL(38, 0)", "FLOAT": "FLOAT", "DOUBLE": "DOUBLE", "VARCHAR": "STRING", "DATE": "DATE",
    "TIMESTAMP": "TIMESTAMP_NTZ", "TIMESTAMP WITH TIME ZONE": "TIMESTAMP", "BLOB": "BINARY",
}


def spark_type(duckdb_type: str) -> str | None:
    """The Spark type for a DuckDB type name, or None to keep what Spark reads."""
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", duckdb_type)
    if decimal:
        return f"DECIMAL({decimal.group(1)}, {decimal.group(2)})"
    return _SPARK_TYPES.get(duckdb_type)


def jdbc_url(source: Source) -> tuple[str, dict[str, str]]:
    """A JDBC URL and connection properties from a libpq-style key=value DSN."""
    fields = dict(part.split("=", 1) for part in shlex.split(source.dsn or "") if "=" in part)
    host = fields.pop("host", "localhost")
    port = fields.pop("port", "5432" if source.kind == "postgres" else "3306")
    database = fields.pop("dbname", None) or fields.pop("database", None) or fields.pop("db", "")
    properties = {key: fields.pop(key) for key in ("user", "password") if key in fields}
    if "passwd" in fields:
        properties["password"] = fields.pop("passwd")
    if source.kind == "postgres":
        for key in ("sslmode", "options"):
            if key in fields:
                properties[key] = fields.pop(key)
        fields.pop("connect_timeout", None)
        return f"jdbc:postgresql://{host}:{port}/{database}", properties
    return f"jdbc:mysql://{host}:{port}/{database}", properties


def interrupt_later(remote: str, session_id: str) -> None:
    """Stop the session's operations on the server and release it, from a separate process
    (gRPC stays out of the front-end process), without waiting for it."""
    def run() -> None:
        try:
            done = subprocess.run([sys.executable, "-m", "gateway.spark.session", "interrupt", remote, session_id],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=INTERRUPT_SECONDS)
            log.info("spark session %s: %s", session_id, (done.stdout or done.stderr).strip()[-300:])
        except subprocess.TimeoutExpired:
            log.error("spark session %s: interrupt did not finish in %g s", session_id, INTERRUPT_SECONDS)

    threading.Thread(target=run, name="spark-interrupt", daemon=True).start()


def interrupt(remote: str, session_id: str) -> list[str]:
    """Interrupt every operation of the session, then release it; the operation ids."""
    session = connect(remote, session_id)
    try:
        return list(session.interruptAll())
    finally:
        session.stop()


def _source_of(config: GatewayConfig, relation: tuple[str, str, str]) -> Source:
    catalog, schema, _ = relation
    namespace = schema if catalog == sources.MEMORY_CATALOG else catalog
    for source in config.sources.values():
        if sources.source_namespace(source.name) == namespace:
            return source
    raise RuntimeError(f"no source for relation {'.'.join(relation)}")


def _duckdb_name(relation: tuple[str, str, str]) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in relation)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _jdbc_quote(kind: str, name: str) -> str:
    return "`" + name.replace("`", "``") + "`" if kind == "mysql" else '"' + name.replace('"', '""') + '"'


def _resolve(config: GatewayConfig, path):
    return (config.path.parent / path).resolve()


if __name__ == "__main__" and sys.argv[1:2] == ["interrupt"]:
    print(f"interrupted {len(interrupt(sys.argv[2], sys.argv[3]))} operation(s)")
