"""The HTTP front end: translates requests into QueryRequests and Releases into
JSON, CSV or Arrow. It never decides policy: the engine does.

Errors are RFC 9457 problems (gateway.http.problems); every response carries
X-Request-Id, the key to the operator's log and the audit log.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import logging
import math
import threading
from importlib import resources
from typing import Callable

import pyarrow as pa
import yaml
from flask import Flask, Response, g, request
from werkzeug import exceptions as http_errors

import gateway
from gateway.auth import user_for_token
from gateway.engine.types import QueryRequest, Release, new_request_id
from gateway.errors import GatewayError, NotAuthenticated, Refused, UnknownCleanRoom
from gateway.http import problems
from gateway.http.collaboration import blueprint as collaboration_blueprint

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # SQL and parameters only: 1 MiB is generous
PUBLIC_ENDPOINTS = {"health", "openapi"}  # no token: probes and API docs

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
ARROW_TYPE = "application/vnd.apache.arrow.stream"
RESULT_TYPES = [JSON_TYPE, CSV_TYPE, ARROW_TYPE]  # first wins ties, so */* gets JSON


class EngineHolder:
    """Builds the engine on first use, once per process: gunicorn workers fork
    first, and DuckDB connections must not cross a fork."""

    def __init__(self, factory: Callable[[], object]):
        self._factory = factory
        self._engine = None
        self._lock = threading.Lock()

    def get(self):
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = self._factory()
        return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None


def create_app(engine_factory: Callable[[], object]) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    holder = EngineHolder(engine_factory)
    app.extensions["cleanroom_engine"] = holder

    def engine():
        try:
            return holder.get()
        except Exception:
            log.exception("request %s: the engine could not be built", g.request_id)
            raise problems.NotReady(
                f"the gateway is not ready (request id {g.request_id})",
                hint="the operator can look up the request id in the gateway log",
            ) from None

    @app.before_request
    def start() -> None:
        g.request_id = new_request_id()
        g.user = None
        # Routes are public (see /v1/openapi.json): a wrong path or method is
        # answered as such (404/405) before asking for a token.
        if request.routing_exception is None and request.endpoint not in PUBLIC_ENDPOINTS \
                and request.blueprint != "console":  # the console checks its own session cookie
            g.user = authenticate(engine().config)

    @app.after_request
    def stamp(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id") or new_request_id()
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(Exception)
    def handle(error: Exception) -> Response:
        request_id = g.get("request_id") or new_request_id()
        g.request_id = request_id
        problem = as_problem(error)
        if problem is None:
            log.error("request %s: internal error", request_id, exc_info=error)
            return problems.internal_problem(request_id=request_id, instance=request.path)
        response = problems.problem_response(problem, request_id=request_id, instance=request.path)
        if isinstance(problem, NotAuthenticated):
            response.headers["WWW-Authenticate"] = 'Bearer realm="cleanroom"'
        if isinstance(problem, problems.MethodNotAllowed) and isinstance(error, http_errors.HTTPException):
            response.headers.extend([(k, v) for k, v in error.get_headers() if k == "Allow"])
        return response

    @app.get("/v1/health")
    def health():
        current = engine()
        return {
            "status": "ok",
            "version": gateway.__version__,
            "cleanrooms_loaded": len(current.cleanrooms),
            "policies": current.policy_status(detail=False),  # counts only: health needs no token
        }

    @app.get("/v1/metrics")
    def metrics():
        """Quota usage of every analyst and collaborator (Prometheus text), for operators only."""
        from gateway.quotas.metrics import CONTENT_TYPE, exposition

        current = engine()
        if g.user not in current.config.operators:
            raise Refused("only the gateway's operators may read its metrics", rule="metrics.operators_only",
                          hint="the gateway config lists them under operators:")
        context = current.context
        return Response(exposition(context.quotas, context.cleanrooms), content_type=CONTENT_TYPE)

    @app.get("/v1/openapi.json")
    def openapi():
        return openapi_document()

    @app.get("/v1/tables")
    def tables():
        cleanroom = choose_cleanroom(engine(), g.user, request.args.get("cleanroom"))
        listed = engine().tables(g.user, cleanroom)
        return {"cleanroom": cleanroom, "tables": [table_json(t) for t in listed]}

    @app.get("/v1/templates")
    def templates():
        cleanroom = choose_cleanroom(engine(), g.user, request.args.get("cleanroom"))
        listed = engine().templates(g.user, cleanroom)
        return {"cleanroom": cleanroom, "templates": [template_json(t) for t in listed]}

    @app.post("/v1/query")
    def query():
        body = json_body(allowed={"sql", "params", "cleanroom"}, required=True)
        sql = body.get("sql")
        if not isinstance(sql, str):
            raise problems.InvalidBody('"sql" is required and must be a string')
        params = check_params(body.get("params", []), allow_list=True)
        return run(body, sql=sql, params=params)

    @app.post("/v1/templates/<name>/run")
    def run_template(name: str):
        body = json_body(allowed={"params", "cleanroom"}, required=False)
        params = check_params(body.get("params", {}), allow_list=False)
        return run(body, template=name, params=params)

    @app.get("/v1/budget")
    def budget():
        cleanroom = choose_cleanroom(engine(), g.user, request.args.get("cleanroom"))
        return engine().budget(g.user, cleanroom)

    @app.post("/v1/explain")
    def explain():
        """What a query (or template run) would cost and how it would be protected; runs nothing."""
        body = json_body(allowed={"sql", "template", "params", "cleanroom"}, required=True)
        sql, template = body.get("sql"), body.get("template")
        if (sql is None) == (template is None) or not isinstance(sql or template, str):
            raise problems.InvalidBody('exactly one of "sql" and "template" is required, as a string')
        params = check_params(body.get("params", [] if sql is not None else {}), allow_list=sql is not None)
        cleanroom = choose_cleanroom(engine(), g.user, body.get("cleanroom"))
        what = {"sql": sql} if sql is not None else {"template": template}
        return engine().explain(QueryRequest(user=g.user, cleanroom=cleanroom, front_end="http",
                                             request_id=g.request_id, params=params, **what))

    def run(body: dict, **what) -> Response:
        chosen = body.get("cleanroom", request.args.get("cleanroom"))
        media_type = result_media_type()
        cleanroom = choose_cleanroom(engine(), g.user, chosen)
        query_request = QueryRequest(
            user=g.user, cleanroom=cleanroom, front_end="http", request_id=g.request_id, **what
        )
        return release_response(engine().run(query_request), media_type)

    app.register_blueprint(collaboration_blueprint)
    from gateway.http.console import register as add_console  # /console: the web console

    add_console(app)
    return app


def authenticate(config) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated(
            "a bearer token is required",
            rule="auth.bearer_token",
            hint="send the header 'Authorization: Bearer <token>'",
        )
    user = user_for_token(config, token)
    if user is None:
        raise NotAuthenticated(
            "the bearer token is not valid", rule="auth.bearer_token", hint="ask the operator for a token"
        )
    return user


def as_problem(error: Exception) -> GatewayError | None:
    """The client-safe form of an error, or None for an internal fault."""
    if isinstance(error, GatewayError):
        return error
    if isinstance(error, http_errors.RequestEntityTooLarge):
        return problems.BodyTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    if isinstance(error, http_errors.NotFound):
        return problems.RouteNotFound(f"no such endpoint: {request.path}")
    if isinstance(error, http_errors.MethodNotAllowed):
        return problems.MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    if isinstance(error, http_errors.HTTPException) and error.code and 400 <= error.code < 500:
        problem = problems.HttpProblem(error.description or "bad request")
        problem.http_status = error.code  # an instance attribute: the class keeps 400
        return problem
    return None


def choose_cleanroom(engine, user: str, chosen) -> str:
    """The named clean room if the user is an analyst there; else the user's only one."""
    mine = engine.cleanrooms_for(user)
    if chosen is not None:
        if not isinstance(chosen, str) or chosen not in mine:
            # The same answer whether the room exists or not: names are not public.
            raise UnknownCleanRoom(f"no clean room {chosen!r} for user {user!r}", rule="cleanroom.unknown")
        return chosen
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UnknownCleanRoom(f"user {user!r} is not an analyst in any clean room", rule="cleanroom.unknown")
    raise problems.AmbiguousCleanRoom(
        f"user {user!r} is an analyst in several clean rooms",
        hint="name one with the 'cleanroom' field or query parameter: " + ", ".join(sorted(mine)),
    )


