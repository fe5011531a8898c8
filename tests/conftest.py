"""Shared fixtures: the demo data, a config pointing at it, an engine, and a
real HTTP server (gunicorn in a subprocess, real sockets)."""

from __future__ import annotations

import inspect
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

pytest_plugins = ("tests.sparkkit",)  # the Spark Connect server and the demo on Spark

REPO = Path(__file__).resolve().parent.parent
DEMO_CONFIG = REPO / "config" / "demo.yaml"
DEMO_POLICY = REPO / "policies" / "demo.yaml"
DEMO_DATA_IN_CONFIG = "../var/demo"  # where config/demo.yaml expects the generated data
TEST_SCALE = 0.05  # 10,000 households: enough for k=10 groups, small enough to keep tests fast
DEMO_TOKEN = "analyst"  # config/demo.yaml stores sha256("analyst")


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    from gateway import demo

    path = tmp_path_factory.mktemp("demo-data")
    if "scale" in inspect.signature(demo.generate).parameters:
        demo.generate(path, scale=TEST_SCALE)
    else:
        demo.generate(path)
    return path


@pytest.fixture(scope="session")
def demo_config_path(demo_data_dir, tmp_path_factory) -> Path:
    """config/demo.yaml with its data, policy and state paths made absolute, and
    the demo policy without its privacy section: k-thresholds only, so protocol
    and refusal tests can compare exact answers. Differential privacy over the
    demo as shipped: dp_demo_config_path."""
    policy = yaml.safe_load(DEMO_POLICY.read_text())
    policy.pop("privacy")
    folder = tmp_path_factory.mktemp("demo-config")
    policy_path = folder / "demo-k-only.yaml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return write_demo_config(folder, demo_data_dir, policy_path)


@pytest.fixture(scope="session")
def dp_demo_config_path(demo_data_dir, tmp_path_factory) -> Path:
    """The demo clean room as shipped: differentially private releases."""
    return write_demo_config(tmp_path_factory.mktemp("dp-demo-config"), demo_data_dir, DEMO_POLICY)


def write_demo_config(folder: Path, demo_data_dir: Path, policy_path: Path) -> Path:
    config = yaml.safe_load(DEMO_CONFIG.read_text())

    def relocate(value: str) -> str:
        if value.startswith(DEMO_DATA_IN_CONFIG):
            return str(demo_data_dir) + value[len(DEMO_DATA_IN_CONFIG) :]
        return value

    config["policies"] = [str(policy_path)]
    for source in config["sources"].values():
        if "path" in source:
            source["path"] = relocate(source["path"])
    config["engine"]["data_roots"] = [relocate(p) for p in config["engine"].get("data_roots", [])]
    config["state_dir"] = str(folder / "state")
    link_demo_models(folder)
    link_demo_models(Path(policy_path).parent)
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    from gateway.collab.demo import approve_demo

    approve_demo(path)  # as `cleanroom demo` does at start: both owners approve the demo template
    return path


def link_demo_models(folder: Path) -> None:
    """A copy of the demo policy names its model files relative to itself
    (models/purchase_propensity.onnx): link the shipped ones beside the copy."""
    link = Path(folder) / "models"
    if Path(folder).resolve() != DEMO_POLICY.parent.resolve() and not link.exists():
        link.symlink_to(DEMO_POLICY.parent / "models", target_is_directory=True)


@pytest.fixture(scope="session")
def engine(demo_config_path):
    from gateway.engine import Engine

    engine = Engine.from_config_file(demo_config_path)
    yield engine
    engine.close()


PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"


@pytest.fixture
def pg_schema():
    """A DSN of the local PostgreSQL whose search_path is a fresh schema, dropped
    afterwards; skips with the reason when the server cannot be reached."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {str(error).strip()[:200]}")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_DSN} options='-csearch_path={schema}'"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def http_server(demo_config_path, tmp_path_factory):
    """Base URL of `python -m gateway serve` with two gunicorn workers (k-only demo)."""
    yield from serve_http(demo_config_path, tmp_path_factory)


@pytest.fixture(scope="session")
def dp_http_server(dp_demo_config_path, tmp_path_factory):
    """The same over the demo as shipped, with differential privacy."""
    yield from serve_http(dp_demo_config_path, tmp_path_factory)


def serve_http(config_path: Path, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("http-server") / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, process, log_path)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(base_url: str, process: subprocess.Popen, log_path: Path, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(base_url + "/v1/health", timeout=5) as response:
                if response.status == 200 and json.load(response)["status"] == "ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{log_path.read_text()}")
