"""The audit log: tampering with any one record (edited, deleted, reordered) is
detected with its line number; auditors, and only they, read it."""

from __future__ import annotations

import json

import pytest

from gateway.cli import main as cli
from gateway.engine import QueryRequest
from tests.collabkit import build, room_of


@pytest.fixture
def engine(tmp_path):
    engine = build(tmp_path)
    for user in ("appr_a", "appr_b"):
        engine.context.collab.approve(user, room_of(engine), "joined")
    for _ in range(3):
        engine.run(QueryRequest(user="ana", cleanroom="room", template="joined", params={"tier": "gold"}))
    engine.run(QueryRequest(user="ana", cleanroom="room", sql="SELECT region, COUNT(*) FROM visits GROUP BY region"))
    yield engine
    engine.close()


def lines(engine):
    return engine.context.audit.path.read_text().splitlines(keepends=True)


def verify(engine, capsys):
    code = cli(["audit", "verify", "--log", str(engine.context.audit.path)])
    return code, capsys.readouterr().out


def test_an_intact_log_verifies(engine, capsys):
    code, out = verify(engine, capsys)
    assert code == 0 and "ok (6 records, chain intact, end matches its anchor)" in out


def test_an_edited_record_is_detected(engine, capsys):
    text = lines(engine)
    record = json.loads(text[3])
    record["rows_released"] = 1  # a single record, say, hidden from the auditors
    text[3] = json.dumps(record, sort_keys=True) + "\n"
    engine.context.audit.path.write_text("".join(text))
    code, out = verify(engine, capsys)
    assert code == 1
    assert "line 4: record edited" in out


def test_an_edited_record_with_a_recomputed_hash_breaks_the_chain(engine, capsys):
    from gateway.audit_log import record_hash

    text = lines(engine)
    record = json.loads(text[2])
    record["user"] = "someone_else"
    record["hash"] = record_hash(record)
    text[2] = json.dumps(record, sort_keys=True) + "\n"
    engine.context.audit.path.write_text("".join(text))
    code, out = verify(engine, capsys)
    assert code == 1 and "line 4: chain broken" in out


def test_a_deleted_record_is_detected(engine, capsys):
    text = lines(engine)
    del text[2]
    engine.context.audit.path.write_text("".join(text))
    code, out = verify(engine, capsys)
    assert code == 1 and "line 3: chain broken" in out


def test_removing_the_last_records_is_detected_by_the_anchor(engine, capsys):
    text = lines(engine)
    engine.context.audit.path.write_text("".join(text[:-2]))  # an intact, shorter chain
    code, out = verify(engine, capsys)
    assert code == 1 and f"ends at record {len(text) - 2}" in out and "records at its end were removed" in out


def test_emptying_or_deleting_the_log_is_detected_by_the_anchor(engine, capsys):
    engine.context.audit.path.write_text("")
    code, out = verify(engine, capsys)
    assert code == 1 and "the log is empty or missing" in out
    engine.context.audit.path.unlink()
    code, out = verify(engine, capsys)
    assert code == 1 and "the log is empty or missing" in out


def test_replacing_the_last_record_is_detected_by_the_anchor(engine, capsys):
    from gateway.audit_log import record_hash

    text = lines(engine)
    last = json.loads(text[-1])
    last["user"] = "someone_else"
    last.pop("hash")
    last["hash"] = record_hash(last)  # a consistent chain, but not the anchored head
    engine.context.audit.path.write_text("".join(text[:-1]) + json.dumps(last) + "\n")
    code, out = verify(engine, capsys)
    assert code == 1 and f"record {len(text)} is not the one" in out


def test_reordered_records_are_detected(engine, capsys):
    text = lines(engine)
    text[2], text[3] = text[3], text[2]
    engine.context.audit.path.write_text("".join(text))
    code, out = verify(engine, capsys)
    assert code == 1 and "line 3: chain broken" in out


