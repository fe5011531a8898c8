"""What a request says, read and checked: the engine serving it, the caller (a
bearer token), the clean room, the JSON body and its parameters, and the media
type of the result. Bad input is a problem (gateway.http.problems), never a
traceback.
"""

from __future__ import annotations

import json
import logging

from flask import current_app, g, request

from gateway.auth import user_for_token
from gateway.errors import NotAuthenticated, UnknownCleanRoom
from gateway.http import problems

JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
ARROW_TYPE = "application/vnd.apache.arrow.stream"
RESULT_TYPES = [JSON_TYPE, CSV_TYPE, ARROW_TYPE]  # first wins ties, so */* gets JSON

log = logging.getLogger(__name__)


def current_engine():
    """The engine of this app (built on first use, see app.EngineHolder)."""
    try:
        return current_app.extensions["cleanroom_engine"].get()
    except Exception:
        log.exception("request %s: the engine could not be built", g.request_id)
        raise problems.NotReady(
            f"the gateway is not ready (request id {g.request_id})",
            hint="the operator can look up the request id in the gateway log",
        ) from None


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
