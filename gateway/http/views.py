"""The HTTP API's query endpoints, as a Flask Blueprint the app registers:

    GET  /v1/health                     no token: status and policy counts
    GET  /v1/openapi.json               no token: the API's description
    GET  /v1/metrics                    operators: quota usage (Prometheus text)
    GET  /v1/tables, /v1/templates      what the caller may query
    GET  /v1/models                     model assets the caller may score (docs/models.md)
    POST /v1/train                      fit a DP model on a training template's rows
    POST /v1/query                      a statement; JSON, CSV or Arrow back
    POST /v1/templates/<name>/run       an approved template
    GET  /v1/budget                     the caller's privacy budget
    POST /v1/explain                    what a statement would cost; runs nothing

They translate requests into QueryRequests and answers into responses; the
engine decides. The app has authenticated the caller (g.user) before a view runs.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, g, request

import gateway
from gateway.engine.types import QueryRequest
from gateway.errors import Refused
from gateway.http import problems
from gateway.http.openapi import openapi_document
from gateway.http.render import release_response, table_json, template_json
from gateway.http.requests import check_params, choose_cleanroom, current_engine, json_body, result_media_type
from gateway.quotas.metrics import CONTENT_TYPE, exposition

blueprint = Blueprint("api", __name__)
PUBLIC_ENDPOINTS = {"api.health", "api.openapi"}  # no token: probes and API docs


@blueprint.get("/v1/health")
def health():
    current = current_engine()
    return {
        "status": "ok",
        "version": gateway.__version__,
        "cleanrooms_loaded": len(current.cleanrooms),
        "policies": current.policy_status(detail=False),  # counts only: health needs no token
    }


@blueprint.get("/v1/metrics")
def metrics():
    """Quota usage of every analyst and collaborator (Prometheus text), for operators only."""
    current = current_engine()
    if g.user not in current.config.operators:
        raise Refused("only the gateway's operators may read its metrics", rule="metrics.operators_only",
                      hint="the gateway config lists them under operators:")
    context = current.context
    return Response(exposition(context.quotas, context.cleanrooms), content_type=CONTENT_TYPE)


@blueprint.get("/v1/openapi.json")
def openapi():
    return openapi_document()


@blueprint.get("/v1/tables")
def tables():
    cleanroom = choose_cleanroom(current_engine(), g.user, request.args.get("cleanroom"))
    listed = current_engine().tables(g.user, cleanroom)
    return {"cleanroom": cleanroom, "tables": [table_json(t) for t in listed]}


@blueprint.get("/v1/models")
def models():
    """Model assets: name, owner, inputs, output and bounds, sha256; never the file (docs/models.md)."""
    cleanroom = choose_cleanroom(current_engine(), g.user, request.args.get("cleanroom"))
    return {"cleanroom": cleanroom, "models": current_engine().models(g.user, cleanroom)}


@blueprint.post("/v1/train")
def train():
    """Fit a DP regression on a training template's rows; the epsilon is charged to the caller."""
    body = json_body(allowed={"template", "params", "name", "epsilon", "cleanroom"}, required=True)
    if not isinstance(body.get("template"), str):
        raise problems.InvalidBody('"template" is required and must be a string')
    params = check_params(body.get("params", {}), allow_list=False)
    cleanroom = choose_cleanroom(current_engine(), g.user, body.get("cleanroom"))
    receipt = current_engine().train(g.user, cleanroom, body["template"], params, body.get("name"),
                                     body.get("epsilon"))
    row = receipt.table.to_pylist()[0]
    return {"cleanroom": cleanroom, "model": row["model"], "owner": row["owner"], "sha256": row["sha256"],
            "epsilon": row["epsilon"], "declaration": json.loads(row["declaration"]), "notices": list(receipt.notices)}


@blueprint.get("/v1/templates")
def templates():
    cleanroom = choose_cleanroom(current_engine(), g.user, request.args.get("cleanroom"))
    listed = current_engine().templates(g.user, cleanroom)
    return {"cleanroom": cleanroom, "templates": [template_json(t) for t in listed]}


@blueprint.post("/v1/query")
def query():
    body = json_body(allowed={"sql", "params", "cleanroom"}, required=True)
    sql = body.get("sql")
    if not isinstance(sql, str):
        raise problems.InvalidBody('"sql" is required and must be a string')
    params = check_params(body.get("params", []), allow_list=True)
    return _run(body, sql=sql, params=params)


@blueprint.post("/v1/templates/<name>/run")
def run_template(name: str):
    body = json_body(allowed={"params", "cleanroom"}, required=False)
    params = check_params(body.get("params", {}), allow_list=False)
    return _run(body, template=name, params=params)


@blueprint.get("/v1/budget")
def budget():
    cleanroom = choose_cleanroom(current_engine(), g.user, request.args.get("cleanroom"))
    return current_engine().budget(g.user, cleanroom)


@blueprint.post("/v1/explain")
def explain():
    """What a query (or template run) would cost and how it would be protected; runs nothing."""
    body = json_body(allowed={"sql", "template", "params", "cleanroom"}, required=True)
    sql, template = body.get("sql"), body.get("template")
    if (sql is None) == (template is None) or not isinstance(sql or template, str):
        raise problems.InvalidBody('exactly one of "sql" and "template" is required, as a string')
    params = check_params(body.get("params", [] if sql is not None else {}), allow_list=sql is not None)
    cleanroom = choose_cleanroom(current_engine(), g.user, body.get("cleanroom"))
    what = {"sql": sql} if sql is not None else {"template": template}
    return current_engine().explain(QueryRequest(user=g.user, cleanroom=cleanroom, front_end="http",
                                                 request_id=g.request_id, params=params, **what))


def _run(body: dict, **what) -> Response:
    chosen = body.get("cleanroom", request.args.get("cleanroom"))
    media_type = result_media_type()
    cleanroom = choose_cleanroom(current_engine(), g.user, chosen)
    query_request = QueryRequest(user=g.user, cleanroom=cleanroom, front_end="http", request_id=g.request_id, **what)
    return release_response(current_engine().run(query_request), media_type)
