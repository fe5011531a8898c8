"""RFC 9457 problem details: the only shape an HTTP error ever has.

Engine errors (gateway.errors) map one to one; the HTTP layer adds its own
for requests that never reach the engine (bad JSON, wrong route, ...).
Anything else is an internal fault and shows the request id only.
"""

from __future__ import annotations

import json

from flask import Response, current_app, request
from werkzeug import exceptions as http_errors

from gateway.errors import GatewayError

PROBLEM_BASE = "https://cleanroom.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class HttpProblem(GatewayError):
    """A request the HTTP layer rejects before the engine sees it."""

    sqlstate = "08P01"  # protocol violation: the request itself is malformed
    http_status = 400
    title = "Bad request"
    type_slug = "bad-request"
    default_hint: str | None = None

    def __init__(self, message: str, *, rule: str | None = None, hint: str | None = None):
        # Like the engine's errors, each names the check that failed: "http.<slug>".
        rule = rule or "http." + self.type_slug.replace("-", "_")
        super().__init__(message, rule=rule, hint=hint or self.default_hint)


class MalformedJson(HttpProblem):
    title = "Malformed JSON body"
    type_slug = "malformed-json"
    default_hint = 'send a JSON object, e.g. {"sql": "SELECT ..."}'


class InvalidBody(HttpProblem):
    title = "Invalid request body"
    type_slug = "invalid-body"


class AmbiguousCleanRoom(HttpProblem):
    title = "Clean room not specified"
    type_slug = "ambiguous-cleanroom"


class UnsupportedMediaType(HttpProblem):
    http_status = 415
    title = "Unsupported media type"
    type_slug = "unsupported-media-type"


class NotAcceptable(HttpProblem):
    http_status = 406
    title = "Not acceptable"
    type_slug = "not-acceptable"


class BodyTooLarge(HttpProblem):
    sqlstate = "54000"
    http_status = 413
    title = "Request body too large"
    type_slug = "body-too-large"
    default_hint = "the body holds one SQL statement and its parameters, not data"


class RouteNotFound(HttpProblem):
    http_status = 404
    title = "Not found"
    type_slug = "not-found"
    default_hint = "see /v1/openapi.json for the API"


class MethodNotAllowed(HttpProblem):
    http_status = 405
    title = "Method not allowed"
    type_slug = "method-not-allowed"


class NotReady(HttpProblem):
    sqlstate = "57P03"  # cannot_connect_now
    http_status = 503
    title = "Gateway not ready"
    type_slug = "not-ready"


def problem_response(error: GatewayError, *, request_id: str, instance: str) -> Response:
    body = {
        "type": PROBLEM_BASE + error.type_slug,
        "title": error.title,
        "status": error.http_status,
        "detail": error.message,
        "instance": instance,
        "request_id": request_id,
        "sqlstate": error.sqlstate,
        "rule": error.rule,
        "hint": error.hint,
    }
    retry_after = getattr(error, "retry_after", None)  # quotas (gateway.errors.QuotaExceeded)
    if retry_after is not None:
        body["retry_after"] = retry_after
    response = Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=error.http_status,
        mimetype=PROBLEM_MEDIA_TYPE,
    )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)  # whole seconds (RFC 9110)
    return response


def internal_problem(*, request_id: str, instance: str) -> Response:
    """An internal fault: the exception text may hold data, so it stays in the log."""
    error = GatewayError(
        f"internal error (request id {request_id})",
        hint="the operator can look up the request id in the gateway log",
    )
    return problem_response(error, request_id=request_id, instance=instance)


def as_problem(error: Exception) -> GatewayError | None:
    """The client-safe form of an error, or None for an internal fault."""
    if isinstance(error, GatewayError):
        return error
    if isinstance(error, http_errors.RequestEntityTooLarge):
        return BodyTooLarge(f"the request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes")
    if isinstance(error, http_errors.NotFound):
        return RouteNotFound(f"no such endpoint: {request.path}")
    if isinstance(error, http_errors.MethodNotAllowed):
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    if isinstance(error, http_errors.HTTPException) and error.code and 400 <= error.code < 500:
        problem = HttpProblem(error.description or "bad request")
        problem.http_status = error.code  # an instance attribute: the class keeps 400
        return problem
    return None
