"""Replays of differentially private answers (gateway/engine/replay.py) and what the
audit waits for (gateway/engine/audit.py, gateway/audit_log/writer.py):

- a repeat gives the same rows, free; from the second repeat on it comes from the
  replay pass, still checked against the rule's approvals and counted in quotas;
- the first answer under a key waits for its durable record; a repeat of an answer
  already durably audited for the same analyst does not, but its record follows in
  the chain; another analyst, another statement or a k-only statement still waits;
- a thread that waits for a durable record commits it itself; an event loop's never.

Structural, not timed: the chain's fsync is held shut where it matters."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from gateway.audit_log import writer
from gateway.engine import QueryRequest
from gateway.engine import replay as replay_pass
from gateway.errors import Refused
from tests.dpkit import COLUMNS, MAX_GROUPS, MAX_ROWS, VISITS
from tests.roomkit import build_engine, private_table, simple_policy
from tests.test_audit_durability import HeldFsync

DP_SQL = "SELECT region, count(*) AS n FROM visits GROUP BY region"


@pytest.fixture
def engine(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, k=5)
    policy["analysts"]["bo"] = {"collaborator": "b", "rules": ["agg"], "templates": []}
    policy["privacy"] = {"epsilon_per_query": 1.0, "delta_per_query": 1e-6, "max_rows_per_unit": MAX_ROWS,
                         "max_groups_per_unit": MAX_GROUPS, "budget": {"epsilon": 100, "delta": 0.001}}
    built = build_engine(tmp_path, policy, list(VISITS))
    yield built
    built.close()


def run(engine, sql: str = DP_SQL, user: str = "ana", request_id: str | None = None):
    request = QueryRequest(user=user, cleanroom="room", sql=sql, **({"request_id": request_id} if request_id else {}))
    return engine.run(request)


def replayed(engine, sql: str = DP_SQL, user: str = "ana") -> bool:
    request = QueryRequest(user=user, cleanroom="room", sql=sql)
    state = engine._start(request)
    key = __import__("gateway.engine.recall", fromlist=["cache_key"]).cache_key(state)
    found = engine.context.analyses.get(key)
    return found is not None and replay_pass._given(state.evolve(**found)) is not None


def test_repeats_give_the_same_rows_free_and_the_second_comes_from_the_replay_pass(engine):
    first = run(engine)
    spent = engine.budget("ana", "room")["spent"]["epsilon"]
    assert not replayed(engine)
    repeat = run(engine)  # published from the stored measurement; its release is kept
    assert replayed(engine)
    again = run(engine, request_id="again")
    assert again.request_id == "again"
    assert first.table.equals(repeat.table) and repeat.table.equals(again.table)
    assert again.notices == repeat.notices and again.protection["reused"] is True
    assert engine.budget("ana", "room")["spent"]["epsilon"] == spent  # repeats are free
    records = [r for r in engine.context.audit.records() if r.get("sql") == DP_SQL]
    assert len(records) == 3 and records[-1]["request_id"] == "again" and records[-1]["reused_release"] is True


def test_a_replay_is_per_analyst_and_per_statement(engine):
    run(engine), run(engine)
    assert replayed(engine) and not replayed(engine, user="bo")
    assert not replayed(engine, DP_SQL.replace("count(*) AS n", "count(*) AS visits"))
    bo = run(engine, user="bo")  # bo's own answer, as any first one
    assert bo.protection["reused"] is False and not replayed(engine, user="bo")
    assert run(engine, user="bo").table.equals(bo.table) and replayed(engine, user="bo")


def test_a_revoked_approval_stops_the_next_replay_even_from_another_process(engine, tmp_path):
    run(engine), run(engine)
    assert replayed(engine)
    store = engine.context.collab.store.sqlite_path
    # Another process (another gateway worker) withdraws owner a's approval of the rule.
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute(\"DELETE FROM approvals WHERE collaborator = 'a'\"); c.commit()", str(store)],
                   check=True)
    with pytest.raises(Refused) as refused:
        run(engine)
    assert refused.value.rule == "rule.not_approved"


def test_approvals_are_read_again_after_any_commit_to_the_store(engine):
    """query_unchanged keeps a read only while SQLite's data_version stands still."""
    query = "SELECT count(*) AS n FROM approvals"
    store = engine.context.collab.store
    before = store.query_unchanged(query)[0]["n"]
    assert store.query_unchanged(query)[0]["n"] == before
    with sqlite3.connect(store.sqlite_path) as other:  # another connection, as another process would be
        other.execute("DELETE FROM approvals WHERE collaborator = 'a'")
    assert store.query_unchanged(query)[0]["n"] < before


