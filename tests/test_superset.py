"""Apache Superset 6.1.0, for real, builds charts on the clean room.

scripts/test.sh installs the pinned Superset in .venv-superset (it pins
SQLAlchemy 1.4, so it cannot share .venv). One Superset (gunicorn, its own
SQLite metadata database, no example data) serves the whole module, and one
demo gateway as shipped (differential privacy) serves it over the wire. The
tests drive Superset's REST API as its web pages do: log in, add the database,
a dataset for every table, chart data for a bar, line (with a time range),
table, pie and big-number chart, filter value lists, SQL Lab, and refusals.

Released numbers are noisy, so they are checked against the exact answers of
the k-only engine (tests/conftest.py) with margins of several noise standard
deviations (a Laplace count at the demo's epsilon has scale 400: sd 566), or
against the intervals the gateway releases with `cleanroom.intervals=on`.

Superset's metadata database is built once per Superset version (`superset db
upgrade`, `fab create-admin`, `superset init`: about a minute on an idle
machine) and kept in .venv-superset; each run copies it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.engine.types import QueryRequest
from tests.servers import PASSWORD, REPO, Launched, free_port

requests = pytest.importorskip("requests")
pytestmark = [pytest.mark.superset, pytest.mark.server, pytest.mark.slow]

VENV = Path(os.environ.get("SUPERSET_VENV", REPO / ".venv-superset"))
SUPERSET_VERSION = "6.1.0"
SECRET_KEY = "cleanroom-superset-test-key-not-a-secret-0123456789"  # the cached metadata database is bound to it
ADMIN = {"username": "admin", "password": "admin", "provider": "db", "refresh": True}
START_TIMEOUT = 900  # seconds: Superset imports slowly on a loaded machine
TABLES = ["impressions", "purchases", "regions"]
REGIONS = {"north", "south", "east", "west", "central", "coast", "mountain", "islands"}
COUNT_SD = 566  # one noisy count's standard deviation in the demo (Laplace, scale 400)


# -- Superset and the gateway ----------------------------------------------------------------


def _superset_config(folder: Path) -> Path:
    path = folder / "superset_config.py"
    path.write_text(f"""SECRET_KEY = {SECRET_KEY!r}
SQLALCHEMY_DATABASE_URI = "sqlite:///{folder / 'superset.db'}"
CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
DATA_CACHE_CONFIG = {{"CACHE_TYPE": "NullCache"}}
TALISMAN_ENABLED = False
RATELIMIT_ENABLED = False
AUTH_RATE_LIMITED = False
""")
    return path


def _run(args: list[str], env: dict, log: Path) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=START_TIMEOUT)
    if done.returncode != 0:
        pytest.skip(f"Superset could not be set up ({' '.join(args[1:3])} failed): {log.read_text()[-800:]}")


def _metadata_template(env_for) -> Path:
    """The metadata database after db upgrade, create-admin and init, built once per Superset version."""
    template = VENV / f"cleanroom-test-metadata-{SUPERSET_VERSION}.db"
    if template.exists():
        return template
    folder = VENV / "cleanroom-test-build"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    env = env_for(folder)
    superset = str(VENV / "bin" / "superset")
    log = folder / "setup.log"
    _run([superset, "db", "upgrade"], env, log)
    _run([superset, "fab", "create-admin", "--username", "admin", "--firstname", "Ada", "--lastname", "Admin",
          "--email", "admin@example.com", "--password", "admin"], env, log)
    _run([superset, "init"], env, log)
    (folder / "superset.db").rename(template)
    shutil.rmtree(folder, ignore_errors=True)
    return template


@pytest.fixture(scope="module")
def superset(tmp_path_factory):
    """Base URL of a running Superset; skips with the reason when it is not installed or does not start."""
    if not (VENV / "bin" / "superset").exists():
        pytest.skip(f"Apache Superset is not installed in {VENV} (scripts/test.sh installs apache-superset=="
                    f"{SUPERSET_VERSION} there)")

    def env_for(folder: Path) -> dict:
        return {**os.environ, "SUPERSET_CONFIG_PATH": str(_superset_config(folder)), "PYTHONUNBUFFERED": "1",
                "FLASK_APP": "superset.app:create_app()"}

    template = _metadata_template(env_for)
    folder = tmp_path_factory.mktemp("superset")
    shutil.copy(template, folder / "superset.db")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(base + "/health", timeout=5).text == "OK"
        except requests.RequestException:
            return False

    server = Launched([str(VENV / "bin" / "gunicorn"), "-w", "1", "--threads", "4", "--timeout", "300",
                       "-b", f"127.0.0.1:{port}", "superset.app:create_app()"],
                      folder / "superset.log", env=env_for(folder), cwd=folder)
    server.stop_seconds = 30
    try:
        server.wait_for(healthy, "Superset", START_TIMEOUT)
    except RuntimeError as error:
        pytest.skip(f"Superset did not start: {str(error)[-800:]}")
    try:
        yield base
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(dp_pg):
    """The module's wire gateway over the demo as shipped (tests/conftest.py)."""
    return dp_pg


