"""Running a translated catalog statement on a catalog database, within the
statement timeout, its failures reported as the gateway's errors."""

from __future__ import annotations

import re

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
        log.info("catalog query read what is not emulated: %s\n%s", error, sql)
        raise UnknownTable(_missing(str(error)), rule="catalog.unknown", hint=_HINT) from None
    except duckdb.Error as error:
        log.info("catalog query failed: %s\n%s", error, sql)
        if "interrupt" in str(error).lower():
            raise SyntaxProblem(f"catalog query interrupted at its deadline ({timeout:g} s)",
                                rule="catalog.unsupported", hint=_HINT) from None
        raise SyntaxProblem("catalog query not supported", rule="catalog.unsupported", hint=_HINT) from None
    finally:
        timer.disarm(alarm)
        cursor.close()


def _interrupt(cursor: duckdb.DuckDBPyConnection) -> None:
    try:
        cursor.interrupt()
    except duckdb.Error:  # the statement ended and closed its cursor as the deadline came
        pass


_HINT = "the gateway answers the pg_catalog and information_schema queries drivers and BI tools send (docs/analysts-pg.md)"
_NAMED = re.compile(r"(Table|Function|Macro|Type|Schema)[A-Za-z ]* with name \"?([\w.]+)\"? does not exist")


def _missing(message: str) -> str:
    """PostgreSQL's wording for what the catalog does not have, never DuckDB's text."""
    found = _NAMED.search(message)
    if found is None:
        return "the statement reads a catalog relation or function this gateway does not provide"
    kind, name = found.group(1), found.group(2)[:80]
    if kind == "Table":
        return f'relation "{name}" does not exist'
    if kind in ("Function", "Macro"):
        return f"function {name}() does not exist"
    return f'{kind.lower()} "{name}" does not exist'
