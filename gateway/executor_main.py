"""The body of an executor process (see gateway/engine/executors.py): receive the gateway config,
open the locked database, then run statements sent over the socket until it closes.

Messages in: the GatewayConfig once, then ("run", sql, max_rows). Out: ("ready",) once, then per statement
("rows",) followed by the result as an Arrow IPC stream, ("too_large",), or
("error", text) where text is DuckDB's message, for the operator's log only.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

import duckdb
import pyarrow as pa
import pyarrow.ipc  # noqa: F401

from gateway import sources

BATCH_ROWS = 65_536


def serve(pipe: Connection) -> None:
    try:
        config = pipe.recv()
        database = sources.open_database(config)
    except BaseException as error:  # the parent logs it and counts the statement failed
        pipe.send(("failed", f"{type(error).__name__}: {error}"))
        return
    pipe.send(("ready",))
    try:
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):  # the parent closed the pipe or died
                return
            _, sql, max_rows = message
            _run(database, pipe, sql, max_rows)
    finally:
        database.close()


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
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, reader.schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        pipe.send(("rows",))
        pipe.send_bytes(sink.getvalue())
    except duckdb.Error as error:
        pipe.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        cursor.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
