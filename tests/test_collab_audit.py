"""The audit log: tampering with any one record (edited, deleted, reordered) is
detected with its line number; auditors, and only they, read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit_log import chain_paths, record_hash
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


def chain_file(engine) -> Path:
    """The engine's chain: the only writer of this state folder."""
    engine.context.audit.flush()
    (path,) = chain_paths(Path(engine.config.state_dir))
    return path


def lines(engine):
    return chain_file(engine).read_text().splitlines(keepends=True)


def rewrite(engine, text) -> None:
    chain_file(engine).write_text("".join(text))


def verify(engine, capsys):
    code = cli(["audit", "verify", "--config", str(Path(engine.config.state_dir).parent / "gateway.yaml")])
    return code, capsys.readouterr().out


def test_an_intact_log_verifies(engine, capsys):
    code, out = verify(engine, capsys)
    assert code == 0 and "ok (6 records, chain intact, end matches its anchor)" in out
    assert "audit: ok (1 chain(s), 6 records)" in out
    code = cli(["audit", "verify", "--log", str(chain_file(engine))])  # one file, against the store beside it
    assert code == 0 and "end matches its anchor" in capsys.readouterr().out


def test_an_edited_record_is_detected(engine, capsys):
    text = lines(engine)
    record = json.loads(text[3])
    record["rows_released"] = 1  # a single record, say, hidden from the auditors
    text[3] = json.dumps(record, sort_keys=True) + "\n"
    rewrite(engine, text)
    code, out = verify(engine, capsys)
    assert code == 1
    assert f"{chain_file(engine)}: line 4: record edited" in out


def test_an_edited_record_with_a_recomputed_hash_breaks_the_chain(engine, capsys):
    text = lines(engine)
    record = json.loads(text[2])
    record["user"] = "someone_else"
    record["hash"] = record_hash(record)
    text[2] = json.dumps(record, sort_keys=True) + "\n"
    rewrite(engine, text)
    code, out = verify(engine, capsys)
    assert code == 1 and "line 4: chain broken" in out


def test_a_deleted_record_is_detected(engine, capsys):
    text = lines(engine)
    del text[2]
    rewrite(engine, text)
    code, out = verify(engine, capsys)
    assert code == 1 and "line 3: chain broken" in out


def test_removing_the_last_records_is_detected_by_the_anchor(engine, capsys):
    text = lines(engine)
    rewrite(engine, text[:-2])  # an intact, shorter chain
    code, out = verify(engine, capsys)
    assert code == 1 and f"ends at record {len(text) - 2}" in out and "records at its end were removed" in out


def test_emptying_or_deleting_the_chain_is_detected_by_the_anchor(engine, capsys):
    path = chain_file(engine)
    path.write_text("")
    code, out = verify(engine, capsys)
    assert code == 1 and "the chain is empty, but" in out
    path.unlink()
    code, out = verify(engine, capsys)
    assert code == 1 and f"{path}: the chain is missing (removed or moved away)" in out


def test_replacing_the_last_record_is_detected_by_the_anchor(engine, capsys):
    text = lines(engine)
    last = json.loads(text[-1])
    last["user"] = "someone_else"
    last.pop("hash")
    last["hash"] = record_hash(last)  # a consistent chain, but not the anchored head
    rewrite(engine, text[:-1] + [json.dumps(last) + "\n"])
    code, out = verify(engine, capsys)
    assert code == 1 and f"record {len(text)} is not the one" in out


def test_reordered_records_are_detected(engine, capsys):
    text = lines(engine)
    text[2], text[3] = text[3], text[2]
    rewrite(engine, text)
    code, out = verify(engine, capsys)
    assert code == 1 and "line 3: chain broken" in out


def test_tail_prints_the_last_records(engine, capsys):
    config = str(Path(engine.config.state_dir).parent / "gateway.yaml")
    assert cli(["audit", "tail", "-n", "2", "--config", config]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["line"], r["seq"]) for r in printed] == [(5, 5), (6, 6)]
    assert {r["chain"] for r in printed} == {chain_file(engine).stem}
    assert printed[-1]["sql"].startswith("SELECT region")
    assert printed[0]["template_sha256"] and printed[0]["approvals"]
    assert cli(["audit", "tail", "-n", "1", "--log", str(chain_file(engine))]) == 0
    assert json.loads(capsys.readouterr().out)["line"] == 6


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


