"""The statement deadline is certain: a statement built to outrun it is stopped
(its executor process killed) and the client has 57014 within the deadline and a
small margin, even when DuckDB would not stop it; the charge stands, the audit
record is written, other statements and sessions go on."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from gateway.engine import QueryRequest
from gateway.engine.executors import ExecutorPool
from gateway.errors import QueryCancelled, QueryTimeout
from tests.roomkit import Room, private_table, simple_policy
from tests.servers import PASSWORD, serve_pg

psycopg = pytest.importorskip("psycopg")

DEADLINE = 1.0
MARGIN = 0.75  # kill, reap and answer; generous for a loaded 2-core machine
# 20,000 x 20,000 rows share one key: the declared join explodes to 400M rows (minutes).
SETUP = [
    "CREATE TABLE a AS SELECT 'h1' AS hh, i % 7 AS g FROM range(20000) t(i)",
    "CREATE TABLE b AS SELECT 'h1' AS hh FROM range(20000) t(i)",
]
SLOW = "SELECT count(*) FROM a JOIN b ON a.hh = b.hh"
# DuckDB's LIKE backtracks, and a running LIKE ignores interrupt() (../shared/FACTS.md):
# this one call runs for minutes. The resolver refuses the pattern; the pool is the last line.
UNSTOPPABLE = "SELECT repeat('baby', 150) LIKE '%b_b%b_b%b_b%b_b%z' AS x"


def dp_policy() -> dict:
    tables = {"a": private_table("a", {"hh": {"role": "join_key"}, "g": {"role": "dimension", "values": list(range(7))}}),
              "b": private_table("b", {"hh": {"role": "join_key"}})}
    policy = simple_policy(tables, joins=[("a.hh", "b.hh")], k=2)
    policy["privacy"] = {"epsilon_per_query": 0.5, "max_rows_per_unit": 100000, "budget": {"epsilon": 100.0}}
    policy["analysts"]["bo"] = {"collaborator": "b", "rules": ["agg"]}
    return policy


# The module's `engine` (tests/conftest.py), warmed as servers do at startup: no statement
# here waits for an interpreter.
ROOM = Room(dp_policy(), SETUP, settings={"query_timeout_seconds": DEADLINE}, warm=True)


@pytest.fixture(autouse=True)
def executors_ready(request):
    """Each test starts with every executor up: a kill in the previous test is
    refilled in the background, and the deadline counts the wait for it."""
    if "engine" in request.fixturenames:
        request.getfixturevalue("engine").warm(wait=True)


def request(sql: str, user: str = "ana", **extra) -> QueryRequest:
    return QueryRequest(user=user, cleanroom="room", sql=sql, **extra)


def test_a_call_duckdb_cannot_interrupt_is_killed_at_the_deadline(engine):
    pool = ExecutorPool(engine.config, 1)
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout):
            pool.run("r1", principal="ana", sql=UNSTOPPABLE, max_rows=10, deadline=started + DEADLINE)
        assert time.monotonic() - started < DEADLINE + MARGIN
        # the slot is refilled with a fresh process, which answers
        answer = pool.run("r2", principal="ana", sql="SELECT 42 AS x", max_rows=10, deadline=time.monotonic() + 30)
        assert answer.to_pylist() == [{"x": 42}]
    finally:
        pool.close()


def test_the_killed_process_is_gone(engine):
    pool = ExecutorPool(engine.config, 1)
    try:
        pool.run("warm", principal="ana", sql="SELECT 1 AS x", max_rows=10, deadline=time.monotonic() + 30)
        (first,) = pool._idle
        with pytest.raises(QueryTimeout):
            pool.run("r1", principal="ana", sql=UNSTOPPABLE, max_rows=10, deadline=time.monotonic() + 0.5)
        assert first.process.poll() is not None  # reaped, not left running its LIKE
        with pytest.raises(ProcessLookupError):
            os.kill(first.process.pid, 0)
    finally:
        pool.close()


def test_timeout_through_the_engine_is_charged_audited_and_leaves_others_unharmed(engine):
    before = engine.budget("ana", "room")["spent"]["epsilon"]
    light = {}

    def other_analyst():
        time.sleep(0.2)  # while the slow statement holds one executor
        started = time.monotonic()
        light["rows"] = engine.run(request("SELECT g, count(*) AS n FROM a GROUP BY g", user="bo")).table.num_rows
        light["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=other_analyst)
    thread.start()
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as stopped:
        engine.run(request(SLOW, request_id="slow-1"))
    elapsed = time.monotonic() - started
    thread.join(30)
    assert stopped.value.sqlstate == "57014"
    assert elapsed < DEADLINE + MARGIN
    assert engine.budget("ana", "room")["spent"]["epsilon"] == pytest.approx(before + 0.5)  # the charge stands
    assert light["rows"] >= 1 and light["seconds"] < DEADLINE
    records = engine.context.audit.records()
    (record,) = [r for r in records if r.get("request_id") == "slow-1"]
    assert "engine.timeout" in json.dumps(record)


def test_cancel_kills_the_executor(engine):
    outcome = {}

    def slow():
        try:
            engine.run(request(SLOW, request_id="cancel-1"))
        except Exception as error:  # noqa: BLE001 - inspected below
            outcome["error"] = error

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 5
    while not engine.interrupt("cancel-1") and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.join(10)
    assert isinstance(outcome.get("error"), QueryCancelled)
    assert engine.run(request("SELECT g, count(*) AS n FROM a GROUP BY g")).table.num_rows >= 1


@pytest.fixture(scope="module")
def wire(engine, tmp_path_factory):
    from gateway.pgwire.scram import make_verifier

    config = yaml.safe_load(Path(engine.config.path).read_text())
    config["users"] = {name: {"scram_sha256": make_verifier(PASSWORD)} for name in ("ana", "bo")}
    folder = tmp_path_factory.mktemp("deadline-wire")
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    yield from serve_pg(path, folder)


def test_over_the_wire_57014_within_the_deadline_and_the_session_goes_on(wire):
    dsn = wire.dsn(dbname="room", user="ana")
    with psycopg.connect(dsn, autocommit=True) as slow, psycopg.connect(wire.dsn(dbname="room", user="bo"),
                                                                         autocommit=True) as other:
        answered = {}

        def light():
            time.sleep(0.2)
            started = time.monotonic()
            answered["rows"] = other.execute("SELECT g, count(*) FROM a GROUP BY g").fetchall()
            answered["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=light)
        thread.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as stopped:
            slow.execute(SLOW)
        elapsed = time.monotonic() - started
        thread.join(30)
        assert stopped.value.sqlstate == "57014" and elapsed < DEADLINE + MARGIN
        assert answered["rows"] and answered["seconds"] < DEADLINE
        assert slow.execute("SELECT 1").fetchone() == (1,)
    assert wire.alive()


def test_over_the_wire_a_cancel_request_stops_the_statement(wire):
    with psycopg.connect(wire.dsn(dbname="room", user="ana"), autocommit=True) as conn:
        timer = threading.Timer(0.3, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(SLOW)
        assert time.monotonic() - started < DEADLINE  # the cancel, not the deadline, ended it
        assert conn.execute("SELECT 1").fetchone() == (1,)
