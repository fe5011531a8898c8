"""The web console (/console): pages for each role of a clean room, served by
the same Flask app as the HTTP API and calling the same engine and
collaboration services. Like the API it never decides policy: it translates
forms into QueryRequests and collaboration calls, and shows what they answer,
refusals with their rule id and hint included.

Security: a server-side session behind an HttpOnly, SameSite=Strict cookie;
every POST carries the session's CSRF token; a Content-Security-Policy that
allows scripts from /console/static only (no inline script); statements and
parameters travel in POST bodies, never in URLs; each page checks its role.
"""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("console", __name__, url_prefix="/console", static_folder="static",
                      static_url_path="/static", template_folder="templates")

from gateway.http.console import analyst, collaboration, views  # noqa: E402

ROUTES = (views, analyst, collaboration)  # their routes are added to the blueprint on import


def register(app) -> None:
    """Add the console to the API's app (the app skips bearer auth for it: see views.load_session)."""
    app.register_blueprint(blueprint)
