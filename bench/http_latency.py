"""HTTP latency of the demo gateway, and the gateway's own overhead.

    .venv/bin/python bench/http_latency.py [--requests 200] [--scale 0.2]

1. Generates the demo data into a temporary folder, starts `cleanroom serve`
   in a subprocess and sends N requests per query (sequentially, one client): median and p95 latency.
2. In process, for the same queries: time for `engine.compile(request)`
   (parse, check, rewrite) against executing the SQL it generates directly on
   the engine's DuckDB connection, as medians and their ratio.

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.demokit import DEMO_POLICY, write_demo_config  # noqa: E402  (the test suite's own helpers)
from tests.servers import HttpGateway  # noqa: E402

TOKEN = "analyst"
QUERIES = {
    "count_by_region": "SELECT region, COUNT(DISTINCT household_id) AS households FROM purchases GROUP BY region",
    "sum_avg_by_category": "SELECT category, SUM(amount) AS revenue, AVG(amount) AS basket "
    "FROM purchases GROUP BY category",
    "cross_party_join": "SELECT i.campaign, p.region, COUNT(DISTINCT p.household_id) AS buyers "
    "FROM purchases p JOIN impressions i ON p.household_id = i.household_id "
    "GROUP BY i.campaign, p.region",
    "public_lookup": "SELECT region, region_name FROM regions",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests per query")
    parser.add_argument("--runs", type=int, default=30, help="in-process runs per query")
    parser.add_argument("--scale", type=float, default=None, help="demo data scale, if the generator takes one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        config_path = write_demo(Path(tmp), args.scale)
        print(f"HTTP, {args.requests} requests per query, sequential, one client")
        print(f"{'query':24} {'median ms':>10} {'p95 ms':>10}")
        for name, ms in http_latencies(config_path, Path(tmp), args.requests).items():
            print(f"{name:24} {statistics.median(ms):10.2f} {percentile(ms, 95):10.2f}")

        print("\nIn process: the gateway's work vs running its generated SQL on DuckDB")
        print(f"{'query':24} {'compile ms':>10} {'execute ms':>10} {'compile/execute':>16}")
        for name, (compile_ms, execute_ms) in overhead(config_path, args.runs).items():
            c, e = statistics.median(compile_ms), statistics.median(execute_ms)
            print(f"{name:24} {c:10.3f} {e:10.3f} {c / e:16.2f}")


def write_demo(folder: Path, scale: float | None) -> Path:
    """Demo data and a config for it, the way the test suite builds them (both owners
    approve the demo's template and rule, as `cleanroom demo` does)."""
    from gateway import demo

    data = folder / "data"
    data.mkdir()
    if scale is not None and "scale" in inspect.signature(demo.generate).parameters:
        demo.generate(data, scale=scale)
    else:
        demo.generate(data)
    return write_demo_config(folder, data, DEMO_POLICY)


def http_latencies(config_path: Path, folder: Path, n: int) -> dict[str, list[float]]:
    server = HttpGateway(config_path, folder / "server.log", workers=None)  # the config's workers
    base_url = server.url
    try:
        results = {}
        for name, sql in QUERIES.items():
            post(base_url, sql)  # warm both workers' caches out of the measurement
            post(base_url, sql)
            results[name] = [timed(post, base_url, sql) for _ in range(n)]
        return results
    finally:
        server.stop()


def post(base_url: str, sql: str) -> None:
    request = urllib.request.Request(
        base_url + "/v1/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def overhead(config_path: Path, n: int) -> dict[str, tuple[list[float], list[float]]]:
    from gateway.engine import Engine, QueryRequest

    engine = Engine.from_config_file(config_path)
    database = engine.database
    try:
        results = {}
        for name, sql in QUERIES.items():
            request = QueryRequest(user="analyst", cleanroom="demo", sql=sql)
            generated = engine.compile(request).generated_sql
            compile_ms = [timed(engine.compile, request) for _ in range(n)]
            execute_ms = [timed(lambda: database.execute(generated).to_arrow_table()) for _ in range(n)]
            results[name] = (compile_ms, execute_ms)
        return results
    finally:
        engine.close()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1000


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
