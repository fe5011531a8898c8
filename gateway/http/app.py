"""The HTTP front end's Flask app: the engine it serves (built once per process),
authentication before every non-public view, the request id on every response,
and errors as RFC 9457 problems. The endpoints are blueprints: the query API
(views.py), collaboration (collaboration.py) and the web console (console/).
It never decides policy: the engine does.

Every response carries X-Request-Id, the key to the operator's log and the audit log.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from flask import Flask, Response, g, request
from werkzeug import exceptions as http_errors

from gateway.engine.types import new_request_id
from gateway.errors import NotAuthenticated
from gateway.http import console, problems
from gateway.http.collaboration import blueprint as collaboration_blueprint
from gateway.http.requests import authenticate, current_engine
from gateway.http.views import PUBLIC_ENDPOINTS
from gateway.http.views import blueprint as api_blueprint

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # SQL and parameters only: 1 MiB is generous


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
    app.extensions["cleanroom_engine"] = EngineHolder(engine_factory)
    app.before_request(start)
    app.after_request(stamp)
    app.register_error_handler(Exception, handle)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(collaboration_blueprint)
    console.register(app)  # /console: the web console
    return app


def start() -> None:
    g.request_id = new_request_id()
    g.user = None
    # Routes are public (see /v1/openapi.json): a wrong path or method is
    # answered as such (404/405) before asking for a token.
    if request.routing_exception is None and request.endpoint not in PUBLIC_ENDPOINTS \
            and request.blueprint != "console":  # the console checks its own session cookie
        g.user = authenticate(current_engine().config)


def stamp(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id") or new_request_id()
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def handle(error: Exception) -> Response:
    request_id = g.get("request_id") or new_request_id()
    g.request_id = request_id
    problem = problems.as_problem(error)
    if problem is None:
        log.error("request %s: internal error", request_id, exc_info=error)
        return problems.internal_problem(request_id=request_id, instance=request.path)
    response = problems.problem_response(problem, request_id=request_id, instance=request.path)
    if isinstance(problem, NotAuthenticated):
        response.headers["WWW-Authenticate"] = 'Bearer realm="cleanroom"'
    if isinstance(problem, problems.MethodNotAllowed) and isinstance(error, http_errors.HTTPException):
        response.headers.extend([(k, v) for k, v in error.get_headers() if k == "Allow"])
    return response
