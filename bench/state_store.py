"""What a statement pays the state store, SQLite file against PostgreSQL, side by side.

    .venv/bin/python bench/state_store.py [--statements 200] [--dsn "host=127.0.0.1 user=postgres dbname=test"]

Per fresh differentially private statement the engine makes one charge (a transaction
under the analyst's lock: Ledger.charge_once) and one release-cache insert; every
statement an aggregation rule authorises reads its approvals on the thread's kept
connection; a replay reads the release cache (answered from the process's memory once
seen). Each is timed here on the same machine, SQLite under a temporary folder and
PostgreSQL in a schema made for the run (dropped after). Medians; a benchmark, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.dp.ledger import Account, Budget, Ledger, Spend  # noqa: E402
from gateway.dp.release_cache import ReleaseCache  # noqa: E402
from gateway.storage import Database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=200)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3")
    args = parser.parse_args()
    import psycopg

    admin = psycopg.connect(args.dsn, autocommit=True)
    schema = f"bench_state_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        with tempfile.TemporaryDirectory() as folder:
            stores = {"SQLite": Database(sqlite_path=Path(folder) / "state.sqlite"),
                      "PostgreSQL": Database(postgres_dsn=f"{args.dsn} options='-csearch_path={schema}'")}
            print("| store | charge | release insert | replay read | read on a kept connection (approvals) |")
            print("|---|---|---|---|---|")
            for name, db in stores.items():
                print(f"| {name} | " + " | ".join(f"{t * 1000:.2f} ms" for t in timings(db, args.statements)) + " |")
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


def timings(db: Database, statements: int) -> list[float]:
    ledger, cache = Ledger(db), ReleaseCache(db)
    account, budget = Account("room", "analyst"), Budget(100_000.0)
    table = pa.table({"region": [f"r{i}" for i in range(8)], "n": list(range(8))})
    times: list[list[float]] = [[], [], [], []]
    steps = (
        lambda key: ledger.charge_once(account, Spend(0.1), budget, request_id=key, query_sha256=key),
        lambda key: cache.put(key, table, {"mechanism": "laplace"}),
        lambda key: cache.get(key),
        lambda key: db.query("SELECT 1 AS one"),  # what an approvals lookup costs beyond its SQL
    )
    for i in range(statements):
        for spent, step in zip(times, steps):
            started = time.perf_counter()
            step(f"statement-{i}")
            spent.append(time.perf_counter() - started)
    return [statistics.median(spent) for spent in times]


if __name__ == "__main__":
    main()
