"""Audit appends per second: the per-process chains (gateway/audit_log) against the
single shared log they replaced, in the same process, on the same disk.

    .venv/bin/python bench/audit_append.py [--rounds 5] [--records 2000] [--threads 8] [--processes 2]
                                           [--dir /path/on/the/disk/to/measure] [--postgres DSN]

The old writer (one JSON-lines file for all processes, flock around each batch,
group commit per process) is read from git history (OLD_COMMIT:gateway/audit_log.py)
and loaded as a module beside the new one. Each round, in turns:

- old: --processes processes x --threads threads, each thread appending
  --records / threads records and waiting for each (a released statement);
- new, durable: the same on the new writer (each process its own chain);
- new, not waited for: the same with submit(durable=False) (SELECT 1, catalog
  queries), timed until every record is written and fsync'd (close()).

Records look like the engine's (about 700 bytes). Anchors go to SQLite in the
folder, or to PostgreSQL with --postgres (the new writer then also copies every
record there). Prints appends/s and CPU per append per round, their medians, and
old/new ratios.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's gateway

from gateway.audit_log import AuditLog  # noqa: E402
from gateway.storage import Database  # noqa: E402

OLD_COMMIT = "252af1c~1"  # the last commit with the single shared log

RECORD = {
    "request_id": "r", "user": "analyst", "collaborator": "retailer", "cleanroom": "demo",
    "policy_version": "a" * 64, "front_end": "pgwire", "decision": "released", "rule": "rule:by_region",
    "sql": "SELECT region, COUNT(*) AS n FROM purchases WHERE region = $1 GROUP BY region",
    "template": None, "params": ["north"], "canonical_sha256": "b" * 64,
    "canonical_sql": "SELECT purchases.region AS region, COUNT(*) AS n FROM purchases GROUP BY purchases.region",
    "template_sha256": None, "approvals": [], "rows_released": 1, "rows_suppressed": 0,
    "privacy_budget_spent": None, "measurement_sha256": None, "reused_release": None, "min_group_size": 10,
    "output_id": None,
}


def old_module():
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:gateway/audit_log.py"],
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("old_audit_log", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "old_audit_log.py", "exec"), module.__dict__)
    return module


def store_for(folder: Path, dsn: str | None) -> Database:
    return Database(postgres_dsn=dsn) if dsn else Database(sqlite_path=folder / "collab.sqlite")


def _process(kind: str, folder: str, dsn: str | None, threads: int, per_thread: int, start, done) -> None:
    folder = Path(folder)
    if kind == "old":
        log = old_module().AuditLog(folder / "audit.jsonl", store_for(folder, dsn))
    else:
        log = AuditLog(folder, store_for(folder, dsn))
    log.append({"warm": True})  # the file, the store's connection, the threads: not what is measured
    waited = kind != "quick"

    def work(number: int) -> None:
        for n in range(per_thread):
            record = {**RECORD, "request_id": f"{number}-{n}"}
            if waited:
                log.append(record)
            else:
                log.submit(record, durable=False)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    start.wait()
    cpu = time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if not waited:
        log.close()  # every record written, fsync'd and anchored
    done.put((time.perf_counter(), time.process_time() - cpu))


def run(kind: str, root: Path, dsn: str | None, processes: int, threads: int, records: int) -> tuple[float, float]:
    """Appends per second over all processes, from the start signal to the last one done;
    and the CPU time (all threads of all processes) per append, in microseconds: what the
    writer itself costs, which other jobs on the machine disturb less than the wall clock."""
    folder = Path(tempfile.mkdtemp(dir=root))
    fork = multiprocessing.get_context("fork")
    start, done = fork.Event(), fork.Queue()
    per_thread = max(1, records // (processes * threads))
    children = [fork.Process(target=_process, args=(kind, str(folder), dsn, threads, per_thread, start, done))
                for _ in range(processes)]
    for child in children:
        child.start()
    time.sleep(1.0)  # every child warmed up and waiting
    began = time.perf_counter()
    start.set()
    reports = [done.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    appended = processes * threads * per_thread
    return appended / (max(end for end, _ in reports) - began), sum(cpu for _, cpu in reports) / appended * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=2000, help="records per run, over all threads")
    parser.add_argument("--threads", type=int, default=8, help="appending threads per process")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="where the logs go (default: a temporary folder)")
    parser.add_argument("--postgres", default=None, help="a PostgreSQL DSN for the anchors (and the new copies)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(dir=args.dir))
    if args.postgres:  # one schema for this run, so that nothing else is touched
        import psycopg

        schema = f"bench_audit_{int(time.time())}"
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        args.postgres = f"{args.postgres} options='-csearch_path={schema}'"
    kinds = ("old", "new", "quick")
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    print(f"{args.processes} process(es) x {args.threads} threads, {args.records} records a run, in {root}"
          f"{', anchors in PostgreSQL' if args.postgres else ', anchors in SQLite'}")
    for number in range(1, args.rounds + 1):
        for kind in kinds:
            rate, cost = run(kind, root, args.postgres, args.processes, args.threads, args.records)
            results[kind].append(rate)
            cpu[kind].append(cost)
        print(f"round {number}: " + ", ".join(f"{kind} {results[kind][-1]:,.0f}/s ({cpu[kind][-1]:.0f} us cpu)"
                                              for kind in kinds), flush=True)
    medians = {kind: statistics.median(values) for kind, values in results.items()}
    cpu_medians = {kind: statistics.median(values) for kind, values in cpu.items()}
    print("median appends/s: " + ", ".join(f"{kind} {medians[kind]:,.0f}" for kind in kinds))
    print("median cpu per append (us): " + ", ".join(f"{kind} {cpu_medians[kind]:.0f}" for kind in kinds))
    print(f"ratio old/new, appends/s (durable): {medians['old'] / medians['new']:.2f}; "
          f"(not waited for): {medians['old'] / medians['quick']:.3f}")
    print(f"ratio old/new, cpu per append (durable): {cpu_medians['old'] / cpu_medians['new']:.2f}; "
          f"(not waited for): {cpu_medians['old'] / cpu_medians['quick']:.2f}")


if __name__ == "__main__":
    main()
