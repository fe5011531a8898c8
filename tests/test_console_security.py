"""The console's security, over a real gateway: the login checks the config's
credentials, the session cookie is HttpOnly and SameSite=Strict, every POST
needs the session's CSRF token, pages carry a CSP without inline script,
statements never travel in URLs, and each role's page is refused to others
with the same kind of refusal the API gives."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests import consolekit
from tests.consolekit import SERVER_LOGS, ConsoleClient, page_csrf
from tests.servers import bearer

console_server = consolekit.console_server  # a module-scoped fixture: its own gateway

SQL = "SELECT region, COUNT(DISTINCT household_id) AS households FROM purchases GROUP BY region"
PAGES = {"analyst": "/console/analyst", "approver": "/console/approver", "auditor": "/console/auditor",
         "outputs": "/console/outputs"}
# Which pages each demo user may open (policies/demo.yaml: analysts: and members:).
ALLOWED = {
    "analyst": {"analyst", "outputs"},
    "auditor": {"auditor", "outputs"},
    "retailer_approver": {"approver", "outputs"},
}


def logged_in(base: str, secret: str, user: str = "") -> ConsoleClient:
    client = ConsoleClient(base)
    answer = client.login(secret, user)
    assert answer.status == 302 and answer.headers["Location"].endswith("/console/"), answer.text
    return client


def cookie_attributes(header: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


def test_login_with_token_or_password_sets_a_strict_httponly_session_cookie(console_server):
    client = ConsoleClient(console_server)
    login_page = client.get("/console/login")
    (login_cookie,) = login_page.cookies()
    assert {"httponly", "samesite", "path"} <= cookie_attributes(login_cookie) and "SameSite=Strict" in login_cookie
    answer = client.login("analyst")  # the bearer token alone
    (session_cookie,) = [c for c in answer.cookies() if c.startswith("cleanroom_session=")]
    assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie and "Path=/console" in session_cookie
    assert answer.headers["Location"] == "/console/"  # nothing about the login in the URL
    assert logged_in(console_server, "auditor", user="auditor").get("/console/auditor").status == 200  # password


@pytest.mark.parametrize("user,secret", [("", "wrong"), ("analyst", "wrong"), ("nobody", "analyst"),
                                         ("auditor", "analyst")])
def test_wrong_credentials_are_refused(console_server, user, secret):
    client = ConsoleClient(console_server)
    answer = client.login(secret, user)
    assert answer.status == 401 and "unknown user, password or token" in answer.text
    assert not [c for c in answer.cookies() if c.startswith("cleanroom_session=")]
    assert client.get("/console/analyst").status == 302  # still sent to the login page


def test_login_form_needs_its_csrf_token(console_server):
    client = ConsoleClient(console_server)
    client.get("/console/login")
    answer = client.post("/console/login", form={"csrf_token": "forged", "user": "", "secret": "analyst"})
    assert answer.status == 403 and "console.csrf" in answer.text
    fresh = ConsoleClient(console_server)  # a cross-site form: SameSite=Strict keeps the login cookie home
    answer = fresh.post("/console/login", form={"csrf_token": "", "user": "", "secret": "analyst"})
    assert answer.status == 403 and "console.csrf" in answer.text


def test_every_post_needs_the_session_csrf_token(console_server):
    client = logged_in(console_server, "analyst")
    before = len(client.api("/console/api/history").json()["history"])
    for csrf in (None, "forged"):
        answer = client.api("/console/api/run", {"sql": SQL}, csrf=csrf)
        assert answer.status == 403 and answer.json()["rule"] == "console.csrf"
        answer = client.api("/console/api/explain", {"sql": SQL}, csrf=csrf)
        assert answer.status == 403 and answer.json()["rule"] == "console.csrf"
    form = {"statement": f'{{"sql": "{SQL}"}}', "format": "csv"}
    assert client.post("/console/analyst/download", form=form).status == 403
    assert client.post("/console/logout", form={}).status == 403
    assert len(client.api("/console/api/history").json()["history"]) == before  # nothing ran
    assert client.api("/console/api/run", {"sql": SQL}).status == 200


def test_csv_download_is_a_post_with_the_token(console_server):
    client = logged_in(console_server, "analyst")
    form = {"csrf_token": client.csrf, "statement": f'{{"sql": "{SQL}"}}', "format": "csv"}
    answer = client.post("/console/analyst/download", form=form)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert answer.text.splitlines()[0] == "region,households"
    assert answer.headers["X-Authorised-By"] == "rule:cross_party_aggregates"


def test_arrow_download_is_the_same_release_as_an_ipc_stream(console_server):
    import pyarrow as pa

    client = logged_in(console_server, "analyst")
    form = {"csrf_token": client.csrf, "statement": f'{{"sql": "{SQL}"}}', "format": "arrow"}
    answer = client.post("/console/analyst/download", form=form)
    assert answer.status == 200 and answer.headers["Content-Type"].startswith("application/vnd.apache.arrow.stream")
    assert answer.headers["Content-Disposition"].startswith("attachment;") and ".arrows" in answer.headers["Content-Disposition"]
    table = pa.ipc.open_stream(answer.body).read_all()
    assert table.column_names == ["region", "households"] and table.num_rows >= 1
    assert answer.headers["X-Authorised-By"] == "rule:cross_party_aggregates"
    csv = client.post("/console/analyst/download", form={**form, "format": "csv"})  # a repeat: the same noisy rows
    assert csv.text.splitlines()[1:] == [f"{r['region']},{r['households']}" for r in table.to_pylist()]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.forms, self.handlers, self.styles = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "form":
            self.forms.append(attrs)
        if tag == "style" or "style" in attrs:
            self.styles.append(tag)
        self.handlers += [name for name in attrs if name.startswith("on")]


@pytest.mark.parametrize("secret", sorted(ALLOWED))
def test_pages_allow_no_inline_script_and_post_every_form(console_server, secret):
    client = logged_in(console_server, secret, user=secret)
    for page in sorted(ALLOWED[secret]) + ["login"]:
        answer = client.get("/console/login" if page == "login" else PAGES[page])
        assert answer.status == 200, page
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["Cache-Control"] == "no-store"
        parsed = _Page()
        parsed.feed(answer.text)
        assert all(s.get("src", "").startswith("/console/static/") for s in parsed.scripts), parsed.scripts
        assert parsed.handlers == [] and parsed.styles == []  # no inline event handler or style
        assert parsed.forms and all(f.get("method") == "post" for f in parsed.forms), parsed.forms


@pytest.mark.parametrize("user", sorted(ALLOWED))
def test_one_role_cannot_open_another_roles_page(console_server, user):
    client = logged_in(console_server, user, user=user)
    for page, path in PAGES.items():
        answer = client.get(path)
        if page in ALLOWED[user]:
            assert answer.status == 200, (user, page)
        else:
            assert answer.status == 403 and "console.role" in answer.text, (user, page)
    if "analyst" not in ALLOWED[user]:
        answer = client.api("/console/api/run", {"sql": SQL})
        assert answer.status == 403 and answer.json()["rule"] == "console.role"
    if "approver" not in ALLOWED[user]:
        form = {"csrf_token": client.csrf, "kind": "template", "name": "campaign_reach", "action": "revoke"}
        answer = client.post("/console/approver/act", form=form)
        assert answer.status == 403 and "console.role" in answer.text


@pytest.mark.parametrize("sql", [
    "SELECT card_last4 FROM purchases",  # a hidden column
    "SELECT household_id FROM purchases",  # row-level data
    "SELECT regon, count(*) FROM purchases GROUP BY regon",  # a typo
])
def test_refusals_are_the_apis_own(console_server, sql):
    client = logged_in(console_server, "analyst")
    console = client.api("/console/api/run", {"sql": sql})
    status, api = bearer(console_server, "/v1/query", "analyst", {"sql": sql})
    assert console.status == status and status >= 400
    mine = console.json()
    assert (mine["rule"], mine["hint"], mine["detail"], mine["sqlstate"]) == \
        (api["rule"], api["hint"], api["detail"], api["sqlstate"])
    history = client.api("/console/api/history").json()["history"]
    assert history[0]["text"] == sql and history[0]["outcome"].startswith(api["rule"])


def test_logout_ends_the_session_on_the_server(console_server):
    client = logged_in(console_server, "analyst")
    (cookie,) = [c for c in client.jar if c.name == "cleanroom_session"]
    stolen = cookie.value
    assert client.post("/console/logout", form={"csrf_token": client.csrf}).status == 302
    replay = ConsoleClient(console_server)
    answer = replay.get("/console/api/budget", headers={"Cookie": f"cleanroom_session={stolen}"})
    assert answer.status == 401 and answer.json()["rule"] == "console.session"


def test_no_statement_in_any_url(console_server):
    """Statements go in POST bodies: the access log (which records URLs) never holds one."""
    client = logged_in(console_server, "analyst")
    marker = "household_id) AS marker_column_7f3a"
    client.api("/console/api/explain", {"sql": f"SELECT count(DISTINCT {marker} FROM purchases"})
    client.api("/console/api/run", {"sql": f"SELECT count(DISTINCT {marker} FROM purchases"})
    page = client.get("/console/analyst")
    assert "marker_column_7f3a" in page.text  # the history shows it, in the page body
    assert page_csrf(page.text) == client.csrf
    log = SERVER_LOGS[console_server].read_text()
    assert "POST /console/api/run" in log and "marker_column_7f3a" not in log
