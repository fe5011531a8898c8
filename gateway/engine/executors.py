"""Statements run in executor processes, so that a deadline is certain.

DuckDB's interrupt() is honoured between vectors only: one long function call (a
LIKE that backtracks, a regular expression) runs on past any timeout. An executor
is a child process with its own locked DuckDB over the same sources; a statement
that outruns its deadline, or is cancelled, has its executor killed (SIGKILL,
which nothing inside can delay) and a fresh one takes its slot. Nothing else on
the host is disturbed: other statements run in other executors.

Each front-end process (an HTTP worker, a wire worker) holds one pool of
`engine.executors` processes. When every executor is busy, waiting statements are
served fairly: the next free executor goes to the waiting analyst with the fewest
statements running in this pool, then the one who used the least engine time
lately, the oldest first among equals, so an analyst who sends many statements at
once does not queue the others behind them.

An executor is a fresh interpreter (`python -m gateway.executor_main`),
never a fork of a front end: DuckDB's threads do not survive a fork. Front ends
start all of theirs before they take traffic (ExecutorPool.warm with wait); one
killed is replaced in the background. Each then serves many statements.

With `engine.kind: spark` an executor holds a Spark Connect session as well
(gateway/spark/session.py) and runs the statement's Spark form there
(gateway/spark/sql.py); killing it also interrupts its session's work on
the Spark server.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Callable

import pyarrow as pa

from gateway.config_model import GatewayConfig
from gateway.engine.foreground import Foreground
from gateway.errors import ExecutionFailed, QueryCancelled, QueryTimeout, ResultTooLarge

log = logging.getLogger("gateway.executors")

START_SECONDS = 60.0  # an executor that cannot open its database in this long is a fault, not a slow start
# Fair CPU between analysts: the statements of one who runs several at once here, or who
# kept more than HEAVY_EXECUTORS executors busy on average lately (engine seconds decayed
# over USAGE_SECONDS, running statements included), run at a lower priority. The OS then
# gives the others' statements the cores first; alone, a heavy analyst still has them all.
# One client sending statements one after another never counts as heavy.
USAGE_SECONDS = 10.0
HEAVY_EXECUTORS = 1.5
BACKGROUND_NICE = 19  # the lowest: CFS gives a nice-19 thread about 1.5% of a nice-0 one
REPRIORITISE_SECONDS = 0.25  # how often running statements are looked at again
# While a light statement runs on the host, heavy ones pause (foreground.py): checked every
# PAUSE_TICK; a pause lasts at most PAUSE_MAX, then they run RUN_MIN, so they are never starved.
PAUSE_TICK = 0.02
PAUSE_MAX = 0.3
RUN_MIN = 0.15
SPARK_CLOSE_SECONDS = 3.0  # an idle Spark executor asked to end releases its session in this long


class Executor:
    """One child process with its own locked database, and a socket to it."""

    def __init__(self, config: GatewayConfig, deadline: float):
        ours, theirs = socket.socketpair()
        # Spark: the id of the executor's Spark Connect session, by which it is interrupted.
        self.remote = config.engine.remote if config.engine.kind == "spark" else None
        self.spark_session = str(uuid.uuid4()) if self.remote else None
        self.interrupting = False  # its session's interruption on the Spark server has been asked for
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.executor_main", str(theirs.fileno()), self.spark_session or ""],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True,
                # A process group of its own: a terminal's Ctrl-C goes to the server, which decides.
                # In the server's session (not a new one): should the server die while this one is
                # paused (SIGSTOP), its group is orphaned with a stopped member, and the kernel sends
                # it SIGHUP and SIGCONT: it ends instead of staying stopped for ever.
                process_group=0)
        self.pipe = Connection(ours.detach())
        self.stopped_for: str | None = None  # why it was killed on purpose: "timeout", "cancel", ...
        self.nice = 0  # its scheduling priority: 0, or BACKGROUND_NICE for a heavy analyst's statements
        self.paused = False  # SIGSTOPped while a light statement runs on the host
        self.pipe.send(config)
        ready = self._receive(min(deadline, time.monotonic() + START_SECONDS))
        if ready is None or ready[0] != "ready":
            timed_out = ready is None and self.process.poll() is None
            self.discard("timeout")
            if timed_out:
                raise _Stopped("timeout")
            raise RuntimeError(f"executor failed to start: {ready!r}")

    def prioritise(self, nice: int) -> bool:
        """Set the process's priority; False when it cannot be raised back (unprivileged
        processes may only lower their priority): the pool then replaces it afterwards."""
        if nice == self.nice:
            return True
        try:
            for thread in _threads(self.process.pid):  # Linux keeps a priority per thread: DuckDB's too
                os.setpriority(os.PRIO_PROCESS, thread, nice)
        except (PermissionError, ProcessLookupError):
            return False
        self.nice = nice
        return True

    def pause(self, paused: bool) -> None:
        if paused != self.paused and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)
            except ProcessLookupError:
                return
        self.paused = paused

    def run(self, sql: str, max_rows: int, deadline: float, spark_job: tuple | None = None,
            models: tuple = ()) -> pa.Table:
        # models: the ModelFiles the statement scores, registered by the executor before it runs (gateway.models)
        self.pipe.send(("run", sql, max_rows, spark_job, models))
        reply = self._receive(deadline)
        if reply is None:  # deadline passed, or stopped by cancel(), or died
            if self.process.poll() is None:
                self.stop("timeout")
            raise _Stopped(self.stopped_for or "died")
        kind = reply[0]
        if kind == "rows":
            return pa.ipc.open_stream(self.pipe.recv_bytes()).read_all()
        if kind == "too_large":
            raise ResultTooLarge(f"the result has more than {max_rows} rows", rule="engine.max_result_rows",
                                 hint="aggregate further or add a LIMIT")
        raise _EngineError(reply[1])

    def _receive(self, deadline: float):
        """The next message, or None when the deadline passes or the process ends first
        (its end of the socket closes with it)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.pipe.poll(remaining):
            return None
        try:
            return self.pipe.recv()
        except (EOFError, OSError):
            return None

    def stop(self, why: str) -> None:
        """Kill the process (any thread may: a cancel); its owner then discards it."""
        if self.stopped_for is None:
            self.stopped_for = why
        if self.process.poll() is None:
            self.process.kill()
            if self.spark_session is not None and not self.interrupting:  # its work on the server goes on without it
                from gateway.spark.session import interrupt_later

                self.interrupting = True
                interrupt_later(self.remote, self.spark_session)

    def discard(self, why: str) -> None:
        """Called by the thread that owns it: kill, reap, close the pipe. An idle Spark
        executor is asked to end first, so that it releases its own session."""
        if why == "closed" and self.spark_session is not None and self.process.poll() is None:
            self.pipe.close()
            try:
                self.process.wait(SPARK_CLOSE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self.stop(why)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:  # SIGKILLed but unreaped: the OS finishes it
            log.error("executor %s did not exit after SIGKILL", self.process.pid)
        if not self.pipe.closed:
            self.pipe.close()


def _threads(pid: int) -> list[int]:
    """The process's threads (its DuckDB workers run in them), or the process alone where
    /proc does not list them."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, NotADirectoryError):
        return [pid]


class _Stopped(Exception):
    """The executor was killed (why: timeout / cancel) or died."""


class _EngineError(Exception):
    """DuckDB raised; the text is for the operator's log only."""


@dataclass(eq=False)
class _Statement:
    """A statement in the pool: waiting for an executor, starting one, or running."""

    request_id: str
    principal: str
    order: int
    granted: threading.Event = field(default_factory=threading.Event)
    executor: Executor | None = None  # once granted; None with a grant: an empty slot to start one in
    granted_slot: bool = False  # holds an executor slot (and must release it)
    started: float | None = None  # when it began to run in its executor
    cancelled: bool = False


class ExecutorPool:
    def __init__(self, config: GatewayConfig, size: int):
        self.config = config
        self.size = size
        self._lock = threading.Lock()
        self._idle: list[Executor] = []
        self._empty_slots = size  # slots with no process: the next taker starts one
        self._waiting: list[_Statement] = []
        self._statements: dict[str, _Statement] = {}  # request id -> waiting, starting or running
        self._running: Counter[str] = Counter()  # principal -> statements holding an executor
        self._usage: dict[str, tuple[float, float]] = {}  # principal -> (decayed engine seconds, as of)
        self._order = itertools.count()
        self._watcher: threading.Thread | None = None
        self._closed = False
        self._foreground = Foreground(config.state_dir)
        self._paused_since: float | None = None  # heavy statements paused since, for the duty cycle
        self._run_until = 0.0  # heavy statements run unpaused until then

    def run(self, request_id: str, *, principal: str, sql: str, max_rows: int, deadline: float,
            on_engine_seconds: Callable[[float], None] | None = None, models: tuple = ()) -> pa.Table:
        """Run sql in an executor before the monotonic deadline, or raise QueryTimeout /
        QueryCancelled (the executor killed), ResultTooLarge or ExecutionFailed.
        on_engine_seconds learns how long the statement held an executor, however it ended."""
        spark_job = self._spark_job(request_id, sql)  # before queueing: NotOnSpark costs no executor
        statement = _Statement(request_id, principal, next(self._order))
        with self._lock:
            if self._closed:
                raise ExecutionFailed(request_id)
            self._statements[request_id] = statement
        try:
            self._acquire(statement, deadline)
            return self._run_granted(statement, sql, max_rows, deadline, on_engine_seconds, spark_job, models)
        finally:
            with self._lock:
                self._statements.pop(request_id, None)

    def _spark_job(self, request_id: str, sql: str) -> tuple | None:
        """With the Spark engine: (Spark SQL, relations it reads, the statement's tag)."""
        if self.config.engine.kind != "spark":
            return None
        from gateway.spark.sql import to_spark

        statement = to_spark(sql)
        tag = "gateway-" + re.sub(r"[^A-Za-z0-9_-]", "_", request_id)
        return statement.sql, statement.relations, tag

    def _run_granted(self, statement: _Statement, sql: str, max_rows: int, deadline: float,
                     on_engine_seconds: Callable[[float], None] | None, spark_job: tuple | None,
                     models: tuple = ()) -> pa.Table:
        executor, principal, request_id = statement.executor, statement.principal, statement.request_id
        started = time.monotonic()
        healthy = replace = False
        try:
            if executor is not None and executor.process.poll() is not None:  # died while idle
                executor.discard("died")
                executor = None
            if executor is None:
                executor = Executor(self.config, deadline)
            with self._lock:
                statement.executor = executor
                if statement.cancelled:  # while it waited for a process to start
                    healthy = True
                    raise QueryCancelled("the query was cancelled", rule="engine.cancelled")
                statement.started = time.monotonic()
                heavy = self._heavy(principal, statement.started)
                if self._watcher is None:
                    self._watcher = threading.Thread(target=self._reprioritise, name="executor-priority", daemon=True)
                    self._watcher.start()
            if not executor.prioritise(BACKGROUND_NICE if heavy else 0):
                replace = True  # it runs this statement at the lower priority, then makes way
            executor.pause(False)  # a heavy statement's, paused as its answer left
            if heavy:
                table = executor.run(sql, max_rows, deadline, spark_job, models)
            else:
                with self._foreground.running():  # heavy statements on the host pause meanwhile
                    table = executor.run(sql, max_rows, deadline, spark_job, models)
            healthy = not replace
            return table
        except (ResultTooLarge, QueryCancelled):
            healthy = healthy or not replace
            raise
        except _Stopped as stopped:
            if str(stopped) == "cancel":
                raise QueryCancelled("the query was cancelled", rule="engine.cancelled") from None
            if str(stopped) == "timeout":
                raise _timeout(self.config) from None
            log.error("executor for request %s ended unexpectedly (exit code %s)", request_id,
                      executor.process.poll() if executor else None)
            raise ExecutionFailed(request_id) from None
        except _EngineError as error:
            healthy = not replace  # DuckDB refused a statement; the process is fine
            log.error("engine failure for request %s: %s\n%s", request_id, error, sql)
            raise ExecutionFailed(request_id) from None
        except Exception:
            log.exception("executor failure for request %s", request_id)
            raise ExecutionFailed(request_id) from None
        finally:
            used = time.monotonic() - started
            self._record_usage(principal, used)
            if on_engine_seconds is not None:
                on_engine_seconds(used)
            if executor is not None and not healthy:
                executor.discard("failed")
            self._release(principal, executor if healthy else None)

    def warm(self, wait: bool = False) -> None:
        """Start every executor not yet started, in the background; with wait, return
        once every slot has a process (or START_SECONDS passed)."""
        with self._lock:
            empty, self._empty_slots = self._empty_slots, 0
        for _ in range(empty):
            threading.Thread(target=self._refill, name="executor-warm", daemon=True).start()
        deadline = time.monotonic() + START_SECONDS
        while wait and time.monotonic() < deadline:
            with self._lock:
                busy = sum(1 for s in self._statements.values() if s.granted_slot)
                if len(self._idle) + busy + self._empty_slots >= self.size:
                    return
            time.sleep(0.02)

    def cancel(self, request_id: str) -> bool:
        """Cancel a statement waiting, starting or running here (False: none by that id)."""
        with self._lock:
            statement = self._statements.get(request_id)
            if statement is None:
                return False
            statement.cancelled = True
            if statement in self._waiting:
                self._waiting.remove(statement)
                statement.granted.set()  # wakes it, to find itself cancelled
            running = statement.executor if statement.started is not None else None
        if running is not None:
            running.stop("cancel")
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = [s.executor for s in self._statements.values() if s.started is not None]
        for executor in idle:
            executor.discard("closed")
        for executor in busy:  # their statements fail; their threads discard them
            executor.stop("closed")

    def _acquire(self, statement: _Statement, deadline: float) -> None:
        """Grant the statement an executor (or an empty slot), fairly, before the deadline."""
        with self._lock:
            if not self._waiting and (self._idle or self._empty_slots):
                if self._idle:
                    statement.executor = self._idle.pop()
                else:
                    self._empty_slots -= 1
                self._running[statement.principal] += 1
                statement.granted_slot = True
                return
            self._waiting.append(statement)
        statement.granted.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if statement.granted_slot:
                return
            if statement in self._waiting:  # neither granted nor cancelled: out of time
                self._waiting.remove(statement)
                raise _timeout(self.config)
        raise QueryCancelled("the query was cancelled", rule="engine.cancelled")  # cancel() took it out

    def _release(self, principal: str, executor: Executor | None) -> None:
        """Hand the executor (None: its slot, empty) to the fairest waiter, or keep it."""
        with self._lock:
            self._running[principal] -= 1
            if self._running[principal] <= 0:
                del self._running[principal]
            if self._closed:
                if executor is not None:
                    executor.discard("closed")
                return
            if self._hand_over(executor):
                return
            if executor is not None:
                self._idle.append(executor)
            else:  # a killed executor's slot: refill it now, not on the next statement's time
                threading.Thread(target=self._refill, name="executor-refill", daemon=True).start()

    def _refill(self) -> None:
        try:
            executor = Executor(self.config, time.monotonic() + START_SECONDS)
        except Exception:
            log.exception("could not start a replacement executor")
            with self._lock:
                if not self._hand_over(None):  # a statement waiting for it starts one itself, in its own time
                    self._empty_slots += 1
            return
        with self._lock:
            if self._closed:
                executor.discard("closed")
                return
            if not self._hand_over(executor):
                self._idle.append(executor)

    def _hand_over(self, executor: Executor | None) -> bool:
        """Under the lock: give the executor (None: an empty slot) to the fairest waiter:
        the one whose analyst has the fewest statements running here, then the least
        engine time lately, then the oldest."""
        if not self._waiting:
            return False
        now = time.monotonic()
        waiter = min(self._waiting, key=lambda w: (self._running[w.principal], self._decayed(w.principal, now), w.order))
        self._waiting.remove(waiter)
        self._running[waiter.principal] += 1
        waiter.executor = executor
        waiter.granted_slot = True
        waiter.granted.set()
        return True

    def _heavy(self, principal: str, now: float) -> bool:
        """Under the lock: whether this analyst takes more than a fair share here."""
        if self._running[principal] >= 2:
            return True
        running = sum(now - s.started for s in self._statements.values()
                      if s.principal == principal and s.started is not None)
        return self._decayed(principal, now) + running > HEAVY_EXECUTORS * USAGE_SECONDS

    def _reprioritise(self) -> None:
        """Lower the priority of running statements whose analyst became heavy meanwhile
        (a long statement started while its analyst was not), and pause heavy statements
        while a light one runs on the host."""
        while not self._closed:
            now = time.monotonic()
            with self._lock:
                heavy = [s.executor for s in self._statements.values() if s.started is not None
                         and (s.executor.nice == BACKGROUND_NICE or self._heavy(s.principal, now))]
            for executor in heavy:
                executor.prioritise(BACKGROUND_NICE)  # lowering a priority is always allowed
            self._pause(heavy, now)
            time.sleep(PAUSE_TICK if heavy else REPRIORITISE_SECONDS)
        self._foreground.close()

    def _pause(self, heavy: list[Executor], now: float) -> None:
        """Pause heavy statements while a light one runs, for PAUSE_MAX at a time at most;
        every other executor runs."""
        pausing = bool(heavy) and now >= self._run_until and self._foreground.active()
        if pausing:
            self._paused_since = self._paused_since or now
            if now - self._paused_since > PAUSE_MAX:  # paused long enough: let them run a while
                pausing, self._run_until = False, now + RUN_MIN
        if not pausing:
            self._paused_since = None
        with self._lock:
            running = [s.executor for s in self._statements.values() if s.executor is not None]
        for executor in running:
            executor.pause(pausing and executor in heavy)

    def _decayed(self, principal: str, now: float) -> float:
        seconds, as_of = self._usage.get(principal, (0.0, now))
        return seconds * math.exp(-(now - as_of) / USAGE_SECONDS)

    def _record_usage(self, principal: str, seconds: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._usage[principal] = (self._decayed(principal, now) + seconds, now)
            if len(self._usage) > 10_000:  # forget the idle: their usage has decayed anyway
                self._usage = {p: u for p, u in self._usage.items() if self._decayed(p, now) > 0.01}

    def running(self) -> dict[str, int]:
        with self._lock:
            return dict(self._running)


def _timeout(config: GatewayConfig) -> QueryTimeout:
    return QueryTimeout(f"the query ran longer than {config.engine.query_timeout_seconds:g} s and was stopped",
                        rule="engine.timeout")
