"""Statements per minute and engine seconds per hour: sliding windows of small
time slots, shared by every process that opens the same database.

Each (subject, measure) has one row per slot: statements in 1-second slots over a
60-slot window (the last minute), engine seconds in 1-minute slots over a
60-slot window (the last hour). What counts is the sum of the slots in the
window; a slot leaves the window whole, so a statement admitted at 12:00:00.9
counts until 12:01:00.0, and engine seconds used in minute 12:00 count until 13:00.

Admission is one transaction: read the sums of the analyst's and the
collaborator's windows, and either count a lease of statements in both
(gateway/quotas/leases.py: usually one statement, more when far from the limit)
or, when one is at its limit, count nothing. Transactions are serialised:
SQLite's `BEGIN IMMEDIATE` (the file), PostgreSQL's transaction-level advisory
locks on the subjects, taken in one order so two admissions never deadlock.

Engine seconds arrive after a statement ran, and leases leave statements unused
when their second ends. Both wait in a per-process buffer, written with the
process's next transaction or by its flusher thread within about FLUSH_SECONDS;
another process sees them at most that late.

Where: <state_dir>/quotas/usage.sqlite (WAL, synchronous=NORMAL: counters are
not worth an fsync per statement; an operating-system crash may forget the last
moments of use, a process crash forgets nothing committed), or the store's
PostgreSQL when the config names a DSN (synchronous_commit off; statements
bound on the client and sent together: two round trips per admission), so
several gateway hosts share one count. Each
thread keeps its connection, opened again in a forked child (the pid differs).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from gateway.quotas.leases import Leases, lease_size
from gateway.storage import Database, lock_key

log = logging.getLogger("gateway.quotas")

STATEMENTS = 0
ENGINE_SECONDS = 1
FLUSH_SECONDS = 1.0  # buffered changes reach the database about this late at most
PRUNE_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Window:
    slot_seconds: int
    slots: int

    def slot(self, now: float) -> int:
        return int(now // self.slot_seconds)

    def first_slot(self, now: float) -> int:
        """The oldest slot still in the window at `now`."""
        return self.slot(now) - self.slots + 1


WINDOWS = {STATEMENTS: Window(1, 60), ENGINE_SECONDS: Window(60, 60)}

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS quota_usage (
        subject TEXT NOT NULL, measure INTEGER NOT NULL, slot BIGINT NOT NULL, amount DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (subject, measure, slot)){without_rowid}""",
    """CREATE TABLE IF NOT EXISTS quota_refusals (
        subject TEXT NOT NULL, rule TEXT NOT NULL, refused BIGINT NOT NULL,
        PRIMARY KEY (subject, rule)){without_rowid}""",
]
_ADD = ("INSERT INTO quota_usage (subject, measure, slot, amount) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (subject, measure, slot) DO UPDATE SET amount = quota_usage.amount + excluded.amount")
_REFUSED = ("INSERT INTO quota_refusals (subject, rule, refused) VALUES (?, ?, 1) "
            "ON CONFLICT (subject, rule) DO UPDATE SET refused = quota_refusals.refused + 1")
_SUM = ("SELECT {i} AS i, {m} AS m, COALESCE(SUM(amount), 0) AS total FROM quota_usage "
        "WHERE subject = ? AND measure = {m} AND slot >= ?")
_SLOTS = "SELECT slot, amount FROM quota_usage WHERE subject = ? AND measure = ? AND slot >= ? ORDER BY slot"


@dataclass(frozen=True)
class Check:
    """One subject's limits, checked at admission."""

    subject: str
    statements_per_minute: int
    engine_seconds_per_hour: float


@dataclass(frozen=True)
class Over:
    """Why an admission was refused: checks[index] is at its limit of `measure`."""

    index: int
    measure: int
    retry_after: int  # whole seconds until the window has room again


@dataclass(frozen=True)
class SubjectUsage:
    statements_last_minute: int
    engine_seconds_last_hour: float
    refusals: dict[str, int]  # by rule, since the database was created


@functools.lru_cache(maxsize=8)
def _sums_sql(count: int) -> str:
    """Both windows of `count` subjects in one statement: an index range each."""
    return " UNION ALL ".join(_SUM.format(i=i, m=m) for i in range(count) for m in (STATEMENTS, ENGINE_SECONDS))


