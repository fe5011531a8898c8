"""The Spark engine end to end, on a real local Spark Connect server (tests/sparkkit.py):
k-only answers and templates as on DuckDB, differentially private answers near the truth
their intervals claim, what cannot be computed the same refused before it is charged, a
session that cannot read files by SQL, and a deadline that stops the work on the server."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import yaml

from gateway.config import load_config
from gateway.engine import QueryRequest
from gateway.engine.executors import Executor, _Stopped
from gateway.errors import GatewayError, PolicyInvalid
from gateway.spark import session as spark_session
from tests.sparkkit import assert_same_rows, spark_config, warm_engine


def run(engine, sql, **request):
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql, **request))


def test_answers_and_column_types_are_duckdbs(spark_engine, engine):
    sql = ("SELECT region, COUNT(*) AS n, SUM(amount) AS total, AVG(amount) AS mean, "
           "date_trunc('month', purchased_on) AS month FROM purchases GROUP BY region, month ORDER BY region, month")
    on_spark, on_duckdb = run(spark_engine, sql), run(engine, sql)
    assert on_spark.table.schema == on_duckdb.table.schema
    assert_same_rows(on_spark.table, on_duckdb.table)
    assert on_spark.notices == on_duckdb.notices


def test_the_demo_template_answers_as_on_duckdb(spark_engine, engine):
    name, params = "campaign_reach", {"campaign": "spring_sale"}
    on_spark = spark_engine.run(QueryRequest(user="analyst", cleanroom="demo", template=name, params=params))
    on_duckdb = engine.run(QueryRequest(user="analyst", cleanroom="demo", template=name, params=params))
    assert on_spark.authorised_by == on_duckdb.authorised_by == f"template:{name}"
    assert_same_rows(on_spark.table, on_duckdb.table)


@pytest.mark.parametrize("name, params", [
    ("campaign_reach", {"campaign": "holiday_gifts"}),
    ("propensity_lift", {}),
    ("propensity_histogram", {}),
])
def test_every_demo_aggregate_template_answers_as_on_duckdb(spark_engine, engine, name, params):
    """The templates that score() a model are refused on Spark, naming score() (models are
    DuckDB functions of the executors), before anything runs or is charged."""
    request = QueryRequest(user="analyst", cleanroom="demo", template=name, params=params)
    if name.startswith("propensity_"):
        with pytest.raises(GatewayError) as refused:
            spark_engine.run(request)
        assert (refused.value.rule, refused.value.sqlstate) == ("engine.spark", "0A000")
        assert "score()" in refused.value.message and "cleanroom_model" not in refused.value.message.lower()
        return
    on_spark = spark_engine.run(request)
    on_duckdb = engine.run(QueryRequest(user="analyst", cleanroom="demo", template=name, params=params))
    assert on_spark.table.num_rows > 0
    assert_same_rows(on_spark.table, on_duckdb.table)
    assert on_spark.notices == on_duckdb.notices


OUTPUT_TEMPLATE = {
    "description": "Households and average basket by region, delivered to the retailer.",
    "sql": "SELECT region, COUNT(DISTINCT household_id) AS households, AVG(amount) AS basket FROM purchases GROUP BY region",
    "output": {"name": "baskets_by_region", "receivers": ["retailer"]},
}


@pytest.fixture(scope="module")
def spark_output_engine(spark_server, spark_demo_data_dir, demo_config_path, tmp_path_factory):
    """The k-only demo on Spark with a template whose result goes to the retailer as an output."""
    def add_output(policy):
        policy["templates"]["baskets_for_retailer"] = OUTPUT_TEMPLATE
        policy["analysts"]["analyst"]["templates"].append("baskets_for_retailer")

    path = spark_config(demo_config_path, spark_server.remote, tmp_path_factory.mktemp("spark-output"), add_output)
    yield from warm_engine(path)


def test_an_output_is_delivered_with_duckdbs_rows(spark_output_engine, engine):
    from gateway.collab.outputs import read_output

    receipt = spark_output_engine.run(QueryRequest(user="analyst", cleanroom="demo", template="baskets_for_retailer", params={}))
    assert receipt.table.column_names == ["output", "output_id", "rows", "receivers", "expires_at"]
    room = spark_output_engine.context.cleanrooms["demo"]
    info, delivered = read_output(spark_output_engine.context.collab, room, "retailer_approver", "baskets_by_region")
    assert info.receivers == ("retailer",) and receipt.table.column("rows").to_pylist() == [delivered.num_rows]
    assert_same_rows(delivered, run(engine, OUTPUT_TEMPLATE["sql"]).table)
    record = [r for r in spark_output_engine.context.audit.records() if r.get("request_id") == receipt.request_id][-1]
    assert record["output_id"] == info.output_id and record["rows_released"] == delivered.num_rows


def test_what_spark_computes_otherwise_is_refused_before_it_is_charged(spark_engine):
    with pytest.raises(GatewayError) as refused:
        run(spark_engine, "SELECT count(*) FROM purchases WHERE substring(category, 0, 2) = 'da'")
    assert (refused.value.rule, refused.value.sqlstate) == ("engine.spark", "0A000")
    assert "SUBSTRING" in refused.value.message


@pytest.fixture(scope="module")
def dp_engine(dp_demo_config_path):
    from gateway.engine import Engine

    engine = Engine.from_config_file(dp_demo_config_path)
    yield engine
    engine.close()


def test_private_answers_agree_within_their_intervals(spark_dp_engine, dp_engine):
    """Noise is the gateway's on either engine, over the same bounded values (a household
    has one region: no keyed-hash choice of groups): the two answers differ by noise alone,
    within the sum of their stated 95% half-widths, tripled so that the test fails by chance
    about once in ten thousand runs."""
    sql = "SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM purchases GROUP BY region"
    on_spark, on_duckdb = run(spark_dp_engine, sql), run(dp_engine, sql)
    assert on_spark.table.schema == on_duckdb.table.schema
    assert on_spark.protection["contribution_bounds"] == on_duckdb.protection["contribution_bounds"]
    spark_rows, duckdb_rows = (_by_region(release) for release in (on_spark, on_duckdb))
    assert spark_rows.keys() == duckdb_rows.keys() and len(spark_rows) >= 2
    for region, columns in spark_rows.items():
        for column, (value, low, high) in columns.items():
            other, other_low, other_high = duckdb_rows[region][column]
            allowed = 3 * ((high - low) / 2 + (other_high - other_low) / 2)
            assert abs(value - other) <= allowed, (region, column, value, other, allowed)


def test_repeats_the_ledger_and_the_audit_log_as_on_duckdb(spark_dp_engine, dp_engine):
    """On either engine: a repeat comes from the release cache with the same rows, free; the
    ledger is charged once; the audit log records both, the repeat as a reused release."""
    sql = ("SELECT category, COUNT(DISTINCT household_id) AS buyers, AVG(amount) AS basket FROM purchases "
           "WHERE region = 'islands' GROUP BY category")
    for engine in (spark_dp_engine, dp_engine):
        before = engine.budget("analyst", "demo")["spent"]["epsilon"]
        first, again = run(engine, sql), run(engine, sql)
        charged = first.protection["spent"]["epsilon"]
        assert charged == (0.0 if first.protection["reused"] else 0.1)
        assert again.protection["reused"] is True and again.protection["spent"]["epsilon"] == 0.0
        assert again.table.equals(first.table)
        assert engine.budget("analyst", "demo")["spent"]["epsilon"] == pytest.approx(before + charged)
        records = {r["request_id"]: r for r in engine.context.audit.records()
                   if r.get("request_id") in (first.request_id, again.request_id)}
        assert records[first.request_id]["reused_release"] is first.protection["reused"]
        assert records[again.request_id]["reused_release"] is True
        assert records[again.request_id]["rows_released"] == again.table.num_rows
    assert run(spark_dp_engine, sql).protection["reused"]  # this engine's own state: its first run paid


def _by_region(release) -> dict:
    """region -> column -> (released value, interval low, interval high)."""
    columns = release.protection["columns"]
    found = {}
    for i, row in enumerate(release.table.to_pylist()):
        found[row["region"]] = {name: (float(row[name]), *columns[name]["intervals"][i]) for name in ("n", "total")}
    return found


def test_the_session_reads_no_file_by_sql(spark_server, spark_demo_data_dir):
    """Even a statement that reached Spark unchecked could not name a file: runSQLOnFiles is off
    in the executors' sessions (and the server's defaults). The file exists and is Parquet."""
    session = spark_session.connect(spark_server.remote, str(uuid.uuid4()))
    try:
        for key, value in spark_session.SESSION_CONF.items():
            session.conf.set(key, value)
        target = next((spark_demo_data_dir / "impressions").glob("*.parquet"))
        for sql in (f"SELECT count(*) FROM parquet.`{target}`", "SELECT * FROM text.`/etc/passwd`",
                    "SELECT * FROM csv.`/etc/passwd`", "SELECT * FROM json.`/etc/hostname`"):
            with pytest.raises(Exception) as refused:
                session.sql(sql).toArrow()
            assert "TABLE_OR_VIEW_NOT_FOUND" in str(refused.value) or "UNSUPPORTED_DATASOURCE" in str(refused.value), sql
    finally:
        session.stop()


def test_a_statement_past_its_deadline_is_stopped_on_the_server_too(spark_config_path, caplog):
    config = load_config(spark_config_path)
    executor = Executor(config, time.monotonic() + 300)
    slow = "SELECT count(*) AS n FROM range(0, 1000000000000) AS a"  # hours on two cores
    caplog.set_level("INFO", logger="gateway.spark")
    try:
        with pytest.raises(_Stopped, match="timeout"):
            executor.run(slow, 10, time.monotonic() + 15, (slow, (), "gateway-slow"))
    finally:
        executor.discard("timeout")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any("interrupted" in r.getMessage() for r in caplog.records):
        time.sleep(0.5)
    said = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert said == [f"spark session {executor.spark_session}: interrupted 1 operation(s)"], said


def test_interrupt_stops_a_running_operation(spark_server):
    session_id = str(uuid.uuid4())
    session = spark_session.connect(spark_server.remote, session_id)
    failure = {}

    def slow():
        session.addTag("slow")
        try:
            session.sql("SELECT count(*) FROM range(0, 1000000000000)").toArrow()
        except Exception as error:  # the interruption
            failure["error"] = str(error)

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        stopped = []
        deadline = time.monotonic() + 120
        while not stopped and time.monotonic() < deadline:
            time.sleep(1)
            stopped = spark_session.interrupt(spark_server.remote, session_id)
        thread.join(120)
        # interrupt() cancels, then releases the session: the running call sees whichever reached it first
        error = failure.get("error", "")
        assert len(stopped) == 1 and ("OPERATION_CANCELED" in error or "SESSION_CLOSED" in error), (stopped, failure)
    finally:
        session.stop()


def test_spark_config_needs_a_remote_and_spark_sources(tmp_path):
    config = {"policies": [], "users": {}, "engine": {"kind": "spark"},
              "sources": {"retail": {"kind": "duckdb", "path": str(tmp_path / "x.duckdb")}}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(PolicyInvalid) as invalid:
        load_config(path)
    text = "\n".join(invalid.value.problems)
    assert "engine: missing required key 'remote'" in text
    assert "sources.retail.kind" in text and "parquet" in text