class Api:
    """Superset's REST API as its pages call it: a JWT access token and the CSRF token."""

    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()
        login = self.http.post(base + "/api/v1/security/login", json=ADMIN, timeout=120)
        assert login.status_code == 200, login.text
        self.http.headers["Authorization"] = "Bearer " + login.json()["access_token"]
        self.http.headers["X-CSRFToken"] = self.get("/api/v1/security/csrf_token/")["result"]
        self.http.headers["Referer"] = base

    def call(self, method: str, path: str, expect: int | None = 200, **kwargs) -> dict:
        response = self.http.request(method, self.base + path, timeout=300, **kwargs)
        if expect is not None:
            assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json()

    def get(self, path: str, **kwargs) -> dict:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: dict, **kwargs) -> dict:
        return self.call("POST", path, json=body, **kwargs)


@pytest.fixture(scope="module")
def api(superset) -> Api:
    return Api(superset)


@pytest.fixture(scope="module")
def database(api, gateway) -> int:
    uri = f"postgresql://analyst:{PASSWORD}@127.0.0.1:{gateway.port}/demo"
    tested = api.post("/api/v1/database/test_connection/", {"sqlalchemy_uri": uri, "database_name": "cleanroom"})
    assert tested["message"] == "OK"
    created = api.post("/api/v1/database/", {"database_name": "cleanroom", "sqlalchemy_uri": uri,
                                             "expose_in_sqllab": True}, expect=201)
    return created["id"]


@pytest.fixture(scope="module")
def datasets(api, database) -> dict[str, int]:
    """A dataset for every table: Superset reflects each with SQLAlchemy 1.4 (columns, keys, indexes)."""
    return {table: api.post("/api/v1/dataset/", {"database": database, "schema": "public", "table_name": table},
                            expect=201)["id"] for table in TABLES}


def exact(engine, sql: str) -> list[dict]:
    """The answer without noise: the k-only demo over the same data (conftest's engine)."""
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql)).table.to_pylist()


def chart_data(api: Api, dataset: int, viz: str, query: dict, expect: int = 200) -> dict:
    """POST /api/v1/chart/data with the query context Explore builds for a chart of this type."""
    base = {"filters": [], "extras": {"having": "", "where": ""}, "applied_time_extras": {}, "annotation_layers": [],
            "url_params": {}, "custom_params": {}, "custom_form_data": {}, "time_offsets": [], "order_desc": True}
    body = {"datasource": {"id": dataset, "type": "table"}, "force": False, "queries": [{**base, **query}],
            "form_data": {"datasource": f"{dataset}__table", "viz_type": viz}, "result_format": "json",
            "result_type": "full"}
    answer = api.post("/api/v1/chart/data", body, expect=expect)
    return answer["result"][0] if expect == 200 else answer


def axis(column: str, grain: str | None = None) -> dict:
    column = {"columnType": "BASE_AXIS", "sqlExpression": column, "label": column, "expressionType": "SQL"}
    return {**column, "timeGrain": grain} if grain else column


def metric(aggregate: str, column: str, label: str) -> dict:
    return {"expressionType": "SIMPLE", "column": {"column_name": column}, "aggregate": aggregate, "label": label}


# -- the tests -------------------------------------------------------------------------------


