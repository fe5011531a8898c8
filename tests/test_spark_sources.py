"""Sources on the Spark engine: Parquet and CSV files, PostgreSQL and MariaDB tables over JDBC
(the Debian drivers the test server loads), registered as views of each executor's session.
The same room on DuckDB gives the reference answers: both engines must agree row for row."""

from __future__ import annotations

import contextlib

import duckdb
import pytest
import yaml

from gateway.engine import Engine, QueryRequest
from tests.federationkit import HOUSEHOLDS, private, server_tables
from tests.roomkit import approve_all
from tests.servers import MYSQL_DSN, PG_DSN
from tests.sparkkit import assert_same_rows


@pytest.fixture(scope="module")
def rooms(spark_server, tmp_path_factory):
    """(the room on Spark, the same room on DuckDB)."""
    tmp = tmp_path_factory.mktemp("spark-sources")
    data = tmp / "data"
    data.mkdir()
    engines = []
    with server_tables("spark") as (pg_schema, my_table), contextlib.ExitStack() as closing:
        with duckdb.connect() as con:
            con.execute(f"COPY (SELECT 'h' || (i % {HOUSEHOLDS}) AS hh, 'r' || (i % 2) AS region, (i * 13) % 90 AS amount, "
                        f"DATE '2026-01-01' + (i % 40)::INTEGER AS day FROM range(300) t(i)) TO '{data}/orders.parquet'")
            # semicolons and a header: the options the CSV source passes on; the date column is typed by DuckDB's guess
            con.execute(f"COPY (SELECT 'h' || i AS hh, i % 2 = 0 AS opted_in, DATE '2026-02-01' + i::INTEGER AS since "
                        f"FROM range({HOUSEHOLDS}) t(i)) TO '{data}/consent.csv' (HEADER, DELIMITER ';')")

        tables = {
            "orders": private("parquet", None, {"region": {"role": "dimension"}, "amount": {"role": "measure", "bounds": [0, 100]},
                                                 "day": {"role": "dimension"}}),
            "members": private("pg", f"{pg_schema}.members", {"tier": {"role": "dimension"}}, owner="b"),
            "visits": private("maria", f"test.{my_table}", {"visits": {"role": "measure", "bounds": [0, 10]}}, owner="b"),
            "consent": private("csv", None, {"opted_in": {"role": "dimension"}, "since": {"role": "dimension"}}),
        }
        joins = [["orders.hh", f"{t}.hh"] for t in ("members", "visits", "consent")]
        policy = {"cleanroom": "fed", "min_group_size": 10, "collaborators": {"a": {}, "b": {}}, "tables": tables,
                  "rules": {"all": {"tables": list(tables), "aggregates": ["count", "count_distinct", "sum", "avg"], "joins": joins}},
                  "analysts": {"ana": {"collaborator": "a", "rules": ["all"]}}}
        (tmp / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        for kind in ("spark", "duckdb"):
            engine_section = {"threads": 2, "memory_limit": "1GB", "data_roots": [str(data)], "executors": 1}
            if kind == "spark":
                engine_section.update(kind="spark", remote=spark_server.remote, query_timeout_seconds=300)
            config = {"policies": [str(tmp / "policy.yaml")], "engine": engine_section,
                      "sources": {"pg": {"kind": "postgres", "dsn": PG_DSN}, "maria": {"kind": "mysql", "dsn": MYSQL_DSN},
                                  "parquet": {"kind": "parquet", "path": str(data / "orders.parquet")},
                                  "csv": {"kind": "csv", "path": str(data / "consent.csv"),
                                          "options": {"header": True, "delim": ";"}}},
                      "state_dir": str(tmp / f"state-{kind}"), "users": {}}
            (tmp / f"{kind}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            engine = Engine.from_config_file(tmp / f"{kind}.yaml")
            closing.callback(engine.close)
            engines.append(engine)
            approve_all(engine)
        yield tuple(engines)


def release(engine, sql):
    return engine.run(QueryRequest(user="ana", cleanroom="fed", sql=sql))


@pytest.mark.parametrize("sql", [
    "SELECT count(DISTINCT hh) AS n FROM orders",
    "SELECT count(DISTINCT hh) AS n FROM members",
    "SELECT count(DISTINCT hh) AS n FROM visits",
    "SELECT count(DISTINCT hh) AS n FROM consent",
], ids=["parquet", "postgres", "mysql", "csv"])
def test_each_source_kind(rooms, sql):
    on_spark, on_duckdb = (release(engine, sql).table for engine in rooms)
    assert on_spark.to_pylist() == [{"n": HOUSEHOLDS}]
    assert_same_rows(on_spark, on_duckdb)


@pytest.mark.parametrize("sql", [
    "SELECT m.tier, o.region, count(*) AS n, sum(o.amount) AS total, avg(v.visits) AS visits FROM orders o "
    "JOIN members m ON o.hh = m.hh JOIN visits v ON o.hh = v.hh GROUP BY 1, 2",
    "SELECT c.opted_in, date_trunc('week', o.day) AS week, count(DISTINCT o.hh) AS households FROM orders o "
    "JOIN consent c ON o.hh = c.hh GROUP BY 1, 2",
    "SELECT c.since < DATE '2026-02-15' AS early, sum(o.amount) / count(*) AS mean FROM orders o "
    "LEFT JOIN consent c ON o.hh = c.hh GROUP BY 1",
], ids=["postgres-mariadb-parquet", "csv-parquet-weeks", "csv-dates"])
def test_joins_across_sources_answer_as_on_duckdb(rooms, sql):
    on_spark, on_duckdb = (release(engine, sql).table for engine in rooms)
    assert on_spark.num_rows > 0
    assert_same_rows(on_spark, on_duckdb)
