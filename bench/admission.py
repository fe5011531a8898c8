"""What quotas add to a statement: the admit pass (gateway/engine/admit.py).

    .venv/bin/python bench/admission.py [--runs 3000] [--statements 300] [--postgres DSN]

1. Admission alone, on real lock files and a real SQLite file (and PostgreSQL with
   --postgres): admit + used + close per statement, median over --runs, as
   - leased: the built-in limits (3000 a minute per analyst), 40 statements a
     second (the clock is moved 25 ms per statement, so the limit is never
     reached); a process reserves up to 50 statements in one transaction;
   - exact: a limit under 120 a minute, one transaction per statement (the clock
     is moved a second per statement).
2. The same statements through the whole engine with and without the admit pass,
   round robin, median of each: the ratio is what an analyst sees. A repeated
   statement is measured, so its analysis is recalled and what remains is
   admission, the executor and the audit record.
3. The repeated statement's own passes up to its SQL (recall ... remember), the
   gateway's in-process work on it, as the yardstick admission is held against.

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's gateway

from gateway.engine import QueryRequest, pipeline  # noqa: E402
from gateway.policy.model import CleanRoom, QuotaLimits, Quotas  # noqa: E402
from gateway.quotas.limits import HostQuotas, Limits  # noqa: E402
from gateway.quotas.service import QuotaService  # noqa: E402
from gateway.quotas.slots import SlotDirectory  # noqa: E402
from gateway.quotas.usage import UsageStore  # noqa: E402
from tests.roomkit import build_engine, private_table, simple_policy  # noqa: E402

STATEMENTS = [
    "SELECT g, count(*) AS n FROM t GROUP BY g",
    "SELECT g, count(DISTINCT hh) AS households, sum(v) AS total FROM t WHERE g <> 1 GROUP BY g",
]


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


class SteppingClock:
    """Real time, moved on by `step` seconds per call to step()."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def admission_alone(store: UsageStore, folder: Path, runs: int, exact: bool) -> dict[str, float]:
    clock = SteppingClock()
    store.clock = clock
    quotas = Quotas(per_analyst=QuotaLimits(statements_per_minute=100)) if exact else Quotas()
    room = CleanRoom(name="bench", collaborators={}, tables={}, quotas=quotas)
    service = QuotaService(HostQuotas(), store, SlotDirectory(folder), clock)
    timings: dict[str, list[float]] = {"admit": [], "used": [], "close": [], "total": []}
    for i in range(runs + 200):
        # exact: a statement a second (60 a minute, under its limit of 100); leased: 40 a second
        # (2400 a minute, under the built-in 3000), a busy analyst whose leases cover 40 statements each
        clock.offset += 1.0 if exact else 0.025
        started = time.perf_counter()
        admission = service.admit(room, "ana", "a")
        admitted = time.perf_counter()
        admission.used(0.004)
        used = time.perf_counter()
        admission.close()
        closed = time.perf_counter()
        if i >= 200:  # warm up first
            for name, value in (("admit", admitted - started), ("used", used - admitted),
                                ("close", closed - used), ("total", closed - started)):
                timings[name].append(value)
    store.flush(every_lease=True)
    return {name: median_us(values) for name, values in timings.items()}


def whole_statements(folder: Path, rounds: int) -> tuple[float, float, float]:
    folder.mkdir(parents=True, exist_ok=True)
    policy = simple_policy({"t": private_table("t", {"hh": {"role": "join_key"}, "g": {"role": "dimension"},
                                                     "v": {"role": "measure", "bounds": [0, 100]}})}, k=2)
    engine = build_engine(folder, policy, ["CREATE TABLE t AS SELECT 'h' || (i % 500) AS hh, i % 5 AS g, "
                                           "i % 100 AS v FROM range(20000) t(i)"])
    roomy = Limits(64, 1_000_000, 1_000_000.0)  # counted, never refused: the bench runs ~100 statements a second
    state = Path(engine.config.state_dir) / "quotas"
    engine.context._quotas = QuotaService(HostQuotas(roomy, roomy), UsageStore(sqlite_path=state / "usage.sqlite"),
                                          SlotDirectory(state / "slots"))
    without_admit = tuple(step for step in pipeline.PASSES if step.__name__ != "admit")
    up_to_sql = pipeline.PASSES[: pipeline.PASSES.index(pipeline.recall.remember) + 1]
    timed: dict[str, list[float]] = {"with": [], "without": [], "compile": []}
    try:
        for i in range(rounds + 20):
            for sql in STATEMENTS:
                for name, passes in (("with", pipeline.PASSES), ("without", without_admit), ("compile", up_to_sql)):
                    request = QueryRequest(user="ana", cleanroom="room", sql=sql)
                    started = time.perf_counter()
                    state = pipeline.run(engine._start(request), passes)
                    if state.audited is not None:
                        engine.context.audit.wait(state.audited)
                    if i >= 20:
                        timed[name].append(time.perf_counter() - started)
    finally:
        engine.close()
    return median_us(timed["with"]), median_us(timed["without"]), median_us(timed["compile"])


def main() -> int:
    try:
        return _main()
    finally:
        if SCRATCH_SCHEMAS:
            _drop_scratch(SCRATCH_DSN[0])


SCRATCH_DSN: list[str] = []


def _main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="admissions timed per mode")
    parser.add_argument("--statements", type=int, default=300, help="rounds of whole statements")
    parser.add_argument("--postgres", help="also time admission on this PostgreSQL (a scratch schema is made)")
    args = parser.parse_args()
    print(f"code: {REPO}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        stores = [("sqlite", lambda name: UsageStore(sqlite_path=folder / name / "usage.sqlite"))]
        if args.postgres:
            stores.append(("postgres", lambda name: _postgres_store(args.postgres, name)))
        print("\n1. admission alone, median per statement (us)")
        print(f"{'store':9} {'mode':7} {'admit':>8} {'used':>8} {'close':>8} {'total':>8}")
        totals = {}
        for kind, make in stores:
            for mode in ("leased", "exact"):
                store = make(f"{kind}-{mode}")
                result = admission_alone(store, folder / f"{kind}-{mode}-slots", args.runs, exact=mode == "exact")
                totals[(kind, mode)] = result["total"]
                columns = " ".join(f"{result[k]:8.1f}" for k in ("admit", "used", "close", "total"))
                print(f"{kind:9} {mode:7} {columns}")
        with_admit, without_admit, compile_only = whole_statements(folder / "engine", args.statements)
        print("\n2. whole statements (Engine pipeline, recalled analysis, executor, audit), median (us)")
        ratio = with_admit / without_admit
        print(f"with quotas {with_admit:10.1f}   without {without_admit:10.1f}   ratio {ratio:.3f}")
        print("\n3. admission against the statement's own in-process passes (recall .. remember)")
        print(f"recall .. remember {compile_only:8.1f} us")
        for (kind, mode), total in totals.items():
            print(f"{kind} {mode}: admission {total:6.1f} us = {total / compile_only:.2f} x those passes, "
                  f"{total / 400:.2f} x 0.4 ms")
    return 0


SCRATCH_SCHEMAS: list[str] = []


def _postgres_store(dsn: str, name: str) -> UsageStore:
    import psycopg

    schema = f"bench_quota_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    SCRATCH_SCHEMAS.append(schema)
    SCRATCH_DSN[:] = [dsn]
    return UsageStore(postgres_dsn=f"{dsn} options='-csearch_path={schema}'")


def _drop_scratch(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        for schema in SCRATCH_SCHEMAS:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    sys.exit(main())
