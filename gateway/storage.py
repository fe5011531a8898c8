"""The gateway's own tables in SQLite or PostgreSQL: one adapter for the approvals
store (gateway/collab/store.py), the budget ledger and release cache
(gateway/dp/ledger.py, release_cache.py), the audit anchors and copies (gateway/audit_log/anchors.py)
and the quota windows (gateway/quotas/usage.py).

- Where: a SQLite file under the config's state_dir (WAL: readers never wait for
  the writer), or the config's PostgreSQL (`store.postgres_dsn`), so several
  gateway hosts share one state. `Database.for_config` picks.
- Placeholders: SQL is written once with sqlite3's `?`; on PostgreSQL each becomes
  `%s` (no statement here has a literal `?` or `%`). `create` fills `{name}` per
  dialect from "sqlite type|postgres type".
- Transactions: `transaction(lock=...)` serialises writers: SQLite's `BEGIN
  IMMEDIATE` (the whole file) with synchronous=FULL (a commit is on disk before it
  returns), PostgreSQL's transaction-level advisory lock on `lock` (`lock_key`).
  `reading()` is one snapshot without the write lock.
- Connections: opened per transaction (they are cheap next to what a write costs),
  except `query`'s (one autocommit reading connection per thread, opened again
  after a fork or a broken connection) and `connect`'s (one the caller keeps).
- Migrations: `create` (tables, indexes) and `add_columns` run under one schema
  lock, so workers starting at once create and migrate once.

The PostgreSQL driver is imported only by deployments that name a DSN.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

POSTGRES, SQLITE = "postgres", "sqlite"


def lock_key(text: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for `text`."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


SCHEMA_LOCK = lock_key("dp schema")  # what the ledger has always created its tables under


MAX_UNCHANGED_READS = 1024  # per thread: distinct reads kept by query_unchanged


class Connection:
    """A connection whose `execute` takes `?` placeholders on either database."""

    def __init__(self, raw, qmark: bool):
        self.raw = raw
        self.qmark = qmark  # PostgreSQL: `?` -> `%s`

    def execute(self, sql: str, params: Sequence[Any] = ()):
        if self.qmark:
            sql = sql.replace("?", "%s")
        return self.raw.execute(sql, tuple(params))

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        cursor = self.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.raw.close()


class Database:
    """Where one set of the gateway's tables lives. Thread- and fork-safe: it holds
    no connection but each thread's reading one, which a forked child never uses."""

    def __init__(self, sqlite_path: Path | None = None, postgres_dsn: str | None = None):
        if (sqlite_path is None) == (postgres_dsn is None):
            raise ValueError("give exactly one of sqlite_path and postgres_dsn")
        self.sqlite_path = Path(sqlite_path) if sqlite_path is not None else None
        self.postgres_dsn = postgres_dsn
        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        self._readers = threading.local()  # per thread: (pid, Connection) for query()

    @classmethod
    def for_config(cls, config, file_name: str) -> "Database":
        """The config's PostgreSQL when it names one, else <state_dir>/<file_name>."""
        if config.store.postgres_dsn:
            return cls(postgres_dsn=config.store.postgres_dsn)
        return cls(sqlite_path=Path(config.state_dir) / file_name)

    @property
    def kind(self) -> str:
        return POSTGRES if self.postgres_dsn else SQLITE

    def describe(self) -> str:
        return f"the store at {self.sqlite_path}" if self.sqlite_path is not None else "the PostgreSQL store"

    # -- schema ----------------------------------------------------------------------

    def create(self, statements: Sequence[str], **types: str) -> None:
        """Create tables and indexes; `types` fill `{name}` per dialect: each value
        is "sqlite type|postgres type"."""
        chosen = {name: value.split("|")[1 if self.postgres_dsn else 0] for name, value in types.items()}
        if self.sqlite_path is not None:
            con = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
            try:
                mode = _journal_mode_wal(con)  # persistent: set once per file
                if mode.lower() != "wal":
                    raise RuntimeError(f"{self.sqlite_path}: could not switch to WAL (journal_mode={mode})")
            finally:
                con.close()
        # Several workers may start at once: create under the lock, not racing.
        with self.transaction(lock=SCHEMA_LOCK) as tx:
            for statement in statements:
                tx.execute(statement.format(**chosen))

    def add_columns(self, table: str, columns: Sequence[tuple[str, str]]) -> list[str]:
        """Add the (name, definition) columns `table` lacks, in order; returns the
        names added. Under the schema lock, so workers opening an old table add them once."""
        added = []
        with self.transaction(lock=SCHEMA_LOCK) as tx:
            if self.postgres_dsn:
                have = {row[0] for row in tx.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = ?", (table,)).fetchall()}
            else:
                have = {row[1] for row in tx.execute(f"PRAGMA table_info({table})").fetchall()}
            for name, definition in columns:
                if name not in have:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
                    added.append(name)
        return added

    # -- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, lock: int | None = None) -> Iterator[Connection]:
        """One transaction; committed when the block ends cleanly, rolled back on
        any exception. With SQLite every transaction here takes the write lock
        at once (`BEGIN IMMEDIATE`), so `lock` is implied."""
        if self.postgres_dsn:
            import psycopg

            with psycopg.connect(self.postgres_dsn) as con:  # commits on clean exit, rolls back on error
                tx = Connection(con, qmark=True)
                if lock is not None:
                    tx.execute("SELECT pg_advisory_xact_lock(?)", (lock,))
                yield tx
            return
        con = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns
            con.execute("BEGIN IMMEDIATE")
            try:
                yield Connection(con, qmark=False)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read: no write lock (WAL readers never wait for the writer)."""
        if self.postgres_dsn:
            import psycopg

            with psycopg.connect(self.postgres_dsn) as con:
                yield Connection(con, qmark=True)
            return
        con = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None)
        try:
            con.execute("BEGIN")  # one snapshot for all the reads in the block
            yield Connection(con, qmark=False)
            con.execute("COMMIT")
        finally:
            con.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write in a transaction of its own; the number of rows it touched."""
        with self.transaction() as tx:
            return tx.execute(sql, params).rowcount

    # -- kept connections ------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """A read on this thread's reading connection (autocommit: each read sees
        everything committed before it, without the cost of connecting: about 2 ms
        for SQLite, 20 ms for PostgreSQL); connects again once if it broke."""
        return self._on_reader(lambda con: con.rows(sql, params))

    def _on_reader(self, read):
        """read(connection) on this thread's reading connection, connecting again once if it broke."""
        for attempt in (1, 2):
            con = self._reader()
            try:
                return read(con)
            except Exception as error:
                if attempt == 2 or not self.is_broken(error):
                    raise
                self._drop_reader()
        raise AssertionError("unreachable")

    def query_unchanged(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """query(), answered from this thread's memory while nothing was committed to the
        database since this thread last ran it: SQLite's `PRAGMA data_version` changes
        whenever any other connection, in any process, commits to the file. For reads on
        every statement's path (approvals). PostgreSQL keeps no such counter: read each time.
        The rows are shared with later callers: do not change them."""
        if self.postgres_dsn:
            return self.query(sql, params)

        def read(con: Connection) -> list[dict]:
            version = (id(con), con.raw.execute("PRAGMA data_version").fetchone()[0])
            memo = self._readers.__dict__.setdefault("unchanged", {})
            key = (sql, tuple(params))
            kept = memo.get(key)
            if kept is not None and kept[0] == version:
                return kept[1]
            rows = con.rows(sql, params)
            if len(memo) >= MAX_UNCHANGED_READS:
                memo.clear()
            memo[key] = (version, rows)
            return rows

        return self._on_reader(read)

    def connect(self, *, durable: bool = True, any_thread: bool = False) -> Connection:
        """An autocommit connection for the caller to keep (and to open again in a
        forked child: closing an inherited SQLite connection could drop the parent's
        WAL). Not durable: a commit does not wait for the disk (SQLite
        synchronous=NORMAL, PostgreSQL synchronous_commit off), so a crash of the
        machine or the database server may forget the last commits, never corrupt them."""
        if self.postgres_dsn:
            import psycopg

            raw = psycopg.connect(self.postgres_dsn, autocommit=True)
            if not durable:
                raw.execute("SET synchronous_commit = off")
            return Connection(raw, qmark=True)
        raw = sqlite3.connect(self.sqlite_path, timeout=30, isolation_level=None, check_same_thread=not any_thread)
        raw.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        return Connection(raw, qmark=False)

    def is_broken(self, error: Exception) -> bool:
        """Whether `error` says the connection is gone (the server restarted, it was closed)."""
        if self.postgres_dsn:
            import psycopg

            return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
        return isinstance(error, sqlite3.ProgrammingError)  # closed connection

    def _reader(self) -> Connection:
        held = getattr(self._readers, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        con = self.connect()
        self._readers.held = (os.getpid(), con)  # a forked child opens its own (pid differs)
        return con

    def _drop_reader(self) -> None:
        held = getattr(self._readers, "held", None)
        self._readers.held = None
        if held is not None and held[0] == os.getpid():
            with contextlib.suppress(Exception):
                held[1].close()


def _journal_mode_wal(con: sqlite3.Connection) -> str:
    """Switch a file to WAL. The switch needs the file to itself and SQLite answers
    "database is locked" at once (no busy wait) while another process holds it, as
    when several workers open one database together: wait and retry, up to 30 s."""
    for attempt in range(300):
        try:
            return con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == 299:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")  # pragma: no cover