def test_database_schemas_and_tables(api, database):
    assert "public" in api.get(f"/api/v1/database/{database}/schemas/")["result"]
    tables = api.get(f"/api/v1/database/{database}/tables/?q=(schema_name:public)")["result"]
    assert sorted(t["value"] for t in tables) == TABLES


def test_sql_lab_table_panel(api, database):
    """SQL Lab's table panel (table_metadata, as its page asks): SQLAlchemy 1.4 reflects the
    columns the policy shows, no keys or indexes, and the SELECT * it offers lists no hidden column."""
    where = "?name=purchases&schema=public"
    panel = api.get(f"/api/v1/database/{database}/table_metadata/{where}")
    assert [c["name"] for c in panel["columns"]] == ["household_id", "region", "category", "amount", "purchased_on"]
    assert panel["indexes"] == [] and panel["foreignKeys"] == []
    assert "purchased_on" in panel["selectStar"] and "card_last4" not in panel["selectStar"]
    assert api.get(f"/api/v1/database/{database}/table_metadata/extra/{where}") == {}


def test_a_dataset_for_every_table_shows_what_the_policy_shows(api, datasets):
    purchases = api.get(f"/api/v1/dataset/{datasets['purchases']}")["result"]
    columns = {c["column_name"]: c for c in purchases["columns"]}
    assert list(columns) == ["household_id", "region", "category", "amount", "purchased_on"]  # card_last4 hidden
    assert columns["amount"]["type"] == "NUMERIC(10, 2)" and columns["amount"]["description"] == "Basket value in EUR."
    assert columns["purchased_on"]["is_dttm"] and purchases["main_dttm_col"] == "purchased_on"
    impressions = api.get(f"/api/v1/dataset/{datasets['impressions']}")["result"]
    assert {c["column_name"]: c["is_dttm"] for c in impressions["columns"]}["shown_at"] is True


def test_bar_chart_of_purchases_by_region(api, datasets, engine):
    result = chart_data(api, datasets["purchases"], "echarts_timeseries_bar", {
        "columns": [axis("region")], "metrics": ["count"], "orderby": [["count", False]], "row_limit": 10000,
        "series_columns": [], "series_limit": 0,
        "post_processing": [{"operation": "pivot", "options": {"index": ["region"], "columns": [], "aggregates": {
            "count": {"operator": "mean"}}, "drop_missing_columns": False}}, {"operation": "flatten"}]})
    assert "GROUP BY region" in result["query"]
    released = {row["region"]: row["count"] for row in result["data"]}
    assert set(released) == REGIONS  # declared values: every region is released
    truth = sum(r["n"] for r in exact(engine, "SELECT region, count(*) AS n FROM purchases GROUP BY region"))
    assert abs(sum(released.values()) - truth) < 6 * COUNT_SD * len(REGIONS) ** 0.5


def test_line_chart_with_a_time_range(api, datasets, engine):
    """Superset writes the range as TO_DATE('2026-01-01', 'YYYY-MM-DD'): a value, not a function of the data."""
    result = chart_data(api, datasets["purchases"], "echarts_timeseries_line", {
        "columns": [axis("purchased_on", "P1M")], "metrics": ["count"], "orderby": [["count", False]],
        "filters": [{"col": "purchased_on", "op": "TEMPORAL_RANGE", "val": "2026-01-01 : 2026-07-01"}],
        "row_limit": 10000, "series_columns": [], "series_limit": 0})
    assert "TO_DATE('2026-01-01', 'YYYY-MM-DD')" in result["query"]
    months = sorted(dt.datetime.fromtimestamp(row["purchased_on"] / 1000, dt.timezone.utc).date()
                    for row in result["data"])
    assert months == [dt.date(2026, m, 1) for m in range(1, 7)]
    truth = exact(engine, "SELECT count(*) AS n FROM purchases WHERE purchased_on >= DATE '2026-01-01' "
                          "AND purchased_on < DATE '2026-07-01'")[0]["n"]
    assert abs(sum(row["count"] for row in result["data"]) - truth) < 6 * COUNT_SD * 6 ** 0.5