class UsageStore:
    """Thread- and fork-safe: each thread of each process has its own connection,
    each process its own leases and buffer."""

    def __init__(self, sqlite_path: Path | None = None, postgres_dsn: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.db = Database(sqlite_path, postgres_dsn)
        self.postgres_dsn = postgres_dsn
        self.clock = clock
        self.leases = Leases()
        self._local = threading.local()
        self._pruned_at = 0.0
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the one at exit waits for the flusher's
        self._buffer_pid = os.getpid()
        self._buffer: collections.Counter = collections.Counter()  # (subject, measure, slot) -> amount to add
        self._flusher: threading.Thread | None = None
        self._dirty = threading.Event()
        self._create()
        _open_stores.add(self)

    @classmethod
    def from_config(cls, config, clock: Callable[[], float] = time.time) -> "UsageStore":
        db = Database.for_config(config, "quotas/usage.sqlite")
        return cls(db.sqlite_path, db.postgres_dsn, clock=clock)

    @property
    def kind(self) -> str:
        return self.db.kind

    # -- what admission calls ----------------------------------------------------

    def admit(self, checks: Sequence[Check], now: float) -> Over | None:
        """Count one statement for every subject, or none if one is at a limit."""
        subjects = [check.subject for check in checks]
        second = WINDOWS[STATEMENTS].slot(now)
        if self.leases.take(subjects, second):
            return None
        returned = self.leases.surrender(subjects)
        if returned:
            self._buffer_add((subject, STATEMENTS, slot, -unused) for subject, slot, unused in returned)
        changes = self._take_buffer()
        try:
            with self._transaction(subjects) as con:
                if changes:
                    _many(con, self._sql(_ADD), changes)
                params = []
                for check in checks:
                    params += [check.subject, WINDOWS[STATEMENTS].first_slot(now),
                               check.subject, WINDOWS[ENGINE_SECONDS].first_slot(now)]
                totals = {(i, m): total for i, m, total in con.execute(self._sql(_sums_sql(len(checks))), params)}
                over = self._first_over(con, checks, totals, now)
                if over is None:  # a local admission takes from every lease: they are as long as the shortest
                    size = min(lease_size(check.statements_per_minute,
                                          check.statements_per_minute - totals[(i, STATEMENTS)])
                               for i, check in enumerate(checks))
                    grants = {subject: size for subject in subjects}
                    _many(con, self._sql(_ADD), [(s, STATEMENTS, second, float(size)) for s in subjects])
        except BaseException:
            self._buffer_add(changes)
            raise
        if over is None:
            self.leases.grant(grants, second)
            if size > 1:
                self._wake_flusher()  # what the leases leave unused goes back after this second
        self._prune_now_and_then(now)
        return over

    def add_engine_seconds(self, subjects: Sequence[str], seconds: float, now: float) -> None:
        """Buffered: written with this process's next transaction, or within about FLUSH_SECONDS."""
        slot = WINDOWS[ENGINE_SECONDS].slot(now)
        with self._buffer_lock:
            self._own_buffer()
            for subject in subjects:
                self._buffer[(subject, ENGINE_SECONDS, slot)] += seconds
            if self._flusher is not None and self._dirty.is_set():
                return
        self._wake_flusher()

    def count_refusal(self, subjects: Sequence[str], rule: str) -> None:
        with self._transaction(subjects) as con:
            _many(con, self._sql(_REFUSED), [(subject, rule) for subject in subjects])

    def flush(self, every_lease: bool = False) -> None:
        """Write this process's buffer now, with what its expired leases (or all of
        them) left unused."""
        with self._flush_lock:
            expired = self.leases.expired(None if every_lease else WINDOWS[STATEMENTS].slot(self.clock()))
            self._buffer_add((subject, STATEMENTS, slot, -unused) for subject, slot, unused in expired)
            changes = self._take_buffer()
            if not changes:
                return
            try:
                with self._transaction(sorted({subject for subject, *_ in changes})) as con:
                    _many(con, self._sql(_ADD), changes)
            except BaseException:
                self._buffer_add(changes)
                raise

    # -- what operators see ------------------------------------------------------

    def usage(self, subjects: Sequence[str], now: float) -> dict[str, SubjectUsage]:
        """What the subjects used. This process's leases are given back first; other
        processes' leases count in full for up to about a second (see leases.py)."""
        self.flush(every_lease=True)
        found = {}
        with self._transaction([]) as con:
            for subject in subjects:
                params = [subject, WINDOWS[STATEMENTS].first_slot(now),
                          subject, WINDOWS[ENGINE_SECONDS].first_slot(now)]
                totals = {m: total for _, m, total in con.execute(self._sql(_sums_sql(1)), params).fetchall()}
                refusals = con.execute(self._sql("SELECT rule, refused FROM quota_refusals WHERE subject = ? "
                                                 "ORDER BY rule"), (subject,)).fetchall()
                found[subject] = SubjectUsage(int(round(totals[STATEMENTS])), float(totals[ENGINE_SECONDS]),
                                              {rule: int(count) for rule, count in refusals})
        return found

    # -- the buffer and its flusher --------------------------------------------------

    def _own_buffer(self) -> None:
        """A forked child starts with an empty buffer (its parent writes what it copied)
        and no flusher thread (threads do not survive a fork)."""
        if self._buffer_pid != os.getpid():
            self._buffer_pid, self._buffer, self._flusher = os.getpid(), collections.Counter(), None
            self._dirty = threading.Event()

    def _buffer_add(self, rows) -> None:
        with self._buffer_lock:
            self._own_buffer()
            for subject, measure, slot, amount in rows:
                self._buffer[(subject, measure, slot)] += amount

    def _take_buffer(self) -> list[tuple]:
        with self._buffer_lock:
            self._own_buffer()
            if not self._buffer:
                return []
            taken, self._buffer = self._buffer, collections.Counter()
        return [(subject, measure, slot, amount) for (subject, measure, slot), amount in sorted(taken.items())
                if amount != 0]

    def _wake_flusher(self) -> None:
        with self._buffer_lock:
            self._own_buffer()
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_forever, args=(self._dirty,),
                                                 name="quota-flush", daemon=True)
                self._flusher.start()
            self._dirty.set()

    def _flush_forever(self, dirty: threading.Event) -> None:
        """The process's flusher: once something waits, write it FLUSH_SECONDS later
        (unless a transaction of this process took it first)."""
        while True:
            dirty.wait()
            time.sleep(FLUSH_SECONDS)
            dirty.clear()
            try:
                self.flush()
            except Exception:
                log.exception("quota usage not written yet; the next transaction or flush tries again")
                dirty.set()
            if self.leases.outstanding():
                dirty.set()

    # -- internals ---------------------------------------------------------------

    def _first_over(self, con, checks: Sequence[Check], totals: dict, now: float) -> Over | None:
        for index, check in enumerate(checks):
            for measure, limit, fits in ((STATEMENTS, check.statements_per_minute, _room_for_one),
                                         (ENGINE_SECONDS, check.engine_seconds_per_hour, _below)):
                total = totals[(index, measure)]
                if not fits(total, limit):
                    return Over(index, measure, self._retry_after(con, check.subject, measure, total, limit, fits, now))
        return None

    def _retry_after(self, con, subject: str, measure: int, total: float, limit: float, fits, now: float) -> int:
        """Seconds until enough of the oldest slots have left the window."""
        window = WINDOWS[measure]
        left = total
        for slot, amount in con.execute(self._sql(_SLOTS), (subject, measure, window.first_slot(now))).fetchall():
            left -= amount
            if fits(left, limit):
                return max(1, math.ceil((slot + window.slots) * window.slot_seconds - now))
        return window.slots * window.slot_seconds  # not reached: an empty window has room

    def _prune_now_and_then(self, now: float) -> None:
        """Drop slots that left their windows (at most once a minute per process)."""
        if now - self._pruned_at < PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        with self._transaction(["quota prune"]) as con:
            for measure, window in WINDOWS.items():
                con.execute(self._sql("DELETE FROM quota_usage WHERE measure = ? AND slot < ?"),
                            (measure, window.first_slot(now)))

    def _sql(self, sql: str) -> str:
        return sql  # written with ? (sqlite3); _Batch binds them for PostgreSQL

    def _create(self) -> None:
        self.db.create(SCHEMA, without_rowid=" WITHOUT ROWID|")  # SQLite: the key is the table

    @contextlib.contextmanager
    def _transaction(self, subjects: Sequence[str]) -> Iterator:
        """Serialised with every other transaction on the same subjects (SQLite: on
        the whole file, whatever the subjects; no subjects: a read)."""
        con = self._connection()
        if self.postgres_dsn:
            batch = _Batch(con)
            batch.execute("BEGIN")
            keys = sorted({lock_key("quota " + subject) for subject in subjects})  # one order: no deadlock
            if keys:
                batch.execute("SELECT " + ", ".join(f"pg_advisory_xact_lock({key})" for key in keys))
            try:
                yield batch
                batch.execute("COMMIT")
                batch.send()
            except BaseException:
                with contextlib.suppress(Exception):
                    if con.info.transaction_status != 0:  # not idle: end what was begun
                        con.execute("ROLLBACK")
                raise
            finally:
                if con.broken or con.closed:  # the server went away: the next call connects again
                    self._local.held = None
            return
        con.execute("BEGIN IMMEDIATE" if subjects else "BEGIN")
        try:
            yield con
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _connection(self):
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        # Not durable: a crash of the machine or the database may forget the last counts.
        con = self.db.connect(durable=False).raw
        if self.postgres_dsn:
            _prepare(con)
        self._local.held = (os.getpid(), con)  # a forked child opens its own
        return con


