"""The audit's durability model (gateway/audit_log/writer.py):

- a worker killed with SIGKILL in the middle of a batch has a durable record of
  every statement whose answer it delivered;
- a statement that reads no clean-room data (SELECT 1, a catalog query) is answered
  without waiting for any fsync; its record still joins the same chain, in order;
- a statement that reads the room's data is not answered before its record is durable.

Structural, not timed: the chain's fsync is held shut, and what completes while it
is shut is checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.audit_log import chain_paths, verify_state, writer
from gateway.engine import QueryRequest
from gateway.storage import Database
from tests.collabkit import build, room_of

REPO = Path(__file__).resolve().parent.parent
DATA_SQL = "SELECT region, COUNT(*) FROM visits GROUP BY region"
CATALOG_SQL = "SELECT table_name FROM information_schema.tables"

# A worker process: 6 threads run released statements and print DELIVERED <request id>
# once each answer is in hand. With BLOCK_AFTER > 0 the chain's fsync number BLOCK_AFTER + 1
# never returns (BLOCKED is printed): the worker is then killed inside that batch, its
# records written but not fsync'd, their statements waiting.
WORKER = """
import os, sys, threading
sys.path.insert(0, sys.argv[1])
from gateway.audit_log import writer
from gateway.engine import Engine, QueryRequest

engine = Engine.from_config_file(sys.argv[2])
block_after = int(sys.argv[3])
audit, real_fsync, synced = engine.context.audit, os.fsync, [0]

def fsync(fd):
    chain = audit._chain
    if block_after and chain is not None and fd == chain.fd:
        synced[0] += 1
        if synced[0] > block_after:
            print("BLOCKED", flush=True)
            threading.Event().wait()
    return real_fsync(fd)

writer.os.fsync = fsync
printing = threading.Lock()

def work(number):
    for n in range(100000):
        request_id = f"w{number}-{n}"
        engine.run(QueryRequest(user="ana", cleanroom="room", sql=%r, request_id=request_id))
        with printing:
            print("DELIVERED", request_id, flush=True)

for number in range(6):
    threading.Thread(target=work, args=(number,), daemon=True).start()
threading.Event().wait()
""" % DATA_SQL


@pytest.fixture
def room(tmp_path):
    engine = build(tmp_path)
    engine.run(QueryRequest(user="ana", cleanroom="room", sql=DATA_SQL))  # sources described, approvals read
    engine.close()
    return tmp_path


@pytest.mark.parametrize("block_after", [3, 0], ids=["inside-a-held-fsync", "after-20-answers"])
def test_kill_9_of_a_worker_loses_no_record_of_an_answered_statement(room, block_after):
    state = room / "state"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(REPO), str(room / "gateway.yaml"), str(block_after)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    delivered, blocked = [], False
    try:
        for line in worker.stdout:
            if line.startswith("DELIVERED"):
                delivered.append(line.split()[1])
            blocked = blocked or line.startswith("BLOCKED")
            if blocked or (not block_after and len(delivered) >= 20):
                break
        worker.send_signal(signal.SIGKILL)  # the worker itself, nothing else: no chance to flush
        worker.wait(60)
        delivered += [line.split()[1] for line in worker.stdout if line.startswith("DELIVERED")]
    finally:
        if worker.poll() is None:
            worker.kill()
        try:
            os.killpg(worker.pid, signal.SIGKILL)  # its executor processes, which end with it anyway
        except ProcessLookupError:
            pass
        worker.stdout.close()
    assert worker.returncode == -signal.SIGKILL
    assert len(delivered) >= (3 if block_after else 20)
    recorded = {}
    for path in chain_paths(state):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill: verify notes it
            recorded[record.get("request_id")] = record
    missing = [request_id for request_id in delivered if request_id not in recorded]
    assert missing == []
    assert all(recorded[request_id]["decision"] == "released" for request_id in delivered)
    if block_after:  # the kill hit a batch in flight: written, never fsync'd, its answers never delivered
        in_flight = [r for r in recorded.values() if r.get("request_id", "").startswith("w")
                     and r["request_id"] not in delivered]
        assert in_flight
    reports = verify_state(state, Database(sqlite_path=state / "collab.sqlite"))
    assert [(r.where, r.problems) for r in reports if r.problems] == []
    assert all(r.anchored for r in reports)


class HeldFsync:
    """The chain's fsync, held shut until `open()`; `entered` once a batch waits in it."""

    def __init__(self, audit, monkeypatch):
        self.entered, self.opened = threading.Event(), threading.Event()
        real = os.fsync

        def fsync(fd):
            if audit._chain is not None and fd == audit._chain.fd:
                self.entered.set()
                self.opened.wait(120)
            return real(fd)

        monkeypatch.setattr(writer.os, "fsync", fsync)

    def open(self) -> None:
        self.opened.set()