# -- concurrent appends: one chain per process, group commit, fork ----------------------------


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


def test_each_process_appends_to_a_chain_of_its_own_and_readers_merge_them(tmp_path):
    import multiprocessing

    from gateway.audit_log import AuditLog, read_records, verify, verify_state

    log = AuditLog(tmp_path)
    log.append({"writer": "first", "n": 0})  # the parent holds its chain open before forking
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=_forked_writer, args=(str(tmp_path), f"p{i}", 4, 25)) for i in range(2)]
    children.append(fork.Process(target=_inheriting_writer, args=(log, "inherited", 4, 25)))
    for child in children:
        child.start()
    _append_from_threads(log, "parent", 8, 25)
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    paths = chain_paths(tmp_path)
    assert len(paths) == 4  # the parent's, and one per child (the inheriting one too)
    heads = log.anchors.heads()
    writers_of = {}
    for path in paths:
        assert verify(path) == []
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        assert {r["chain"] for r in records} == {path.stem}
        # Each chain's anchor names its head, the newest durable record, and nothing past it.
        assert (heads[path.stem]["seq"], heads[path.stem]["hash"]) == (records[-1]["seq"], records[-1]["hash"])
        writers_of[path.stem] = {r["writer"].split("-")[0] for r in records}
    assert sorted(map(sorted, writers_of.values())) == [["first", "parent"], ["inherited"], ["p0"], ["p1"]]
    merged = read_records(tmp_path)
    seen: dict[str, list[int]] = {}
    for record in merged:
        seen.setdefault(record["writer"], []).append(record["n"])
    expected = {"first": 1, **{f"{tag}-{i}": 25 for tag in ("p0", "p1", "inherited") for i in range(4)},
                **{f"parent-{i}": 25 for i in range(8)}}
    assert {tag: sorted(numbers) for tag, numbers in seen.items()} == {tag: list(range(n)) for tag, n in expected.items()}
    assert len(merged) == 1 + 3 * 4 * 25 + 8 * 25
    for path in paths:  # merged by time, each chain keeping its own order (threads stamp times out of order)
        assert [r["seq"] for r in merged if r["chain"] == path.stem] == list(range(1, len(seen_in(path)) + 1))
    assert all(not report.problems for report in verify_state(tmp_path))


def seen_in(path):
    return path.read_text().splitlines()


def test_an_append_returns_its_record_as_stored_and_anchored(tmp_path):
    import datetime as dt

    from gateway.audit_log import AuditLog

    log = AuditLog(tmp_path)
    first = log.append({"at": dt.date(2026, 1, 2), "params": ("a", 1), "hash": "forged"})
    second = log.append({"x": 1})
    assert log.records() == [first, second]
    assert first["at"] == "2026-01-02" and first["params"] == ["a", 1]
    assert first["hash"] == record_hash(first) and second["prev"] == first["hash"]
    assert first["chain"] == second["chain"] == chain_paths(tmp_path)[0].stem
    assert log.anchors.heads()[first["chain"]]["seq"] == 2


def test_a_chain_moved_away_is_followed_by_a_new_chain_and_reported(tmp_path, capsys):
    from gateway.audit_log import GENESIS, AuditLog, verify, verify_state

    log = AuditLog(tmp_path)
    log.append({"n": 1})
    (moved,) = chain_paths(tmp_path)
    moved.rename(tmp_path / moved.name)  # moved away while the gateway holds it open
    record = log.append({"n": 2})
    assert (record["seq"], record["prev"]) == (1, GENESIS) and record["chain"] != moved.stem
    assert verify(tmp_path / moved.name) == []
    (tmp_path / moved.name).rename(tmp_path / "renamed.jsonl")
    assert verify(tmp_path / "renamed.jsonl") == [f"line 1: a record of chain {moved.stem!r} moved into this one"]
    problems = {report.chain: report.problems for report in verify_state(tmp_path)}
    assert problems[record["chain"]] == []
    assert problems[moved.stem] == [f"the chain is missing (removed or moved away), but {log.anchors.describe()} "
                                    "anchors its record 1"]


