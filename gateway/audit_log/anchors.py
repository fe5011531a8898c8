"""Where each chain's head is anchored, outside its file: the gateway's store.

Deleting the *last* records of a chain, or the whole file, leaves what remains
intact, so each chain's head (sequence number and hash) is also kept in the store
(`audit_chains`, one row per chain): a chain that ends before its anchored head, or
whose file is gone while its anchor remains, no longer verifies.

With a PostgreSQL store the records themselves are copied there too
(`audit_records`), in the same transaction as the anchor that covers them, so no
single host holds the only copy of a room's audit: `cleanroom audit verify` on any
host checks the copies of every chain, including those of other hosts.

`LegacyAnchor` reads the anchor of the single shared log of earlier versions
(`audit_anchors`, keyed by the log's first hash and its location).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path
from typing import Iterator

from gateway.storage import Connection, Database

CHAIN_TABLES = [
    """CREATE TABLE IF NOT EXISTS audit_chains (
        chain TEXT PRIMARY KEY, location TEXT NOT NULL,
        seq BIGINT NOT NULL, hash TEXT NOT NULL, anchored_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_records (
        chain TEXT NOT NULL, seq BIGINT NOT NULL, time TEXT, cleanroom TEXT, line TEXT NOT NULL,
        PRIMARY KEY (chain, seq))""",
    "CREATE INDEX IF NOT EXISTS audit_records_by_time ON audit_records (time, chain, seq)",
]
UPSERT_HEAD = """INSERT INTO audit_chains (chain, location, seq, hash, anchored_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, anchored_at = excluded.anchored_at
    WHERE audit_chains.seq < excluded.seq"""
# With PostgreSQL, a batch's records and its anchor in one statement: one round trip, one commit.
# Rows as VALUES (psycopg adapts a list parameter in Python, at several times the cost).
# A retry after a dropped connection may copy a record twice: the first copy stands.
COPY = """INSERT INTO audit_records (chain, seq, time, cleanroom, line) VALUES {rows}
    ON CONFLICT (chain, seq) DO NOTHING"""
COPY_AND_ANCHOR = "WITH copied AS (" + COPY + ") " + UPSERT_HEAD.replace("?", "%s")
ROWS_PER_STATEMENT = 500  # far below PostgreSQL's 65,535 parameters a statement


def folder_location(folder: Path) -> str:
    """Where a folder of chains lives (host and real path): a chain anchored here
    whose file is missing was removed, one anchored elsewhere is another host's."""
    return f"{socket.gethostname()}:{os.path.realpath(folder)}"


class ChainAnchors:
    """The anchors of the chains in one folder, and with PostgreSQL their copies.

    Written on a connection of its own, kept open (one per batch would be too slow).
    Under SQLite without waiting for the store's fsync (synchronous=NORMAL): a head
    lost in a crash of the store leaves the anchor behind the chain, which verifies;
    it is never ahead of what the chain made durable. Under PostgreSQL the copy is a
    real commit (synchronous_commit on): once an answer waited for it, the records
    are on two machines.
    """

    def __init__(self, store: Database | None, folder: Path):
        self._store, self.folder = store, Path(folder)
        self._created = False
        self._connection: Connection | None = None
        self._pid = None
        self._location: str | None = None

    @property
    def store(self) -> Database:
        """The store given, or the SQLite file in the state folder (where the gateway's
        store is without a DSN: gateway.collab.store)."""
        if self._store is None:
            self._store = Database(sqlite_path=self.folder.parent / "collab.sqlite")
        if not self._created:
            self._store.create(CHAIN_TABLES)
            self._created = True
        return self._store

    def describe(self) -> str:
        return self.store.describe()

    @property
    def copies_records(self) -> bool:
        return self.store.postgres_dsn is not None

    @property
    def location(self) -> str:
        if self._location is None:
            self._location = folder_location(self.folder)
        return self._location

    def save(self, chain: str, seq: int, hash_: str, copies: list[tuple[int, str, str | None, str | None]]) -> None:
        """Anchor the chain's head at (seq, hash_); with PostgreSQL, copy the records
        `copies` ((seq, line, time, cleanroom) each) in the same transaction."""
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        head = (chain, self.location, seq, hash_, now)
        for attempt in (1, 2):  # a dropped connection (store restarted) is retried once
            try:
                connection = self._connect()
                if not self.copies_records:
                    connection.execute(UPSERT_HEAD, head)
                    return
                self._copy_and_anchor(connection, chain, copies, head)
                return
            except Exception:
                self._connection = None
                if attempt == 2:
                    raise

    @staticmethod
    def _copy_and_anchor(connection: Connection, chain: str, copies: list, head: tuple) -> None:
        upsert = UPSERT_HEAD.replace("?", "%s")
        chunks = [copies[i:i + ROWS_PER_STATEMENT] for i in range(0, len(copies), ROWS_PER_STATEMENT)]
        statements = []
        for chunk in chunks:
            params = [value for seq, line, time, room in chunk for value in (chain, seq, time, room, line)]
            statements.append((", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk)), params))
        if not statements:
            connection.raw.execute(upsert, head)
        elif len(statements) == 1:
            values, params = statements[0]
            connection.raw.execute(COPY_AND_ANCHOR.format(rows=values), (*params, *head))
        else:  # a large batch (records nobody waited for, piled up): one transaction still
            with connection.raw.transaction():
                for values, params in statements:
                    connection.raw.execute(COPY.format(rows=values), params)
                connection.raw.execute(upsert, head)

    def _connect(self) -> Connection:
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        # A connection inherited through fork is left unclosed: closing SQLite's copy could
        # drop the parent's WAL. Used by the anchoring thread, or an event loop's.
        store = self.store
        self._connection = store.connect(durable=self.copies_records, any_thread=True)
        self._pid = os.getpid()
        return self._connection

    # -- reading -------------------------------------------------------------------

    def heads(self) -> dict[str, dict]:
        """Every anchored chain in the store: chain -> its row (location, seq, hash)."""
        return {row["chain"]: row for row in self.store.query("SELECT * FROM audit_chains ORDER BY chain")}

    def copy_of(self, chain: str) -> list[bytes]:
        """The PostgreSQL copy of one chain's records, as lines in order."""
        rows = self.store.query("SELECT line FROM audit_records WHERE chain = ? ORDER BY seq", (chain,))
        return [row["line"].encode() + b"\n" for row in rows]

    def newest_elsewhere(self, rooms: set[str] | None, page: int = 500) -> Iterator[dict]:
        """Copied records of chains written in other folders (other hosts, other state
        dirs), newest first by (time, chain, seq): for readers of the whole room."""
        if not self.copies_records:
            return
        import json

        where, params = "c.location <> ?", [self.location]
        if rooms is not None:
            if not rooms:
                return
            where += f" AND r.cleanroom IN ({', '.join('?' for _ in rooms)})"
            params += sorted(rooms)
        after = None
        while True:
            bound = ""
            if after is not None:  # keyset paging: strictly older than the last row seen
                bound = " AND (COALESCE(r.time, ''), r.chain, r.seq) < (?, ?, ?)"
            rows = self.store.query(
                "SELECT r.line, COALESCE(r.time, '') AS t, r.chain, r.seq FROM audit_records r "
                f"JOIN audit_chains c ON c.chain = r.chain WHERE {where}{bound} "
                f"ORDER BY COALESCE(r.time, '') DESC, r.chain DESC, r.seq DESC LIMIT {int(page)}",
                params + (list(after) if after is not None else []))
            for row in rows:
                yield {**json.loads(row["line"]), "line": row["seq"]}
            if len(rows) < page:
                return
            after = (rows[-1]["t"], rows[-1]["chain"], rows[-1]["seq"])


class LegacyAnchor:
    """The anchor of the single shared log of earlier versions (state_dir/audit.jsonl),
    read only: that log is no longer written, but an existing one is still verified."""

    TABLE = """CREATE TABLE IF NOT EXISTS audit_anchors (
        log_id TEXT PRIMARY KEY, location TEXT NOT NULL,
        seq BIGINT NOT NULL, hash TEXT NOT NULL, anchored_at TEXT NOT NULL)"""

    def __init__(self, stores: list[Database], log_path: Path):
        self.stores, self.log_path = stores, Path(log_path)

    def load(self, log_id: str | None) -> tuple[dict, Database] | None:
        """The anchored head of the log named log_id (its first record's hash); with
        None, of any log that lived at its location (the log is empty or gone). Earlier
        versions kept it in the SQLite store beside the log even with a PostgreSQL
        store, so each store given is looked in."""
        location = f"{socket.gethostname()}:{os.path.realpath(self.log_path)}"
        for store in self.stores:
            store.create([self.TABLE])
            if log_id is not None:
                rows = store.query("SELECT * FROM audit_anchors WHERE log_id = ?", (log_id,))
            else:
                rows = store.query("SELECT * FROM audit_anchors WHERE location = ? ORDER BY seq DESC", (location,))
            if rows:
                return rows[0], store
        return None