def test_statements_reading_no_room_data_are_answered_while_the_fsync_is_held(tmp_path, monkeypatch):
    engine = build(tmp_path)
    try:
        for user in ("appr_a", "appr_b"):
            engine.context.collab.approve(user, room_of(engine), "joined")
        audit = engine.context.audit
        engine.run(QueryRequest(user="ana", cleanroom="room", sql=DATA_SQL))  # the chain exists
        held = HeldFsync(audit, monkeypatch)
        try:
            _, data_audited = engine.submit(QueryRequest(user="ana", cleanroom="room", sql=DATA_SQL,
                                                         request_id="data"))
            assert held.entered.wait(120)  # the writer is inside the fsync of the data record's batch
            assert not data_audited.done()  # so its answer may not leave
            # Answered while that fsync is still held: nothing here waits for a disk.
            constant = engine.run(QueryRequest(user="ana", cleanroom="room", sql="SELECT 1", request_id="constant"))
            assert constant.table.num_rows == 1
            _, catalog_audited = engine.submit(QueryRequest(user="ana", cleanroom="room", sql=CATALOG_SQL,
                                                            request_id="catalog"))
            assert catalog_audited.done()
            assert not held.opened.is_set() and not data_audited.done()
            # A template run reads the room's data: it waits like any release.
            _, template_audited = engine.submit(QueryRequest(user="ana", cleanroom="room", template="joined",
                                                             params={"tier": "gold"}, request_id="template"))
            assert not template_audited.done()
        finally:
            held.open()
        assert data_audited.result(60)["request_id"] == "data"
        assert template_audited.result(60)["request_id"] == "template"
        records = {r["request_id"]: r for r in audit.records() if r.get("request_id") in
                   ("data", "constant", "catalog", "template")}
        # All four in the one chain of this process, in the order their statements finished.
        assert len({r["chain"] for r in records.values()}) == 1
        assert records["data"]["seq"] < records["constant"]["seq"] < records["catalog"]["seq"] \
            < records["template"]["seq"]
        assert {r["decision"] for r in records.values()} == {"released"}
    finally:
        engine.close()
    reports = verify_state(tmp_path / "state", Database(sqlite_path=tmp_path / "state" / "collab.sqlite"))
    assert [r.problems for r in reports] == [[]] and reports[0].anchored
    head = reports[0]
    assert head.records == len((tmp_path / "state" / "audit" / f"{head.chain}.jsonl").read_text().splitlines())


def test_a_refusal_waits_for_its_record(tmp_path, monkeypatch):
    from gateway.errors import GatewayError

    engine = build(tmp_path)
    try:
        audit = engine.context.audit
        engine.run(QueryRequest(user="ana", cleanroom="room", sql=DATA_SQL))
        held = HeldFsync(audit, monkeypatch)
        outcome = {}

        def refused():
            try:
                engine.run(QueryRequest(user="ana", cleanroom="room", sql="SELECT hh FROM visits"))
            except GatewayError as error:
                outcome["error"] = error

        thread = threading.Thread(target=refused)
        thread.start()
        try:
            assert held.entered.wait(120)
            assert "error" not in outcome  # the refusal does not reach the client before its record is durable
        finally:
            held.open()
        thread.join(120)
        assert outcome["error"].http_status in (400, 403)
        assert audit.records()[-1]["decision"] == "refused"
    finally:
        engine.close()


def test_the_wire_serves_other_sessions_while_an_audit_fsync_is_held(demo_config_path, tmp_path, monkeypatch):
    """The wire server's event loop never writes or fsyncs audit records (the audit log's
    thread does): while one statement's record waits for a slow disk, a new session
    logs in and runs SELECT 1. With the fsync on the loop's thread, nothing would move."""
    import psycopg

    from gateway.engine import Engine
    from tests.servers import PASSWORD, wire_config, wire_in_process

    engine = Engine.from_config_file(wire_config(demo_config_path, tmp_path))
    try:
        with wire_in_process(engine) as port:
            dsn = f"host=127.0.0.1 port={port} dbname=demo user=analyst password={PASSWORD} sslmode=disable " \
                  "connect_timeout=20"
            with psycopg.connect(dsn, autocommit=True) as conn:  # the chain exists before the fsync is held
                conn.execute(DEMO_SQL).fetchall()
            held = HeldFsync(engine.context.audit, monkeypatch)
            released = {}
            worker = threading.Thread(target=lambda: released.update(rows=psycopg.connect(
                dsn, autocommit=True).execute(DEMO_SQL.replace("region", "region, category")).fetchall()))
            worker.start()
            try:
                assert held.entered.wait(120)  # that statement's record is inside the held fsync
                with psycopg.connect(dsn, autocommit=True) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                assert "rows" not in released  # its answer still waits for its record
            finally:
                held.open()
            worker.join(60)
            assert released["rows"]
    finally:
        engine.close()


DEMO_SQL = "SELECT region, count(*) FROM purchases GROUP BY region"
