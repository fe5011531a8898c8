"""The release cache: a differentially private answer, once released, is kept.

Asking the same question again must return the same noisy answer and cost
nothing: fresh noise on every repeat would let an analyst average it away,
and charging again for what they already hold would waste their budget. The
key is the clean room, the policy version, the canonical SQL and the
parameters (`ReleaseCache.key`); the value is the released table (Arrow IPC
stream bytes) and a JSON description of how it was protected.

An entry never changes once stored, so each process also keeps the entries it
has seen (small ones, the last few hundred): a replay, a dashboard redrawing
what it already has, then costs no database round trip on any host.

Same database as the ledger (gateway/dp/ledger.py): `<state_dir>/ledger.sqlite`
or the config's PostgreSQL, table `dp_releases`, so answers survive restarts
and are shared by every worker and host. The first writer wins: two racing
identical queries both `put`, the second insert does nothing, and both hand
out what is stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import time
from dataclasses import dataclass

import pyarrow as pa

from gateway.dp.ledger import OnDatabase
from gateway.lru import LruCache
from gateway.storage import Database

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS dp_releases (
        key TEXT PRIMARY KEY,
        data {blob} NOT NULL,
        protection TEXT NOT NULL,
        num_rows BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL)""",
]
KEY_VERSION = 1  # bump if what goes into a key changes: old entries then simply stop matching


@dataclass(frozen=True)
class CachedRelease:
    table: pa.Table
    protection: dict  # JSON-able description of how the table was protected (mechanism, epsilon, ...)
    created_at: float  # unix seconds


class ReleaseCache(OnDatabase):
    """Table dp_releases, in the ledger's database."""

    KEPT_ENTRIES, KEPT_ROWS = 512, 10_000  # what each process keeps of the entries it has seen

    def __init__(self, database: Database):
        self.db = database
        self._seen = LruCache(self.KEPT_ENTRIES)  # key -> (table, protection as stored JSON, created_at)
        self.db.create(SCHEMA, blob="BLOB|BYTEA")

    @staticmethod
    def key(cleanroom: str, policy_version: str, canonical_sql: str, params: object) -> str:
        """sha256 hex of a canonical JSON of everything that decides the answer.
        Types are kept apart: 1, 1.0, "1" and True give different keys."""
        document = {"v": KEY_VERSION, "cleanroom": cleanroom, "policy_version": policy_version,
                    "sql": canonical_sql, "params": _canonical(params)}
        text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> CachedRelease | None:
        seen = self._seen.get(key)
        if seen is not None:
            table, protection, created_at = seen
            return CachedRelease(table, json.loads(protection), created_at)  # a copy the caller may change
        # A miss comes before each fresh release: a short-lived connection, not one kept per thread
        # (with PostgreSQL, kept connections per thread and per store exhausted max_connections).
        with self.db.reading() as tx:
            row = tx.one("SELECT data, protection, created_at FROM dp_releases WHERE key = ?", (key,))
        return None if row is None else self._remember(key, row)

    def put(self, key: str, table: pa.Table, protection: dict) -> CachedRelease:
        """Store the release unless one is stored already; return the stored one
        (which is not `table` when another writer got there first)."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        described = json.dumps(protection, sort_keys=True, allow_nan=False)
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO dp_releases (key, data, protection, num_rows, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, data, described, table.num_rows, time.time()),
            )
            row = tx.one("SELECT data, protection, created_at FROM dp_releases WHERE key = ?", (key,))
        return self._remember(key, row)

    def _remember(self, key: str, row) -> CachedRelease:
        release = _release(row)
        if release.table.num_rows <= self.KEPT_ROWS:
            self._seen.put(key, (release.table, row[1], release.created_at))
        return release


def _release(row) -> CachedRelease:
    data, protection, created_at = row
    table = pa.ipc.open_stream(pa.py_buffer(bytes(data))).read_all()
    return CachedRelease(table=table, protection=json.loads(protection), created_at=float(created_at))


def _canonical(value: object) -> object:
    """Parameters as plain JSON, tagging the types JSON lacks so they cannot
    collide with a string of the same text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"$float": repr(value)}
        return value
    if isinstance(value, dict):
        return {"$map": sorted([[_canonical(k), _canonical(v)] for k, v in value.items()], key=_sort_key)}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"$set": sorted((_canonical(v) for v in value), key=_sort_key)}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    raise TypeError(f"cannot key a release on a parameter of type {type(value).__name__}")


def _sort_key(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
