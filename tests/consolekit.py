"""What the console tests share: a real gateway (gunicorn, two workers) over
its own copy of the demo, and a small HTTP client that keeps the console's
cookies and does not follow redirects, so each response can be inspected."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.demokit import DEMO_POLICY, write_demo_config
from tests.servers import HttpGateway


SERVER_LOGS: dict[str, Path] = {}  # base URL -> the server's log (gunicorn's access log records every URL)
POLICIES: dict[str, Path] = {}  # base URL -> the policy file it serves


OUTPUT_TEMPLATE = """
  baskets_for_retailer:
    description: Households and average basket by region, delivered to the retailer as an output.
    sql: SELECT region, COUNT(DISTINCT household_id) AS households, AVG(amount) AS basket FROM purchases GROUP BY region
    output: {name: baskets_by_region, receivers: [retailer]}
"""


def with_output_template(policy: str) -> str:
    """The demo policy plus a template whose result goes to the retailer as an output
    (an aggregate one, beside the demo's row-level output), granted to the analyst; approve_demo
    approves it."""
    granted = "templates: [campaign_reach"  # the analyst's list, whatever follows the demo template
    assert policy.count("\nanalysts:") == 1 and policy.count(granted) == 1
    policy = policy.replace("\nanalysts:", OUTPUT_TEMPLATE + "\nanalysts:")
    return policy.replace(granted, "templates: [campaign_reach, baskets_for_retailer")


@pytest.fixture(scope="module")
def console_server(demo_data_dir, tmp_path_factory):
    """Base URL of a gateway serving the demo as shipped (differential privacy),
    with its own state: approvals revoked here touch no other test's server."""
    folder = tmp_path_factory.mktemp("console-config")
    policy = folder / "demo.yaml"  # a copy the approver's test may edit (the gateway reloads it)
    policy.write_text(with_output_template(DEMO_POLICY.read_text()))
    config = write_demo_config(folder, demo_data_dir, policy)
    server = HttpGateway(config, folder / "server.log")
    SERVER_LOGS[server.url], POLICIES[server.url] = server.log_path, policy
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Answer:
    status: int
    headers: object
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class ConsoleClient:
    """A browser stand-in: a cookie jar, forms posted as the pages post them."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)
        self.csrf = None

    def request(self, method: str, path: str, *, form: dict | None = None, json_body=None,
                headers: dict | None = None) -> Answer:
        data, sent = None, dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with self.opener.open(request, timeout=60) as response:
                return Answer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.headers, error.read())

    def get(self, path: str, **kwargs) -> Answer:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> Answer:
        return self.request("POST", path, **kwargs)

    def login(self, secret: str, user: str = "") -> Answer:
        page = self.get("/console/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        answer = self.post("/console/login", form={"csrf_token": token, "user": user, "secret": secret})
        if answer.status == 302:
            self.csrf = page_csrf(self.get("/console/outputs").text)
        return answer

    def api(self, path: str, body=None, csrf: str | None = "session") -> Answer:
        headers = {"Accept": "application/json"}
        if csrf is not None:
            headers["X-CSRF-Token"] = self.csrf if csrf == "session" else csrf
        if body is None:
            return self.get(path, headers=headers)
        return self.post(path, json_body=body, headers=headers)


def page_csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
