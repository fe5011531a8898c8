"""The gateway's own state: approvals, proposals and outputs.

SQLite (WAL, one file under state_dir) by default; PostgreSQL when the config
names a DSN, so several gateway hosts share one state. Both speak the same
small SQL here. Each write opens its own connection (writes are rare: approvals,
proposals, outputs). Reads are on the path of every statement an aggregation
rule authorises (its approvals are checked on every run), so each thread keeps
one autocommit reading connection, opened again after a fork (gunicorn) or a
broken connection: every read sees the latest committed writes of every
process, without the cost of connecting (about 2 ms for SQLite with its pragmas,
20 ms for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from gateway.config_model import GatewayConfig

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS approvals (
        cleanroom TEXT NOT NULL, template TEXT NOT NULL, template_sha256 TEXT NOT NULL,
        collaborator TEXT NOT NULL, approver TEXT NOT NULL, approved_at TEXT NOT NULL,
        approval_sha256 TEXT NOT NULL,
        PRIMARY KEY (cleanroom, template, template_sha256, collaborator))""",
    """CREATE TABLE IF NOT EXISTS proposals (
        cleanroom TEXT NOT NULL, template TEXT NOT NULL, template_sha256 TEXT NOT NULL,
        author TEXT NOT NULL, proposed_at TEXT NOT NULL,
        PRIMARY KEY (cleanroom, template, template_sha256))""",
    """CREATE TABLE IF NOT EXISTS outputs (
        output_id TEXT PRIMARY KEY, cleanroom TEXT NOT NULL, name TEXT NOT NULL,
        template TEXT NOT NULL, template_sha256 TEXT NOT NULL, receivers TEXT NOT NULL,
        num_rows INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, data {blob} NOT NULL)""",
]


class Store:
    """Runs parameterised SQL (written with `?`) on SQLite or PostgreSQL."""

    def __init__(self, sqlite_path: Path | None = None, postgres_dsn: str | None = None):
        if (sqlite_path is None) == (postgres_dsn is None):
            raise ValueError("give exactly one of sqlite_path and postgres_dsn")
        self.sqlite_path = Path(sqlite_path) if sqlite_path else None
        self.postgres_dsn = postgres_dsn
        if self.sqlite_path:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        blob = "BYTEA" if postgres_dsn else "BLOB"
        with self._connect() as con:
            for statement in SCHEMA:
                con.execute(statement.format(blob=blob))
        self._readers = threading.local()  # per thread: (pid, connection) for query()

    @classmethod
    def from_config(cls, config: GatewayConfig) -> "Store":
        if config.store.postgres_dsn:
            return cls(postgres_dsn=config.store.postgres_dsn)
        return cls(sqlite_path=Path(config.state_dir) / "collab.sqlite")

    @property
    def kind(self) -> str:
        return "postgres" if self.postgres_dsn else "sqlite"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Any]:
        """A connection whose execute() takes `?` placeholders; commits on success."""
        if self.postgres_dsn:
            import psycopg  # only deployments with a DSN need the driver

            with psycopg.connect(self.postgres_dsn) as con:  # commits on clean exit
                yield _QmarkAdapter(con)
            return
        con = sqlite3.connect(self.sqlite_path, timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            con.execute("PRAGMA synchronous=FULL")  # an approval is durable once acknowledged
            yield con
            con.commit()
        finally:
            con.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write; the number of rows it touched."""
        with self._connect() as con:
            return con.execute(sql, tuple(params)).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """Run a read on this thread's reading connection (autocommit: each read
        sees everything committed before it); reconnect once if it broke."""
        for attempt in (1, 2):
            con = self._reader()
            try:
                cursor = con.execute(sql, tuple(params))
                names = [d[0] for d in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
            except Exception as error:
                if attempt == 2 or not self._broken(error):
                    raise
                self._drop_reader()
        raise AssertionError("unreachable")

    def _reader(self):
        held = getattr(self._readers, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        if self.postgres_dsn:
            import psycopg

            con = _QmarkAdapter(psycopg.connect(self.postgres_dsn, autocommit=True))
        else:
            con = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)  # autocommit
        self._readers.held = (os.getpid(), con)  # a forked child opens its own (pid differs)
        return con

    def _drop_reader(self) -> None:
        held = getattr(self._readers, "held", None)
        self._readers.held = None
        if held is not None and held[0] == os.getpid():
            with contextlib.suppress(Exception):
                held[1].close()

    def _broken(self, error: Exception) -> bool:
        if self.postgres_dsn:
            import psycopg

            return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
        return isinstance(error, sqlite3.ProgrammingError)  # closed connection


class _QmarkAdapter:
    """psycopg with sqlite's `?` placeholders (the store's SQL has no literal `?`)."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql: str, params: tuple = ()):
        return self.con.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.con.close()
