"""The body of an executor process (see gateway/engine/executors.py): receive the gateway config,
open the locked database, then run statements sent over the socket until it closes.

Messages in: the GatewayConfig once, then ("run", sql, max_rows, spark_job, models), models being the
ModelFiles the statement scores: each registered once as a DuckDB function before it first runs (gateway/models).
Out: ("ready",) once, then per statement ("rows",) followed by the result as an Arrow IPC stream,
("too_large",), or ("error", text) where text is the engine's message, for the operator's log only.

With the Spark engine (argv[2]: the Spark Connect session id), spark_job is (Spark SQL, relations, tag): the
statement runs on Spark, its DuckDB form only planned here for the result's types (gateway/spark/session.py).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing.connection import Connection

import duckdb
import pyarrow as pa
import pyarrow.ipc  # noqa: F401

from gateway import sources
from gateway.models.files import ModelFileError
from gateway.models.scoring import ensure_registered

BATCH_ROWS = 65_536
WARM_BYTES = 256 * 1024 * 1024  # attached DuckDB files up to this size are read once at start (_warm)


def serve(pipe: Connection, session_id: str = "") -> None:
    try:
        config = pipe.recv()
        database = sources.open_database(config)
        spark = None
        if config.engine.kind == "spark":
            from gateway.spark.session import SparkRunner

            spark = SparkRunner(config, database, session_id)
    except BaseException as error:  # the parent logs it and counts the statement failed
        pipe.send(("failed", f"{type(error).__name__}: {error}"))
        return
    if spark is None:
        _warm(database)
    pipe.send(("ready",))
    registered: set[str] = set()  # scoring functions this database has
    try:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):  # the parent closed the pipe or died
                return
            _, sql, max_rows, spark_job, models = message
            if models and not _register(database, models, registered, pipe):
                continue
            if spark is None:
                _run(database, pipe, sql, max_rows)
            else:
                _run_on_spark(spark, pipe, sql, max_rows, spark_job)
    finally:
        if spark is not None:
            spark.close()
        database.close()


def _warm(database) -> None:
    """Read the tables of the attached DuckDB files into this process's buffer pool before it
    says it is ready: its first statement would otherwise read them from the file (about 0.4 s
    of CPU for 10M rows, a 52 MB file, on the first statement only). Only while they fit in
    WARM_BYTES: past that, a scan of everything in every executor at every start costs more
    than it saves, and the buffer pool could not keep it all. Parquet and CSV sources are read
    from their files on every statement anyway; server sources live elsewhere."""
    try:
        files = database.execute(
            "SELECT d.database_name, s.block_size * s.used_blocks FROM duckdb_databases() d "
            "JOIN pragma_database_size() s USING (database_name) "
            "WHERE d.type = 'duckdb' AND NOT d.internal AND d.database_name LIKE 'src\\_%' ESCAPE '\\'").fetchall()
        if not files or sum(size for _, size in files) > WARM_BYTES:
            return
        columns = database.execute(
            "SELECT database_name, schema_name, table_name, list(column_name ORDER BY column_index) "
            "FROM duckdb_columns() WHERE database_name IN (SELECT unnest(?)) "
            "GROUP BY ALL", [[name for name, _ in files]]).fetchall()
        for catalog, schema, table, names in columns:
            read = ", ".join(f"sum(hash({_quoted(name)}))" for name in names)
            database.execute(f"SELECT {read} FROM {_quoted(catalog)}.{_quoted(schema)}.{_quoted(table)}").fetchall()
    except duckdb.Error:
        pass  # only a head start: the statements read what they need anyway


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _run(database, pipe, sql: str, max_rows: int) -> None:
    cursor = database.cursor()
    try:
        reader = cursor.execute(sql).to_arrow_reader(BATCH_ROWS)
        batches, rows = [], 0
        for batch in reader:
            rows += batch.num_rows
            if rows > max_rows:
                pipe.send(("too_large",))
                return
            batches.append(batch)
        _send(pipe, reader.schema, batches)
    except duckdb.Error as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        cursor.close()


def _register(database, models, registered: set[str], pipe) -> bool:
    """Register the statement's scoring functions; the file is hashed again as it is
    loaded, so one changed since the policy loaded fails the statement, unscored."""
    try:
        ensure_registered(database, models, registered)
    except (ModelFileError, duckdb.Error) as error:
        pipe.send(("error", f"model: {getattr(error, 'message', error)}"))
        return False
    return True


def _run_on_spark(spark, pipe, sql: str, max_rows: int, spark_job) -> None:
    spark_sql, relations, tag = spark_job
    try:
        table = spark.run(sql, spark_sql, relations, tag, max_rows)
    except Exception as error:  # Spark's (or a cast's) error: the parent logs it, the client sees a request id
        pipe.send(("error", f"{type(error).__name__}: {str(error)[:2000]}"))
        return
    if table is None:
        pipe.send(("too_large",))
        return
    _send(pipe, table.schema, table.to_batches(BATCH_ROWS))


def _send(pipe, schema, batches) -> None:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    pipe.send(("rows",))
    pipe.send_bytes(sink.getvalue())


def _exit_when_orphaned(parent: int) -> None:
    """A statement would run on to its end after the parent is gone (killed with -9, say):
    re-parented, this process is no one's executor any more, so it ends."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def main(argv: list[str]) -> int:
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="orphan-watch", daemon=True).start()
    try:
        serve(Connection(int(argv[1])), argv[2] if len(argv) > 2 else "")
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the parent closed the socket (it exited, during this one's start, say): no one is left to answer
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