def json_body(*, allowed: set[str], required: bool) -> dict:
    raw = request.get_data(cache=True)
    if not raw.strip() and not required:
        return {}
    if request.mimetype != JSON_TYPE:
        raise problems.UnsupportedMediaType(
            "the request body must be JSON", hint="send 'Content-Type: application/json'"
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:  # bad UTF-8, bad JSON, absurd nesting or digits
        raise problems.MalformedJson(f"the body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(body, dict):
        raise problems.InvalidBody("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        # Rejected rather than ignored: a misspelt "param" must not run with no parameters.
        raise problems.InvalidBody(
            f"unknown field(s): {', '.join(unknown)}", hint=f"allowed: {', '.join(sorted(allowed))}"
        )
    return body


def check_params(params, *, allow_list: bool):
    """Parameters are a list ($1, $2, ...) or an object (:name) of JSON scalars."""
    if isinstance(params, dict):
        values = list(params.values())
    elif isinstance(params, list) and allow_list:
        values = params
    else:
        kinds = "a list (for $1, $2, ...) or an object (for :name)" if allow_list else "an object"
        raise problems.InvalidBody(f'"params" must be {kinds}')
    for value in values:
        if isinstance(value, (dict, list)):
            raise problems.InvalidBody("parameter values must be strings, numbers, booleans or null")
    return dict(params) if isinstance(params, dict) else tuple(params)


def result_media_type() -> str:
    if not request.accept_mimetypes:  # no Accept header: JSON
        return JSON_TYPE
    best = request.accept_mimetypes.best_match(RESULT_TYPES)
    if best is None:
        raise problems.NotAcceptable(
            "results are available as JSON, CSV or Arrow", hint="Accept: " + ", ".join(RESULT_TYPES)
        )
    return best


# --- results -----------------------------------------------------------------


def release_response(release: Release, media_type: str) -> Response:
    if media_type == CSV_TYPE:
        response = Response(release_csv(release.table), mimetype=CSV_TYPE)
    elif media_type == ARROW_TYPE:
        response = Response(release_arrow(release.table), mimetype=ARROW_TYPE)
    else:
        body = json.dumps(release_json(release), allow_nan=False, separators=(",", ":"))
        return Response(body, mimetype=JSON_TYPE)
    # CSV and Arrow have no envelope: the release's provenance travels in headers.
    response.headers["X-Authorised-By"] = release.authorised_by
    if release.min_group_size is not None:
        response.headers["X-Min-Group-Size"] = str(release.min_group_size)
    for notice in release.notices:
        response.headers.add("X-Notice", json.dumps(notice)[1:-1])  # ASCII-safe header value
    return response


def release_json(release: Release) -> dict:
    table = release.table
    columns = [{"name": f.name, "type": sql_type(f.type)} for f in table.schema]
    rows = [list(map(json_value, row)) for row in zip(*(c.to_pylist() for c in table.columns))]
    if table.num_columns == 0:
        rows = [[] for _ in range(table.num_rows)]
    return {
        "columns": columns,
        "rows": rows,
        "row_count": table.num_rows,
        "request_id": release.request_id,
        "authorised_by": release.authorised_by,
        "min_group_size": release.min_group_size,
        "notices": list(release.notices),
        "protection": release.protection,  # differential privacy: how each noisy column was protected
    }


def release_csv(table: pa.Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(table.column_names)
    for row in zip(*(c.to_pylist() for c in table.columns)):
        writer.writerow(["" if v is None else csv_value(json_value(v)) for v in row])
    return out.getvalue()


def csv_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def release_arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def json_value(value):
    """One cell as JSON. Decimals become strings so no digit is lost. JSON has
    no NaN or infinity: they become null, as the engine's release already does."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def sql_type(arrow_type: pa.DataType) -> str:
    """Result column types in the SQL names /v1/tables uses (DuckDB's)."""
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP WITH TIME ZONE" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return sql_type(arrow_type.value_type) + "[]"
    if pa.types.is_dictionary(arrow_type):
        return sql_type(arrow_type.value_type)
    for test, name in SQL_TYPE_NAMES:
        if test(arrow_type):
            return name
    return str(arrow_type).upper()


SQL_TYPE_NAMES = [
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_int8, "TINYINT"),
    (pa.types.is_int16, "SMALLINT"),
    (pa.types.is_int32, "INTEGER"),
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_uint8, "UTINYINT"),
    (pa.types.is_uint16, "USMALLINT"),
    (pa.types.is_uint32, "UINTEGER"),
    (pa.types.is_uint64, "UBIGINT"),
    (pa.types.is_float32, "FLOAT"),
    (pa.types.is_float64, "DOUBLE"),
    (pa.types.is_string, "VARCHAR"),
    (pa.types.is_large_string, "VARCHAR"),
    (lambda t: pa.types.is_string_view(t), "VARCHAR"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_time, "TIME"),
    (pa.types.is_duration, "INTERVAL"),
    (pa.types.is_interval, "INTERVAL"),
    (pa.types.is_binary, "BLOB"),
    (pa.types.is_large_binary, "BLOB"),
    (pa.types.is_struct, "STRUCT"),
    (pa.types.is_null, "NULL"),
]


# --- catalogue ---------------------------------------------------------------


def table_json(table) -> dict:
    return {
        "name": table.name,
        "owner": table.owner,
        "public": table.public,
        "description": table.description,
        "columns": [
            {
                "name": c.name,
                "type": c.type,
                "role": getattr(c.role, "value", c.role),
                "description": c.description,
                "values": json_value(list(c.values)) if c.values is not None else None,
                "bounds": {"lower": c.bounds.lower, "upper": c.bounds.upper} if c.bounds else None,
                "buckets": _buckets_json(c.buckets),
            }
            for c in table.columns
        ],
    }


def _buckets_json(buckets) -> dict | None:
    if buckets is None:
        return None
    return {"from": buckets.start.isoformat(), "to": buckets.end.isoformat(), "by": [u.value for u in buckets.units]}


def template_json(template) -> dict:
    return {
        "name": template.name,
        "description": template.description.strip(),
        "min_group_size": template.min_group_size,
        "parameters": [
            {
                "name": p.name,
                "type": getattr(p.type, "value", p.type),
                "description": p.description,
                "values": json_value(list(p.values)) if p.values is not None else None,
                "minimum": json_value(p.minimum),
                "maximum": json_value(p.maximum),
                "pattern": p.pattern,
                "default": json_value(p.default),
                "required": p.default is None,
            }
            for p in template.parameters
        ],
    }


_openapi_cache: dict | None = None


def openapi_document() -> dict:
    global _openapi_cache
    if _openapi_cache is None:
        text = resources.files("gateway.http").joinpath("openapi.yaml").read_text(encoding="utf-8")
        _openapi_cache = yaml.safe_load(text)
    return _openapi_cache
