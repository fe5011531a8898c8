"""One clean room over every kind of source, queried through the engine: the
policy names tables in PostgreSQL, MariaDB, SQLite, DuckDB, Parquet and CSV,
and an aggregate joins across two kinds of source."""

from __future__ import annotations

import sqlite3
import uuid

import duckdb
import pytest
import yaml

from gateway.engine import Engine, QueryRequest
from gateway.errors import Refused
from tests.roomkit import approve_all

HOUSEHOLDS = 30  # h0..h29, regions r0/r1 alternate: 15 households each
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
MYSQL_DSN = "host=127.0.0.1 port=3306 user=root database=test"


def _postgres(schema: str):
    psycopg = pytest.importorskip("psycopg")
    try:
        con = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {error}")
    con.execute(f'CREATE SCHEMA "{schema}"')
    con.execute(f'CREATE TABLE "{schema}".members (hh text, tier text)')
    with con.cursor() as cur:
        cur.executemany(
            f'INSERT INTO "{schema}".members VALUES (%s, %s)',
            [(f"h{i}", "gold" if i % 3 == 0 else "basic") for i in range(HOUSEHOLDS)],
        )
    return con


def _mariadb(table: str):
    pymysql = pytest.importorskip("pymysql")
    try:
        con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test", autocommit=True)
    except pymysql.err.OperationalError as error:
        pytest.skip(f"MariaDB on 127.0.0.1:3306 is not reachable: {error}")
    with con.cursor() as cur:
        cur.execute(f"CREATE TABLE `{table}` (hh VARCHAR(8), visits INT)")
        cur.executemany(f"INSERT INTO `{table}` VALUES (%s, %s)", [(f"h{i}", i % 7) for i in range(HOUSEHOLDS)])
    return con


