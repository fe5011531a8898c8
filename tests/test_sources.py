"""gateway.sources against real files and real servers: every kind attaches and
reads, kinds join, and once locked the engine refuses to change or escape."""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path

import duckdb
import pytest

from gateway.config_model import Source
from gateway.errors import PolicyInvalid
from gateway.policy.model import CleanRoom, Column, Role, Table
from gateway.sources import describe, open_database
from tests.servers import MYSQL_DSN, PG_DSN, postgres
from tests.sourcekit import make_config, ref



@pytest.fixture
def data(tmp_path) -> Path:
    """One small file of every file kind, under tmp_path/data (the data root)."""
    root = tmp_path / "data"
    (root / "events").mkdir(parents=True)
    with duckdb.connect(str(root / "shop.duckdb")) as con:
        con.execute("CREATE TABLE sales AS SELECT range AS id, 'r' || (range % 3) AS region, "
                    "CAST(range * 1.5 AS DECIMAL(10, 2)) AS amount FROM range(30)")
        con.execute("CREATE SCHEMA other")
        con.execute("CREATE TABLE other.notes AS SELECT 'hello' AS note")
        for part in (0, 1):
            con.execute(f"COPY (SELECT range AS id, 'e{part}' AS event FROM range({part * 10}, {part * 10 + 10})) "
                        f"TO '{root / 'events' / f'part-{part}.parquet'}' (FORMAT parquet)")
        con.execute(f"COPY (SELECT 'r' || range AS region, 'Region ' || range AS region_name FROM range(3)) "
                    f"TO '{root / 'regions.csv'}' (HEADER, DELIMITER ';')")
    with sqlite3.connect(root / "crm.sqlite") as lite:
        lite.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
        lite.executemany("INSERT INTO customers VALUES (?, ?)", [(i, f"c{i}") for i in range(5)])
    return root


def file_sources(root: Path) -> list[Source]:
    return [
        Source("shop", "duckdb", path=root / "shop.duckdb"),
        Source("crm", "sqlite", path=root / "crm.sqlite"),
        Source("events", "parquet", path=root / "events" / "*.parquet"),
        Source("regions", "csv", path=root / "regions.csv", options={"header": True, "delim": ";"}),
    ]


@pytest.fixture
def locked(tmp_path, data):
    con = open_database(make_config(tmp_path, file_sources(data)))
    yield con
    con.close()


def test_naming_scheme():
    assert ref("shop", "sales") == '"src_shop"."main"."sales"'
    assert ref("pg", "public.orders") == '"src_pg"."public"."orders"'
    assert ref("events") == '"memory"."src_events"."events"'


def test_every_file_kind_attaches_and_reads(locked):
    assert locked.execute(f"SELECT count(*), sum(amount) FROM {ref('shop', 'sales')}").fetchone() == (30, 652.5)
    assert locked.execute(f"SELECT note FROM {ref('shop', 'other.notes')}").fetchall() == [("hello",)]
    assert locked.execute(f"SELECT count(*) FROM {ref('crm', 'customers')}").fetchone() == (5,)
    assert locked.execute(f"SELECT count(*), count(DISTINCT event) FROM {ref('events')}").fetchone() == (20, 2)
    assert locked.execute(f"SELECT region_name FROM {ref('regions')} ORDER BY region").fetchall() == [
        ("Region 0",), ("Region 1",), ("Region 2",)]


def test_join_duckdb_file_csv_and_parquet(locked):
    rows = locked.execute(f"""
        SELECT r.region_name, count(*) FROM {ref('shop', 'sales')} s
        JOIN {ref('regions')} r ON s.region = r.region
        JOIN {ref('events')} e ON e.id = s.id
        GROUP BY 1 ORDER BY 1""").fetchall()
    assert rows == [("Region 0", 7), ("Region 1", 7), ("Region 2", 6)]


def test_settings_are_locked_down(locked, tmp_path):
    settings = dict(locked.execute("SELECT name, value FROM duckdb_settings()").fetchall())
    for name in ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions",
                 "allow_community_extensions", "allow_unsigned_extensions", "python_enable_replacements"):
        assert settings[name] == "false", name
    assert settings["lock_configuration"] == "true"
    assert settings["threads"] == "2"
    assert str((tmp_path / "data").resolve()) in settings["allowed_directories"]
    assert settings["temp_directory"].startswith(str((tmp_path / "state" / "tmp").resolve()))


@pytest.mark.parametrize("statement", [
    "SET threads = 1", "SET enable_external_access = true", "SET lock_configuration = false",
    "SET allowed_directories = ['/']", "RESET memory_limit", "PRAGMA threads = 4",
])
def test_no_setting_can_change(locked, statement):
    with pytest.raises(duckdb.Error, match="configuration has been locked|Can only SET or RESET"):
        locked.execute(statement)


