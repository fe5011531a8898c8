"""Several chains in one room: verify finds tampering in any of them and a chain
removed; readers merge them; the single log of earlier versions is still read and
verified; with PostgreSQL every record is also copied there, and verify on one
state folder checks the chains of the others from their copies."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from gateway.audit_log import (GENESIS, AuditLog, chain_paths, read_records, record_hash, tail, verify_state)
from gateway.audit_log.chain import chain_lines
from gateway.cli import main as cli
from gateway.storage import Database


def write_chains(state: Path, count: int = 3, records: int = 5, store: Database | None = None) -> list[Path]:
    """`count` writers (one AuditLog each: a chain each, as processes have), appending in turns."""
    logs = [AuditLog(state, store) for _ in range(count)]
    for n in range(records):
        for number, log in enumerate(logs):
            log.append({"cleanroom": "room", "writer": number, "n": n})
    for log in logs:
        log.close()
    return [chain_of(log) for log in logs]


def chain_of(log: AuditLog) -> Path:
    return log._chain.path


def problems(state: Path, store: Database | None = None) -> dict[str, list[str]]:
    store = store or Database(sqlite_path=state / "collab.sqlite")
    return {report.chain: report.problems for report in verify_state(state, store)}


def rehashed(lines: list[str], start: int) -> list[str]:
    """The chain re-hashed from line `start` on: consistent in itself, as a forger would leave it."""
    records = [json.loads(line) for line in lines]
    prev = records[start - 1]["hash"] if start else GENESIS
    for record in records[start:]:
        record["prev"] = prev
        record.pop("hash")
        record["hash"] = prev = record_hash(record)
    return [json.dumps(record) + "\n" for record in records]


def tamper(path: Path, how: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    if how == "edited":
        record = json.loads(lines[2])
        record["n"] = 99
        lines[2] = json.dumps(record, sort_keys=True) + "\n"
    elif how == "removed":
        del lines[2]
    elif how == "reordered":
        lines[1], lines[2] = lines[2], lines[1]
    elif how == "truncated":
        del lines[-2:]
    elif how == "forged_end":
        record = json.loads(lines[-1])
        record["n"] = 99
        lines = rehashed(lines[:-1] + [json.dumps(record)], len(lines) - 1)
    elif how == "emptied":
        lines = []
    path.write_text("".join(lines))


EXPECTED = {
    "edited": "line 3: record edited",
    "removed": "line 3: chain broken",
    "reordered": "line 2: chain broken",
    "truncated": "the chain ends at record 3, but",
    "forged_end": "record 5 is not the one",
    "emptied": "the chain is empty, but",
}


@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("how", sorted(EXPECTED))
def test_tampering_with_any_chain_is_detected(tmp_path, which, how):
    state = tmp_path / "state"
    chains = write_chains(state)
    assert all(found == [] for found in problems(state).values())
    tamper(chains[which], how)
    found = problems(state)
    assert [name for name, listed in found.items() if listed] == [chains[which].stem]
    assert any(EXPECTED[how] in problem for problem in found[chains[which].stem]), found


@pytest.mark.parametrize("which", [0, 2])
def test_a_removed_chain_is_detected_and_verify_exits_1(tmp_path, capsys, which):
    state = tmp_path / "state"
    chains = write_chains(state)
    config = tmp_path / "gateway.yaml"
    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "t.csv").write_text("a\n1\n")
    config.write_text(f"state_dir: {state}\npolicies: [{repo / 'policies' / 'demo.yaml'}]\n"
                      f"sources: {{t: {{kind: csv, path: t.csv}}}}\nengine: {{data_roots: [{tmp_path}]}}\n"
                      "users: {}\n")
    assert cli(["audit", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.count("ok (5 records, chain intact, end matches its anchor)") == 3
    assert "audit: ok (3 chain(s), 15 records)" in out
    chains[which].unlink()
    assert cli(["audit", "verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert f"{chains[which]}: the chain is missing (removed or moved away), but the store at " in out
    assert "anchors its record 5" in out and "audit: FAILED, 1 problem(s) in 3 chain(s)" in out


def test_a_record_moved_to_another_chain_is_detected(tmp_path):
    state = tmp_path / "state"
    first, second = write_chains(state, count=2)
    moved = first.read_text().splitlines(keepends=True)[-1]
    second.write_text(second.read_text() + moved)
    found = problems(state)[second.stem]
    assert "line 6: chain broken (a record before it was removed, edited or moved)" in found
    assert f"line 6: a record of chain {first.stem!r} moved into this one" in found


def test_readers_merge_chains_by_time_then_chain_and_seq(tmp_path):
    state = tmp_path / "state"
    a, b = AuditLog(state), AuditLog(state)
    for n, (log, time) in enumerate([(a, "2026-01-01T00:00:03"), (b, "2026-01-01T00:00:01"),
                                     (a, "2026-01-01T00:00:04"), (b, "2026-01-01T00:00:02"),
                                     (b, "2026-01-01T00:00:05")]):
        log.append({"time": time, "cleanroom": "room", "n": n})
    merged = read_records(state)
    assert [r["n"] for r in merged] == [1, 3, 0, 2, 4]
    last = tail(state, 2, keep=lambda record: record["n"] != 4)
    assert [(r["n"], r["line"], r["chain"]) for r in last] == [(0, 1, chain_of(a).stem), (2, 2, chain_of(a).stem)]


# -- the single shared log of earlier versions -------------------------------------------------


def legacy_log(state: Path, count: int = 4) -> Path:
    """state/audit.jsonl as earlier versions wrote it (no chain names), its anchor in
    audit_anchors keyed by its first hash and its location."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "audit.jsonl"
    records = [{"time": f"2025-01-01T00:00:0{n}", "cleanroom": "room", "old": n} for n in range(count)]
    lines, seq, head = chain_lines(records, None, 0, GENESIS)
    path.write_text("".join(lines))
    store = Database(sqlite_path=state / "collab.sqlite")
    store.create(["""CREATE TABLE IF NOT EXISTS audit_anchors (log_id TEXT PRIMARY KEY, location TEXT NOT NULL,
        seq BIGINT NOT NULL, hash TEXT NOT NULL, anchored_at TEXT NOT NULL)"""])
    store.execute("INSERT INTO audit_anchors VALUES (?, ?, ?, ?, ?)",
                  (records[0]["hash"], f"{socket.gethostname()}:{os.path.realpath(path)}", seq, head, "then"))
    return path