def test_a_failed_fsync_fails_its_statements_and_the_next_append_starts_a_new_chain(tmp_path, monkeypatch):
    from gateway.audit_log import AuditLog, verify_state, writer

    log = AuditLog(tmp_path)
    log.append({"n": 1})

    def failing(fd):
        raise OSError("disk gone")

    with monkeypatch.context() as patch:
        patch.setattr(writer.os, "fsync", failing)
        with pytest.raises(OSError):
            log.append({"n": 2})
    record = log.append({"n": 3})
    assert record["seq"] == 1 and len(chain_paths(tmp_path)) == 2
    # The first chain holds the unsynced record past its anchor: that verifies (no answer waited for it).
    assert all(report.problems == [] for report in verify_state(tmp_path))


# -- group commit on the writer thread (every front end, the wire's event loop too) ---------


def test_records_queued_during_an_fsync_share_the_next_one(tmp_path, monkeypatch):
    """Twenty statements whose records arrive while the writer fsyncs are made durable
    by one more fsync, not twenty; each gets its own place in the chain."""
    import threading

    from gateway.audit_log import AuditLog, verify, writer

    log = AuditLog(tmp_path)
    log.append({"n": "created"})
    fsyncs, fsync, held, release = [], writer.os.fsync, threading.Event(), threading.Event()

    def slow_fsync(fd):
        fsyncs.append(fd)
        if len(fsyncs) == 1:
            held.set()
            assert release.wait(30)
        fsync(fd)

    monkeypatch.setattr(writer.os, "fsync", slow_fsync)
    first = log.submit({"n": "first"})
    assert held.wait(30)  # the writer is inside the first record's fsync
    futures = []
    threads = [threading.Thread(target=lambda n=n: futures.append(log.submit({"n": n}))) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any(f.done() for f in futures)  # none is durable before its own fsync
    release.set()
    assert first.result(30)["seq"] == 2
    assert sorted(f.result(30)["seq"] for f in futures) == list(range(3, 23))
    assert len(fsyncs) == 2
    (path,) = chain_paths(tmp_path)
    assert verify(path) == [] and log.anchors.heads()[path.stem]["seq"] == 22


def test_records_nobody_waits_for_are_written_in_order_and_synced_soon(tmp_path, monkeypatch):
    import time

    from gateway.audit_log import AuditLog, writer

    log = AuditLog(tmp_path)
    log.append({"n": "created"})
    fsyncs, fsync = [], writer.os.fsync
    monkeypatch.setattr(writer.os, "fsync", lambda fd: fsyncs.append(fd) or fsync(fd))
    quick = [log.submit({"n": n}, durable=False) for n in range(5)]
    assert all(f.done() for f in quick)  # answered at once
    deadline = time.monotonic() + 10
    while not fsyncs and time.monotonic() < deadline:  # the writer syncs them SYNC_AFTER_SECONDS later
        time.sleep(0.01)
    (path,) = chain_paths(tmp_path)
    assert len(fsyncs) == 1 and [json.loads(line)["n"] for line in path.read_text().splitlines()][1:] == list(range(5))
    assert log.append({"n": "released"})["seq"] == 7 and len(fsyncs) == 2
    assert log.anchors.heads()[path.stem]["seq"] == 7


def test_a_steady_stream_nobody_waits_for_is_still_synced_while_it_flows(tmp_path, monkeypatch):
    """A flood of SELECT 1 keeps the writer busy: its records are still fsync'd about every
    SYNC_AFTER_SECONDS while they keep coming, not only every SYNC_AFTER_RECORDS."""
    import time

    from gateway.audit_log import AuditLog, writer

    log = AuditLog(tmp_path)
    log.append({"n": "created"})
    fsyncs, fsync = [], writer.os.fsync
    monkeypatch.setattr(writer.os, "fsync", lambda fd: fsyncs.append(fd) or fsync(fd))
    for n in range(200):  # 2 s at least, 40 times SYNC_AFTER_SECONDS, far fewer than SYNC_AFTER_RECORDS
        log.submit({"n": n}, durable=False)
        time.sleep(0.01)
    assert len(fsyncs) >= 2