def test_line_chart_with_a_series_limit(api, datasets):
    """Superset joins the chart's aggregate to its own top 3 regions (series_limit): the
    gateway releases the monthly counts by region once and keeps the 3 regions with the
    highest released totals. The same chart without the limit is the same release (a
    free repeat), so the ranking can be checked against it exactly."""
    query = {"columns": [axis("purchased_on", "P1M"), "region"], "metrics": ["count"], "orderby": [["count", False]],
             "filters": [{"col": "purchased_on", "op": "TEMPORAL_RANGE", "val": "2026-01-01 : 2026-07-01"}],
             "row_limit": 10000, "series_columns": ["region"]}
    limited = chart_data(api, datasets["purchases"], "echarts_timeseries_line",
                         {**query, "series_limit": 3, "series_limit_metric": "count"})
    assert "series_limit" in limited["query"] and "LIMIT 3" in limited["query"]
    every = chart_data(api, datasets["purchases"], "echarts_timeseries_line", {**query, "series_limit": 0})
    totals: dict = {}
    for row in every["data"]:
        totals[row["region"]] = totals.get(row["region"], 0) + row["count"]
    top = set(sorted(totals, key=lambda region: (-totals[region], region))[:3])
    assert {row["region"] for row in limited["data"]} == top
    key = lambda row: (row["purchased_on"], row["region"], row["count"])  # noqa: E731
    assert sorted(map(key, limited["data"])) == sorted(key(r) for r in every["data"] if r["region"] in top)


def test_table_chart_and_its_row_count(api, datasets):
    query = {"columns": ["region", "category"], "metrics": ["count", metric("SUM", "amount", "SUM(amount)")],
             "orderby": [["count", False]], "row_limit": 1000, "post_processing": []}
    table = chart_data(api, datasets["purchases"], "table", query)
    assert table["colnames"] == ["region", "category", "count", "SUM(amount)"]
    assert 40 <= table["rowcount"] <= 96  # 8 regions x 12 categories, small groups suppressed
    assert all(row["region"] in REGIONS for row in table["data"])
    # Server pagination asks for the row count around the same aggregate: answered from its release.
    counted = chart_data(api, datasets["purchases"], "table", {**query, "is_rowcount": True, "row_limit": 0})
    assert "AS rowcount_qry" in counted["query"]
    assert counted["data"] == [{"rowcount": table["rowcount"]}]


def test_pie_chart_of_categories(api, datasets, engine):
    result = chart_data(api, datasets["purchases"], "pie", {
        "columns": ["category"], "metrics": ["count"], "orderby": [["count", False]], "row_limit": 100})
    assert len(result["data"]) == 12
    truth = exact(engine, "SELECT count(*) AS n FROM purchases")[0]["n"]
    assert abs(sum(row["count"] for row in result["data"]) - truth) < 6 * COUNT_SD * 12 ** 0.5


def test_big_number_of_households_in_a_quarter(api, datasets, engine):
    result = chart_data(api, datasets["purchases"], "big_number_total", {
        "columns": [], "metrics": [metric("COUNT_DISTINCT", "household_id", "households")],
        "filters": [{"col": "purchased_on", "op": "TEMPORAL_RANGE", "val": "2026-03-01 : 2026-06-01"}]})
    [row] = result["data"]
    truth = exact(engine, "SELECT count(DISTINCT household_id) AS n FROM purchases WHERE purchased_on >= "
                          "DATE '2026-03-01' AND purchased_on < DATE '2026-06-01'")[0]["n"]
    assert abs(row["households"] - truth) < 6 * COUNT_SD


def test_filter_value_lists(api, datasets):
    """Explore's filter boxes ask SELECT DISTINCT region FROM purchases: GROUP BY region, under the same rules."""
    regions = api.get(f"/api/v1/datasource/table/{datasets['purchases']}/column/region/values/")["result"]
    assert set(regions) == REGIONS
    channels = api.get(f"/api/v1/datasource/table/{datasets['impressions']}/column/channel/values/")["result"]
    assert set(channels) == {"ctv", "web", "mobile", "audio"}