def test_an_old_single_log_is_read_and_verified_as_a_legacy_chain(tmp_path):
    state = tmp_path / "state"
    legacy = legacy_log(state)
    log = AuditLog(state)
    log.append({"time": "2026-01-01T00:00:00", "cleanroom": "room", "new": 1})
    assert [r.get("old", r.get("new")) for r in read_records(state)] == [0, 1, 2, 3, 1]
    assert chain_paths(state)[0] == legacy and legacy.read_text().count("\n") == 4  # never appended to
    assert tail(state, 2)[0]["chain"] == "audit.jsonl"
    assert problems(state) == {"audit.jsonl": [], chain_of(log).stem: []}
    lines = legacy.read_text().splitlines(keepends=True)
    legacy.write_text("".join(lines[:-1]))  # the last record removed: its anchor says so
    assert problems(state)["audit.jsonl"] == [
        f"the log ends at record 3, but the store at {state / 'collab.sqlite'} anchors record 4: "
        "records at its end were removed"]
    legacy.unlink()
    assert "the log is empty or missing" in problems(state)["audit.jsonl"][0]


# -- PostgreSQL: every record copied, every folder's chains verified from any folder ------------


def test_records_are_copied_to_postgresql_with_their_anchor(tmp_path, pg_schema):
    store = Database(postgres_dsn=pg_schema)
    (chain,) = write_chains(tmp_path / "a", count=1, store=store)
    log = AuditLog(tmp_path / "a", store)
    quick = log.submit({"cleanroom": "room", "n": "not waited for"}, durable=False)
    assert quick.done()
    log.close()  # fsync'd and copied now
    rows = store.query("SELECT chain, seq, cleanroom, line FROM audit_records ORDER BY chain, seq")
    by_chain = {}
    for row in rows:
        by_chain.setdefault(row["chain"], []).append(row["line"] + "\n")
    assert by_chain[chain.stem] == chain.read_text().splitlines(keepends=True)
    assert by_chain[chain_of(log).stem] == chain_of(log).read_text().splitlines(keepends=True)
    assert {row["cleanroom"] for row in rows} == {"room"}
    heads = {row["chain"]: row["seq"] for row in store.query("SELECT chain, seq FROM audit_chains")}
    assert heads == {chain.stem: 5, chain_of(log).stem: 1}


