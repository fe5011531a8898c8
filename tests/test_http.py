"""The HTTP API through a real gunicorn server on the demo clean room."""

from __future__ import annotations

import csv
import io
import json
import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from gateway.auth import hash_token, user_for_token
from gateway.config_model import GatewayConfig, User
from tests.roomkit import approve_all

TOKEN = "analyst"
ALLOWED_SQL = (
    "SELECT region, COUNT(DISTINCT household_id) AS households, SUM(amount) AS revenue "
    "FROM purchases GROUP BY region ORDER BY region"
)
REFUSED_SQL = "SELECT household_id, amount FROM purchases"
PROBLEM_TYPE = "application/problem+json"


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0]


def call(base_url, method, path, body=None, *, token=TOKEN, headers=None, raw: bytes | None = None):
    """One request; HTTP errors come back as replies, never as exceptions."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers.setdefault("Authorization", f"Bearer {token}")
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base_url + path, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            reply = Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        reply = Reply(error.code, error.headers, error.read())
    assert reply.headers.get("X-Request-Id"), f"no X-Request-Id on {method} {path}"
    assert b"Traceback" not in reply.body, reply.body
    return reply


def assert_problem(reply: Reply, status: int, slug: str | None = None, sqlstate: str | None = None):
    assert reply.status == status, reply.body
    assert reply.content_type == PROBLEM_TYPE
    problem = reply.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://cleanroom.dev/problems/")
    assert problem["request_id"] == reply.headers["X-Request-Id"]
    assert {"title", "detail", "instance", "rule", "hint", "sqlstate"} <= set(problem)
    assert problem["rule"], "every refusal names the check that made it"
    if slug:
        assert problem["type"].endswith("/" + slug)
    if sqlstate:
        assert problem["sqlstate"] == sqlstate
    return problem


# --- tokens ----------------------------------------------------------------


def test_user_for_token_matches_only_the_right_hash():
    config = GatewayConfig(
        path=Path("gateway.yaml"),
        policies=(),
        sources={},
        users={
            "ann": User("ann", token_sha256=hash_token("ann-secret")),
            "bob": User("bob", token_sha256=hash_token("bob-secret").upper()),
            "pg_only": User("pg_only"),
        },
    )
    assert user_for_token(config, "ann-secret") == "ann"
    assert user_for_token(config, "bob-secret") == "bob"
    assert user_for_token(config, "nobody") is None
    assert user_for_token(config, "") is None


def test_demo_token_hash_matches_config():
    assert hash_token("analyst") == "f44ceb062e35dfeea6ed7f8524d53bb0bff19f553e25cae7ef4850e4185ccbba"


# --- authentication and routing ----------------------------------------------


def test_health_and_openapi_need_no_token(http_server):
    health = call(http_server, "GET", "/v1/health", token=None)
    assert health.status == 200
    assert health.json()["status"] == "ok"
    assert health.json()["cleanrooms_loaded"] == 1
    assert call(http_server, "GET", "/v1/openapi.json", token=None).json()["openapi"].startswith("3.1")


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_bad_token_is_401(http_server, token):
    reply = call(http_server, "GET", "/v1/tables", token=token)
    assert_problem(reply, 401, "not-authenticated", "28000")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_bad_token_on_query_is_401_before_anything_else(http_server):
    reply = call(http_server, "POST", "/v1/query", raw=b"{not json", token="wrong",
                 headers={"Content-Type": "application/json"})
    assert_problem(reply, 401)


def test_unknown_route_is_404_problem(http_server):
    assert_problem(call(http_server, "GET", "/v1/nothing-here"), 404, "not-found")


def test_wrong_method_is_405_problem(http_server):
    reply = call(http_server, "GET", "/v1/query")
    assert_problem(reply, 405, "method-not-allowed")
    assert "POST" in reply.headers["Allow"]


def test_routing_errors_come_before_authentication(http_server):
    assert_problem(call(http_server, "GET", "/v1/nothing-here", token=None), 404, "not-found")
    assert_problem(call(http_server, "POST", "/v1/health", token=None, raw=b""), 405)


def test_unknown_cleanroom_is_404(http_server):
    reply = call(http_server, "GET", "/v1/tables?cleanroom=elsewhere")
    assert_problem(reply, 404, "unknown-cleanroom", "3D000")


# --- catalogue ---------------------------------------------------------------


def test_tables_lists_schema_with_roles_and_no_hidden_columns(http_server):
    reply = call(http_server, "GET", "/v1/tables")
    assert reply.status == 200
    listing = reply.json()
    assert listing["cleanroom"] == "demo"
    tables = {t["name"]: t for t in listing["tables"]}
    assert {"purchases", "impressions", "regions"} <= set(tables)
    purchases = {c["name"]: c for c in tables["purchases"]["columns"]}
    assert "card_last4" not in purchases
    assert purchases["household_id"]["role"] == "join_key"
    assert purchases["amount"]["role"] == "measure"
    assert purchases["amount"]["bounds"] == {"lower": 0, "upper": 500}
    assert "north" in purchases["region"]["values"]
    assert tables["regions"]["public"] is True
    assert "card_last4" not in reply.body.decode()
    for table in listing["tables"]:  # schema only: nothing that counts or shows rows
        assert not {"rows", "row_count", "count"} & set(table)


def test_templates_list_parameters(http_server):
    reply = call(http_server, "GET", "/v1/templates")
    assert reply.status == 200
    templates = {t["name"]: t for t in reply.json()["templates"]}
    (campaign,) = templates["campaign_reach"]["parameters"]
    assert campaign["name"] == "campaign" and campaign["type"] == "enum"
    assert "spring_sale" in campaign["values"]


# --- queries -----------------------------------------------------------------


def test_allowed_aggregate_as_json(http_server):
    reply = call(http_server, "POST", "/v1/query", {"sql": ALLOWED_SQL})
    assert reply.status == 200, reply.body
    assert reply.content_type == "application/json"
    result = reply.json()
    assert [c["name"] for c in result["columns"]] == ["region", "households", "revenue"]
    assert result["row_count"] == len(result["rows"]) > 0
    assert result["request_id"] == reply.headers["X-Request-Id"]
    assert result["authorised_by"] == "rule:cross_party_aggregates"
    assert result["min_group_size"] >= 10
    assert isinstance(result["notices"], list)
    for region, households, _ in result["rows"]:
        assert isinstance(region, str) and households >= result["min_group_size"]


def test_allowed_aggregate_as_csv(http_server):
    json_rows = call(http_server, "POST", "/v1/query", {"sql": ALLOWED_SQL}).json()["rows"]
    reply = call(http_server, "POST", "/v1/query", {"sql": ALLOWED_SQL}, headers={"Accept": "text/csv"})
    assert reply.status == 200 and reply.content_type == "text/csv"
    header, *rows = list(csv.reader(io.StringIO(reply.body.decode())))
    assert header == ["region", "households", "revenue"]
    assert [r[0] for r in rows] == [r[0] for r in json_rows]
    assert reply.headers["X-Authorised-By"] == "rule:cross_party_aggregates"


def test_allowed_aggregate_as_arrow(http_server):
    reply = call(http_server, "POST", "/v1/query", {"sql": ALLOWED_SQL},
                 headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert reply.status == 200 and reply.content_type == "application/vnd.apache.arrow.stream"
    table = pa.ipc.open_stream(reply.body).read_all()
    assert table.column_names == ["region", "households", "revenue"]
    assert table.num_rows > 0


def test_positional_and_named_parameters(http_server):
    sql = "SELECT COUNT(DISTINCT household_id) AS households FROM purchases WHERE region = {}"
    positional = call(http_server, "POST", "/v1/query", {"sql": sql.format("$1"), "params": ["north"]})
    named = call(http_server, "POST", "/v1/query", {"sql": sql.format(":region"), "params": {"region": "north"}})
    assert positional.status == named.status == 200, (positional.body, named.body)
    assert positional.json()["rows"] == named.json()["rows"]


def test_unacceptable_media_type_is_406(http_server):
    reply = call(http_server, "POST", "/v1/query", {"sql": ALLOWED_SQL}, headers={"Accept": "image/png"})
    assert_problem(reply, 406, "not-acceptable")


def test_refused_query_is_403_with_rule_and_hint(http_server):
    problem = assert_problem(call(http_server, "POST", "/v1/query", {"sql": REFUSED_SQL}), 403, "refused", "42501")
    assert problem["rule"] and problem["hint"]


def test_syntax_error_is_400(http_server):
    reply = call(http_server, "POST", "/v1/query", {"sql": "SELEC region FROM purchases"})
    assert_problem(reply, 400, sqlstate="42601")


@pytest.mark.parametrize(
    "raw, content_type, status, slug",
    [
        (b"{not json", "application/json", 400, "malformed-json"),
        (b"", "application/json", 400, "malformed-json"),
        (b"\xff\xfe", "application/json", 400, "malformed-json"),
        (b"[" * 100_000, "application/json", 400, "malformed-json"),
        (b'["SELECT 1"]', "application/json", 400, "invalid-body"),
        (b"{}", "application/json", 400, "invalid-body"),
        (b'{"sql": 42}', "application/json", 400, "invalid-body"),
        (b'{"sql": null}', "application/json", 400, "invalid-body"),
        (b'{"sql": "SELECT 1", "parms": []}', "application/json", 400, "invalid-body"),
        (b'{"sql": "SELECT 1", "params": "x"}', "application/json", 400, "invalid-body"),
        (b'{"sql": "SELECT 1", "params": [[1]]}', "application/json", 400, "invalid-body"),
        (b'{"sql": "SELECT 1", "cleanroom": 7}', "application/json", 404, "unknown-cleanroom"),
        (b'{"sql": "SELECT 1"}', "text/plain", 415, "unsupported-media-type"),
        (b"SELECT 1", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
    ],
)
def test_bad_bodies_are_4xx_problems(http_server, raw, content_type, status, slug):
    reply = call(http_server, "POST", "/v1/query", raw=raw, headers={"Content-Type": content_type})
    assert_problem(reply, status, slug)


def test_oversized_body_is_413(http_server):
    body = json.dumps({"sql": "SELECT 1 -- " + "x" * (2 * 1024 * 1024)}).encode()
    reply = call(http_server, "POST", "/v1/query", raw=body, headers={"Content-Type": "application/json"})
    assert_problem(reply, 413, "body-too-large")


@pytest.mark.parametrize(
    "sql",
    [
        "",
        ";",
        "SELECT",
        "\x00",
        "SELECT 'unterminated",
        "SELECT * FROM purchases; DROP TABLE purchases",
        "DROP TABLE purchases",
        "COPY purchases TO '/tmp/x.csv'",
        "ATTACH '/etc/passwd' AS p",
        "SELECT card_last4 FROM purchases",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT region FROM nowhere GROUP BY region",
        "SELECT " + "(" * 5000 + "1" + ")" * 5000,
        "SELECT COUNT(*) FROM purchases WHERE amount = $1",
        "SELECT 1e999999, 'é' || 'ü' FROM purchases",
    ],
)
def test_no_sql_text_gives_a_500(http_server, sql):
    reply = call(http_server, "POST", "/v1/query", {"sql": sql})
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert_problem(reply, reply.status)


def test_values_are_encoded_as_documented(http_server):
    sql = (
        "SELECT DATE '2024-01-31' AS d, TIMESTAMP '2024-01-31 10:00:00' AS t, "
        "CAST(1.5 AS DECIMAL) AS m, CAST('nan' AS DOUBLE) AS nan, 1e308 * 10 AS inf, "
        "CAST(NULL AS VARCHAR) AS nothing"
    )
    reply = call(http_server, "POST", "/v1/query", {"sql": sql})
    assert reply.status == 200, reply.body

    def strict(constant):
        raise AssertionError(f"{constant} is not JSON")

    result = json.loads(reply.body, parse_constant=strict)
    assert [c["type"] for c in result["columns"]][:3] == ["DATE", "TIMESTAMP", "DECIMAL(18,3)"]
    assert result["rows"] == [["2024-01-31", "2024-01-31T10:00:00", "1.500", None, None, None]]
    csv_reply = call(http_server, "POST", "/v1/query", {"sql": sql}, headers={"Accept": "text/csv"})
    assert csv_reply.body.decode().splitlines()[1] == "2024-01-31,2024-01-31T10:00:00,1.500,,,"


def test_internal_fault_shows_request_id_only(engine, monkeypatch, caplog):
    from gateway.http.app import create_app

    def fail(request):
        raise RuntimeError("card 4242 of household 17")

    monkeypatch.setattr(engine, "run", fail)
    client = create_app(lambda: engine).test_client()
    reply = client.post("/v1/query", json={"sql": ALLOWED_SQL}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 500
    problem = reply.get_json()
    assert problem["request_id"] == reply.headers["X-Request-Id"]
    assert "4242" not in reply.get_data(as_text=True)
    assert "Traceback" not in reply.get_data(as_text=True)
    logged = [r for r in caplog.records if problem["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info  # the operator gets the traceback, by request id


def test_engine_that_cannot_start_gives_503(caplog):
    from gateway.http.app import create_app

    def broken_engine():
        raise OSError("cannot open /secret/path/retail.duckdb")

    reply = create_app(broken_engine).test_client().get("/v1/health")
    assert reply.status_code == 503
    assert "/secret" not in reply.get_data(as_text=True)
    assert reply.get_json()["type"].endswith("/not-ready")


# --- templates ---------------------------------------------------------------


def test_template_runs(http_server):
    reply = call(http_server, "POST", "/v1/templates/campaign_reach/run", {"params": {"campaign": "spring_sale"}})
    assert reply.status == 200, reply.body
    result = reply.json()
    assert result["authorised_by"] == "template:campaign_reach"
    assert [c["name"] for c in result["columns"]] == ["region", "reach", "frequency", "conversion_rate"]


def test_template_with_bad_parameter_is_400(http_server):
    reply = call(http_server, "POST", "/v1/templates/campaign_reach/run", {"params": {"campaign": "no_such"}})
    assert_problem(reply, 400, sqlstate="22023")


def test_template_without_required_parameter_is_400(http_server):
    reply = call(http_server, "POST", "/v1/templates/campaign_reach/run", {})
    assert_problem(reply, 400)


def test_unknown_template_is_404(http_server):
    reply = call(http_server, "POST", "/v1/templates/no_such_template/run", {"params": {}})
    assert_problem(reply, 404, "unknown-template")


# --- the API document and load ---------------------------------------------------


def test_openapi_document_matches_routes(http_server):
    from gateway.http.app import create_app

    def unused_engine():
        raise AssertionError("listing routes must not build an engine")

    served = call(http_server, "GET", "/v1/openapi.json", token=None).json()
    source = yaml.safe_load((Path(__file__).parent.parent / "gateway/http/openapi.yaml").read_text())
    assert served == source
    app_routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in create_app(unused_engine).url_map.iter_rules()
        if not rule.endpoint.startswith("console.")  # the web console's pages are not the API (docs/console.md)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert app_routes == documented


def test_concurrent_requests_all_succeed(http_server):
    def one(i: int) -> int:
        if i % 2:
            return call(http_server, "POST", "/v1/query", {"sql": ALLOWED_SQL}).status
        return call(http_server, "GET", "/v1/tables").status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(one, range(40)))
    assert statuses == [200] * 40


def test_cleanroom_must_be_named_when_the_user_has_several(demo_config_path, tmp_path):
    from gateway.engine import Engine
    from gateway.http.app import create_app

    second = tmp_path / "second.yaml"
    second.write_text(Path(yaml.safe_load(demo_config_path.read_text())["policies"][0]).read_text()
                      .replace("cleanroom: demo", "cleanroom: second", 1))
    (tmp_path / "models").symlink_to(Path(__file__).parent.parent / "policies" / "models")  # its model files
    config = yaml.safe_load(demo_config_path.read_text())
    config["policies"].append(str(second))
    config["state_dir"] = str(tmp_path / "state")
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    engine = Engine.from_config_file(config_path)
    approve_all(engine)
    try:
        client = create_app(lambda: engine).test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        unnamed = client.get("/v1/tables", headers=auth)
        assert unnamed.status_code == 400
        assert unnamed.get_json()["type"].endswith("/ambiguous-cleanroom")
        assert "demo" in unnamed.get_json()["hint"] and "second" in unnamed.get_json()["hint"]
        assert client.get("/v1/tables?cleanroom=second", headers=auth).get_json()["cleanroom"] == "second"
        body = {"sql": "SELECT COUNT(DISTINCT household_id) AS n FROM purchases", "cleanroom": "second"}
        assert client.post("/v1/query?cleanroom=nowhere", json=body, headers=auth).status_code == 200
        assert client.get("/v1/health").get_json()["cleanrooms_loaded"] == 2
    finally:
        engine.close()
