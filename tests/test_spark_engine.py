"""The Spark engine end to end: the demo clean room on a real local Spark Connect server."""

from __future__ import annotations

from gateway.engine import QueryRequest


def test_smoke(spark_engine, engine):
    sql = "SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM purchases GROUP BY region ORDER BY region"
    on_spark = spark_engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))
    on_duckdb = engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))
    assert on_spark.table.schema == on_duckdb.table.schema
    assert on_spark.table.to_pylist() == on_duckdb.table.to_pylist()