def test_tail_prints_the_last_records(engine, capsys):
    assert cli(["audit", "tail", "-n", "2", "--log", str(engine.context.audit.path)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in printed] == [5, 6]
    assert printed[-1]["sql"].startswith("SELECT region")
    assert printed[0]["template_sha256"] and printed[0]["approvals"]


# -- GET /v1/audit -------------------------------------------------------------------------


def client_for(engine, tmp_path):
    import yaml

    from gateway.auth import hash_token
    from gateway.http.app import create_app

    users = {name: {"token_sha256": hash_token(name)} for name in ("ana", "appr_a", "appr_b", "audit_b")}
    config = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    config["users"] = users
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    from gateway.config import load_config

    engine.config = engine.context.config = load_config(tmp_path / "gateway.yaml")
    app = create_app(lambda: engine)
    return app.test_client()


def get(client, path, token):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_only_auditors_read_the_audit_log_over_http(engine, tmp_path):
    client = client_for(engine, tmp_path)
    for user in ("ana", "appr_a", "appr_b"):
        response = get(client, "/v1/audit", user)
        assert response.status_code == 403, user
        assert response.json["rule"] == "audit.not_auditor"
    assert get(client, "/v1/audit", "nobody").status_code == 401
    response = get(client, "/v1/audit?n=3", "audit_b")
    assert response.status_code == 200
    records = response.json["records"]
    assert len(records) == 3 and records[-1]["line"] == 6
    assert all(r["cleanroom"] == "room" for r in records)
    for bad in ("abc", "0", "-3", "1e3", "10000000"):  # a clear 400, never silently 100
        response = get(client, f"/v1/audit?n={bad}", "audit_b")
        assert response.status_code == 400 and response.json["rule"] == "audit.bad_n", bad


def test_template_approvals_over_http(tmp_path):
    engine = build(tmp_path)
    try:
        client = client_for(engine, tmp_path)
        auth = lambda user: {"Authorization": f"Bearer {user}"}  # noqa: E731
        assert client.get("/v1/templates/joined/status", headers=auth("ana")).json["missing"] == ["a", "b"]
        assert client.post("/v1/templates/joined/approve", headers=auth("ana")).status_code == 403
        response = client.post("/v1/templates/joined/approve", headers=auth("appr_a"))
        assert response.status_code == 200 and response.json["missing"] == ["b"]
        assert client.post("/v1/templates/joined/propose", headers=auth("appr_b")).json["proposed_by"] == "appr_b"
        response = client.post("/v1/templates/joined/approve", headers=auth("appr_b"))
        assert response.json["approved"] is True
        assert engine.run(QueryRequest(user="ana", cleanroom="room", template="joined",
                                       params={"tier": "gold"})).table.num_rows == 2
        response = client.post("/v1/templates/joined/revoke", headers=auth("appr_b"))
        assert response.json["revoked"] == 1 and response.json["missing"] == ["b"]
        assert client.get("/v1/templates/nope/status", headers=auth("ana")).status_code == 404
    finally:
        engine.close()


def test_outputs_over_http(tmp_path):
    engine = build(tmp_path)
    try:
        for user in ("appr_a", "appr_b"):
            engine.context.collab.approve(user, room_of(engine), "to_b")
        client = client_for(engine, tmp_path)
        engine.run(QueryRequest(user="ana", cleanroom="room", template="to_b", params={"tier": "gold"}))
        auth = lambda user: {"Authorization": f"Bearer {user}"}  # noqa: E731
        assert client.get("/v1/outputs", headers=auth("ana")).json["outputs"] == []
        assert client.get("/v1/outputs/joined_for_b", headers=auth("ana")).status_code == 404
        listed = client.get("/v1/outputs", headers=auth("audit_b")).json["outputs"]
        assert [o["name"] for o in listed] == ["joined_for_b"]
        response = client.get("/v1/outputs/joined_for_b", headers=auth("appr_b"))
        assert response.status_code == 200
        assert response.json["rows"] == [["north", 15], ["south", 25]]
    finally:
        engine.close()


# -- concurrent appends: group commit, several processes, fork ------------------------------


def _append_many(path: str, tag: str, count: int, log=None) -> None:
    from gateway.audit_log import AuditLog

    log = log or AuditLog(path)
    for number in range(count):
        log.append({"writer": tag, "n": number})


def _append_from_threads(log, tag: str, threads: int, count: int) -> None:
    import threading

    workers = [threading.Thread(target=_append_many, args=(None, f"{tag}-{i}", count, log)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _forked_writer(path: str, tag: str, threads: int, count: int) -> None:
    from gateway.audit_log import AuditLog

    _append_from_threads(AuditLog(path), tag, threads, count)


def _inheriting_writer(log, tag: str, threads: int, count: int) -> None:
    _append_from_threads(log, tag, threads, count)  # the parent's AuditLog, copied by fork


def _assert_complete(path, expected: dict[str, int]) -> list[dict]:
    from gateway.audit_log import AuditLog, verify

    assert verify(path) == []
    records = AuditLog(path).records()
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    seen: dict[str, list[int]] = {}
    for record in records:
        seen.setdefault(record["writer"], []).append(record["n"])
    assert {tag: sorted(numbers) for tag, numbers in seen.items()} == {tag: list(range(n)) for tag, n in expected.items()}
    return records


def test_appends_from_threads_and_processes_keep_one_verifiable_chain(tmp_path):
    import multiprocessing

    from gateway.audit_log import AuditLog

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"writer": "first", "n": 0})  # the parent holds the log open before forking
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=_forked_writer, args=(str(path), f"p{i}", 4, 25)) for i in range(2)]
    children.append(fork.Process(target=_inheriting_writer, args=(log, "inherited", 4, 25)))
    for child in children:
        child.start()
    _append_from_threads(log, "parent", 8, 25)
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    expected = {"first": 1, **{f"{tag}-{i}": 25 for tag in ("p0", "p1", "inherited") for i in range(4)},
                **{f"parent-{i}": 25 for i in range(8)}}
    records = _assert_complete(path, expected)
    assert len(records) == 1 + 3 * 4 * 25 + 8 * 25
    # The anchor names the head, the newest durable record, and nothing past it.
    anchor = log.anchor.load(records[0]["hash"])
    assert (anchor["seq"], anchor["hash"]) == (records[-1]["seq"], records[-1]["hash"])
    # Every writer named the log alike (by its first record), whoever appended last.
    assert [row["log_id"] for row in log.anchor.store.query("SELECT log_id FROM audit_anchors")] == [records[0]["hash"]]


