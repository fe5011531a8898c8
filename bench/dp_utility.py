"""Utility and wall time of the gateway's DP queries against SmartNoise SQL, at epsilon = 1.

    .venv/bin/python bench/dp_utility.py --make-venv /tmp/smartnoise-venv    # once: python3 -m venv + pip install
    .venv/bin/python bench/dp_utility.py --smartnoise-python /tmp/smartnoise-venv/bin/python \\
        [--rows 1000000] [--reps 50] [--epsilon 1] [--max-rows 10] [--max-groups 4] [--max-ids 10]

The data are bench/dp_speed.py's (`purchases(hh, category, amount)`, about 10 rows
per household, a skewed tail, 24 public categories of which 20 occur, amount
in [0, 150) declared with bounds [0, 100]); --rows defaults to 1M so SmartNoise's
50 repetitions of 4 queries finish in minutes. Queries, each its own DP release:

    count_by_category  SELECT category, COUNT(*) ...  GROUP BY category
    sum_by_category    SELECT category, SUM(amount) ... GROUP BY category
    avg_by_category    SELECT category, AVG(amount) ... GROUP BY category
    count_all          SELECT COUNT(*) FROM purchases

Relative error = |released - exact| / |exact|, the exact answer being the plain SQL
on the raw data (so bias from contribution bounding and clamping counts too), per
released group with a non-zero exact value, pooled over --reps repetitions; the
median is printed, with the groups released per repetition and the median wall
time of one query. The gateway's release cache would return the first answer
again for the same text, so its `dp_releases` table is emptied before every
repetition (outside the timed part); the analysis cache stays warm.

SmartNoise SQL (PyPI `smartnoise-sql`) is never a dependency of this project: it
runs in its own interpreter (--smartnoise-python, a venv made by --make-venv DIR:
`python3 -m venv DIR && DIR/bin/pip install smartnoise-sql duckdb==1.5.5 pandas pyarrow`,
duckdb pinned to this project's: duckdb 2.x refuses SmartNoise's ORDER BY RANDOM() window)
as a subprocess, over the same rows exported to Parquet and loaded into an
in-memory DuckDB table (2 threads), executed by DuckDB
through SmartNoise's PostgreSQL dialect (a thin DB-API adapter), so both sides
use the same database engine. Settings: Privacy(epsilon, delta=1e-6),
max_ids = --max-ids (rows per unit over all groups), censor_dims off (the
categories are public), bounds [0, 100]. SmartNoise gives every noisy column the
full epsilon, so its queries can cost more than epsilon in total: the cost
SmartNoise reports (get_privacy_cost) is printed next to the gateway's. Without
--smartnoise-python, or if SmartNoise fails, the gateway's numbers are printed
and the failure is said plainly. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import dp_speed  # noqa: E402  (same data, same clean room)

QUERIES = {
    "count_by_category": "SELECT category, COUNT(*) AS v FROM purchases GROUP BY category",
    "sum_by_category": "SELECT category, SUM(amount) AS v FROM purchases GROUP BY category",
    "avg_by_category": "SELECT category, AVG(amount) AS v FROM purchases GROUP BY category",
    "count_all": "SELECT COUNT(*) AS v FROM purchases",
}

# Runs inside the SmartNoise venv: argv[1] is a JSON job, prints one JSON document.
SMARTNOISE_RUNNER = r'''
import json, sys, time, traceback
job = json.loads(sys.argv[1])
out = {"results": {}, "seconds": {}, "cost": {}, "error": None}
try:
    import duckdb, snsql
    from snsql import Privacy
    out["versions"] = {"smartnoise-sql": __import__("importlib.metadata").metadata.version("smartnoise-sql"),
                       "opendp": __import__("importlib.metadata").metadata.version("opendp"),
                       "duckdb": duckdb.__version__, "python": sys.version.split()[0]}
    con = duckdb.connect()
    con.execute(f"SET threads = {job['threads']}")
    con.execute("CREATE SCHEMA bench")
    con.execute(f"CREATE TABLE bench.purchases AS SELECT * FROM read_parquet('{job['parquet']}')")

    class Cursor:  # the DB-API surface snsql's PostgresReader uses
        def __init__(self, con): self.con, self.rows, self.description = con, [], None
        def execute(self, sql):
            result = self.con.execute(sql)
            self.description = result.description
            self.rows = result.fetchall() if result.description else []
        def __iter__(self): return iter(self.rows)

    class Connection:
        def __init__(self, con): self.con = con
        def cursor(self): return Cursor(self.con)
        def commit(self): pass
        def rollback(self): pass

    low, high = job["bounds"]
    metadata = {"Collection": {"bench": {"purchases": {
        "row_privacy": False, "max_ids": job["max_ids"], "censor_dims": False,
        "hh": {"type": "int", "private_id": True},
        "category": {"type": "string"},
        "amount": {"type": "float", "lower": float(low), "upper": float(high)}}}}}
    reader = snsql.from_connection(Connection(con), engine="postgres", metadata=metadata,
                                   privacy=Privacy(epsilon=job["epsilon"], delta=1e-6))
    for name, sql in job["queries"].items():
        sql = sql.replace("FROM purchases", "FROM bench.purchases")
        out["cost"][name] = list(reader.get_privacy_cost(sql))
        out["results"][name], out["seconds"][name] = [], []
        for _ in range(job["reps"]):
            started = time.perf_counter()
            rows = reader.execute(sql)
            out["seconds"][name].append(time.perf_counter() - started)
            out["results"][name].append([list(r) for r in rows[1:]])
except Exception:
    out["error"] = traceback.format_exc()
print(json.dumps(out, default=str))
'''


def make_venv(folder: Path) -> None:
    """duckdb pinned to this project's version: duckdb 2.x refuses SmartNoise's
    `ROW_NUMBER() OVER (PARTITION BY id ORDER BY RANDOM())` (volatile window ORDER BY)."""
    import duckdb

    subprocess.run(["python3", "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "pip"), "install", "smartnoise-sql", f"duckdb=={duckdb.__version__}",
                    "pandas", "pyarrow"], check=True)
    print(f"SmartNoise venv ready: --smartnoise-python {folder / 'bin' / 'python'}")


def as_map(rows, grouped: bool) -> dict:
    """{group: value} from result rows ((category, v) or (v,)); None values dropped."""
    if grouped:
        return {r[0]: float(r[1]) for r in rows if r[1] is not None}
    return {None: float(rows[0][0])} if rows and rows[0][0] is not None else {}


def errors(exact: dict, runs: list[dict]) -> tuple[list[float], list[int]]:
    rel, released = [], []
    for released_map in runs:
        released.append(sum(1 for g in released_map if exact.get(g)))
        rel += [abs(v - exact[g]) / abs(exact[g]) for g, v in released_map.items() if exact.get(g)]
    return rel, released


def gateway_side(engine, folder: Path, reps: int) -> dict:
    out = {}
    for name, sql in QUERIES.items():
        runs, seconds, spent = [], [], None
        for _ in range(reps):
            dp_speed.clear_release_cache(folder / "state")  # or the repeat is the cached release
            started = time.perf_counter()
            release = engine.run(dp_speed.request(sql))
            seconds.append(time.perf_counter() - started)
            runs.append(as_map([tuple(r.values()) for r in release.table.to_pylist()], "GROUP BY" in sql))
            spent = (release.protection or {}).get("spent")
        out[name] = {"runs": runs, "seconds": seconds, "cost": spent}
    return out


def smartnoise_side(python: str, parquet: Path, args) -> dict:
    job = {"parquet": str(parquet), "queries": QUERIES, "reps": args.reps, "epsilon": args.epsilon,
           "max_ids": args.max_ids, "bounds": list(dp_speed.BOUNDS), "threads": 2}
    try:
        done = subprocess.run([python, "-c", SMARTNOISE_RUNNER, json.dumps(job)], capture_output=True, text=True,
                              timeout=args.timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"error": f"could not run {python}: {error}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"{python} exited {done.returncode}:\n{done.stderr[-3000:]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=25, help="repetitions of each query on each side")
    parser.add_argument("--epsilon", type=float, default=1.0, help="epsilon per query (both sides)")
    parser.add_argument("--max-rows", type=int, default=10, help="gateway: max_rows_per_unit")
    parser.add_argument("--max-groups", type=int, default=4, help="gateway: max_groups_per_unit")
    parser.add_argument("--max-ids", type=int, default=10, help="SmartNoise: max_ids (rows per unit, all groups)")
    parser.add_argument("--smartnoise-python", default=None, help="interpreter of a venv holding smartnoise-sql")
    parser.add_argument("--make-venv", type=Path, default=None, metavar="DIR",
                        help="create DIR as a venv with smartnoise-sql, duckdb, pandas, pyarrow and exit")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds the SmartNoise subprocess may take")
    args = parser.parse_args()
    if args.make_venv:
        make_venv(args.make_venv)
        return
    dp_speed.MAX_ROWS, dp_speed.MAX_GROUPS = args.max_rows, args.max_groups

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        import duckdb

        parquet = folder / "purchases.parquet"  # SmartNoise's copy of the same rows
        with duckdb.connect(str(dp_speed.make_data(folder, args.rows))) as con:
            con.execute(f"COPY purchases TO '{parquet}' (FORMAT parquet)")
        engine = dp_speed.build(folder, args.rows, epsilon_per_query=args.epsilon)
        try:
            table = dp_speed.table_ref(engine)
            cursor = engine.database.cursor()
            try:
                exact = {}
                for name, sql in QUERIES.items():
                    exact[name] = as_map(cursor.execute(sql.replace("FROM purchases", f"FROM {table}")).fetchall(),
                                         "GROUP BY" in sql)
            finally:
                cursor.close()
            gateway = gateway_side(engine, folder, args.reps)
        finally:
            engine.close()
        smartnoise = (smartnoise_side(args.smartnoise_python, parquet, args) if args.smartnoise_python
                      else {"error": "not run: pass --smartnoise-python (make one with --make-venv DIR)"})
    report(args, exact, gateway, smartnoise)


def report(args, exact: dict, gateway: dict, smartnoise: dict) -> None:
    print(f"{args.rows:,} rows, {max(args.rows // 10, 1):,} units, epsilon {args.epsilon} per query, "
          f"{args.reps} repetitions; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"gateway: max_rows_per_unit {args.max_rows}, max_groups_per_unit {args.max_groups}, "
          f"release cache emptied before each repetition")
    failed = smartnoise.get("error")
    if failed and failed.startswith("not run"):
        print(f"SmartNoise: {failed}")
    elif failed:
        print("SmartNoise: FAILED, its columns are empty. What failed:\n" + failed.rstrip())
    else:
        print(f"SmartNoise: max_ids {args.max_ids}, censor_dims off; {smartnoise.get('versions')}")
    print(f"{'query':18} {'gw med rel err':>15} {'sn med rel err':>15} {'gw groups':>10} {'sn groups':>10} "
          f"{'gw ms':>8} {'sn ms':>8} {'gw eps':>7} {'sn eps':>7}")
    for name in QUERIES:
        g = gateway[name]
        g_err, g_groups = errors(exact[name], g["runs"])
        row = [f"{statistics.median(g_err):15.4f}" if g_err else f"{'-':>15}"]
        s_cells = [f"{'-':>15}", f"{'-':>10}", f"{'-':>8}", f"{'-':>7}"]
        if not failed:
            grouped = "GROUP BY" in QUERIES[name]
            s_runs = [as_map([tuple(r) for r in rows], grouped) for rows in smartnoise["results"][name]]
            s_err, s_groups = errors(exact[name], s_runs)
            cost = smartnoise["cost"][name]
            s_cells = [f"{statistics.median(s_err):15.4f}" if s_err else f"{'-':>15}",
                       f"{statistics.median(s_groups):10.0f}",
                       f"{statistics.median(smartnoise['seconds'][name]) * 1000:8.0f}",
                       f"{cost[0]:7.2f}"]
        eps = (g["cost"] or {}).get("epsilon")
        print(f"{name:18} {row[0]} {s_cells[0]} {statistics.median(g_groups):10.0f} {s_cells[1]} "
              f"{statistics.median(g['seconds']) * 1000:8.0f} {s_cells[2]} "
              f"{eps if eps is not None else float('nan'):7.2f} {s_cells[3]}")
    print(f"groups: released groups with a non-zero exact value, median per repetition "
          f"(of {sum(1 for v in exact['count_by_category'].values() if v)} that occur)")


if __name__ == "__main__":
    main()
