"""An in-memory DuckDB for computing over rows the gateway already holds (noisy
values being post-processed, released rows an outer query reads), never over a
source.

Opening a DuckDB database costs 5-50 ms, more than everything else a replayed
release does, so each process keeps one and every call takes a cursor of its
own: a cursor is a separate connection to the same database, whose registered
Arrow tables are its own, so concurrent calls do not see each other's rows.
The database has no external access and is opened afresh after a fork (a
DuckDB database must not cross one).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None
_owner_pid: int | None = None


def _this_process_database() -> duckdb.DuckDBPyConnection:
    global _database, _owner_pid
    with _lock:
        if _database is None or _owner_pid != os.getpid():
            _database = duckdb.connect(":memory:", config={"enable_external_access": False, "threads": 1})
            _owner_pid = os.getpid()
        return _database


@contextmanager
def scratch() -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on this process's scratch database, closed on leaving."""
    cursor = _this_process_database().cursor()
    try:
        yield cursor
    finally:
        cursor.close()
