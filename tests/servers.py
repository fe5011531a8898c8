"""Launching gateways for tests, and the clients that talk to them: the one place
that starts `python -m gateway serve` (gunicorn) and `python -m gateway.pgwire`,
waits until they answer and stops them, plus the real database servers' DSNs.

Every server runs in a subprocess on a free port of 127.0.0.1 (never 5432), with
its output in a log file that a failed start quotes. Fixtures that serve the demo
are in tests/conftest.py; tests that serve a room of their own call these directly.
Tests that launch a server are marked `server` (pyproject.toml).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 60.0  # a gateway's start on a loaded 2-core machine
STOP_SECONDS = 15.0

# The real database servers of the machine (docs/contributing.md); tests needing one skip when it is down.
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
MYSQL_DSN = "host=127.0.0.1 port=3306 user=root database=test"

TOKEN = "analyst"  # the demo analyst's bearer token (config/demo.yaml stores its sha256)
PASSWORD = "analyst"  # the demo analyst's password on the wire (wire_config sets its SCRAM verifier)


def free_port() -> int:
    """A free TCP port of 127.0.0.1, never PostgreSQL's 5432."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 5432:
            return port


class Launched:
    """A server process (`command`, run in `cwd`), its output in `log_path`. With
    `own_group` it leads a process group of its own, so stop() (and a test's
    os.killpg) reaches every worker it started."""

    stop_seconds = STOP_SECONDS

    def __init__(self, command: list[str], log_path: Path, *, own_group: bool = False, env: dict | None = None,
                 cwd: Path = REPO):
        self.log_path = Path(log_path)
        self.own_group = own_group
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=own_group)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, ready, what: str, seconds: float = START_SECONDS) -> None:
        """Poll `ready()` until it is true. If the process exits first or `seconds` pass:
        stop it and raise RuntimeError with the end of its log."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{what} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{what} not ready after {seconds:g} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """SIGTERM (to the group with own_group), then SIGKILL if it does not exit."""
        if self.alive():
            self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.stop_seconds)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def _signal(self, sig: int) -> None:
        try:
            if self.own_group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        except ProcessLookupError:
            pass


class HttpGateway(Launched):
    """`python -m gateway serve` (gunicorn with `workers` workers, None: the config's
    http.workers); ready once /v1/health says ok."""

    def __init__(self, config_path: Path, log_path: Path, workers: int | None = 2, port: int | None = None,
                 own_group: bool = False):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--host", "127.0.0.1",
                   "--port", str(self.port)]
        super().__init__(command + (["--workers", str(workers)] if workers else []), log_path, own_group=own_group)
        self.wait_for(self._healthy, "HTTP gateway")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v1/health", timeout=5) as response:
                return response.status == 200 and json.load(response)["status"] == "ok"
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


class PgServer(Launched):
    """`python -m gateway.pgwire`; ready once every worker says it listens (and the port
    takes a connection)."""

    def __init__(self, config_path: Path, log_path: Path, workers: int = 1, own_group: bool = False):
        self.port = free_port()
        self.workers = workers
        command = [sys.executable, "-m", "gateway.pgwire", "--config", str(config_path), "--host", "127.0.0.1",
                   "--port", str(self.port)]
        super().__init__(command + (["--workers", str(workers)] if workers > 1 else []), log_path,
                         own_group=own_group)
        self.wait_for(self._listening, "pg server")

    def _listening(self) -> bool:
        if self.log().count("cleanroom pg: listening on") < self.workers:
            return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def dsn(self, **overrides) -> str:
        params = {"host": "127.0.0.1", "port": self.port, "dbname": "demo", "user": "analyst",
                  "password": PASSWORD, "sslmode": "disable", **overrides}
        return " ".join(f"{k}={v}" for k, v in params.items() if v is not None)


def serve_http(config_path: Path, folder, workers: int = 2):
    """A fixture's body: yields the base URL of an HTTP gateway over the config, stopped
    afterwards; its log in `folder` (a Path, or a tmp_path_factory to make one with)."""
    if hasattr(folder, "mktemp"):
        folder = folder.mktemp("http-server")
    server = HttpGateway(config_path, Path(folder) / "server.log", workers)
    try:
        yield server.url
    finally:
        server.stop()


def serve_pg(config_path: Path, folder: Path, workers: int = 1):
    """A fixture's body: yields a PgServer over the config, stopped afterwards."""
    server = PgServer(config_path, Path(folder) / "server.log", workers)
    try:
        yield server
    finally:
        server.stop()


def wire_config(config_path: Path, folder: Path, **pg) -> Path:
    """A copy of a gateway config in `folder`, with its own state there, the demo
    analyst's SCRAM verifier for PASSWORD, and `pg:` settings; both demo owners
    approve the demo templates and rules in that state, as `cleanroom demo` does."""
    from gateway.collab.demo import approve_demo
    from gateway.pgwire.scram import make_verifier

    config = yaml.safe_load(Path(config_path).read_text())
    config["users"]["analyst"]["scram_sha256"] = make_verifier(PASSWORD)
    config["state_dir"] = str(folder / "state")
    config.setdefault("pg", {}).update(pg)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    approve_demo(path)
    return path


def psql_env(password: str = PASSWORD) -> dict:
    return {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}


# -- HTTP clients ----------------------------------------------------------------------


def bearer(base: str, path: str, token: str = TOKEN, body=None) -> tuple[int, dict]:
    """The HTTP API as curl would call it: GET, or POST of a JSON body; (status, JSON answer)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method="GET" if data is None else "POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post(base: str, path: str, body: dict, token: str = TOKEN) -> tuple[int, dict]:
    return bearer(base, path, token, body)


def get(base: str, path: str, token: str = TOKEN) -> dict:
    """A GET that must succeed: its JSON answer."""
    status, answer = bearer(base, path, token)
    assert status == 200, (status, answer)
    return answer


# -- the real database servers -----------------------------------------------------------


def postgres(dsn: str = PG_DSN):
    """An autocommit connection to the local PostgreSQL; skips the test with the reason
    when it cannot be reached."""
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(dsn, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {str(error).strip()[:200]}")


def mariadb():
    """An autocommit connection to the local MariaDB; skips the test with the reason when
    it cannot be reached."""
    pymysql = pytest.importorskip("pymysql")
    try:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test",
                               autocommit=True)
    except pymysql.err.OperationalError as error:
        pytest.skip(f"MariaDB at 127.0.0.1:3306 is not reachable: {error}")


@contextlib.contextmanager
def wire_in_process(engine):
    """The engine's wire server on an event loop in a thread of this process (for tests that
    patch what the server calls); yields its port, bound here so no other test can take it."""
    import asyncio
    import threading

    from gateway.pgwire.server import PgServer

    server, loop = PgServer(engine, engine.context.config), asyncio.new_event_loop()
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    loop.run_until_complete(server.start("127.0.0.1", port, sock=listening))
    serving = threading.Thread(target=loop.run_forever, daemon=True)
    serving.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        serving.join(10)
