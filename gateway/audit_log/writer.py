"""The writer: each process appends to a hash chain of its own, with group commit.

Every process (a gunicorn worker, a wire worker, a command) writes its records to
its own file, state_dir/audit/<started>-<host>-<pid>-<random>.jsonl, created on its
first record: processes never wait for each other's locks or fsyncs. Within a
process, records queued together share one write, one fsync and one anchor (group
commit: one fsync costs more than everything else a small statement does).

Two kinds of record (`submit(record, durable=...)`):
- durable (the default): the future completes once the record is on disk and its
  anchor (and, with PostgreSQL, its copy) is in the store. Anything that releases
  clean-room data, and every refusal and failure, waits for it.
- not durable: the future is complete at once. The record still goes into the
  same chain, in order, written by the next commit; the fsync that makes it durable
  is the next durable record's, or comes at most SYNC_AFTER_SECONDS (or
  SYNC_AFTER_RECORDS) later. For statements that read no clean-room data (SELECT 1,
  catalog queries): a crash may lose the last of these, never a durable one.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import logging
import os
import re
import secrets
import socket
import threading
import time
import weakref
from concurrent.futures import Future
from pathlib import Path

from gateway.audit_log.anchors import ChainAnchors
from gateway.audit_log.chain import GENESIS, chain_lines, normalised
from gateway.storage import Database

log = logging.getLogger("gateway.audit")

SYNC_AFTER_SECONDS = 0.05  # how long a record that nobody waits for may stay written but not fsync'd
SYNC_AFTER_RECORDS = 1000  # ... and how many of them
# How long the writer, woken by a record nobody waits for, lets more gather before writing them: a
# flood of SELECT 1 then costs one wake-up and one write per few milliseconds, not one per statement.
GATHER_SECONDS = 0.004
# How long the writer leaves a durable record for the thread that waits for it to commit (it
# usually has, long before): only a record submitted by a thread that never waits is left to it.
LEAD_GRACE_SECONDS = 0.002
CHAINS_FOLDER = "audit"
LEGACY_LOG = "audit.jsonl"  # the single log shared by all processes in earlier versions: read, never written


class AuditLog:
    """Group commit, led by the threads that wait:

    - a thread that waits for a durable record (`wait`, `append`, `commit_queued`)
      takes the commit lock and commits everything queued so far, its own record and
      whoever else's: one write, one fsync, one anchor in the store (with PostgreSQL,
      the copy of those records in the same statement), then completes their futures.
      Threads that queued meanwhile find their records committed, or lead the next
      batch. No record waits for another thread to be woken and scheduled: under load
      every hand-off between threads costs the length of a GIL switch;
    - the writer thread commits what nobody leads: records nobody waits for (after
      GATHER_SECONDS, so a flood of SELECT 1 costs one write per few milliseconds),
      durable ones submitted by a thread that does not wait (looked for every
      SYNC_AFTER_SECONDS, and left LEAD_GRACE_SECONDS more to a leader), those submitted
      on an event loop's thread (at once),
      and the fsync of written records SYNC_AFTER_SECONDS after their write.

    The anchor only ever names a head already fsync'd. An event loop's thread never
    leads a commit: the wire server's loop submits like any thread and never writes or
    fsyncs (an fsync on the loop stalled every session of the process for its length;
    bench/mixed_load.py: the wire's latency beside the HTTP load went from 3.1x to
    1.6-1.9x its latency alone, SELECT 1's from 11.8 ms to 3.1 ms).
    """

    def __init__(self, state_dir: Path, store: Database | None = None):
        """`state_dir`: the gateway's state folder (a path ending in .jsonl, the old
        single log's, stands for its folder). `store`: where anchors are kept (the
        gateway's store, gateway.collab.store); by default the SQLite file in state_dir."""
        state_dir = Path(state_dir)
        self.state_dir = state_dir.parent if state_dir.suffix == ".jsonl" else state_dir
        self.folder = self.state_dir / CHAINS_FOLDER
        self.anchors = ChainAnchors(store, self.folder)
        self._pid = None
        self._fork_reset()
        reference = weakref.ref(self)
        atexit.register(lambda: (lambda log_: log_ is not None and log_.close())(reference()))

    @classmethod
    def for_config(cls, config) -> "AuditLog":
        """The config's state_dir, anchored in the config's store (PostgreSQL when it names one)."""
        return cls(Path(config.state_dir), Database.for_config(config, "collab.sqlite"))

    def _fork_reset(self) -> None:
        # A fork copies the parent's queue, chain and threads' state but not its threads:
        # the child starts a chain of its own on its first record. The inherited descriptor
        # is left open, not closed: its number may have been reused since.
        self._pid = os.getpid()
        self._chain: _ChainFile | None = None
        self._lock = threading.Lock()  # the queue and the counters
        self._queued = threading.Condition(self._lock)  # the writer thread waits on it
        self._pending: list[tuple[dict, Future | None]] = []  # in submission order; taken under the commit lock
        self._durable_pending = 0  # of those, records someone waits for
        self._unled = False  # of those, one whose waiter cannot commit (an event loop's thread)
        self._gathering = False  # the writer is letting records gather before it commits them
        self._commit_lock = threading.Lock()  # one committer at a time, whichever thread
        self._written = threading.Condition(threading.Lock())
        self._submitted = self._done = 0  # records queued / written (or failed), for flush
        self._unsynced = 0  # records written, not yet fsync'd
        self._unsynced_since = 0.0  # when the oldest of them was written (monotonic)
        self._copies: list[tuple] = []  # with PostgreSQL: those records, to copy with their anchor
        self._started = False

    # -- submitting ----------------------------------------------------------------

    def append(self, record: dict) -> dict:
        """Returns once the record, chained and hashed, is on disk and anchored."""
        return self.wait(self.submit(record))

    def wait(self, future: Future) -> dict:
        """A submitted record's future, waited for from any thread: unless that thread
        runs an event loop, it leads the commit of what is queued."""
        if not future.done():
            self.commit_queued()
        return future.result()

    def submit(self, record: dict, durable: bool = True) -> Future:
        """Queues the record. Durable: the future gives it, chained and hashed, once it
        is on disk and anchored, or raises why not (the whole batch shares its fate);
        the thread that waits for it commits it (`wait`, `commit_queued`).
        Not durable: the future is complete now (see the module's docstring)."""
        if self._pid != os.getpid():  # a fork copied another process's queue and chain
            self._fork_reset()
        record = normalised(record)
        if "time" not in record:  # readers merge chains by time
            record["time"] = dt.datetime.now(dt.timezone.utc).isoformat()
        future: Future = Future()
        if not durable:
            future.set_result(record)
        with self._lock:
            self._submitted += 1
            self._pending.append((record, future if durable else None))
            self._durable_pending += durable
            # A durable record from an event loop's thread has no thread to lead its commit.
            unled = durable and _on_event_loop()
            self._unled |= unled
            # The writer's to commit (a waiting thread commits its own); while it gathers, only a
            # record that cannot be led needs to wake it.
            if unled or not (durable or self._gathering):
                self._queued.notify()
        if not self._started:
            self._start_writer()
        return future

    @staticmethod
    def can_wait_here() -> bool:
        """Whether this thread may block until a record is durable (an event loop's may not)."""
        return not _on_event_loop()

    def commit_queued(self) -> None:
        """If a durable record is queued, commit everything queued now, in this thread
        (never on an event loop's thread: the writer thread commits for it)."""
        if self._pid != os.getpid() or not self._durable_pending or _on_event_loop():
            return
        with self._commit_lock:
            self._commit(self._take())

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record submitted so far is written (not necessarily fsync'd):
        for readers in this process, which then find even the records nobody waited for."""
        if self._pid != os.getpid():
            return
        if not _on_event_loop():
            with self._commit_lock:
                self._commit(self._take())
        with self._lock:
            target = self._submitted
        with self._written:
            self._written.wait_for(lambda: self._done >= target, timeout)

    def close(self) -> None:
        """Write and fsync what is queued, and anchor it (at exit, or when the engine
        closes). The log stays usable."""
        if self._pid != os.getpid():
            return
        self.flush(timeout=10)
        self._sync_written()

    # -- committing ------------------------------------------------------------------

    def _start_writer(self) -> None:
        with self._lock:
            if not self._started:
                threading.Thread(target=self._write_forever, name="audit-writer", daemon=True).start()
                self._started = True

    def _write_forever(self) -> None:
        while True:
            with self._lock:
                if not self._pending:  # the timeout also finds durable records whose thread never waits
                    self._queued.wait(SYNC_AFTER_SECONDS)
                queued, durable = bool(self._pending), self._durable_pending
                if queued:
                    # Let others gather (nobody waits), or let the thread that waits lead; a record
                    # from an event loop's thread, which cannot lead, cuts the wait short.
                    self._gathering = True
                    self._queued.wait_for(lambda: self._unled, LEAD_GRACE_SECONDS if durable else GATHER_SECONDS)
                    self._gathering = False
            if not queued:
                self._sync_written(older_than=SYNC_AFTER_SECONDS)
                continue
            with self._commit_lock:
                self._commit(self._take())
            self._sync_written(older_than=SYNC_AFTER_SECONDS)  # a steady stream nobody waits for

    def _take(self) -> list[tuple[dict, Future | None]]:
        """Everything queued, in order. Called under the commit lock only, so batches
        are written in the order their records were submitted."""
        with self._lock:
            batch, self._pending, self._durable_pending, self._unled = self._pending, [], 0, False
        return batch

    def _commit(self, batch: list[tuple[dict, Future | None]]) -> None:
        """Chain and write the batch; fsync and anchor it if any record in it is waited
        for, or enough are unsynced. Under the commit lock."""
        if not batch:
            return
        waiters = [(future, record) for record, future in batch if future is not None]
        try:
            self._write([record for record, _ in batch])
        except BaseException as failure:  # every record of the batch shares its fate
            self._count_done(len(batch))
            self._fail(waiters, failure, len(batch) - len(waiters))
            return
        self._count_done(len(batch))
        if waiters or self._unsynced >= SYNC_AFTER_RECORDS:
            self._sync_locked(waiters)

    def _sync_written(self, older_than: float = 0.0) -> None:
        """Fsync and anchor what was written and not yet synced (once the oldest of it
        was written `older_than` seconds ago)."""
        if not self._unsynced or time.monotonic() - self._unsynced_since < older_than:
            return
        with self._commit_lock:
            if self._unsynced:
                self._sync_locked([])

    def _sync_locked(self, waiters: list[tuple[Future, dict]]) -> None:
        chain, copies, pending = self._chain, self._copies, self._unsynced
        self._unsynced, self._copies = 0, []
        try:
            os.fsync(chain.fd)
        except BaseException as failure:
            self._abandon()  # the kernel may have dropped the pages: nothing about the file is known
            self._fail(waiters, failure, pending - len(waiters))
            return
        # The anchor is stored after the fsync, so it never names a record the disk may lose.
        try:
            self.anchors.save(chain.name, chain.seq, chain.prev, copies)
        except BaseException as failure:  # durable, but not anchored: the statements fail
            log.error("audit chain %s: records up to %d are written but could not be anchored in %s: %s",
                      chain.name, chain.seq, self.anchors.describe(), failure)
            self._fail(waiters, failure, 0)
            return
        for future, record in waiters:
            if not future.done():
                future.set_result(record)

    def _write(self, records: list[dict]) -> None:
        chain = self._current_chain()
        lines, seq, prev = chain_lines(records, chain.name, chain.seq, chain.prev)
        data = "".join(lines).encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(chain.fd, view):]
        except BaseException:
            self._abandon()  # a partial write? the next batch starts a new chain
            raise
        chain.seq, chain.prev = seq, prev
        if not self._unsynced:
            self._unsynced_since = time.monotonic()
        self._unsynced += len(records)
        if self.anchors.copies_records:
            self._copies.extend((r["seq"], line[:-1], r.get("time"), r.get("cleanroom"))
                                for r, line in zip(records, lines))

    def _current_chain(self) -> "_ChainFile":
        """This process's chain, started on its first record, and started anew when its
        file was moved away or deleted (verify reports that one: its anchor remains)."""
        chain = self._chain
        if chain is not None:
            try:
                current = os.stat(chain.path)
                if (current.st_dev, current.st_ino) == chain.identity:
                    return chain
            except FileNotFoundError:
                pass
            log.error("audit chain %s was moved or deleted while being written; starting a new chain", chain.path)
            self._abandon()
        self._chain = _ChainFile.start(self.folder)
        return self._chain

    def _abandon(self) -> None:
        if self._chain is not None:
            self._unsynced, self._copies = 0, []
            os.close(self._chain.fd)
            self._chain = None

    def _fail(self, waiters: list[tuple[Future, dict | None]], failure: BaseException, unwaited: int) -> None:
        if unwaited:
            log.error("audit: %d record(s) that no answer waited for may be lost: %s", unwaited, failure)
        for future, _ in waiters:
            if not future.done():
                future.set_exception(failure)

    def _count_done(self, count: int) -> None:
        with self._written:
            self._done += count
            self._written.notify_all()

    # -- reading this log's records --------------------------------------------------

    def records(self) -> list[dict]:
        """Every record in the state folder, all chains merged (gateway.audit_log.reading)."""
        from gateway.audit_log.reading import read_records

        self.flush()
        return read_records(self.state_dir)


class _ChainFile:
    """One process's chain: its file, kept open for appending, and its head."""

    def __init__(self, name: str, path: Path, fd: int):
        self.name, self.path, self.fd = name, path, fd
        stat = os.fstat(fd)
        self.identity = (stat.st_dev, stat.st_ino)
        self.seq, self.prev = 0, GENESIS

    @classmethod
    def start(cls, folder: Path) -> "_ChainFile":
        if not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(folder.parent)
        host = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname())[:64] or "host"
        while True:
            # Named so that a listing sorts by when chains started, and unique across
            # hosts sharing a store and pids reused after a restart.
            name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{host}-{os.getpid()}-{secrets.token_hex(3)}"
            path = folder / f"{name}.jsonl"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            _fsync_dir(folder)  # a new chain's name is durable too
            return cls(name, path, fd)


def _on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (the wire server's), which must
    never block on a write, an fsync or the store."""
    return asyncio._get_running_loop() is not None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
