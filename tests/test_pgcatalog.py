"""gateway.pgcatalog and gateway.pgtypes: the catalog lists every column with the
type the wire protocol sends it as, pg_type is the one shared type table, and
the per-engine cache and deadlines behave."""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa
import pytest

from gateway import pgtypes
from gateway.engine.types import QueryRequest
from gateway.engine.watchdog import Watchdog
from gateway.errors import SyntaxProblem
from gateway.pgcatalog import CatalogCache, answer, reads_only_catalog, translate
from gateway.pgwire import types as wire
from gateway.pgwire.declared import field_oids

DUCKDB_TYPES = ["BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER",
                "UBIGINT", "HUGEINT", "UHUGEINT", "FLOAT", "DOUBLE", "VARCHAR", "DATE", "TIME", "TIMETZ",
                "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMPTZ", "INTERVAL", "BLOB",
                "BIT", "UUID", "JSON", "DECIMAL(10,2)", "DECIMAL(38,10)", "NUMERIC(4,1)", "DECIMAL(18,0)"]


@pytest.mark.parametrize("declared", DUCKDB_TYPES)
def test_the_catalog_lists_a_column_with_the_type_the_wire_sends(declared):
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (c {declared})")
    described = con.execute("DESCRIBE t").fetchall()[0][1]  # what the engine's column types hold
    field = con.execute("SELECT c FROM t").to_arrow_table().schema.field(0)
    # UUID and JSON reach Arrow as strings; the session learns their type from the engine (declared.py).
    oids_by_name = {"UUID": wire.UUID, "JSON": wire.JSON}
    wire_oid = field_oids(pa.schema([field]), {"c": oids_by_name[described]} if described in oids_by_name else None)[0]
    assert (pgtypes.duckdb_type_oid(described), pgtypes.duckdb_typmod(described)) == \
        (wire_oid, wire.type_modifier(field.type))
    assert wire_oid in pgtypes.TYPES


ARROW_TYPES = [pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
               pa.uint64(), pa.float16(), pa.float32(), pa.float64(), pa.decimal128(10, 2), pa.string(),
               pa.large_string(), pa.binary(), pa.large_binary(), pa.binary(16), pa.date32(), pa.date64(),
               pa.time32("ms"), pa.time64("us"), pa.timestamp("us"), pa.timestamp("ns", tz="UTC"),
               pa.month_day_nano_interval(), pa.duration("us"), pa.list_(pa.int32()), pa.struct([("a", pa.int8())]),
               pa.null()]


def run(engine, sql):
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql)).table.to_pylist()


def test_pg_type_is_the_shared_type_table_and_holds_every_oid_the_wire_sends(engine):
    rows = run(engine, "SELECT oid, typname, typlen, typcategory, typarray, typelem FROM pg_catalog.pg_type "
                       "WHERE typnamespace = 11")
    listed = {row["oid"]: row for row in rows}
    assert {oid: (r["typname"], r["typlen"], r["typcategory"]) for oid, r in listed.items()} == \
        {oid: (t.name, t.length, t.category) for oid, t in pgtypes.TYPES.items()}
    sent = {wire.field_oid(pa.field("c", kind)) for kind in ARROW_TYPES} | {wire.UUID, wire.JSON, wire.JSONB}
    for oid in sent:
        assert oid in listed, oid
        assert listed[oid]["typlen"] == pgtypes.TYPE_SIZES.get(oid, -1)  # RowDescription's type size
    for element, array in pgtypes.ARRAY_OF.items():
        assert (listed[element]["typarray"], listed[array]["typelem"]) == (array, element)
    named = run(engine, "SELECT format_type(1700, -1) AS n, format_type(25, -1) AS t, format_type(3802, -1) AS j")
    assert named == [{"n": "numeric", "t": "text", "j": "jsonb"}]


def test_information_schema_and_pg_attribute_agree_on_numeric(engine):
    columns = run(engine, "SELECT c.data_type, c.numeric_precision, c.numeric_scale, c.udt_name, a.atttypid, "
                          "a.atttypmod FROM information_schema.columns c JOIN pg_catalog.pg_attribute a "
                          "ON a.attname = c.column_name JOIN pg_catalog.pg_class r ON r.oid = a.attrelid "
                          "AND r.relname = c.table_name WHERE c.table_name = 'purchases' AND c.column_name = 'amount'")
    assert columns == [{"data_type": "numeric", "numeric_precision": 10, "numeric_scale": 2, "udt_name": "numeric",
                        "atttypid": wire.NUMERIC, "atttypmod": pgtypes.numeric_typmod(10, 2)}]


