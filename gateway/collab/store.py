"""The gateway's own state: approvals, proposals and outputs.

SQLite (WAL, one file under state_dir) by default; PostgreSQL when the config
names a DSN, so several gateway hosts share one state. Both speak the same
small SQL here; each call opens its own connection, which keeps the store safe
across threads and gunicorn's forks (approvals are rare, a connection is cheap).
"""

from __future__ import annotations

import contextlib
import sqlite3
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
        with self._connect() as con:
            cursor = con.execute(sql, tuple(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]


class _QmarkAdapter:
    """psycopg with sqlite's `?` placeholders (the store's SQL has no literal `?`)."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql: str, params: tuple = ()):
        return self.con.execute(sql.replace("?", "%s"), params)
