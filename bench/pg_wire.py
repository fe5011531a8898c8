"""The Postgres wire front end against PostgreSQL itself, on the same machine.

    .venv/bin/python bench/pg_wire.py [--rows 1000000] [--runs 5] [--seconds 5]
        [--pg "host=127.0.0.1 port=5432 user=postgres dbname=test"]

1. A 1,000,000-row result fetched by psql (`psql -A -t -c 'SELECT * FROM numbers' > /dev/null`):
   from the gateway (a public table of a demo-like clean room built in a temporary folder)
   and from PostgreSQL (the same rows in a table there). Median wall time of --runs runs each.
2. `pgbench -S`-style throughput: `SELECT 1` (or --statement) with pgbench -M prepared (--mode), --clients
   clients (default 4; a comma-separated list such as 4,16 measures each), --seconds s, the
   gateway running --workers processes (default: one per core). Median of --tps-runs runs
   (default 3), the gateway and PostgreSQL alternating so both see the same machine load;
   the load average is printed with each result. --tps-only skips part 1. The gateway's
   state (audit log, store) lives in a temporary folder under --tmp (default: the system's),
   so the audit log's fsync costs what that file system charges.

3. With --buenavista PYTHON (an interpreter of a separate venv holding buenavista,
   pyarrow and python-dateutil: never a dependency of this project), the same
   SELECT 1 throughput against buenavista's DuckDB example server, and the ratio.

Prints medians and the ratios gateway / PostgreSQL in the same run. A benchmark,
not a test: it asserts nothing. Needs psql and pgbench (postgresql-client,
postgresql-contrib) and a PostgreSQL server for the comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSWORD = "bench"
# The same rows on both sides: deterministic expressions of the row number.
COLUMNS = ("id", "label", "value", "day", "flag")


def duckdb_rows(rows: int) -> str:
    return (f"SELECT i AS id, 'item-' || (i % 1000) AS label, (i % 977) * 1.25 AS value, "
            f"DATE '2026-01-01' + CAST(i % 365 AS INTEGER) AS day, i % 2 = 0 AS flag FROM range({rows}) t(i)")


def postgres_rows(rows: int) -> str:
    return (f"SELECT i::bigint AS id, 'item-' || (i % 1000) AS label, ((i % 977) * 1.25)::float8 AS value, "
            f"DATE '2026-01-01' + (i % 365)::int AS day, i % 2 = 0 AS flag FROM generate_series(0, {rows - 1}) i")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_gateway(folder: Path, rows: int) -> Path:
    from gateway.pgwire.scram import make_verifier

    data = folder / "numbers.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY ({duckdb_rows(rows)}) TO '{data}' (FORMAT parquet)")
    policy = {
        "cleanroom": "bench",
        "collaborators": {"owner": {}},
        "tables": {"numbers": {"owner": "owner", "source": "numbers", "public": True,
                               "columns": {c: {"role": "dimension"} for c in COLUMNS}}},
        "analysts": {"analyst": {"collaborator": "owner"}},
    }
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    config = {
        "policies": [str(folder / "policy.yaml")],
        "sources": {"numbers": {"kind": "parquet", "path": str(data)}},
        "engine": {"threads": 2, "memory_limit": "2GB", "max_result_rows": rows, "query_timeout_seconds": 120,
                   "data_roots": [str(folder)]},
        "state_dir": str(folder / "state"),
        "users": {"analyst": {"scram_sha256": make_verifier(PASSWORD)}},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(config: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen:
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway.pgwire", "--config", str(config),
                                    "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                                   cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.read_text().count("listening on") >= workers:
            return process
        if process.poll() is not None:
            raise RuntimeError(log.read_text())
        time.sleep(0.2)
    raise RuntimeError("gateway did not start")


def timed_psql(dsn: str, sql: str, env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["psql", "-X", "-A", "-t", "-q", dsn, "-c", sql], stdout=subprocess.DEVNULL, env=env, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


MODE = "prepared"  # pgbench -M: --mode simple|extended|prepared


def pgbench_tps(params: dict, env: dict, seconds: int, script: Path, clients: int = 4) -> float:
    args = ["pgbench", "-n", "-M", MODE, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
            "-f", str(script),
            "-h", params["host"], "-p", str(params["port"]), "-U", params["user"], params["dbname"]]
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed ({' '.join(args)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))


def start_buenavista(python: str) -> tuple[subprocess.Popen, dict]:
    """buenavista's DuckDB example server on an in-memory database, as its README starts it."""
    port = free_port()
    server = subprocess.Popen([python, "-m", "buenavista.examples.duckdb_postgres"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "BUENAVISTA_HOST": "127.0.0.1",
                                                              "BUENAVISTA_PORT": str(port)})
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, {"host": "127.0.0.1", "port": port, "user": "bench", "dbname": "bench"}
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("buenavista did not start") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gateway worker processes")
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    parser.add_argument("--buenavista", metavar="PYTHON", help="interpreter of a venv with buenavista installed")
    parser.add_argument("--mode", choices=("simple", "extended", "prepared"), default="prepared", help="pgbench -M")
    parser.add_argument("--tps-only", action="store_true", help="skip the large-result part")
    parser.add_argument("--clients", default="4", help="pgbench -c; a comma-separated list measures each")
    parser.add_argument("--tps-runs", type=int, default=3, help="pgbench runs per side (median)")
    parser.add_argument("--statement", default="SELECT 1",
                        help="what pgbench runs; the table `numbers` exists on both sides, e.g. "
                             "\"SELECT label, count(*) FROM numbers WHERE id < 1000 GROUP BY label\"")
    parser.add_argument("--tmp", help="folder for the gateway's temporary state (audit log, store)")
    args = parser.parse_args()
    global MODE
    MODE = args.mode
    pg = dict(part.split("=", 1) for part in args.pg.split())
    env = {**os.environ, "PGPASSWORD": PASSWORD}

    subprocess.run(["psql", "-X", "-q", args.pg, "-c", "DROP TABLE IF EXISTS numbers",
                    "-c", f"CREATE TABLE numbers AS {postgres_rows(args.rows)}", "-c", "ANALYZE numbers"],
                   check=True, env=os.environ)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        port = free_port()
        gateway = start_gateway(build_gateway(folder, args.rows), port, folder / "server.log", args.workers)
        try:
            gw = {"host": "127.0.0.1", "port": port, "user": "analyst", "dbname": "bench"}
            gw_dsn = " ".join(f"{k}={v}" for k, v in gw.items()) + " sslmode=disable"
            sql = "SELECT " + ", ".join(COLUMNS) + " FROM numbers"
            if not args.tps_only:
                timed_psql(gw_dsn, sql, env, 1)  # warm both sides
                timed_psql(args.pg, sql, os.environ, 1)
                gateway_s = timed_psql(gw_dsn, sql, env, args.runs)
                postgres_s = timed_psql(args.pg, sql, os.environ, args.runs)
                print(f"{args.rows:,} rows to psql: gateway {gateway_s:.2f} s, PostgreSQL {postgres_s:.2f} s, "
                      f"ratio {gateway_s / postgres_s:.2f}x (median of {args.runs})")
            script = folder / "statement.sql"
            script.write_text(args.statement.rstrip().rstrip(";") + ";\n")
            with_buenavista = args.buenavista and args.statement.strip().rstrip(";").upper() == "SELECT 1"
            if args.buenavista and not with_buenavista:
                print("buenavista skipped: its example server has no `numbers` table, only SELECT 1 runs on both")
            buenavista, bv = start_buenavista(args.buenavista) if with_buenavista else (None, None)
            try:
                for clients in (int(c) for c in args.clients.split(",")):
                    sides = {"gateway": (gw, env), "PostgreSQL": (pg, os.environ)}
                    if bv is not None:
                        sides["buenavista"] = (bv, os.environ)
                    runs: dict[str, list[float]] = {side: [] for side in sides}
                    load = os.getloadavg()
                    for _ in range(args.tps_runs):  # in turns, so every side sees the same load
                        for side, (params, side_env) in sides.items():
                            runs[side].append(pgbench_tps(params, side_env, args.seconds, script, clients))
                    load = [max(a, b) for a, b in zip(load, os.getloadavg())]
                    tps = {side: statistics.median(r) for side, r in runs.items()}
                    print(f"{args.statement} (pgbench -M {MODE}, {clients} clients, {args.workers} gateway workers), "
                          f"median of {args.tps_runs}; load average up to {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
                    for side, side_runs in runs.items():
                        ratio = "" if side == "gateway" else f"; gateway / {side} {tps['gateway'] / tps[side]:.3f}"
                        print(f"  {side:<11} {tps[side]:>9,.0f} tps (runs {', '.join(f'{t:,.0f}' for t in side_runs)})"
                              f"{ratio}", flush=True)
            finally:
                if buenavista is not None:
                    buenavista.terminate()
                    buenavista.wait(15)
        except Exception:
            print(f"gateway log (last 3,000 characters):\n{(folder / 'server.log').read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            gateway.terminate()
            gateway.wait(15)
        subprocess.run(["psql", "-X", "-q", args.pg, "-c", "DROP TABLE IF EXISTS numbers"], env=os.environ)


if __name__ == "__main__":
    main()