@pytest.fixture(scope="module")
def federated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("federated")
    data = tmp / "data"
    data.mkdir()
    suffix = uuid.uuid4().hex[:8]
    pg_schema, my_table = f"fed_{suffix}", f"fed_visits_{suffix}"
    pg = _postgres(pg_schema)
    my = None
    try:
        my = _mariadb(my_table)
        with duckdb.connect(str(data / "orders.duckdb")) as con:
            con.execute(
                f"CREATE TABLE orders AS SELECT 'h' || (i % {HOUSEHOLDS}) AS hh, 'r' || (i % 2) AS region, "
                "(i * 13) % 90 AS amount FROM range(300) t(i)"
            )
            con.execute(f"COPY (SELECT 'h' || i AS hh, 'c' || (i % 3) AS channel FROM range({HOUSEHOLDS}) t(i)) TO '{data}/ads.parquet'")
            con.execute(f"COPY (SELECT 'h' || i AS hh, i % 2 = 0 AS opted_in FROM range({HOUSEHOLDS}) t(i)) TO '{data}/consent.csv'")
        with sqlite3.connect(data / "stores.sqlite") as con:
            con.execute("CREATE TABLE stores (region TEXT, city TEXT)")
            con.executemany("INSERT INTO stores VALUES (?, ?)", [("r0", "Lyon"), ("r1", "Turin")])

        def private(source, relation, columns, owner="a"):
            table = {"owner": owner, "source": source, "privacy_unit": "hh", "columns": {"hh": {"role": "join_key"}, **columns}}
            if relation:
                table["relation"] = relation
            return table

        tables = {
            "orders": private("duck", "orders", {"region": {"role": "dimension"}, "amount": {"role": "measure", "bounds": [0, 100]}}),
            "members": private("pg", f"{pg_schema}.members", {"tier": {"role": "dimension"}}, owner="b"),
            "visits": private("maria", f"test.{my_table}", {"visits": {"role": "measure", "bounds": [0, 10]}}, owner="b"),
            "ads": private("parquet", None, {"channel": {"role": "dimension"}}, owner="b"),
            "consent": private("csv", None, {"opted_in": {"role": "dimension"}}),
            "stores": {"owner": "a", "source": "lite", "relation": "stores", "public": True, "keys": ["region"],
                       "columns": {"region": {"role": "dimension"}, "city": {"role": "dimension"}}},
        }
        joins = [["orders.hh", f"{t}.hh"] for t in ("members", "visits", "ads", "consent")] + [["orders.region", "stores.region"]]
        policy = {
            "cleanroom": "fed",
            "min_group_size": 10,
            "collaborators": {"a": {}, "b": {}},
            "tables": tables,
            "rules": {"all": {"tables": list(tables), "aggregates": ["count", "count_distinct", "sum", "avg"], "joins": joins}},
            "analysts": {"ana": {"collaborator": "a", "rules": ["all"]}},
        }
        (tmp / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        config = {
            "policies": [str(tmp / "policy.yaml")],
            "sources": {
                "duck": {"kind": "duckdb", "path": str(data / "orders.duckdb")},
                "pg": {"kind": "postgres", "dsn": PG_DSN},
                "maria": {"kind": "mysql", "dsn": MYSQL_DSN},
                "lite": {"kind": "sqlite", "path": str(data / "stores.sqlite")},
                "parquet": {"kind": "parquet", "path": str(data / "ads.parquet")},
                "csv": {"kind": "csv", "path": str(data / "consent.csv")},
            },
            "engine": {"threads": 2, "memory_limit": "1GB", "data_roots": [str(data)]},
            "state_dir": str(tmp / "state"),
            "users": {},
        }
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        engine = Engine.from_config_file(tmp / "gateway.yaml")
        approve_all(engine)  # both owners approve the rule, as tests/test_collab_rules.py does for real
        yield engine
        engine.close()
    finally:
        pg.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}" CASCADE')
        pg.close()
        if my is not None:
            with my.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{my_table}`")
            my.close()


def rows(engine, sql):
    return engine.run(QueryRequest(user="ana", cleanroom="fed", sql=sql)).table.to_pylist()


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("SELECT count(DISTINCT hh) AS n FROM orders", HOUSEHOLDS),
        ("SELECT count(DISTINCT hh) AS n FROM members", HOUSEHOLDS),
        ("SELECT count(DISTINCT hh) AS n FROM visits", HOUSEHOLDS),
        ("SELECT count(DISTINCT hh) AS n FROM ads", HOUSEHOLDS),
        ("SELECT count(DISTINCT hh) AS n FROM consent", HOUSEHOLDS),
    ],
    ids=["duckdb", "postgres", "mysql", "parquet", "csv"],
)
def test_each_source_kind(federated, sql, expected):
    assert rows(federated, sql) == [{"n": expected}]


def test_public_sqlite_table_reads_as_it_is(federated):
    assert rows(federated, "SELECT region, city FROM stores ORDER BY region") == [
        {"region": "r0", "city": "Lyon"},
        {"region": "r1", "city": "Turin"},
    ]


def test_join_across_duckdb_and_postgres(federated):
    result = rows(
        federated,
        "SELECT m.tier, count(DISTINCT o.hh) AS households, sum(o.amount) AS spend "
        "FROM orders o JOIN members m ON o.hh = m.hh GROUP BY m.tier ORDER BY m.tier",
    )
    # gold: h0,h3,...,h27 = 10 households (exactly k); basic: 20.
    assert [(r["tier"], r["households"]) for r in result] == [("basic", 20), ("gold", 10)]
    expected_gold = sum((i * 13) % 90 for i in range(300) if (i % HOUSEHOLDS) % 3 == 0)
    assert result[1]["spend"] == expected_gold


def test_join_across_mariadb_parquet_and_sqlite(federated):
    result = rows(
        federated,
        "SELECT s.city, a.channel, sum(v.visits) AS visits FROM orders o "
        "JOIN visits v ON o.hh = v.hh JOIN ads a ON o.hh = a.hh JOIN stores s ON o.region = s.region "
        "GROUP BY 1, 2 ORDER BY 1, 2",
    )
    # 5 households per (region, channel): below k, every group is suppressed.
    assert result == []
    result = rows(
        federated,
        "SELECT s.city, count(DISTINCT v.hh) AS households FROM orders o "
        "JOIN visits v ON o.hh = v.hh JOIN stores s ON o.region = s.region GROUP BY 1 ORDER BY 1",
    )
    assert result == [{"city": "Lyon", "households": 15}, {"city": "Turin", "households": 15}]


def test_sources_stay_read_only_and_unreachable_by_name(federated):
    with pytest.raises(Refused):
        rows(federated, "SELECT count(*) FROM src_pg.public.members")
    with pytest.raises(Refused):
        rows(federated, "INSERT INTO members VALUES ('x', 'y')")
