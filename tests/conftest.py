"""Shared fixtures: the demo data and configs pointing at it, engines (the demo's,
or the room a module declares as ROOM), the local PostgreSQL, and gateways serving
the demo over HTTP and the wire (tests/servers.py launches them), plus the
`server` marker's automatic part."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from tests.demokit import DEMO_POLICY, TEST_SCALE, write_demo_config
from tests.servers import PG_DSN, postgres, serve_http, serve_pg, wire_config

pytest_plugins = ("tests.sparkkit",)  # the Spark Connect server and the demo on Spark

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


@pytest.fixture(scope="session")
def demo_engine(demo_config_path):
    """An engine over the k-only demo, shared by the session."""
    from gateway.engine import Engine

    engine = Engine.from_config_file(demo_config_path)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def engine(request, tmp_path_factory):
    """The engine a module's tests share: over the room the module declares as
    `ROOM = tests.roomkit.Room(...)`, built once for the module in a folder of its
    own; the k-only demo (demo_engine) when it declares none."""
    room = getattr(request.module, "ROOM", None)
    if room is None:
        yield request.getfixturevalue("demo_engine")
        return
    built = room.build(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield built
    built.close()


@pytest.fixture
def fresh_engine(request, tmp_path):
    """The module's ROOM built anew for one test, in the test's tmp_path: for tests
    that change approvals, policy files or other state a shared engine would keep."""
    built = request.module.ROOM.build(tmp_path)
    yield built
    built.close()


@pytest.fixture
def pg_schema():
    """A DSN of the local PostgreSQL whose search_path is a fresh schema, dropped
    afterwards; skips with the reason when the server cannot be reached."""
    import uuid

    admin = postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_DSN} options='-csearch_path={schema}'"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.server)])
def where(request, tmp_path) -> dict:
    """Keyword arguments that open a store of gateway/storage.py (the ledger, the release
    cache) on each backend: SQLite in tmp_path, then the local PostgreSQL (pg_schema)."""
    if request.param == "sqlite":
        return {"sqlite_path": tmp_path / "ledger.sqlite"}
    return {"postgres_dsn": request.getfixturevalue("pg_schema")}


# -- gateways serving the demo (tests/servers.py launches them) ------------------------------


@pytest.fixture(scope="session")
def http_server(demo_config_path, tmp_path_factory):
    """Base URL of `python -m gateway serve` with two gunicorn workers (k-only demo)."""
    yield from serve_http(demo_config_path, tmp_path_factory.mktemp("http-server"))


@pytest.fixture(scope="session")
def dp_http_server(dp_demo_config_path, tmp_path_factory):
    """The same over the demo as shipped, with differential privacy."""
    yield from serve_http(dp_demo_config_path, tmp_path_factory.mktemp("http-server"))


@pytest.fixture(scope="module")
def pg(demo_config_path, tmp_path_factory):
    """A PostgreSQL wire gateway over the k-only demo, with its own state, per module."""
    folder = tmp_path_factory.mktemp("pgwire")
    yield from serve_pg(wire_config(demo_config_path, folder), folder)


@pytest.fixture(scope="module")
def dp_pg(dp_demo_config_path, tmp_path_factory):
    """A PostgreSQL wire gateway over the demo as shipped (differential privacy), with
    its own state (so its own budget), per module."""
    folder = tmp_path_factory.mktemp("dp-pgwire")
    yield from serve_pg(wire_config(dp_demo_config_path, folder), folder)


# -- markers ----------------------------------------------------------------------------------

# Fixtures that start a server (a gateway, Spark, Superset) or reach PostgreSQL or MariaDB:
# a test using one is marked `server` without saying so. Tests that launch servers
# themselves carry the mark in their module.
SERVER_FIXTURES = frozenset({"http_server", "dp_http_server", "pg", "dp_pg", "pg_schema", "console_server",
                             "spark_server"})
# Fixtures that take minutes to start (a JVM): a test using one is marked `slow` too.
SLOW_FIXTURES = frozenset({"spark_server"})


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))  # every fixture the test needs, however indirectly
        if SERVER_FIXTURES & used:
            item.add_marker(pytest.mark.server)
        if SLOW_FIXTURES & used:
            item.add_marker(pytest.mark.slow)
