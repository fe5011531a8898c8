"""Logging in and out, the role check every page makes, CSRF, security headers
and error pages of the console."""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from pathlib import Path

from flask import Response, current_app, g, redirect, render_template, request, url_for
from werkzeug import exceptions as http_errors

from gateway.errors import GatewayError, NotAuthenticated, Refused
from gateway.http.console import blueprint
from gateway.http.console.sessions import ConsoleStore, Session, check_login
from gateway.policy.model import MemberRole

log = logging.getLogger(__name__)

SESSION_COOKIE = "cleanroom_session"
LOGIN_COOKIE = "cleanroom_login"  # double-submit token of the login form (before any session exists)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
PUBLIC_VIEWS = {"console.login", "console.static"}

# Scripts and styles only from /console/static: no inline script, no CDN.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# Which pages a user may open: page -> (title, test of a clean room's policy for the user).
PAGES = {
    "analyst": ("Query", lambda room, user: user in room.analysts),
    "approver": ("Approvals", lambda room, user: room.has_role(user, MemberRole.APPROVER)),
    "auditor": ("Audit log", lambda room, user: room.has_role(user, MemberRole.AUDITOR)),
    "outputs": ("Outputs", lambda room, user: room.collaborator_of(user) is not None),
}

_store_lock = threading.Lock()


def engine():
    return current_app.extensions["cleanroom_engine"].get()


def store() -> ConsoleStore:
    found = current_app.extensions.get("cleanroom_console")
    if found is None:
        with _store_lock:
            found = current_app.extensions.get("cleanroom_console")
            if found is None:
                found = ConsoleStore(Path(engine().config.state_dir) / "console.sqlite")
                current_app.extensions["cleanroom_console"] = found
    return found


def session() -> Session:
    return g.console_session


def rooms_for(page: str, user: str) -> list[str]:
    test = PAGES[page][1]
    return sorted(name for name, room in engine().context.cleanrooms.items() if test(room, user))


def pages_for(user: str) -> list[tuple[str, str]]:
    return [(page, title) for page, (title, _) in PAGES.items() if rooms_for(page, user)]


def require_page(page: str):
    """The clean room this page shows for the session's user, or Refused: the
    same policy roles the API checks (a role's page is not for other roles)."""
    current = session()
    engine().cleanrooms_for(current.user)  # polls the policy files, as every API call does: a change shows at once
    rooms = rooms_for(page, current.user)
    if not rooms:
        raise Refused(f"user {current.user!r} has no role in any clean room that opens the {page} page",
                      rule="console.role", hint="roles are granted in the policy: analysts: and members:")
    room = current.cleanroom if current.cleanroom in rooms else rooms[0]
    return engine().context.cleanrooms[room]


@blueprint.before_request
def load_session():
    """The app's bearer check skips the console; its session cookie is checked here."""
    g.console_session = None
    if request.endpoint in PUBLIC_VIEWS:
        return None
    current = store().get(request.cookies.get(SESSION_COOKIE))
    if current is None or current.user not in engine().config.users:
        if request.method == "GET" and not request.path.startswith("/console/api/"):
            return redirect(url_for("console.login"))
        raise NotAuthenticated("log in to the console first", rule="console.session",
                               hint="open /console/login")
    g.console_session = current
    g.user = current.user
    if request.method == "POST":
        sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
        if not hmac.compare_digest(sent.encode(), current.csrf.encode()):
            raise Refused("the form's CSRF token is missing or wrong", rule="console.csrf",
                          hint="reload the page and try again")
    return None


@blueprint.after_request
def secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if request.endpoint == "console.static":
        response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@blueprint.app_template_global()
def csrf_token() -> str:
    current = g.get("console_session")
    return current.csrf if current else ""


@blueprint.app_template_global()
def console_pages() -> list[tuple[str, str]]:
    current = g.get("console_session")
    return pages_for(current.user) if current else []


@blueprint.app_template_global()
def console_rooms() -> list[str]:
    """Every clean room the user has a page in: a selector shows when there are several."""
    current = g.get("console_session")
    return sorted({name for page in PAGES for name in rooms_for(page, current.user)}) if current else []


@blueprint.errorhandler(Exception)
def failed(error: Exception):
    """Refusals and bad input as the API states them (rule id and hint); JSON
    for the page's scripts, a page otherwise; internal faults show the request id only."""
    from gateway.http import problems
    from gateway.http.problems import as_problem

    request_id = g.get("request_id") or "-"
    problem = as_problem(error)
    if problem is None:
        log.error("console request %s: internal error", request_id, exc_info=error)
        if request.path.startswith("/console/api/"):
            return problems.internal_problem(request_id=request_id, instance=request.path)
        problem = GatewayError(f"internal error (request id {request_id})",
                               hint="the operator can look up the request id in the gateway log")
    if request.path.startswith("/console/api/"):
        return problems.problem_response(problem, request_id=request_id, instance=request.path)
    return render_template("error.html", problem=problem, request_id=request_id), problem.http_status


def _set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="Strict",
                        secure=request.is_secure)


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        sent, expected = request.form.get(CSRF_FIELD, ""), request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise Refused("the login form's CSRF token is missing or wrong", rule="console.csrf",
                          hint="reload the login page and try again")
        user = check_login(engine().config, request.form.get("user", "").strip(), request.form.get("secret", ""))
        if user is not None:
            response = redirect(url_for("console.index"))
            store().close(request.cookies.get(SESSION_COOKIE))  # a new id at every login
            _set_cookie(response, SESSION_COOKIE, store().open(user))
            response.delete_cookie(LOGIN_COOKIE, path="/console")
            return response
        error = "unknown user, password or token"
    token = secrets.token_urlsafe(32)
    response = Response(render_template("login.html", login_token=token, error=error), status=401 if error else 200)
    _set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
    return response


@blueprint.post("/logout")
def logout():
    store().close(request.cookies.get(SESSION_COOKIE))
    response = redirect(url_for("console.login"))
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@blueprint.get("/")
def index():
    pages = pages_for(session().user)
    if not pages:
        raise Refused(f"user {session().user!r} has no role in any clean room", rule="console.role",
                      hint="roles are granted in the policy: analysts: and members:")
    return redirect(url_for(f"console.{pages[0][0]}"))


@blueprint.post("/cleanroom")
def choose_cleanroom():
    """Which clean room the pages show (when the user is in several); kept in the session."""
    chosen = request.form.get("cleanroom", "")
    if chosen not in console_rooms():
        raise http_errors.BadRequest(f"no clean room {chosen!r} for this user")
    store().choose_cleanroom(request.cookies.get(SESSION_COOKIE), chosen)
    return redirect(request.form.get("next_page") if request.form.get("next_page") in
                    {url_for(f"console.{p}") for p in PAGES} else url_for("console.index"))