def test_a_large_batch_is_copied_in_one_transaction_of_several_statements(tmp_path, pg_schema):
    from gateway.audit_log import anchors

    store = Database(postgres_dsn=pg_schema)
    log = AuditLog(tmp_path, store)
    log.append({"cleanroom": "room", "n": "first"})
    copies = [(seq, json.dumps({"seq": seq}), None, "room") for seq in range(2, 2 + 2 * anchors.ROWS_PER_STATEMENT + 7)]
    log.anchors.save("big", copies[-1][0], "h", copies)  # as the writer does after a pile of records nobody waited for
    assert store.query("SELECT count(*) AS n FROM audit_records WHERE chain = 'big'")[0]["n"] == len(copies)
    assert store.query("SELECT seq FROM audit_chains WHERE chain = 'big'")[0]["seq"] == copies[-1][0]


@pytest.fixture
def two_hosts(tmp_path, pg_schema):
    """Two state folders (two gateways, as on two hosts) on one PostgreSQL store."""
    store = Database(postgres_dsn=pg_schema)
    a = write_chains(tmp_path / "a", count=2, store=store)
    b = write_chains(tmp_path / "b", count=1, store=store)
    return store, a, b


def test_verify_on_one_folder_checks_the_other_folders_chains_from_their_copies(tmp_path, two_hosts):
    store, a, (b,) = two_hosts
    reports = {report.chain: report for report in verify_state(tmp_path / "a", store)}
    assert set(reports) == {a[0].stem, a[1].stem, b.stem}
    assert all(report.problems == [] and report.anchored and report.records == 5 for report in reports.values())
    assert reports[b.stem].where.startswith("PostgreSQL copy of ") and str(tmp_path / "b") in reports[b.stem].where
    assert reports[a[0].stem].where == str(a[0])
    from gateway.collab.audit_tools import tail as room_tail  # what /v1/audit and the console read

    merged = room_tail(AuditLog(tmp_path / "a", store), 100, rooms={"room"})  # the whole room, merged
    assert sorted({r["chain"] for r in merged}) == sorted([a[0].stem, a[1].stem, b.stem]) and len(merged) == 15
    order = [(r["time"], r["chain"], r["seq"]) for r in merged]
    assert order == sorted(order)
    assert room_tail(AuditLog(tmp_path / "a", store), 100, rooms={"another room"}) == []


@pytest.mark.parametrize("how, expected", [
    ("edit", "copy: line 3: record edited (its hash does not match its content)"),
    ("drop_last", "the chain ends at record 4, but the PostgreSQL store anchors record 5: "
                  "records at its end were removed"),
    ("drop_all", "the chain is empty, but the PostgreSQL store anchors its record 5"),
])
def test_tampering_with_another_folders_copy_is_detected(tmp_path, two_hosts, how, expected):
    store, a, (b,) = two_hosts
    if how == "edit":
        store.execute("UPDATE audit_records SET line = replace(line, '\"n\":2', '\"n\":9') WHERE chain = ? AND seq = 3",
                      (b.stem,))
    elif how == "drop_last":
        store.execute("DELETE FROM audit_records WHERE chain = ? AND seq = 5", (b.stem,))
    else:
        store.execute("DELETE FROM audit_records WHERE chain = ?", (b.stem,))
    found = problems(tmp_path / "a", store)
    assert found[b.stem] == [expected] and found[a[0].stem] == found[a[1].stem] == []


def test_a_local_chain_forged_consistently_differs_from_its_copy(tmp_path, two_hosts):
    store, (first, second), _ = two_hosts
    lines = first.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["n"] = 99
    forged = rehashed(lines[:1] + [json.dumps(record)] + lines[2:], 1)
    anchored = json.loads(forged[-1])
    # The forger also moves the anchor in the store: the chain then agrees with its anchor...
    store.execute("UPDATE audit_chains SET hash = ? WHERE chain = ?", (anchored["hash"], first.stem))
    first.write_text("".join(forged))
    found = problems(tmp_path / "a", store)
    # ...but not with its copy in PostgreSQL, made when the records were written.
    assert found[first.stem] == ["4 record(s) differ from their copy in PostgreSQL, the first is record 2"]
    assert found[second.stem] == []


def test_a_removed_local_chain_is_detected_with_postgresql_too(tmp_path, two_hosts):
    store, (first, _), (b,) = two_hosts
    first.unlink()
    found = problems(tmp_path / "a", store)
    assert found[first.stem] == ["the chain is missing (removed or moved away), but the PostgreSQL store "
                                 "anchors its record 5"]
    assert found[b.stem] == []
