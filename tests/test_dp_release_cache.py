"""The release cache: a released DP answer is stored once (first writer wins),
survives a restart, and is keyed by everything that decides it. SQLite and
PostgreSQL (skipped with the reason when 127.0.0.1:5432 is not reachable)."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import types

import pyarrow as pa
import pytest

from gateway.dp.release_cache import CachedRelease, ReleaseCache

def released(noise: float) -> pa.Table:
    return pa.table({
        "region": pa.array(["north", "south", None]),
        "households": pa.array([120 + noise, 98 - noise, 40.5]),
        "day": pa.array([dt.date(2026, 1, 1)] * 3),
        "amount": pa.array([decimal.Decimal("1.25")] * 3, type=pa.decimal128(10, 2)),
    })


PROTECTION = {"mechanism": "laplace", "epsilon": 0.5, "delta": 0.0, "columns": {"households": {"scale": 2.0}}}


def test_round_trip_and_miss(where):
    cache = ReleaseCache.open(**where)
    key = ReleaseCache.key("demo", "v1", "SELECT 1", {"region": "north"})
    assert cache.get(key) is None
    stored = cache.put(key, released(0.25), PROTECTION)
    assert isinstance(stored, CachedRelease)
    got = cache.get(key)
    assert got.table.equals(released(0.25)) and got.table.schema == released(0.25).schema
    assert got.protection == PROTECTION and got.created_at == stored.created_at
    empty = pa.table({"n": pa.array([], pa.int64())})
    assert cache.put("empty", empty, {}).table.equals(empty)


def test_first_writer_wins_and_survives_a_restart(where):
    cache = ReleaseCache.open(**where)
    key = ReleaseCache.key("demo", "v1", "SELECT count(*) FROM t", [])
    first = cache.put(key, released(1.0), {**PROTECTION, "seed": 1})
    second = cache.put(key, released(2.0), {**PROTECTION, "seed": 2})  # a repeat computed fresh noise: discarded
    assert second.table.equals(released(1.0)) and second.protection["seed"] == 1
    assert second.created_at == first.created_at
    again = ReleaseCache.open(**where)  # a new process after a restart
    assert again.get(key).table.equals(released(1.0))


def test_racing_identical_queries_hand_out_one_answer(where):
    cache = ReleaseCache.open(**where)
    key = ReleaseCache.key("demo", "v1", "SELECT region, count(*) FROM t GROUP BY region", {"k": 10})
    barrier = threading.Barrier(8)
    answers: list = [None] * 8

    def racer(i: int) -> None:
        barrier.wait(timeout=30)
        answers[i] = ReleaseCache.open(**where).put(key, released(float(i)), {**PROTECTION, "seed": i})

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = answers[0].protection["seed"]
    assert all(a.protection["seed"] == winner and a.table.equals(released(float(winner))) for a in answers)
    assert cache.get(key).protection["seed"] == winner


def test_key_changes_with_every_input():
    key = ReleaseCache.key
    base = key("demo", "v1", "SELECT 1", {"a": 1, "b": [1, 2]})
    assert len(base) == 64 and int(base, 16) >= 0
    assert base == key("demo", "v1", "SELECT 1", {"b": [1, 2], "a": 1})  # dict order does not matter
    changed = [
        key("other", "v1", "SELECT 1", {"a": 1, "b": [1, 2]}),
        key("demo", "v2", "SELECT 1", {"a": 1, "b": [1, 2]}),
        key("demo", "v1", "SELECT 2", {"a": 1, "b": [1, 2]}),
        key("demo", "v1", "SELECT 1", {"a": 2, "b": [1, 2]}),
        key("demo", "v1", "SELECT 1", {"a": 1.0, "b": [1, 2]}),
        key("demo", "v1", "SELECT 1", {"a": "1", "b": [1, 2]}),
        key("demo", "v1", "SELECT 1", {"a": True, "b": [1, 2]}),
        key("demo", "v1", "SELECT 1", {"a": 1, "b": [2, 1]}),
        key("demo", "v1", "SELECT 1", {"a": 1, "b": [1, 2], "c": None}),
        key("demo", "v1", "SELECT 1", {"A": 1, "b": [1, 2]}),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # Types JSON lacks are tagged, so they never collide with their text.
    assert key("d", "v", "s", {"day": dt.date(2026, 1, 1)}) != key("d", "v", "s", {"day": "2026-01-01"})
    assert key("d", "v", "s", decimal.Decimal("1.5")) != key("d", "v", "s", "1.5")
    assert key("d", "v", "s", {1: "x"}) != key("d", "v", "s", {"1": "x"})
    assert key("d", "v", "s", (1, 2)) == key("d", "v", "s", [1, 2])
    with pytest.raises(TypeError):
        key("d", "v", "s", object())


def test_from_config_shares_the_ledger_file(tmp_path):
    from gateway.dp.ledger import Account, Budget, Ledger, Spend

    config = types.SimpleNamespace(state_dir=tmp_path / "state", store=types.SimpleNamespace(postgres_dsn=None))
    cache = ReleaseCache.from_config(config)
    ledger = Ledger.from_config(config)
    cache.put("k", released(0.0), PROTECTION)
    ledger.charge(Account("demo", "analyst"), Spend(0.5), Budget(1.0), request_id="r", query_sha256="q")
    assert cache.db.sqlite_path == ledger.db.sqlite_path == tmp_path / "state" / "ledger.sqlite"
    assert ReleaseCache.from_config(config).get("k").protection == PROTECTION


def test_entries_seen_are_kept_in_process_and_handed_out_as_copies(where):
    """A replay reads the process's copy, not the database: entries never change once
    stored. What the caller gets is its own: changing it changes nothing stored."""
    cache = ReleaseCache.open(**where)
    key = ReleaseCache.key("demo", "v1", "SELECT region, count(*) FROM t GROUP BY region", [])
    cache.put(key, released(0.5), PROTECTION)
    queries = []
    real_reading = cache.db.reading
    cache.db.reading = lambda: queries.append("read") or real_reading()
    first = cache.get(key)
    first.protection["epsilon"] = 99  # a caller that edits what it got
    again = cache.get(key)
    assert queries == [] and again.protection == PROTECTION and again.table.equals(released(0.5))
    elsewhere = ReleaseCache.open(**where)  # another process (or host) reads the database once
    elsewhere.db.reading = lambda: queries.append("read") or real_reading()
    assert elsewhere.get(key).protection == PROTECTION and elsewhere.get(key).created_at == again.created_at
    assert len(queries) == 1
    assert elsewhere.get("no such key") is None and len(queries) == 2  # misses are never kept