def test_detection_and_translation_without_an_engine():
    import sqlglot

    tree = sqlglot.parse_one("SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) "
                             "'^(t)$' AND pg_catalog.pg_table_is_visible(c.oid)", read="postgres")
    assert reads_only_catalog(tree, room_tables={"t"})
    sql = translate(tree, "ana", "room", {"t"}).sql(dialect="duckdb")
    assert "pgc.pg_class" in sql and "PGW_PG_TABLE_IS_VISIBLE(" in sql.upper() and "REGEXP_MATCHES(" in sql.upper()
    # A clean-room table named like a catalog relation is the clean room's.
    assert not reads_only_catalog(sqlglot.parse_one("SELECT * FROM pg_stats", read="postgres"), {"pg_stats"})
    assert reads_only_catalog(sqlglot.parse_one("SELECT * FROM pg_stats", read="postgres"), {"t"})


def test_an_evicted_catalog_database_keeps_serving_the_statement_reading_it():
    cache = CatalogCache(databases=1)

    def database(rows: int):
        con = duckdb.connect(":memory:")
        con.execute(f"CREATE TABLE t AS SELECT * FROM range({rows})")
        return con

    first = cache.database(("room", 1, "ana"), lambda: database(3))
    cursor = first.cursor()  # a statement of ana's, under way on another thread
    del first
    second = cache.database(("room", 1, "bo"), lambda: database(5))  # evicts ana's database
    assert cursor.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert second.execute("SELECT count(*) FROM t").fetchone() == (5,)
    assert len(cache.databases) == 1
    rebuilt = cache.database(("room", 1, "ana"), lambda: database(7))
    assert rebuilt.execute("SELECT count(*) FROM t").fetchone() == (7,)


def test_concurrent_first_statements_share_one_database():
    cache, built, gate = CatalogCache(), [], threading.Barrier(4)

    def build():
        built.append(duckdb.connect(":memory:"))
        return built[-1]

    found = []

    def first_statement():
        gate.wait()
        found.append(cache.database(("room", 1, "ana"), build))

    threads = [threading.Thread(target=first_statement) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(database) for database in found}) == 1 and found[0] in built


def test_a_catalog_statement_past_its_deadline_is_interrupted_by_the_watchdog():
    import logging

    database = duckdb.connect(":memory:")
    threads_before = threading.active_count()
    with pytest.raises(SyntaxProblem) as refused:
        answer(database, "SELECT count(*) FROM range(10000000000000) a", 0.1, Watchdog(), logging.getLogger("test"))
    assert refused.value.rule == "catalog.unsupported" and "interrupt" in refused.value.message.lower()
    assert threading.active_count() <= threads_before + 1  # the watchdog's one thread, no timer per statement
    assert answer(database, "SELECT 42 AS n", 5, Watchdog(), logging.getLogger("test")).to_pylist() == [{"n": 42}]


def test_an_unknown_catalog_relation_is_named_as_postgresql_would_never_with_duckdbs_text(engine):
    from gateway.engine import QueryRequest
    from gateway.errors import UnknownTable

    with pytest.raises(UnknownTable) as missing:
        engine.run(QueryRequest(user="analyst", cleanroom="demo", sql="SELECT * FROM pg_catalog.pg_stats"))
    assert missing.value.message == 'relation "pg_stats" does not exist'
    assert "Catalog Error" not in missing.value.message and "Did you mean" not in missing.value.message


def test_catalog_answers_are_kept_unless_they_call_a_changing_function(engine, monkeypatch):
    """The catalog of a policy version and analyst never changes: a repeated catalog
    statement is answered from the engine's memo; one calling now() or random() runs
    every time, and a different analyst or statement never gets another's answer."""
    import gateway.pgcatalog as pgcatalog

    ran = []
    real = pgcatalog.answer
    monkeypatch.setattr(pgcatalog, "answer", lambda *args: ran.append(args[1]) or real(*args))
    listing = "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r' ORDER BY relname  -- kept"
    first, again = run(engine, listing), run(engine, listing)
    assert again == first and first and len(ran) == 1
    changing = ["SELECT now() AS t, relname FROM pg_catalog.pg_class  -- not kept",
                "SELECT random() AS r FROM pg_catalog.pg_namespace  -- not kept",
                "SELECT CURRENT_TIMESTAMP AS t FROM pg_catalog.pg_namespace  -- not kept"]
    for sql in changing:
        run(engine, sql), run(engine, sql)
    assert len(ran) == 1 + 2 * len(changing)
    other = listing.replace("ORDER BY relname", "ORDER BY relname DESC")
    assert run(engine, other) == first[::-1] and len(ran) == 8
