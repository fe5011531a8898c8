"""The executor pool itself (gateway/engine/executors.py), on real processes:
cancelling in every phase, the fair order of waiting statements, priorities."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.engine.executors import BACKGROUND_NICE, ExecutorPool
from gateway.errors import ExecutionFailed, QueryCancelled, QueryTimeout, ResultTooLarge
from tests.roomkit import build_engine, private_table, simple_policy

# A statement that holds its executor until killed (DuckDB cannot interrupt it).
HOLD = "SELECT repeat('baby', 150) LIKE '%b_b%b_b%b_b%b_b%z' AS x"


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    policy = simple_policy({"a": private_table("a", {"hh": {"role": "join_key"}})}, k=2)
    engine = build_engine(tmp_path_factory.mktemp("executors"), policy, ["CREATE TABLE a AS SELECT 'h' AS hh"])
    path = engine.config.path
    engine.close()
    return load_config(path)


@pytest.fixture
def pool(config):
    pool = ExecutorPool(config, 1)
    pool.warm(wait=True)
    yield pool
    pool.close()


def run(pool, request_id, principal="ana", sql="SELECT 1 AS x", seconds=30.0):
    return pool.run(request_id, principal=principal, sql=sql, max_rows=100, deadline=time.monotonic() + seconds)


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def body():
        try:
            outcome["value"] = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - inspected by the test
            outcome["error"] = error
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_results_errors_and_row_caps(pool):
    assert run(pool, "r1", sql="SELECT 2 AS x").to_pylist() == [{"x": 2}]
    with pytest.raises(ResultTooLarge):
        run(pool, "r2", sql="SELECT * FROM range(1000)")
    with pytest.raises(ExecutionFailed) as failed:  # DuckDB's message is for the log only
        run(pool, "r3", sql="SELECT no_such_column FROM range(3)")
    assert "no_such_column" not in str(failed.value)
    assert run(pool, "r4").to_pylist() == [{"x": 1}]  # the same executor serves on


def test_cancel_a_waiting_statement_and_a_running_one(pool):
    holder, held = in_thread(run, pool, "hold", sql=HOLD)
    wait_until(lambda: pool._statements.get("hold") is not None and pool._statements["hold"].started)
    waiter, waited = in_thread(run, pool, "wait")
    wait_until(lambda: any(s.request_id == "wait" for s in pool._waiting))
    assert pool.cancel("wait")
    waiter.join(5)
    assert isinstance(waited.get("error"), QueryCancelled)
    started = time.monotonic()
    assert pool.cancel("hold")
    holder.join(5)
    assert isinstance(held.get("error"), QueryCancelled) and held["at"] - started < 1.0
    assert not pool.cancel("hold")  # gone
    assert run(pool, "after").to_pylist() == [{"x": 1}]  # a fresh executor took the slot


def test_a_statement_waiting_past_its_deadline_times_out(pool):
    holder, _ = in_thread(run, pool, "hold2", sql=HOLD)
    wait_until(lambda: "hold2" in pool._statements and pool._statements["hold2"].started)
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        run(pool, "late", seconds=0.3)
    assert time.monotonic() - started < 1.0
    pool.cancel("hold2")
    holder.join(5)


def test_a_statement_waiting_on_a_start_that_fails_starts_its_own(config, monkeypatch):
    """The pool's own start of an executor (warm, or a refill after a kill) can fail, e.g. a
    Spark session too slow to open on a loaded machine: a statement already waiting for that
    slot gets it and starts an executor itself, instead of waiting out its deadline."""
    from gateway.engine import executors

    real, failing = executors.Executor, threading.Event()

    def first_start_fails(config, deadline):
        monkeypatch.setattr(executors, "Executor", real)  # only this start fails
        failing.wait(30)
        raise RuntimeError("executor failed to start: ('failed', 'the Spark session did not open')")

    monkeypatch.setattr(executors, "Executor", first_start_fails)
    pool = ExecutorPool(config, 1)
    try:
        pool.warm()  # the pool's start, in the background: it will fail
        waiter, waited = in_thread(run, pool, "waiter", seconds=60)
        wait_until(lambda: any(s.request_id == "waiter" for s in pool._waiting))
        failing.set()
        waiter.join(90)
        assert "value" in waited and waited["value"].to_pylist() == [{"x": 1}], waited
    finally:
        pool.close()


def test_the_next_free_executor_goes_to_the_analyst_who_used_least(pool):
    holder, _ = in_thread(run, pool, "heavy-0", principal="heavy", sql=HOLD)
    wait_until(lambda: "heavy-0" in pool._statements and pool._statements["heavy-0"].started)
    queued = {}
    for i in range(1, 4):  # heavy queues three more first...
        queued[f"heavy-{i}"] = in_thread(run, pool, f"heavy-{i}", principal="heavy")
        wait_until(lambda i=i: any(s.request_id == f"heavy-{i}" for s in pool._waiting))
    queued["light"] = in_thread(run, pool, "light", principal="light")  # ...then light asks once
    wait_until(lambda: any(s.request_id == "light" for s in pool._waiting))
    pool.cancel("heavy-0")
    holder.join(5)
    for thread, _ in queued.values():
        thread.join(30)
    order = [name for _, name in sorted((outcome["at"], name) for name, (_, outcome) in queued.items())]
    assert order[0] == "light", order  # heavy had just used the executor; light had not
    assert order[1:] == ["heavy-1", "heavy-2", "heavy-3"]  # and among one analyst's, oldest first


def test_an_analyst_running_two_at_once_runs_at_a_lower_priority(config):
    pool = ExecutorPool(config, 3)
    pool.warm(wait=True)
    try:
        first, _ = in_thread(run, pool, "h1", principal="heavy", sql=HOLD)
        wait_until(lambda: "h1" in pool._statements and pool._statements["h1"].started)
        second, _ = in_thread(run, pool, "h2", principal="heavy", sql=HOLD)
        wait_until(lambda: "h2" in pool._statements and pool._statements["h2"].started)
        lone, _ = in_thread(run, pool, "l1", principal="light", sql=HOLD)
        wait_until(lambda: "l1" in pool._statements and pool._statements["l1"].started)
        def nice(rid: str) -> set[int]:  # every thread's: DuckDB's workers do the work
            pid = pool._statements[rid].executor.process.pid
            return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}

        wait_until(lambda: nice("h1") == {BACKGROUND_NICE})  # lowered while running, once h2 came
        assert nice("h2") == {BACKGROUND_NICE}
        assert nice("l1") == {0}
        for rid in ("h1", "h2", "l1"):
            pool.cancel(rid)
        for thread in (first, second, lone):
            thread.join(5)
    finally:
        pool.close()


def test_a_closed_pool_refuses_and_leaves_no_process(config):
    pool = ExecutorPool(config, 2)
    pool.warm(wait=True)
    pids = [executor.process.pid for executor in pool._idle]
    pool.close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(ExecutionFailed):
        run(pool, "late")


def test_a_paused_executor_ends_when_its_server_is_killed(config, tmp_path):
    """A heavy statement's executor is paused (SIGSTOP) while a light one runs. If the server
    is killed then (kill -9), the paused executor must not stay stopped for ever, holding its
    memory: the kernel continues and hangs up an orphaned process group's stopped members."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "server.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})\n"
        "from gateway.config import load_config\n"
        "from gateway.engine.executors import Executor\n"
        f"executor = Executor(load_config({str(config.path)!r}), time.monotonic() + 120)\n"
        "executor.pause(True)\n"
        "print(executor.process.pid, flush=True)\n"
        "time.sleep(600)\n")
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        executor = int(server.stdout.readline())
        assert open(f"/proc/{executor}/stat").read().rsplit(")", 1)[1].split()[0] == "T"  # stopped
        os.kill(server.pid, signal.SIGKILL)
        server.wait(30)
        wait_until(lambda: not _alive(executor), 60)  # without: stopped, re-parented, for ever
    finally:
        server.kill()


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