def test_an_append_returns_its_record_as_stored_and_anchored(tmp_path):
    import datetime as dt

    from gateway.audit_log import AuditLog, record_hash

    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append({"at": dt.date(2026, 1, 2), "params": ("a", 1), "hash": "forged"})
    second = log.append({"x": 1})
    assert log.records() == [first, second]
    assert first["at"] == "2026-01-02" and first["params"] == ["a", 1]
    assert first["hash"] == record_hash(first) and second["prev"] == first["hash"]
    assert log.anchor.load(first["hash"])["seq"] == 2


def test_a_log_moved_away_is_followed_by_a_new_one_at_its_path(tmp_path):
    from gateway.audit_log import GENESIS, AuditLog, verify

    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.append({"n": 1})
    path.rename(tmp_path / "audit.1.jsonl")  # rotated while the gateway holds it open
    record = log.append({"n": 2})
    assert (record["seq"], record["prev"]) == (1, GENESIS)
    assert verify(path) == [] and verify(tmp_path / "audit.1.jsonl") == []
    assert len(log.records()) == 1


def test_a_failed_write_fails_its_statements_and_the_next_append_rereads_the_head(tmp_path, monkeypatch):
    from gateway import audit_log
    from gateway.audit_log import AuditLog, verify

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"n": 1})

    def failing(fd):
        raise OSError("disk gone")

    with monkeypatch.context() as patch:
        patch.setattr(audit_log.os, "fsync", failing)
        with pytest.raises(OSError):
            log.append({"n": 2})
    record = log.append({"n": 3})
    assert record["seq"] == 3 and verify(log.path) == []  # the unsynced record is still in the file


# -- an event loop as the committer (the wire front end) ------------------------------------


def test_an_event_loop_commits_a_turns_records_with_one_fsync(tmp_path, monkeypatch):
    import asyncio
    import threading

    from gateway import audit_log
    from gateway.audit_log import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"n": "created"})  # (creating the log also fsyncs its folder)
    fsyncs, fsync = [], audit_log.os.fsync
    monkeypatch.setattr(audit_log.os, "fsync", lambda fd: fsyncs.append(fd) or fsync(fd))

    async def main() -> None:
        log.commit_on(asyncio.get_running_loop())
        futures = [log.submit({"n": n}) for n in range(20)]  # twenty sessions' statements in one turn
        assert not any(f.done() for f in futures)  # nothing is durable before the loop's turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert [f.result()["seq"] for f in futures] == list(range(2, 22))
        assert len(fsyncs) == 1
        # A record queued by another thread (a statement that ran in the pool) is committed by the loop.
        other = []
        worker = threading.Thread(target=lambda: other.append(log.submit({"n": "pool"})))
        worker.start()
        worker.join()
        assert (await asyncio.wrap_future(other[0]))["seq"] == 22
        # append on the loop's own thread (a failure being audited) cannot wait for the loop: it commits.
        assert log.append({"n": "failure"})["seq"] == 23
        late = log.submit({"n": "late"})
        log.commit_on(None)  # the loop is stopping: what it queued is committed now
        assert late.done() and late.result()["seq"] == 24

    asyncio.run(main())
    assert log.append({"n": "threads again"})["seq"] == 25
    assert audit_log.verify(log.path) == []
    assert log.anchor.load(log.records()[0]["hash"])["seq"] == 25


def test_a_failed_commit_on_the_loop_fails_its_statements_only(tmp_path, monkeypatch):
    import asyncio

    from gateway import audit_log
    from gateway.audit_log import AuditLog

    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"n": 0})

    async def main() -> None:
        log.commit_on(asyncio.get_running_loop())
        with monkeypatch.context() as patch:
            patch.setattr(audit_log.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk gone")))
            failed = log.submit({"n": 1})
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        with pytest.raises(OSError):
            failed.result()
        kept = log.submit({"n": 2})
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert kept.result()["seq"] == 3  # the head is reread; the unsynced record is still in the file
        log.commit_on(None)

    asyncio.run(main())
    assert audit_log.verify(log.path) == []
