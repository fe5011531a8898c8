"""Append-only, hash-chained audit log in a JSON-lines file, anchored outside it.

Each record carries its sequence number and the hash of the one before, so an
edited, deleted or reordered record breaks the chain. Deleting the *last*
records leaves a shorter chain that is still intact, so the head (sequence
number and hash) is also kept in the gateway's store (the anchor): a log that
ends before its anchored head no longer verifies.

Appends are durable before their future completes (`append` waits for it).
Processes (gunicorn or wire workers) share the file, each through a descriptor
of its own kept open, under an exclusive flock while they chain and write; the
fsync comes after the lock. Within a process, records queued together share one
write, one fsync (group commit: one fsync costs more than everything else a
small statement does) and one anchor, committed by writer threads or by the
wire server's event loop (see AuditLog).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import queue
import socket
import threading
from concurrent.futures import Future
from pathlib import Path

from gateway.storage import Connection, Database

GENESIS = "0" * 64


def record_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def location(path: Path) -> str:
    """Where a log lives, so an emptied or missing log still finds its anchor."""
    return f"{socket.gethostname()}:{os.path.realpath(path)}"


class AuditLog:
    """Appends go through two stages, each run by a thread of its own per process:

    1. the writer chains, writes and fsyncs everything queued, under the file's
       flock, in one write and one fsync; records queued meanwhile form the next batch;
    2. the anchorer upserts the newest head made durable into the store; heads made
       durable meanwhile are covered by the next upsert (one in flight at a time).

    A batch's anchor is written while the next batch is written and fsync'd, so the
    store's round trip does not hold up the log. An append's future completes once
    its record is durable and an anchor at or past it is stored; the anchor only
    ever names a head already fsync'd. Each waiter is woken once, by its own future:
    a condition shared by all would wake every waiting thread for every batch.

    An event loop serving many sessions commits on its own thread instead (commit_on).
    """

    def __init__(self, path: Path, store: Database | None = None):
        """`store`: where the anchor is kept (the gateway's store, gateway.collab.store);
        by default the SQLite file beside the log, where the store is without a DSN."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.anchor = Anchor(store, self.path)
        self._pid = None
        self._fd: int | None = None
        self._fork_reset()

    def _fork_reset(self) -> None:
        # A descriptor inherited through fork shares the parent's open file description, so
        # its flock would not exclude the parent: this process opens its own. The inherited
        # one is left open, not closed: its number may have been reused since. Threads do
        # not survive a fork: this process starts its own on its first append.
        self._pid = os.getpid()
        self._fd = None
        # (dev, inode, size, seq, hash, log id) just after this process's last append: while
        # the file still has that size nobody else appended, so its last line need not be read.
        self._head: tuple | None = None
        self._to_write: queue.SimpleQueue = queue.SimpleQueue()  # (record, future)
        self._to_anchor: queue.SimpleQueue = queue.SimpleQueue()  # (head, futures) of durable batches
        self._lock = threading.Lock()  # starting the threads; the loop's queue
        self._commit_lock = threading.Lock()
        self._started = False
        self._loop = self._loop_thread = None  # see commit_on
        self._on_loop: list[tuple[dict, Future]] = []  # queued for the loop's next commit

    def commit_on(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """From now on, this process's records are committed by the thread running
        `loop`, between its callbacks: one write, fsync and anchor for all the records
        the loop's sessions queued in a turn. Call it from that thread, and with None
        before the loop stops. A busy loop holds the GIL, so a writer thread would wait
        for it after every fsync, for milliseconds; and nothing is handed between threads."""
        if loop is None:
            self._loop = self._loop_thread = None
            self._commit_queued()  # what the loop had not committed yet
        else:
            self._loop, self._loop_thread = loop, threading.get_ident()

    def append(self, record: dict) -> dict:
        """Returns once the record, chained and hashed, is on disk and anchored."""
        return self.wait(self.submit(record))

    def wait(self, future: Future) -> dict:
        """A submitted record's future, waited for from any thread."""
        if self._loop_thread == threading.get_ident() and not future.done():
            self._commit_queued()  # the loop's thread cannot wait for itself
        return future.result()

    def submit(self, record: dict) -> Future:
        """Queues the record; the future gives it, chained and hashed, once it is on
        disk and anchored, or raises why not (the whole batch shares its fate)."""
        if self._pid != os.getpid():  # a fork copied another process's queues and fd
            self._fork_reset()
        # What is hashed is what is stored: a record holding anything JSON would change
        # (a tuple, a date, an int key) is normalised by a round trip first.
        record = dict(record) if _json_native(record) else json.loads(json.dumps(record, default=str))
        record.pop("hash", None)
        future: Future = Future()
        loop = self._loop
        if loop is not None:
            with self._lock:
                self._on_loop.append((record, future))
                first = len(self._on_loop) == 1
            if first:  # the rest of this turn's records join this commit
                if self._loop_thread == threading.get_ident():
                    loop.call_soon(self._commit_queued)
                else:
                    loop.call_soon_threadsafe(self._commit_queued)
            return future
        if not self._started:
            self._start_threads()
        self._to_write.put((record, future))
        return future

    def _commit_queued(self) -> None:
        """On the loop's thread: write, fsync and anchor what is queued for it."""
        with self._lock:
            batch, self._on_loop = self._on_loop, []
        if not batch:
            return
        try:
            self.anchor.save(*self._commit([record for record, _ in batch]))
            error = None
        except BaseException as failure:  # every record of the batch shares its fate
            error = failure
        _settle(batch, error)

    def _start_threads(self) -> None:
        with self._lock:
            if not self._started:
                threading.Thread(target=self._write_forever, name="audit-writer", daemon=True).start()
                threading.Thread(target=self._anchor_forever, name="audit-anchor", daemon=True).start()
                self._started = True

    def _write_forever(self) -> None:
        while True:
            batch = _everything_queued(self._to_write)
            try:
                head = self._commit([record for record, _ in batch])
            except BaseException as failure:  # every record of the batch shares its fate
                _settle(batch, failure)
                continue
            self._to_anchor.put((head, batch))

    def _anchor_forever(self) -> None:
        while True:
            durable = _everything_queued(self._to_anchor)
            try:
                self.anchor.save(*durable[-1][0])  # the newest head covers the older ones
                error = None
            except BaseException as failure:  # durable, but not anchored: the statements fail
                error = failure
            for _, batch in durable:
                _settle(batch, error)

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
        """Chain, write and fsync records; the (log id, seq, hash) they leave at the head.

        Only the chaining and the write hold the file's flock: the fsync comes after, so
        another process appends while this one waits for the disk (its own fsync then
        covers these records too, as an fsync flushes the whole file)."""
        with self._commit_lock:  # one committer per process, whichever thread it is on
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
                self._head = (stat.st_dev, stat.st_ino, stat.st_size + len(data), seq, prev, log_id)
            except BaseException:
                self._close()  # its state is unknown (a partial write?): the next batch reopens and rereads
                raise
            finally:
                if self._fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            try:
                os.fsync(fd)
            except BaseException:
                self._close()  # the kernel may have dropped the pages: nothing about the file is known
                raise
        # The anchor is stored after the fsync, so it never names a record the disk may lose,
        # and outside the lock, since an older batch's anchor never overwrites a newer one
        # (see Anchor.save).
        return log_id, seq, prev

    def _close(self) -> None:
        os.close(self._fd)
        self._fd, self._head = None, None

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            return [json.loads(line) for line in f if line.strip()]


def _everything_queued(waiting: queue.SimpleQueue) -> list:
    """Waits for one item, then takes whatever else is queued: the next batch."""
    batch = [waiting.get()]
    while not waiting.empty():
        batch.append(waiting.get_nowait())
    return batch


def _settle(batch: list[tuple[dict, Future]], error: BaseException | None) -> None:
    for record, future in batch:
        if error is None:
            future.set_result(record)
        else:
            future.set_exception(error)


def _json_native(value) -> bool:
    """Whether JSON gives the value back as it is (then it needs no round trip)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json_native(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _json_native(item) for key, item in value.items())
    return False


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

    It is written on a connection of its own, kept open (one per transaction would be
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

    def __init__(self, store: Database | None, log_path: Path):
        self._store, self.log_path = store, Path(log_path)
        self._created = False
        self._connection: Connection | None = None
        self._pid = None
        self._location: str | None = None  # location(log_path), resolved once

    @property
    def store(self) -> Database:
        """The store given, or the SQLite file beside the log (where the gateway's
        store is without a DSN: gateway.collab.store)."""
        if self._store is None:
            self._store = Database(sqlite_path=self.log_path.parent / "collab.sqlite")
        if not self._created:
            self._store.create([self.TABLE])
            self._created = True
        return self._store

    def describe(self) -> str:
        return self.store.describe()

    def save(self, log_id: str, seq: int, hash_: str) -> None:
        if self._location is None:
            self._location = location(self.log_path)
        params = (log_id, self._location, seq, hash_, dt.datetime.now(dt.timezone.utc).isoformat())
        for attempt in (1, 2):  # a dropped connection (store restarted) is retried once
            try:
                self._connect().execute(self.UPSERT, params)
                return
            except Exception:
                self._connection = None
                if attempt == 2:
                    raise

    def load(self, log_id: str | None) -> dict | None:
        """The anchored head of the log named log_id; with None, of any log that lived
        at this log's location (the log is empty or gone)."""
        if log_id is not None:
            rows = self.store.query("SELECT * FROM audit_anchors WHERE log_id = ?", (log_id,))
        else:
            rows = self.store.query("SELECT * FROM audit_anchors WHERE location = ? ORDER BY seq DESC",
                                    (location(self.log_path),))
        return rows[0] if rows else None

    def _connect(self) -> Connection:
        if self._connection is not None and self._pid == os.getpid():
            return self._connection
        # A connection inherited through fork is left unclosed: closing SQLite's copy
        # could drop the parent's WAL. Written by the anchorer thread or an event loop's.
        self._connection, self._pid = self.store.connect(durable=False, any_thread=True), os.getpid()
        return self._connection


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
