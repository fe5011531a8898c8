"""Append-only, hash-chained audit log in a JSON-lines file, anchored outside it.

Each record carries its sequence number and the hash of the one before, so an
edited, deleted or reordered record breaks the chain. Deleting the *last*
records leaves a shorter chain that is still intact, so the head (sequence
number and hash) is also kept in the gateway's store (the anchor): a log that
ends before its anchored head no longer verifies.

Appends are durable before they return. Processes (gunicorn or wire workers)
share the file under an exclusive flock, each through a descriptor of its own
kept open; the threads of one process share each write and fsync (group commit),
since one fsync costs more than everything else a small statement does, and one
anchor per batch, written while the next batch is fsync'd (see AuditLog).
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
    __slots__ = ("record", "state", "error")

    QUEUED, DURABLE, DONE = range(3)

    def __init__(self, record: dict):
        self.record, self.state, self.error = record, _Pending.QUEUED, None


class AuditLog:
    """Appends from the threads of a process go through two stages, each run by one of
    the appending threads at a time (a leader) for everyone waiting at that stage:

    1. write: the queued records are chained, written and fsync'd under the file's
       flock, in one write and one fsync; records queued meanwhile form the next batch;
    2. anchor: the newest head made durable is upserted into the store; heads made
       durable meanwhile are covered by the next upsert (one in flight at a time).

    A batch's anchor is written while the next batch is written and fsync'd, so the
    store's round trip does not hold up the log. An append returns once its record
    is durable and an anchor at or past it is stored; the anchor only ever names a
    head already fsync'd.
    """

    def __init__(self, path: Path, store=None):
        """`store`: a gateway.collab.store.Store for the anchor; by default the SQLite
        store beside the log (where Store.from_config puts it without a DSN)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.anchor = Anchor(store, self.path)
        self._pid = None
        self._fd: int | None = None
        self._fork_reset()

    def _fork_reset(self) -> None:
        # A descriptor inherited through fork shares the parent's open file description, so
        # its flock would not exclude the parent: this process opens its own. The inherited
        # one is left open, not closed: its number may have been reused since.
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        self._fd = None
        # (dev, inode, size, seq, hash, log id) just after this process's last append: while
        # the file still has that size nobody else appended, so its last line need not be read.
        self._head: tuple | None = None
        self._durable: tuple | None = None  # (log id, seq, hash) of this process's newest fsync'd batch
        self._unanchored: list[_Pending] = []  # durable, waiting for an anchor at or past them
        self._anchoring = False

    def append(self, record: dict) -> dict:
        """Returns once the record, chained and hashed, is on disk and anchored."""
        if self._pid != os.getpid():  # a fork copied another process's locks, queue and fd
            self._fork_reset()
        record = json.loads(json.dumps(record, default=str))  # what is hashed is what is stored
        record.pop("hash", None)
        pending = _Pending(record)
        with self._cond:
            self._queue.append(pending)
            while pending.state != _Pending.DONE:
                if pending.state == _Pending.QUEUED and not self._writing:
                    self._lead_write()
                elif pending.state == _Pending.DURABLE and not self._anchoring:
                    self._lead_anchor()
                else:
                    self._cond.wait()
        if pending.error is not None:
            raise pending.error
        return pending.record

    def _lead_write(self) -> None:
        """With the condition held: write and fsync everything queued."""
        batch, self._queue, self._writing = self._queue, [], True
        self._cond.release()
        try:
            head, error = self._commit([p.record for p in batch]), None
        except BaseException as failure:  # every record of the batch shares its fate
            head, error = None, failure
        finally:
            self._cond.acquire()
            self._writing = False
        for member in batch:
            if error is None:
                member.state = _Pending.DURABLE
            else:
                member.state, member.error = _Pending.DONE, error
        if error is None:
            self._durable = head
            self._unanchored.extend(batch)
        self._cond.notify_all()

    def _lead_anchor(self) -> None:
        """With the condition held: anchor the newest durable head, for all durable so far."""
        covered, self._unanchored, self._anchoring = self._unanchored, [], True
        head = self._durable
        self._cond.release()
        try:
            self.anchor.save(*head)
            error = None
        except BaseException as failure:  # durable, but not anchored: the statements fail
            error = failure
        finally:
            self._cond.acquire()
            self._anchoring = False
        for member in covered:
            member.state, member.error = _Pending.DONE, error
        self._cond.notify_all()

    def _open(self) -> os.stat_result:
        """This process's descriptor of the log, locked, and of the file now at its path
        (one moved away or deleted is left for the one there now)."""
        while True:
            if self._fd is None:
                try:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
                except FileNotFoundError:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                    _fsync_dir(self.path.parent)  # a new log's name is durable too
                self._head = None
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(self._fd)
            if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
                return mine
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _commit(self, records: list[dict]) -> tuple[str, int, str]:
        """Chain, write and fsync records; the (log id, seq, hash) they leave at the head."""
        stat = self._open()
        fd = self._fd
        try:
            head, self._head = self._head, None  # unknown until this write is done
            if head is None or head[:3] != (stat.st_dev, stat.st_ino, stat.st_size):
                head = (stat.st_dev, stat.st_ino, stat.st_size, *_read_head(fd, stat.st_size))
            seq, prev, log_id = head[3:]
            lines = []
            for record in records:
                seq += 1
                record["seq"], record["prev"] = seq, prev
                # The record's hash is over its canonical form (record_hash), which is also its
                # line, with the hash appended as the last member.
                body = json.dumps(record, sort_keys=True, separators=(",", ":"))
                record["hash"] = prev = hashlib.sha256(body.encode()).hexdigest()
                log_id = log_id or prev  # a log is named by its first record's hash
                lines.append(f'{body[:-1]},"hash":"{prev}"}}\n')
            data = "".join(lines).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            self._head = (stat.st_dev, stat.st_ino, stat.st_size + len(data), seq, prev, log_id)
        except BaseException:
            os.close(self._fd)  # its state is unknown (a partial write?): the next batch reopens and rereads
            self._fd = None
            raise
        finally:
            if self._fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        # The anchor is stored after the fsync, so it never names a record the disk may lose,
        # and outside the lock, since an older batch's anchor never overwrites a newer one
        # (see Anchor.save).
        return log_id, seq, prev

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            return [json.loads(line) for line in f if line.strip()]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    os.lseek(fd, 0, os.SEEK_SET)  # a kept descriptor's offset is where its last append ended
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
        self._location: str | None = None  # location(log_path), resolved once

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
        if self._location is None:
            self._location = location(self.log_path)
        params = (log_id, self._location, seq, hash_, dt.datetime.now(dt.timezone.utc).isoformat())
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
