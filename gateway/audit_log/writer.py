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

import atexit
import datetime as dt
import logging
import os
import queue
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
# A record someone waits for cuts the wait short.
GATHER_SECONDS = 0.004
CHAINS_FOLDER = "audit"
LEGACY_LOG = "audit.jsonl"  # the single log shared by all processes in earlier versions: read, never written


class AuditLog:
    """Appends go through two stages, each run by a thread of its own per process:

    1. the writer chains and writes everything queued in one write, and fsyncs it
       when a record in it is waited for; records queued meanwhile form the next batch;
    2. the anchorer stores the newest durable head (and, with PostgreSQL, the records
       up to it); heads made durable meanwhile are covered by the next one.

    A batch's anchor is stored while the next batch is written and fsync'd, so the
    store's round trip does not hold up the chain. The anchor only ever names a head
    already fsync'd. Each waiter is woken once, by its own future.

    The wire server's event loop submits like any thread and never writes or fsyncs
    itself: an fsync on the loop's thread stalled every session of the process for
    its length (bench/mixed_load.py: the wire's latency beside the HTTP load went
    from 3.1x to 1.6-1.9x its latency alone, SELECT 1's from 11.8 ms to 3.1 ms).
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
        # A fork copies the parent's queues, chain and threads' state but not its threads:
        # the child starts a chain of its own on its first record. The inherited descriptor
        # is left open, not closed: its number may have been reused since.
        self._pid = os.getpid()
        self._chain: _ChainFile | None = None
        self._to_write: queue.SimpleQueue = queue.SimpleQueue()  # (record, future or None)
        self._waited_for = threading.Event()  # set when a durable record is queued: write now
        self._to_anchor: queue.SimpleQueue = queue.SimpleQueue()  # (chain, seq, hash, copies, futures)
        self._lock = threading.Lock()  # starting threads; the loop's list; the counters
        self._commit_lock = threading.Lock()  # one committer at a time, whichever thread
        self._written = threading.Condition(threading.Lock())
        self._submitted = self._done = 0  # records queued / written (or failed), for flush
        self._unsynced = 0  # records written, not yet fsync'd
        self._copies: list[tuple] = []  # with PostgreSQL: those records, to copy with their anchor
        self._started = False

    # -- submitting ----------------------------------------------------------------

    def append(self, record: dict) -> dict:
        """Returns once the record, chained and hashed, is on disk and anchored."""
        return self.wait(self.submit(record))

    def wait(self, future: Future) -> dict:
        """A submitted record's future, waited for from any thread."""
        return future.result()

    def submit(self, record: dict, durable: bool = True) -> Future:
        """Queues the record. Durable: the future gives it, chained and hashed, once it
        is on disk and anchored, or raises why not (the whole batch shares its fate).
        Not durable: the future is complete now (see the module's docstring)."""
        if self._pid != os.getpid():  # a fork copied another process's queues and chain
            self._fork_reset()
        record = normalised(record)
        if "time" not in record:  # readers merge chains by time
            record["time"] = dt.datetime.now(dt.timezone.utc).isoformat()
        future: Future = Future()
        if not durable:
            future.set_result(record)
        waiter = future if durable else None
        with self._lock:
            self._submitted += 1
        if not self._started:
            self._start_threads()
        self._to_write.put((record, waiter))
        if durable:
            self._waited_for.set()
        return future

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every record submitted so far is written (not necessarily fsync'd):
        for readers in this process, which then find even the records nobody waited for."""
        if self._pid != os.getpid():
            return
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
        done = self._sync_written()
        if done is not None:
            done.exception(timeout=10)

    # -- committing ------------------------------------------------------------------

    def _start_threads(self) -> None:
        with self._lock:
            if not self._started:
                threading.Thread(target=self._write_forever, name="audit-writer", daemon=True).start()
                threading.Thread(target=self._anchor_forever, name="audit-anchor", daemon=True).start()
                self._started = True

    def _write_forever(self) -> None:
        while True:
            try:
                batch = [self._to_write.get(timeout=SYNC_AFTER_SECONDS if self._unsynced else None)]
            except queue.Empty:  # records written a while ago that nobody waited for: make them durable
                self._sync_written()
                continue
            if batch[0][1] is None:  # nobody waits for it: let others gather, unless someone waits
                self._waited_for.wait(GATHER_SECONDS)
            self._waited_for.clear()  # before taking the queue: a durable record queued after it sets it again
            while not self._to_write.empty():
                batch.append(self._to_write.get_nowait())
            self._commit(batch)

    def _anchor_forever(self) -> None:
        while True:
            durable = _everything_queued(self._to_anchor, None)
            self._anchor(durable)

    def _commit(self, batch: list[tuple[dict, Future | None]]) -> bool:
        """Chain and write the batch; fsync and anchor it if any record in it is waited
        for, or enough are unsynced. Returns whether nothing written is left unsynced."""
        waiters = [(future, record) for record, future in batch if future is not None]
        with self._commit_lock:
            try:
                self._write([record for record, _ in batch])
            except BaseException as failure:  # every record of the batch shares its fate
                self._count_done(len(batch))
                self._fail(waiters, failure, len(batch) - len(waiters))
                return not self._unsynced
            self._count_done(len(batch))
            if not waiters and self._unsynced < SYNC_AFTER_RECORDS:
                return False
            self._sync_locked(waiters)
            return True

    def _sync_written(self) -> Future | None:
        """Fsync and anchor what was written and not yet synced; a future for the anchor."""
        with self._commit_lock:
            if not self._unsynced:
                return None
            done: Future = Future()
            self._sync_locked([(done, None)])
            return done

    def _sync_locked(self, waiters: list[tuple[Future, dict | None]]) -> None:
        chain, copies, pending = self._chain, self._copies, self._unsynced
        self._unsynced, self._copies = 0, []
        try:
            os.fsync(chain.fd)
        except BaseException as failure:
            self._abandon()  # the kernel may have dropped the pages: nothing about the file is known
            self._fail(waiters, failure, pending - sum(record is not None for _, record in waiters))
            return
        # The anchor is stored after the fsync, so it never names a record the disk may lose.
        if not self._started:
            self._start_threads()
        self._to_anchor.put((chain.name, chain.seq, chain.prev, copies, waiters))

    def _anchor(self, durable: list[tuple]) -> None:
        """Anchor each chain's newest head (with PostgreSQL, copying its records), then
        wake the waiters. Older heads of the same chain are covered by the newest."""
        by_chain: dict[str, list] = {}
        for name, seq, hash_, copies, waiters in durable:
            entry = by_chain.setdefault(name, [0, "", [], []])
            entry[0], entry[1] = seq, hash_
            entry[2].extend(copies)
            entry[3].extend(waiters)
        for name, (seq, hash_, copies, waiters) in by_chain.items():
            try:
                self.anchors.save(name, seq, hash_, copies)
                error = None
            except BaseException as failure:  # durable, but not anchored: the statements fail
                error = failure
                log.error("audit chain %s: records up to %d are written but could not be anchored in %s: %s",
                          name, seq, self.anchors.describe(), failure)
            for future, record in waiters:
                if future.done():
                    continue
                if error is None:
                    future.set_result(record)
                else:
                    future.set_exception(error)

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


def _everything_queued(waiting: queue.SimpleQueue, timeout: float | None) -> list:
    """Waits for one item (raising queue.Empty after timeout), then takes whatever
    else is queued: the next batch."""
    batch = [waiting.get(timeout=timeout)]
    while not waiting.empty():
        batch.append(waiting.get_nowait())
    return batch


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