_open_stores: "weakref.WeakSet[UsageStore]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """A process that ends gives back every lease, this second's too: the window would
    otherwise count statements it never admitted."""
    for store in list(_open_stores):
        with contextlib.suppress(Exception):
            store.flush(every_lease=True)


# PostgreSQL: what every admission runs, prepared once per session (name, argument types)
_PREPARED = {
    _ADD: ("quota_add", "text, integer, bigint, double precision"),
    _REFUSED: ("quota_refused", "text, text"),
    _SLOTS: ("quota_slots", "text, integer, bigint"),
    _sums_sql(1): ("quota_sums_1", "text, bigint, text, bigint"),
    _sums_sql(2): ("quota_sums_2", "text, bigint, text, bigint, text, bigint, text, bigint"),
}


def _prepare(con) -> None:
    for sql, (name, types) in _PREPARED.items():
        numbered, n = [], 0
        for part in sql.split("?")[:-1]:
            n += 1
            numbered.append(f"{part}${n}")
        con.execute(f"PREPARE {name} ({types}) AS {''.join(numbered)}{sql.split('?')[-1]}")


class _Batch:
    """PostgreSQL statements bound on the client (psycopg's ClientCursor) and held
    until a result is wanted, then sent as one simple query: a round trip per
    answer instead of one per statement."""

    def __init__(self, con):
        import psycopg

        self.cursor = psycopg.ClientCursor(con)
        self.queued: list[str] = []

    def execute(self, sql: str, params: Sequence = ()) -> "_Rows":
        prepared = _PREPARED.get(sql)
        if prepared is not None:  # the session's plan, arguments bound here
            sql = f"EXECUTE {prepared[0]}({', '.join(['?'] * sql.count('?'))})"
        sql = sql.replace("?", "%s")  # the SQL here has no literal ? or %
        self.queued.append(self.cursor.mogrify(sql, tuple(params)) if params else sql)
        return _Rows(self)

    def send(self) -> list[tuple]:
        """Send what is queued; the rows of its last statement that has any."""
        if not self.queued:
            return []
        text, self.queued = ";\n".join(self.queued), []
        self.cursor.execute(text)
        rows: list[tuple] = []
        while True:
            if self.cursor.description is not None:
                rows = self.cursor.fetchall()
            if not self.cursor.nextset():
                return rows


class _Rows:
    def __init__(self, batch: _Batch):
        self.batch = batch

    def fetchall(self) -> list[tuple]:
        return self.batch.send()

    def fetchone(self) -> tuple | None:
        rows = self.batch.send()
        return rows[0] if rows else None

    def __iter__(self):
        return iter(self.batch.send())


def _many(con, sql: str, rows: list[tuple]) -> None:
    if isinstance(con, _Batch):
        for row in rows:
            con.execute(sql, row)
    else:
        con.cursor().executemany(sql, rows)


def _room_for_one(total: float, limit: float) -> bool:
    return total + 1 <= limit


def _below(total: float, limit: float) -> bool:
    return total < limit
