"""Append-only, hash-chained audit log in a JSON-lines file, anchored outside it.

Each record carries its sequence number and the hash of the one before, so an
edited, deleted or reordered record breaks the chain. Deleting the *last*
records leaves a shorter chain that is still intact, so the head (sequence
number and hash) is also kept in the gateway's store (the anchor): a log that
ends before its anchored head no longer verifies.

Appends are durable before they return. Processes (gunicorn or wire workers)
share the file under an exclusive flock; the threads of one process share each
write and fsync (group commit), since one fsync costs more than everything else
a small statement does.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
import threading
from pathlib import Path

GENESIS = "0" * 64


def record_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def location(path: Path) -> str:
    """Where a log lives, so an emptied or missing log still finds its anchor."""
    return f"{socket.gethostname()}:{os.path.realpath(path)}"


class _Pending:
    __slots__ = ("record", "done", "error")

    def __init__(self, record: dict):
        self.record, self.done, self.error = record, False, None


class AuditLog:
    def __init__(self, path: Path, store=None):
        """`store`: a gateway.collab.store.Store for the anchor; by default the SQLite
        store beside the log (where Store.from_config puts it without a DSN)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.anchor = Anchor(store, self.path)
        self._fork_reset()

    def _fork_reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        # (dev, inode, size, seq, hash, log id) just after this process's last append: while
        # the file still has that size nobody else appended, so its last line need not be read.
        self._head: tuple | None = None

    def append(self, record: dict) -> dict:
        """Returns once the record, chained and hashed, is on disk and anchored."""
        if self._pid != os.getpid():  # a fork copied another process's locks and queue
            self._fork_reset()
        pending = _Pending(json.loads(json.dumps(record, default=str)))  # what is hashed is what is stored
        with self._cond:
            self._queue.append(pending)
            while not pending.done:
                if self._writing:  # a leader is writing; the next batch forms meanwhile
                    self._cond.wait()
                    continue
                batch, self._queue, self._writing = self._queue, [], True
                self._cond.release()
                try:
                    self._commit([p.record for p in batch])
                    error = None
                except BaseException as failure:  # every record of the batch shares its fate
                    error = failure
                finally:
                    self._cond.acquire()
                    self._writing = False
                for member in batch:
                    member.done, member.error = True, error
                self._cond.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.record

    def _commit(self, records: list[dict]) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stat = os.fstat(fd)
            head, self._head = self._head, None  # unknown until this write is done
            if head is None or head[:3] != (stat.st_dev, stat.st_ino, stat.st_size):
                head = (stat.st_dev, stat.st_ino, stat.st_size, *_read_head(fd, stat.st_size))
            seq, prev, log_id = head[3:]
            lines = []
            for record in records:
                seq += 1
                record["seq"], record["prev"] = seq, prev
                record["hash"] = prev = record_hash(record)
                log_id = log_id or prev  # a log is named by its first record's hash
                lines.append(json.dumps(record, sort_keys=True) + "\n")
            data = memoryview("".join(lines).encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
            self._head = (stat.st_dev, stat.st_ino, stat.st_size + len(data.obj), seq, prev, log_id)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        # After the fsync, so the anchor never names a record the disk may lose; outside the
        # lock, since an older batch's anchor never overwrites a newer one (see Anchor.save).
        self.anchor.save(log_id, seq, prev)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            return [json.loads(line) for line in f if line.strip()]


def _read_head(fd: int, size: int) -> tuple[int, str, str | None]:
    """(last sequence number, last hash, log id) of the file as it is on disk."""
    if size == 0:
        return 0, GENESIS, None
    chunk = 4096
    while True:  # read backwards until a whole last line is in hand
        start = max(0, size - chunk)
        lines = os.pread(fd, size - start, start).rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or start == 0:
            break
        chunk *= 4
    last = json.loads(lines[-1])
    with os.fdopen(os.dup(fd), "rb") as f:
        first = json.loads(f.readline())
        seq = last["seq"] if "seq" in last else 1 + sum(1 for _ in f)  # logs from before sequence numbers
    return seq, last["hash"], first["hash"]


class Anchor:
    """The log's head in the store: one row per log, upserted once per group commit.

    It is written on a connection of its own, kept open (Store opens one per call,
    too slow for every commit) and without waiting for the store's own fsync: a head
    lost in a crash of the store leaves the anchor behind the log, which verifies;
    it is never ahead of what the log made durable.
    """

    TABLE = """CREATE TABLE IF NOT EXISTS audit_anchors (
        log_id TEXT PRIMARY KEY, location TEXT NOT NULL,
        seq BIGINT NOT NULL, hash TEXT NOT NULL, anchored_at TEXT NOT NULL)"""
    UPSERT = """INSERT INTO audit_anchors (log_id, location, seq, hash, anchored_at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT (log_id) DO UPDATE SET location = excluded.location, seq = excluded.seq,
            hash = excluded.hash, anchored_at = excluded.anchored_at
        WHERE audit_anchors.seq < excluded.seq"""

    def __init__(self, store, log_path: Path):
        self._store, self.log_path = store, Path(log_path)
        self._connection, self._pid = None, None

    @property
    def store(self):
        if self._store is None:
            from gateway.collab.store import Store

            self._store = Store(sqlite_path=self.log_path.parent / "collab.sqlite")
        return self._store

    def describe(self) -> str:
        store = self.store
        return f"the store at {store.sqlite_path}" if store.kind == "sqlite" else "the PostgreSQL store"

    def save(self, log_id: str, seq: int, hash_: str) -> None:
        params = (log_id, location(self.log_path), seq, hash_, dt.datetime.now(dt.timezone.utc).isoformat())
        for attempt in (1, 2):  # a dropped connection (store restarted) is retried once
            try:
                self._connect().execute(self._sql(self.UPSERT), params)
                return
            except Exception:
                self._connection = None
                if attempt == 2:
                    raise

    def load(self, log_id: str | None) -> dict | None:
        """The anchored head of the log named log_id; with None, of any log that lived
        at this log's location (the log is empty or gone)."""
        self.store.execute(self.TABLE)
        if log_id is not None:
            rows = self.store.query("SELECT * FROM audit_anchors WHERE log_id = ?", (log_id,))
        else:
            rows = self.store.query("SELECT * FROM audit_anchors WHERE location = ? ORDER BY seq DESC",
                                    (location(self.log_path),))
        return rows[0] if rows else None

    def _sql(self, sql: str) -> str:
        return sql if self.store.kind == "sqlite" else sql.replace("?", "%s")

    def _connect(self):
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        # A connection inherited through fork is left unclosed: closing SQLite's copy
        # could drop the parent's WAL.
        store = self.store
        store.execute(self.TABLE)
        if store.kind == "sqlite":
            import sqlite3

            con = sqlite3.connect(store.sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # see the class comment
        else:
            import psycopg

            con = psycopg.connect(store.postgres_dsn, autocommit=True)
            con.execute("SET synchronous_commit = off")  # see the class comment
        self._connection, self._pid = con, os.getpid()
        return con


def verify(path: Path) -> list[str]:
    """Problems in the chain, one line each; empty when intact. The anchor is
    checked by gateway.collab.audit_tools.verify_file."""
    problems: list[str] = []
    prev = GENESIS
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                problems.append(f"line {number}: not a JSON record")
                prev = None
                continue
            if prev is not None and record.get("prev") != prev:
                problems.append(f"line {number}: chain broken (a record before it was removed, edited or moved)")
            if record.get("hash") != record_hash(record):
                problems.append(f"line {number}: record edited (its hash does not match its content)")
            elif record.get("seq", number) != number:
                problems.append(f"line {number}: record {record['seq']} is out of place")
            prev = record.get("hash")
    return problems
