"""One clean room over every kind of source, queried through the engine: the
policy names tables in PostgreSQL, MariaDB, SQLite, DuckDB, Parquet, CSV, Delta
and Iceberg, and an aggregate joins across two kinds of source. The Delta and
Iceberg tables hold the Parquet table's rows, so every answer over them (k
thresholds, refusals, DP bounding) must equal the Parquet one."""

from __future__ import annotations

import sqlite3

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from gateway.engine import Engine, QueryRequest
from gateway.errors import Refused
from tests.federationkit import HOUSEHOLDS, private, server_tables
from tests.lakehouse import iceberg_table, metadata_file, write_delta
from tests.roomkit import approve_all
from tests.servers import MYSQL_DSN, PG_DSN

ADS = ("ads", "ads_delta", "ads_iceberg")  # one table in Parquet, Delta and Iceberg
pytestmark = pytest.mark.server  # the room reads tables on the local PostgreSQL and MariaDB


@pytest.fixture(scope="module")
def federated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("federated")
    data = tmp / "data"
    data.mkdir()
    with server_tables("fed") as (pg_schema, my_table):
        with duckdb.connect(str(data / "orders.duckdb")) as con:
            con.execute(
                f"CREATE TABLE orders AS SELECT 'h' || (i % {HOUSEHOLDS}) AS hh, 'r' || (i % 2) AS region, "
                "(i * 13) % 90 AS amount FROM range(300) t(i)"
            )
            con.execute(f"COPY (SELECT 'h' || i AS hh, 'c' || (i % 3) AS channel FROM range({HOUSEHOLDS}) t(i)) TO '{data}/ads.parquet'")
            con.execute(f"COPY (SELECT 'h' || i AS hh, i % 2 = 0 AS opted_in FROM range({HOUSEHOLDS}) t(i)) TO '{data}/consent.csv'")
        ads = pq.read_table(data / "ads.parquet")
        write_delta(data / "ads_delta", ads)
        ads_iceberg = metadata_file(iceberg_table(data / "warehouse", "ads", ads))
        with sqlite3.connect(data / "stores.sqlite") as con:
            con.execute("CREATE TABLE stores (region TEXT, city TEXT)")
            con.executemany("INSERT INTO stores VALUES (?, ?)", [("r0", "Lyon"), ("r1", "Turin")])

        tables = {
            "orders": private("duck", "orders", {"region": {"role": "dimension"}, "amount": {"role": "measure", "bounds": [0, 100]}}),
            "members": private("pg", f"{pg_schema}.members", {"tier": {"role": "dimension"}}, owner="b"),
            "visits": private("maria", f"test.{my_table}", {"visits": {"role": "measure", "bounds": [0, 10]}}, owner="b"),
            **{name: private(name.replace("ads_", "") if name != "ads" else "parquet", None,
                             {"channel": {"role": "dimension", "values": ["c0", "c1", "c2"]}}, owner="b")
               for name in ADS},
            "consent": private("csv", None, {"opted_in": {"role": "dimension"}}),
            "stores": {"owner": "a", "source": "lite", "relation": "stores", "public": True, "keys": ["region"],
                       "columns": {"region": {"role": "dimension"}, "city": {"role": "dimension"}}},
        }
        joins = [["orders.hh", f"{t}.hh"] for t in ("members", "visits", *ADS, "consent")] + [["orders.region", "stores.region"]]
        policy = {
            "cleanroom": "fed",
            "min_group_size": 10,
            "collaborators": {"a": {}, "b": {}},
            "tables": tables,
            "rules": {"all": {"tables": list(tables), "aggregates": ["count", "count_distinct", "sum", "avg"], "joins": joins}},
            "analysts": {"ana": {"collaborator": "a", "rules": ["all"]}},
        }
        (tmp / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        # The same tables under differential privacy, in a second clean room.
        dp_policy = {**policy, "cleanroom": "fed_dp", "privacy": {
            "epsilon_per_query": 1.0, "delta_per_query": 1e-6, "max_rows_per_unit": 3, "max_groups_per_unit": 2,
            "budget": {"epsilon": 100.0, "delta": 0.001}}}
        (tmp / "policy_dp.yaml").write_text(yaml.safe_dump(dp_policy, sort_keys=False))
        config = {
            "policies": [str(tmp / "policy.yaml"), str(tmp / "policy_dp.yaml")],
            "sources": {
                "duck": {"kind": "duckdb", "path": str(data / "orders.duckdb")},
                "pg": {"kind": "postgres", "dsn": PG_DSN},
                "maria": {"kind": "mysql", "dsn": MYSQL_DSN},
                "lite": {"kind": "sqlite", "path": str(data / "stores.sqlite")},
                "parquet": {"kind": "parquet", "path": str(data / "ads.parquet")},
                "csv": {"kind": "csv", "path": str(data / "consent.csv")},
                "delta": {"kind": "delta", "path": str(data / "ads_delta")},
                "iceberg": {"kind": "iceberg", "path": str(ads_iceberg)},
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
        ("SELECT count(DISTINCT hh) AS n FROM ads_delta", HOUSEHOLDS),
        ("SELECT count(DISTINCT hh) AS n FROM ads_iceberg", HOUSEHOLDS),
    ],
    ids=["duckdb", "postgres", "mysql", "parquet", "csv", "delta", "iceberg"],
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


@pytest.mark.parametrize("sql, expected", [
    # 10 households per channel: exactly k, released.
    ("SELECT a.channel, count(DISTINCT o.hh) AS households, sum(o.amount) AS spend "
     "FROM orders o JOIN {ads} a ON o.hh = a.hh GROUP BY 1 ORDER BY 1", 3),
    # gold households are h0, h3, ...: all on channel c0.
    ("SELECT m.tier, a.channel, count(DISTINCT o.hh) AS households, sum(v.visits) AS visits FROM orders o "
     "JOIN {ads} a ON o.hh = a.hh JOIN members m ON o.hh = m.hh JOIN visits v ON o.hh = v.hh GROUP BY 1, 2 ORDER BY 1, 2", 3),
    # 5 households per (city, channel): below k, nothing leaves.
    ("SELECT s.city, a.channel, count(*) AS n FROM orders o JOIN {ads} a ON o.hh = a.hh "
     "JOIN stores s ON o.region = s.region GROUP BY 1, 2", 0),
], ids=["channel", "tier-channel-visits", "below-k"])
def test_delta_and_iceberg_answer_as_parquet(federated, sql, expected):
    answers = {ads: rows(federated, sql.format(ads=ads)) for ads in ADS}
    assert len(answers["ads"]) == expected
    assert answers["ads_delta"] == answers["ads"] and answers["ads_iceberg"] == answers["ads"]


@pytest.mark.parametrize("sql", [
    "SELECT hh, count(*) FROM {ads} GROUP BY hh",  # a join key is not a dimension
    "SELECT count(*) FROM {ads} a JOIN consent c ON a.hh = c.hh",  # no such join in the rule
    "SELECT channel, count(*) FROM {ads} WHERE hh = 'h1' GROUP BY channel",  # one household
])
def test_delta_and_iceberg_are_refused_as_parquet(federated, sql):
    rules = set()
    for ads in ADS:
        with pytest.raises(Refused) as refused:
            rows(federated, sql.format(ads=ads))
        rules.add(refused.value.rule)
    assert len(rules) == 1, rules


def test_delta_and_iceberg_bound_and_noise_as_parquet(federated):
    """Under DP the bounded (pre-noise) quantities are the same rows' whatever the format,
    so the noise added to them is calibrated the same."""
    sql = "SELECT a.channel, count(DISTINCT o.hh), sum(o.amount) FROM orders o JOIN {ads} a ON o.hh = a.hh GROUP BY 1"
    bounded, explained = {}, {}
    for ads in ADS:
        request = QueryRequest(user="ana", cleanroom="fed_dp", sql=sql.format(ads=ads))
        state = federated.compile(request)
        table = federated.database.cursor().sql(state.generated_sql).to_arrow_table()
        bounded[ads] = sorted(table.to_pylist(), key=str)
        explained[ads] = federated.explain(request)["differential_privacy"]["aggregates"]
        release = federated.run(request)
        assert set(release.table.column("channel").to_pylist()) <= {"c0", "c1", "c2"}  # noisy k threshold
        assert release.protection["spent"]["epsilon"] == 1.0
    assert bounded["ads"] and bounded["ads_delta"] == bounded["ads"] and bounded["ads_iceberg"] == bounded["ads"]
    assert explained["ads_delta"] == explained["ads"] and explained["ads_iceberg"] == explained["ads"]
