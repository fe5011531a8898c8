"""DuckDB vs Spark (engine.kind: spark, a local Spark Connect server on local[2]) in one run:
the demo's headline statements, and a GROUP BY over --rows rows with k thresholds and with
differentially private bounding. Prints per statement the median wall time of --runs runs
through Engine.run (after one warm-up), the cost per input row, and the ratio Spark / DuckDB.

    .venv/bin/python bench/engines.py [--rows 10000000] [--runs 5] [--scale 1.0] [--remote sc://host:port]

Without --remote it starts a Spark Connect server from the pyspark package (tests/sparkkit.py)
and stops it at the end. Both engines read the same Parquet files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import demo  # noqa: E402
from gateway.engine import Engine, QueryRequest  # noqa: E402
from tests.demokit import DEMO_POLICY, link_demo_models  # noqa: E402
from tests.roomkit import approve_config  # noqa: E402
from tests.sparkkit import SparkServer, missing  # noqa: E402

HEADLINE = {
    "region reach (README)": "SELECT region, count(DISTINCT household_id) AS households, avg(amount) FROM purchases GROUP BY region",
    "join by campaign": "SELECT p.region, i.campaign, COUNT(DISTINCT p.household_id) AS buyers FROM purchases p "
                        "JOIN impressions i ON p.household_id = i.household_id GROUP BY p.region, i.campaign",
    "template campaign_reach": ("campaign_reach", {"campaign": "spring_sale"}),
}
BIG_SQL = "SELECT category, COUNT(*) AS n, SUM(amount) AS total FROM purchases GROUP BY category"


def demo_room(folder: Path, scale: float) -> Path:
    data = folder / "demo"
    demo.generate(data, scale=scale)
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{data / 'retail.duckdb'}' AS retail (READ_ONLY)")
        con.execute(f"COPY retail.purchases TO '{data / 'purchases.parquet'}' (FORMAT parquet)")
    policy = yaml.safe_load(DEMO_POLICY.read_text())
    policy.pop("privacy")
    policy["tables"]["purchases"]["source"] = "retail_parquet"
    policy["tables"]["purchases"].pop("relation")
    (folder / "demo-policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    link_demo_models(folder)  # the copy names the demo's model files relative to itself
    sources = {"retail_parquet": {"kind": "parquet", "path": str(data / "purchases.parquet")},
               "publisher_impressions": {"kind": "parquet", "path": str(data / "impressions" / "*.parquet")},
               "region_lookup": {"kind": "csv", "path": str(data / "regions.csv")}}
    return folder / "demo-policy.yaml", sources, data


def big_room(folder: Path, rows: int) -> tuple[Path, Path, dict, Path]:
    """--rows purchases over rows / 10 households, 20 categories of 24 declared; k-only and DP
    rooms over the same file (the DP one with an analyst per run: see main)."""
    data = folder / "big"
    data.mkdir()
    with duckdb.connect() as con:
        con.execute("SET threads = 2")
        con.execute(f"COPY (SELECT 'h' || (i % {rows // 10}) AS hh, 'c' || (hash(i) % 20) AS category, "
                    f"(hash(i * 7) % 15000) / 100.0 AS amount FROM range({rows}) t(i)) TO '{data / 'purchases.parquet'}'")
    table = {"owner": "a", "source": "big", "privacy_unit": "hh",
             "columns": {"hh": {"role": "join_key"},
                         "category": {"role": "dimension", "values": [f"c{i}" for i in range(24)]},
                         "amount": {"role": "measure", "bounds": [0, 100]}}}
    policy = {"cleanroom": "big", "min_group_size": 10, "collaborators": {"a": {}}, "tables": {"purchases": table},
              "rules": {"all": {"tables": ["purchases"], "aggregates": ["count", "count_distinct", "sum", "avg"]}},
              "analysts": {"ana": {"collaborator": "a", "rules": ["all"]}}}
    (folder / "big-k.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    dp = {**policy, "cleanroom": "big_dp", "analysts": {f"ana{i}": {"collaborator": "a", "rules": ["all"]} for i in range(64)},
          "privacy": {
        "epsilon_per_query": 0.1, "delta_per_query": 1e-9, "max_rows_per_unit": 5, "max_groups_per_unit": 4,
        "budget": {"epsilon": 1_000_000.0, "delta": 0.001}}}
    (folder / "big-dp.yaml").write_text(yaml.safe_dump(dp, sort_keys=False))
    return folder / "big-k.yaml", folder / "big-dp.yaml", {"big": {"kind": "parquet", "path": str(data / "purchases.parquet")}}, data


def engine_for(folder: Path, kind: str, remote: str | None, policies, sources, roots) -> Engine:
    engine_section = {"threads": 2, "executors": 1, "memory_limit": "2GB", "query_timeout_seconds": 600,
                      "data_roots": [str(r) for r in roots]}
    if kind == "spark":
        engine_section.update(kind="spark", remote=remote)
    config = {"policies": [str(p) for p in policies], "sources": sources, "engine": engine_section,
              "state_dir": str(folder / f"state-{kind}"), "users": {}}
    path = folder / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    approve_config(path)
    engine = Engine.from_config_file(path)
    engine.warm(wait=True)
    return engine


def timed(engine: Engine, request_for, runs: int) -> float:
    engine.run(request_for(-1))  # warm-up: first statement, JIT, file metadata
    seconds = []
    for i in range(runs):
        started = time.perf_counter()
        release = engine.run(request_for(i))
        seconds.append(time.perf_counter() - started)
        if release.protection is not None and release.protection.get("reused"):
            raise SystemExit("a DP statement was answered from the release cache: nothing ran")
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="demo scale (1.0: 1M purchases, 2M impressions)")
    parser.add_argument("--remote", help="an existing Spark Connect server (default: start one, local[2])")
    args = parser.parse_args()
    server = None
    if args.remote is None:
        reason = missing()
        if reason:
            sys.exit(f"cannot start Spark: {reason}")
        server = SparkServer(Path(tempfile.mkdtemp()) / "connect.log", conf={"spark.sql.shuffle.partitions": "8"})
    remote = args.remote or server.remote
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            demo_policy, demo_sources, demo_data = demo_room(folder, args.scale)
            k_policy, dp_policy, big_sources, big_data = big_room(folder, args.rows)
            purchases = duckdb.sql(f"SELECT count(*) FROM '{demo_data / 'purchases.parquet'}'").fetchone()[0]
            cases = []
            for name, statement in HEADLINE.items():
                if isinstance(statement, tuple):
                    cases.append((name, purchases, lambda i, s=statement: QueryRequest(
                        user="analyst", cleanroom="demo", template=s[0], params=s[1])))
                else:
                    cases.append((name, purchases, lambda i, s=statement: QueryRequest(user="analyst", cleanroom="demo", sql=s)))
            cases.append((f"{args.rows:,} rows, k", args.rows,
                          lambda i: QueryRequest(user="ana", cleanroom="big", sql=BIG_SQL)))
            # Every DP run by another analyst: the release cache (per analyst) would answer a repeat.
            cases.append((f"{args.rows:,} rows, DP bounding", args.rows, lambda i: QueryRequest(
                user=f"ana{i + 1}", cleanroom="big_dp", sql=BIG_SQL)))
            results = {}
            for kind in ("duckdb", "spark"):
                engine = engine_for(folder, kind, remote, [demo_policy, k_policy, dp_policy],
                                    {**demo_sources, **big_sources}, [demo_data, big_data])
                try:
                    for name, _, request_for in cases:
                        results[(kind, name)] = timed(engine, request_for, args.runs)
                finally:
                    engine.close()
    finally:
        if server is not None:
            server.stop()
    print(f"median of {args.runs} runs after one warm-up; Spark: local[2] at {remote}; DuckDB: 2 threads")
    print(f"{'statement':30} {'rows read':>12} {'duckdb':>10} {'spark':>10} {'duckdb/row':>11} {'spark/row':>11} {'spark/duckdb':>12}")
    for name, rows, _ in cases:
        duck, spark = results[("duckdb", name)], results[("spark", name)]
        print(f"{name:30} {rows:>12,} {duck * 1000:>8.0f}ms {spark * 1000:>8.0f}ms "
              f"{duck / rows * 1e9:>9.1f}ns {spark / rows * 1e9:>9.1f}ns {spark / duck:>11.1f}x")


if __name__ == "__main__":
    main()