def test_only_a_repeat_of_an_answer_already_durably_audited_is_answered_before_its_record_is(engine, monkeypatch):
    run(engine), run(engine)  # delivered, durably, and its repeat kept
    run(engine, "SELECT count(*) AS n FROM visits")  # another statement: the chain exists
    held = HeldFsync(engine.context.audit, monkeypatch)
    outcome: dict = {}
    others = {
        "bo": lambda: run(engine, user="bo"),  # another analyst: a first answer for bo
        "other statement": lambda: run(engine, "SELECT region, sum(spend) AS s FROM visits GROUP BY region"),
    }
    threads = [threading.Thread(target=lambda name=name, call=call: outcome.update({name: call()}))
               for name, call in others.items()]
    try:
        for thread in threads:
            thread.start()
        assert held.entered.wait(120)
        # The analyst's own repeat does not wait: its rows were released, and recorded, before.
        _, audited = engine.submit(QueryRequest(user="ana", cleanroom="room", sql=DP_SQL, request_id="replay"))
        assert audited.done()
        assert not outcome  # the others wait for their records
    finally:
        held.open()
    for thread in threads:
        thread.join(120)
    assert set(outcome) == set(others)
    records = {r["request_id"]: r for r in engine.context.audit.records()}
    assert records["replay"]["decision"] == "released" and records["replay"]["reused_release"] is True


def test_a_k_only_repeat_always_waits_for_its_record(tmp_path, monkeypatch):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, k=5)
    engine = build_engine(tmp_path, policy, list(VISITS))
    try:
        for _ in range(3):
            run(engine)
        held = HeldFsync(engine.context.audit, monkeypatch)
        done = threading.Event()
        thread = threading.Thread(target=lambda: (run(engine), done.set()))
        thread.start()
        try:
            assert held.entered.wait(120)
            assert not done.is_set()
        finally:
            held.open()
        thread.join(120)
        assert done.is_set()
    finally:
        engine.close()


def test_a_waiting_thread_commits_its_own_record_and_an_event_loop_never_does(tmp_path, monkeypatch):
    from gateway.audit_log import AuditLog

    monkeypatch.setattr(writer, "LEAD_GRACE_SECONDS", 600.0)  # the writer thread never steps in for a waiter
    log = AuditLog(tmp_path)
    log.append({"n": "created"})
    committers, real = [], os.fsync
    monkeypatch.setattr(writer.os, "fsync", lambda fd: committers.append(threading.current_thread().name) or real(fd))
    threading.Thread(target=lambda: log.append({"n": "from a thread"}), name="statement").start()
    for _ in range(200):
        if committers:
            break
        threading.Event().wait(0.05)
    assert committers == ["statement"]  # no hand-off to the writer thread

    async def on_a_loop():
        future = log.submit({"n": "from a loop"})
        log.commit_queued()  # refused on a loop's thread: the writer thread commits it
        return await asyncio.wrap_future(future)

    loop = asyncio.new_event_loop()
    try:
        threading.current_thread().name, name = "loop", threading.current_thread().name
        try:
            record = loop.run_until_complete(on_a_loop())
        finally:
            threading.current_thread().name = name
    finally:
        loop.close()
    assert record["n"] == "from a loop" and committers[-1] == "audit-writer" and "loop" not in committers


