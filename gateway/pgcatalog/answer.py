"""Running a translated catalog statement on a catalog database, within the
statement timeout, its failures reported as the gateway's errors."""

from __future__ import annotations

import logging
from typing import Callable, Protocol

import duckdb
import pyarrow as pa

from gateway.errors import SyntaxProblem, UnknownTable


class Timer(Protocol):
    """gateway.engine.watchdog.Watchdog: one thread fires every deadline, no thread per statement."""

    def arm(self, seconds: float, callback: Callable[[], None]) -> object: ...

    def disarm(self, alarm) -> None: ...


def answer(database: duckdb.DuckDBPyConnection, sql: str, timeout: float, timer: Timer,
           log: logging.Logger) -> pa.Table:
    cursor = database.cursor()
    alarm = timer.arm(timeout, lambda: _interrupt(cursor))
    try:
        return cursor.execute(sql).to_arrow_table()
    except duckdb.CatalogException as error:
        missing = str(error).split("\n")[0]
        raise UnknownTable(f"catalog relation or function not available: {missing[:200]}",
                           rule="catalog.unknown") from None
    except duckdb.Error as error:
        log.info("catalog query failed: %s\n%s", error, sql)
        raise SyntaxProblem(f"catalog query not supported: {str(error).splitlines()[0][:200]}",
                            rule="catalog.unsupported") from None
    finally:
        timer.disarm(alarm)
        cursor.close()


def _interrupt(cursor: duckdb.DuckDBPyConnection) -> None:
    try:
        cursor.interrupt()
    except duckdb.Error:  # the statement ended and closed its cursor as the deadline came
        pass