def test_no_file_outside_the_roots(locked, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    with duckdb.connect(str(outside / "other.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    refused = [
        f"ATTACH '{outside / 'other.duckdb'}' AS other",
        f"ATTACH '{outside / 'new.duckdb'}' AS fresh",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        f"COPY (SELECT 42) TO '{outside / 'leak.csv'}'",
        f"EXPORT DATABASE '{outside / 'export'}'",
    ]
    for statement in refused:
        with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
            locked.execute(statement)
    assert not (outside / "leak.csv").exists() and not (outside / "new.duckdb").exists()


def test_no_extension_install_or_load(locked, tmp_path):
    for statement in ("INSTALL httpfs", "LOAD httpfs", f"LOAD '{tmp_path / 'data' / 'evil.duckdb_extension'}'",
                      "INSTALL spatial FROM community"):
        with pytest.raises(duckdb.Error, match="disabled"):
            locked.execute(statement)


def test_attached_sources_are_read_only(locked):
    for statement in (
        f"INSERT INTO {ref('shop', 'sales')} VALUES (99, 'r0', 1)",
        f"DELETE FROM {ref('shop', 'sales')}",
        f"CREATE TABLE {ref('shop', 'extra')} (x INT)",
        f"UPDATE {ref('crm', 'customers')} SET name = 'x'",
        f"DROP TABLE {ref('crm', 'customers')}",
    ):
        with pytest.raises(duckdb.Error, match="read-only"):
            locked.execute(statement)


def test_files_in_the_roots_stay_readable(locked, data):
    # A file that lands in a globbed folder after locking is still read through the view.
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT 100 AS id, 'late' AS event) TO '{data / 'events' / 'part-2.parquet'}' (FORMAT parquet)")
    assert locked.execute(f"SELECT count(*) FROM {ref('events')}").fetchone() == (21,)
    assert locked.execute(f"SELECT count(*) FROM read_parquet('{data / 'events' / '*.parquet'}')").fetchone() == (21,)


def test_source_outside_roots_or_missing_is_reported(tmp_path, data):
    elsewhere = tmp_path / "elsewhere.parquet"
    sources = [Source("far", "parquet", path=elsewhere), Source("gone", "duckdb", path=data / "missing.duckdb")]
    with pytest.raises(PolicyInvalid) as caught:
        open_database(make_config(tmp_path, sources))
    problems = caught.value.problems
    assert len(problems) == 2
    assert "sources.far" in problems[0] and "outside engine.data_roots" in problems[0]
    assert "sources.gone" in problems[1]


def test_unreachable_server_is_reported_without_its_password(tmp_path, data):
    sources = [Source("down", "postgres", dsn="host=127.0.0.1 port=1 user=postgres password=s3cret dbname=test")]
    with pytest.raises(PolicyInvalid) as caught:
        open_database(make_config(tmp_path, sources))
    (problem,) = caught.value.problems
    assert "sources.down" in problem and "password=***" in problem and "s3cret" not in problem


def columns(**roles: Role) -> dict[str, Column]:
    return {name: Column(name, role) for name, role in roles.items()}


def test_describe_reads_declared_columns(locked):
    room = CleanRoom(name="room", collaborators={}, source_file="room.yaml", tables={
        "sales": Table("sales", "o", "shop", "sales",
                       columns(id=Role.JOIN_KEY, region=Role.DIMENSION, amount=Role.MEASURE)),
        "events": Table("events", "o", "events", None, columns(id=Role.JOIN_KEY, event=Role.HIDDEN)),
        "regions": Table("regions", "o", "regions", None, columns(region=Role.DIMENSION), public=True),
        "customers": Table("customers", "o", "crm", "main.customers", columns(name=Role.DIMENSION)),
    })
    assert describe(locked, room) == {
        "sales": {"id": "BIGINT", "region": "VARCHAR", "amount": "DECIMAL(10,2)"},
        "events": {"id": "BIGINT", "event": "VARCHAR"},
        "regions": {"region": "VARCHAR"},
        "customers": {"name": "VARCHAR"},
    }


def test_describe_lists_every_problem(locked):
    room = CleanRoom(name="room", collaborators={}, source_file="room.yaml", tables={
        "a": Table("a", "o", "nowhere", "t", columns(x=Role.DIMENSION)),
        "b": Table("b", "o", "shop", "no_such_table", columns(x=Role.DIMENSION)),
        "c": Table("c", "o", "shop", "sales", columns(id=Role.DIMENSION, colour=Role.HIDDEN, size=Role.MEASURE)),
        "d": Table("d", "o", "no_files", None, columns(x=Role.DIMENSION)),
        "e": Table("e", "o", "events", "events", columns(x=Role.DIMENSION)),
    })
    with pytest.raises(PolicyInvalid) as caught:
        describe(locked, room)
    problems = caught.value.problems
    assert len(problems) == 6, problems
    assert re.search(r"^room.yaml: tables\.a: source 'nowhere' is not attached", problems[0])
    assert re.search(r"tables\.b: cannot read 'no_such_table'", problems[1])
    assert problems[2].endswith("tables.c.columns.colour: no such column in 'sales'")
    assert problems[3].endswith("tables.c.columns.size: no such column in 'sales'")
    assert re.search(r"tables\.d: source 'no_files' is not attached", problems[4])
    assert problems[5].endswith("tables.e: a file source has no relation")


# --- real servers -------------------------------------------------------------------------


@pytest.fixture
def pg_table():
    """A uniquely named schema in the real PostgreSQL, dropped afterwards."""
    conn = postgres()
    schema = f"cleanroom_sources_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.visits (id integer, page text, spent numeric(10, 2))")
    conn.execute(f"INSERT INTO {schema}.visits SELECT g, 'p' || (g % 4), g * 0.5 FROM generate_series(0, 39) g")
    try:
        yield schema
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture
def mysql_table():
    """A uniquely named database in the real MariaDB, dropped afterwards."""
    pymysql = pytest.importorskip("pymysql")
    try:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True,
                               connect_timeout=3)
    except pymysql.err.OperationalError as e:
        pytest.skip(f"MariaDB at 127.0.0.1:3306 unreachable: {e}")
    database = f"cleanroom_sources_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
        cur.execute(f"CREATE TABLE {database}.orders (id INT, total DECIMAL(10, 2), status VARCHAR(10))")
        cur.executemany(f"INSERT INTO {database}.orders VALUES (%s, %s, %s)",
                        [(i, i * 2, "open" if i % 2 else "shipped") for i in range(25)])
    try:
        yield database
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE {database}")
        conn.close()