def test_a_chart_on_a_sql_dataset(api, database):
    """A virtual dataset: Superset wraps it as FROM (<aggregate>) AS virtual_table; the outer query runs on
    the released rows."""
    sql = "SELECT region, category, count(*) AS n FROM purchases GROUP BY region, category"
    dataset = api.post("/api/v1/dataset/", {"database": database, "schema": "public", "table_name": "region_category",
                                            "sql": sql}, expect=201)["id"]
    result = chart_data(api, dataset, "echarts_timeseries_bar", {
        "columns": [axis("region")], "metrics": [metric("SUM", "n", "purchases")], "orderby": [["purchases", False]],
        "row_limit": 100})
    assert "AS virtual_table" in result["query"]
    assert {row["region"] for row in result["data"]} == REGIONS


def sql_lab(api: Api, database: int, sql: str, expect: int = 200) -> dict:
    return api.post("/api/v1/sqllab/execute/", {"database_id": database, "sql": sql, "schema": "public",
                                                "runAsync": False, "queryLimit": 1000}, expect=expect)


def test_sql_lab_runs_an_aggregate(api, database, engine):
    answer = sql_lab(api, database, "SELECT region, count(DISTINCT household_id) AS households FROM purchases "
                                    "GROUP BY region ORDER BY region")
    assert answer["status"] == "success"
    released = {row["region"]: row["households"] for row in answer["data"]}
    truth = {r["region"]: r["n"] for r in exact(engine, "SELECT region, count(DISTINCT household_id) AS n "
                                                        "FROM purchases GROUP BY region")}
    assert set(released) == set(truth) == REGIONS
    assert abs(sum(released.values()) - sum(truth.values())) < 6 * COUNT_SD * len(REGIONS) ** 0.5


def test_refusals_carry_the_rule_and_the_hint(api, database, datasets):
    refused = sql_lab(api, database, "SELECT * FROM purchases", expect=500)
    message = refused["errors"][0]["message"]
    assert "rule: query.not_aggregated" in message and "HINT:  add GROUP BY" in message
    by_household = chart_data(api, datasets["purchases"], "table", {"columns": ["household_id"], "metrics": [],
                                                                    "row_limit": 100}, expect=400)
    assert "rule: column.join_key_in_group_by" in by_household["message"] and "HINT:" in by_household["message"]


def test_intervals_as_columns_through_the_connection_options(api, database, engine):
    """cleanroom.intervals=on in the connection's options: each noisy column gets <name>_low / <name>_high."""
    extra = {"engine_params": {"connect_args": {"options": "-c cleanroom.intervals=on"}}}
    api.call("PUT", f"/api/v1/database/{database}", json={"extra": json.dumps(extra)})
    answer = sql_lab(api, database, "SELECT region, count(*) AS n FROM purchases GROUP BY region")
    assert [c["name"] for c in answer["columns"]] == ["region", "n", "n_low", "n_high"]
    # The intervals are the noise's; purchases lose 0.6% to contribution bounds (impressions 10%: not here).
    truth = {r["region"]: r["n"] for r in exact(engine, "SELECT region, count(*) AS n FROM purchases GROUP BY region")}
    for row in answer["data"]:
        low, high = row["n_low"], row["n_high"]
        assert low <= row["n"] <= high
        width = high - low  # a 95% interval; the truth lies within a width of it but once in millions
        assert low - width <= truth[row["region"]] <= high + width
    # A chart on a SQL dataset with error bars: the dataset's query names n_low / n_high, and the
    # chart's outer query (MAX(n_low) ... FROM (<aggregate>) AS virtual_table) reads them.
    sql = "SELECT region, count(*) AS n FROM purchases GROUP BY region"  # its columns: region, n, n_low, n_high
    dataset = api.post("/api/v1/dataset/", {"database": database, "schema": "public", "table_name": "region_bars",
                                            "sql": sql}, expect=201)["id"]
    result = chart_data(api, dataset, "echarts_timeseries_bar", {
        "columns": [axis("region")], "row_limit": 100, "orderby": [["count", False]],
        "metrics": [metric("MAX", "n", "count"), metric("MAX", "n_low", "low"), metric("MAX", "n_high", "high")]})
    assert "AS virtual_table" in result["query"]
    bars = {row["region"]: row for row in result["data"]}
    assert set(bars) == REGIONS and all(b["low"] <= b["count"] <= b["high"] for b in bars.values())
