"""Latency of catalog statements (what psql, JDBC, ODBC and BI tools send while
browsing) through the engine, against `SELECT 1` in the same run.

    .venv/bin/python bench/catalog.py [--runs 300] [--scale 0.01] [--threads 4]

Over the demo clean room (k-only), round robin, median of --runs per statement:

- warm: the same text again (its translation and the analyst's catalog database
  are cached);
- fresh: the text with `/* n */` appended, new every iteration, so it is parsed
  and translated again (the catalog database stays cached);
- baseline: `SELECT 1` through the same engine (the cheapest statement it runs);
- pass alone: the catalog pass by itself on the statement already parsed (warm,
  and fresh: a text it has not translated yet), which leaves out what the other
  passes (audit, padding, ...) cost, so checkouts whose other passes differ compare.

Then --threads threads run the warm statements at once for a few seconds:
statements per second, and how many threads the process had at the end
(a timer thread per statement would show up there while they run).

The code measured is the checkout this file lives in. A benchmark, not a test:
it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's gateway, not whichever one the venv installed
sys.path.insert(0, str(REPO / "bench"))

from compile import K_ONLY, checkout, write_demo  # noqa: E402  (the compile bench's demo room)

STATEMENTS = {
    "version": "SELECT version()",
    "psql_dt": (
        "SELECT n.nspname as \"Schema\", c.relname as \"Name\", CASE c.relkind WHEN 'r' THEN 'table' "
        "WHEN 'v' THEN 'view' END as \"Type\", pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\" "
        "FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' "
        "AND n.nspname <> 'information_schema' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2"),
    "psql_d_lookup": (
        "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(purchases)$' COLLATE "
        "pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3"),
    "psql_d_columns": (
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'purchases'::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum"),
    "info_schema_columns": (
        "SELECT table_name, column_name, data_type, numeric_precision FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"),
    "type_load": "SELECT t.oid, t.typname, t.typreceive, t.typelem, t.typarray FROM pg_catalog.pg_type t",
}
BASELINE = "SELECT 1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    import gateway
    from gateway.engine import Engine
    from gateway.engine.types import QueryRequest

    with tempfile.TemporaryDirectory() as tmp:
        config = write_demo(Path(tmp), args.scale)[K_ONLY]
        engine = Engine.from_config_file(config)
        try:
            def run(sql: str):
                return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))

            print(f"gateway: {gateway.__file__} ({checkout()})")
            print(f"{os.cpu_count()} cores, {args.runs} runs; load average {os.getloadavg()[0]:.1f} at start")
            for sql in (*STATEMENTS.values(), BASELINE):  # warm up: catalog database, translations, executors
                run(sql)
            timings = {name: {"warm": [], "fresh": []} for name in STATEMENTS}
            baseline = []
            for n in range(args.runs):
                started = time.perf_counter()
                run(BASELINE)
                baseline.append((time.perf_counter() - started) * 1000)
                for name, sql in STATEMENTS.items():
                    for step, text in (("warm", sql), ("fresh", f"{sql} /* {n} */")):
                        started = time.perf_counter()
                        run(text)
                        timings[name][step].append((time.perf_counter() - started) * 1000)
            base = statistics.median(baseline)
            print(f"\n{'statement':22} {'warm ms':>9} {'fresh ms':>9} {'warm/SELECT 1':>14} {'fresh/SELECT 1':>15}")
            for name, steps in timings.items():
                warm, fresh = statistics.median(steps["warm"]), statistics.median(steps["fresh"])
                print(f"{name:22} {warm:9.3f} {fresh:9.3f} {warm / base:14.2f} {fresh / base:15.2f}")
            print(f"{'SELECT 1 (baseline)':22} {base:9.3f}")
            pass_alone(engine, QueryRequest, args.runs)

            done, peak_threads, stop = [0] * args.threads, [threading.active_count()], time.monotonic() + args.seconds

            def worker(index: int) -> None:
                statements = list(STATEMENTS.values())
                while time.monotonic() < stop:
                    run(statements[done[index] % len(statements)])
                    done[index] += 1
                    peak_threads[0] = max(peak_threads[0], threading.active_count())

            workers = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
            for thread in workers:
                thread.start()
            for thread in workers:
                thread.join()
            print(f"\n{args.threads} threads, {args.seconds:.0f} s: {sum(done) / args.seconds:.0f} catalog statements/s, "
                  f"at most {peak_threads[0]} threads in the process (the workers included)")
        finally:
            engine.close()


def pass_alone(engine, QueryRequest, runs: int) -> None:
    """The catalog pass by itself, on states parsed beforehand (untimed)."""
    from gateway.engine import catalog, parse

    def parsed(sql: str):
        return parse.parse(engine._start(QueryRequest(user="analyst", cleanroom="demo", sql=sql)))

    warm_states = {name: parsed(sql) for name, sql in STATEMENTS.items()}
    timings = {name: {"warm": [], "fresh": []} for name in STATEMENTS}
    for n in range(runs):
        for name, sql in STATEMENTS.items():
            fresh_state = parsed(f"{sql} /* pass {n} */")
            for step, state in (("warm", warm_states[name]), ("fresh", fresh_state)):
                started = time.perf_counter()
                answered = catalog.catalog(state)
                timings[name][step].append((time.perf_counter() - started) * 1000)
                assert answered.release is not None
    print(f"\nthe catalog pass alone\n{'statement':22} {'warm ms':>9} {'fresh ms':>9}")
    for name, steps in timings.items():
        print(f"{name:22} {statistics.median(steps['warm']):9.3f} {statistics.median(steps['fresh']):9.3f}")


if __name__ == "__main__":
    main()