@pytest.mark.server
def test_postgres_attaches_joins_parquet_and_is_read_only(tmp_path, data, pg_table):
    sources = file_sources(data) + [Source("web", "postgres", dsn=PG_DSN)]
    with open_database(make_config(tmp_path, sources)) as con:
        visits = ref("web", f"{pg_table}.visits")
        assert con.execute(f"SELECT count(*), sum(spent) FROM {visits}").fetchone() == (40, 390)
        rows = con.execute(f"""
            SELECT e.event, count(*) FROM {visits} v JOIN {ref('events')} e ON e.id = v.id
            GROUP BY 1 ORDER BY 1""").fetchall()
        assert rows == [("e0", 10), ("e1", 10)]
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute(f"INSERT INTO {visits} VALUES (1, 'x', 1)")
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute(f"CREATE TABLE {ref('web', f'{pg_table}.extra')} (x INT)")
        with pytest.raises(duckdb.Error, match="disabled"):
            con.execute(f"ATTACH '{PG_DSN}' AS again (TYPE postgres)")
        room = CleanRoom(name="room", collaborators={}, tables={
            "visits": Table("visits", "o", "web", f"{pg_table}.visits", columns(page=Role.DIMENSION, spent=Role.MEASURE)),
            "bare": Table("bare", "o", "web", "visits", columns(page=Role.DIMENSION)),
        })
        with pytest.raises(PolicyInvalid, match="must name its schema"):
            describe(con, room)
        del room.tables["bare"]
        assert describe(con, room) == {"visits": {"page": "VARCHAR", "spent": "DECIMAL(10,2)"}}


@pytest.mark.server
def test_mysql_attaches_joins_duckdb_file_and_is_read_only(tmp_path, data, mysql_table):
    sources = file_sources(data) + [Source("orders", "mysql", dsn=MYSQL_DSN)]
    with open_database(make_config(tmp_path, sources)) as con:
        orders = ref("orders", f"{mysql_table}.orders")
        assert con.execute(f"SELECT count(*), sum(total) FROM {orders}").fetchone() == (25, 600)
        rows = con.execute(f"""
            SELECT o.status, s.region, count(*) FROM {orders} o JOIN {ref('shop', 'sales')} s ON s.id = o.id
            WHERE s.region = 'r0' GROUP BY ALL ORDER BY ALL""").fetchall()
        assert rows == [("open", "r0", 4), ("shipped", "r0", 5)]
        with pytest.raises(duckdb.Error, match="read-only"):
            con.execute(f"UPDATE {orders} SET status = 'x'")
        room = CleanRoom(name="room", collaborators={}, tables={
            "orders": Table("orders", "o", "orders", f"{mysql_table}.orders",
                            columns(total=Role.MEASURE, status=Role.DIMENSION)),
        })
        assert describe(con, room) == {"orders": {"total": "DECIMAL(10,2)", "status": "VARCHAR"}}
