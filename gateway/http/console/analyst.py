"""The analyst's page: schema browser, SQL editor and templates, EXPLAIN before
running, the released result (table, chart, protection notes, download), the
budget and the query history. Statements go to the engine exactly as the API's
POST /v1/query, /v1/templates/<name>/run and /v1/explain send them, with
front_end "console" in the audit log."""

from __future__ import annotations

import json

from flask import Response, g, render_template, request

from gateway.engine.types import QueryRequest
from gateway.errors import GatewayError
from gateway.http import problems
from gateway.http.console import blueprint
from gateway.http.console.views import engine, require_page, session, store

FRONT_END = "console"
MAX_HISTORY_TEXT = 20_000  # characters of a statement kept in the history


def _statement(body: dict) -> dict:
    """{"sql": ...} or {"template": ...} with checked params, from a JSON body or a form."""
    from gateway.http.requests import check_params

    sql, template = body.get("sql"), body.get("template")
    if (sql is None) == (template is None) or not isinstance(sql or template, str):
        raise problems.InvalidBody('exactly one of "sql" and "template" is required, as a string')
    params = check_params(body.get("params", [] if sql is not None else {}), allow_list=sql is not None)
    return {"sql": sql, "params": params} if sql is not None else {"template": template, "params": params}


def _request(statement: dict, room) -> QueryRequest:
    return QueryRequest(user=session().user, cleanroom=room.name, front_end=FRONT_END,
                        request_id=g.request_id, **statement)


def _json_body() -> dict:
    from gateway.http.requests import json_body

    return json_body(allowed={"sql", "template", "params"}, required=True)


def _remember(room, statement: dict, outcome: str) -> None:
    kind = "sql" if "sql" in statement else "template"
    params = statement["params"]
    store().remember(session().user, room.name, kind, statement.get("sql") or statement["template"],
                     dict(params) if kind == "template" else list(params), outcome[:300], g.request_id)


def _run(statement: dict, room):
    """The engine's release, remembered in the history; a refusal is remembered too, then raised."""
    try:
        release = engine().run(_request(statement, room))
    except GatewayError as error:
        _remember(room, statement, f"{error.rule or 'error'}: {error.message}")
        raise
    _remember(room, statement, f"{release.table.num_rows} row(s), {release.authorised_by}")
    return release


@blueprint.get("/analyst")
def analyst():
    from gateway.http.render import table_json, template_json

    room = require_page("analyst")
    user = session().user
    tables = [table_json(t) for t in engine().tables(user, room.name)]
    templates = [template_json(t) for t in engine().templates(user, room.name)]
    return render_template("analyst.html", room=room, tables=tables, templates=templates,
                           budget=engine().budget(user, room.name), history=store().history(user, room.name))


@blueprint.post("/api/explain")
def explain():
    room = require_page("analyst")
    return engine().explain(_request(_statement(_json_body()), room))


@blueprint.post("/api/run")
def run():
    from gateway.http.render import release_json

    room = require_page("analyst")
    body = json.dumps(release_json(_run(_statement(_json_body()), room)), allow_nan=False, separators=(",", ":"))
    return Response(body, mimetype="application/json")


@blueprint.get("/api/budget")
def budget():
    room = require_page("analyst")
    return engine().budget(session().user, room.name)


@blueprint.get("/api/history")
def history():
    room = require_page("analyst")
    return {"cleanroom": room.name, "history": store().history(session().user, room.name)}


@blueprint.post("/analyst/download")
def download():
    """The statement's result as a CSV or Arrow file (a form POST, so nothing is in the URL).
    Runs it again: under differential privacy a repeat is the same answer, free."""
    from gateway.http.render import release_response
    from gateway.http.requests import ARROW_TYPE, CSV_TYPE

    room = require_page("analyst")
    try:
        body = json.loads(request.form.get("statement", ""))
    except ValueError:
        raise problems.InvalidBody("the statement to download is not valid JSON") from None
    if not isinstance(body, dict) or set(body) - {"sql", "template", "params"}:
        raise problems.InvalidBody('the statement must be an object with "sql" or "template" and "params"')
    arrow = request.form.get("format") == "arrow"
    response = release_response(_run(_statement(body), room), ARROW_TYPE if arrow else CSV_TYPE)
    filename = f"{room.name}-{g.request_id}.{'arrows' if arrow else 'csv'}"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