def test_the_wire_answers_kept_replays_on_its_loop_and_a_refusal_there_never_stalls_it(engine, tmp_path, monkeypatch):
    """A kept replay runs on the wire server's event loop (replay.in_memory). Refused there
    (here: its rule's approval withdrawn by another process), its record is still durable
    before the error leaves, and the loop goes on serving other sessions meanwhile."""
    import psycopg
    import yaml

    from gateway.pgwire.scram import make_verifier
    from tests.servers import PASSWORD, wire_in_process

    config_path = tmp_path / "gateway.yaml"  # the engine fixture's config, ana given a wire password
    config = yaml.safe_load(config_path.read_text())
    config["users"] = {"ana": {"scram_sha256": make_verifier(PASSWORD)}}
    config["engine"]["policy_reload_seconds"] = 0  # no file check due: a kept replay always runs on the loop
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    wired = type(engine).from_config_file(config_path)
    try:
        with wire_in_process(wired) as port:
            dsn = f"host=127.0.0.1 port={port} dbname=room user=ana password={PASSWORD} sslmode=disable " \
                  "connect_timeout=20"
            with psycopg.connect(dsn, autocommit=True) as conn:
                answers = [conn.execute(DP_SQL).fetchall() for _ in range(3)]
            assert answers[0] == answers[1] == answers[2]
            assert wired.runs_in_memory(QueryRequest(user="ana", cleanroom="room", sql=DP_SQL))
            with sqlite3.connect(wired.context.collab.store.sqlite_path) as other:
                other.execute("DELETE FROM approvals WHERE collaborator = 'a'")
            held = HeldFsync(wired.context.audit, monkeypatch)
            outcome: dict = {}

            def refused():
                try:
                    psycopg.connect(dsn, autocommit=True).execute(DP_SQL)
                except psycopg.Error as error:
                    outcome["sqlstate"] = error.sqlstate

            thread = threading.Thread(target=refused)
            thread.start()
            try:
                assert held.entered.wait(120)  # the refusal's record is inside the held fsync
                with psycopg.connect(dsn, autocommit=True) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)  # the loop still serves
                assert not outcome  # and the refusal has not left before its record
            finally:
                held.open()
            thread.join(60)
        assert outcome["sqlstate"] == "42501"
        refusals = [r for r in wired.context.audit.records() if r["decision"] == "refused"]
        assert [(r["sql"], r["rule"]) for r in refusals] == [(DP_SQL, "rule.not_approved")]
    finally:
        wired.close()


def test_a_kept_replay_takes_no_slot_among_statements_at_once_but_counts_per_minute(tmp_path):
    from gateway.errors import QuotaExceeded

    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, k=5)
    policy["privacy"] = {"epsilon_per_query": 1.0, "delta_per_query": 1e-6, "max_rows_per_unit": MAX_ROWS,
                         "max_groups_per_unit": MAX_GROUPS, "budget": {"epsilon": 100, "delta": 0.001}}
    policy["quotas"] = {"per_analyst": {"concurrent_statements": 1, "statements_per_minute": 8}}
    engine = build_engine(tmp_path, policy, list(VISITS))
    try:
        run(engine), run(engine)  # 2 of 8 this minute; the answer is kept
        room = engine.context.cleanrooms["room"]
        quotas = engine.context.quotas
        (analyst, _), _, _ = quotas.parties(room, "ana", "a")
        held = quotas.slots.take(analyst.subject, 1)  # ana's one statement at once, held (another worker's)
        try:
            assert run(engine).protection["reused"] is True  # 3: a kept replay needs no executor
            with pytest.raises(QuotaExceeded) as refused:
                run(engine, "SELECT region, sum(spend) AS s FROM visits GROUP BY region")  # a fresh one does
            assert refused.value.rule == "quota.concurrent"
        finally:
            held.release()
        rules = []
        for _ in range(8):
            try:
                run(engine)
            except QuotaExceeded as error:
                rules.append(error.rule)
        assert rules and set(rules) == {"quota.rate"}  # replays count in the minute's window
    finally:
        engine.close()
