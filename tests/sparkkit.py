"""A real Spark for the tests: a local Spark Connect server started from the pyspark package
(local[2], a free port, never 5432) once per session, and the demo clean room configured to
run on it. Loaded as a pytest plugin by tests/conftest.py. Without Java or pyspark the Spark
tests skip with the reason; scripts/test.sh installs both.

The demo's purchases live in a DuckDB file, which Spark cannot read: the Spark config reads
the same rows from a Parquet export (written once here), so both engines see the same data.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml

from tests.demokit import link_demo_models
from tests.servers import Launched, free_port

JDBC_JARS = ("/usr/share/java/postgresql.jar", "/usr/share/java/mariadb-java-client.jar")
START_SECONDS = 300.0  # a JVM on a loaded 2-core machine
SERVER_CONF = {
    "spark.master": "local[2]",
    "spark.connect.grpc.binding.address": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.runSQLOnFiles": "false",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",  # small test data: 200 partitions would cost seconds per query
    "spark.driver.memory": "1g",
}


def spark_home() -> Path | None:
    try:
        import pyspark
    except ImportError:
        return None
    home = Path(pyspark.__file__).parent
    return home if (home / "bin" / "spark-submit").exists() else None


def missing() -> str | None:
    """Why a Spark Connect server cannot start here, or None."""
    if shutil.which("java") is None:
        return "Java is not installed (scripts/test.sh installs default-jdk-headless)"
    home = spark_home()
    if home is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if not list((home / "jars").glob("spark-connect_*.jar")):
        return f"no Spark Connect server jar in {home / 'jars'}"
    return None


class SparkServer(Launched):
    stop_seconds = 20.0

    def __init__(self, log_path: Path, port: int | None = None, conf: dict[str, str] | None = None):
        self.port = port or free_port()
        self.remote = f"sc://127.0.0.1:{self.port}"
        home = spark_home()
        settings = {**SERVER_CONF, **(conf or {}), "spark.connect.grpc.binding.port": str(self.port)}
        jars = [jar for jar in JDBC_JARS if Path(jar).exists()]
        command = [str(home / "bin" / "spark-submit"), "--class",
                   "org.apache.spark.sql.connect.service.SparkConnectServer"]
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        if jars:
            command += ["--jars", ",".join(jars)]
        command.append("spark-internal")
        super().__init__(command, log_path, own_group=True, env={"SPARK_HOME": str(home)})
        self.wait_for(lambda: b"Spark Connect server started" in self.log_path.read_bytes(), "Spark Connect server",
                      START_SECONDS)


@pytest.fixture(scope="session")
def spark_server(tmp_path_factory):
    reason = missing()
    if reason:
        pytest.skip(f"no Spark: {reason}")
    server = SparkServer(tmp_path_factory.mktemp("spark") / "connect-server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_demo_data_dir(demo_data_dir, tmp_path_factory) -> Path:
    """The demo data with the purchases also as Parquet (what the Spark config reads)."""
    import duckdb

    con = duckdb.connect()
    try:
        target = demo_data_dir / "purchases.parquet"
        if not target.exists():
            con.execute(f"ATTACH '{demo_data_dir / 'retail.duckdb'}' AS retail (READ_ONLY)")
            con.execute(f"COPY retail.purchases TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return demo_data_dir


def spark_config(config_path: Path, remote: str, folder: Path, edit_policy=None) -> Path:
    """A copy of a demo config (and its policy) that runs on Spark, purchases read from Parquet;
    edit_policy(policy dict), when given, changes the policy copy before it is written."""
    from gateway.collab.demo import approve_demo

    config = yaml.safe_load(config_path.read_text())
    policy_path = Path(config["policies"][0])
    policy = yaml.safe_load(policy_path.read_text())
    policy["tables"]["purchases"]["source"] = "retail_parquet"
    policy["tables"]["purchases"].pop("relation", None)
    for model in policy.get("models", {}).values():  # the copy lies elsewhere: its model files stay where they are
        model["file"] = str((policy_path.parent / model["file"]).resolve())
    if edit_policy is not None:
        edit_policy(policy)
    spark_policy = folder / f"spark-{policy_path.name}"
    spark_policy.write_text(yaml.safe_dump(policy, sort_keys=False))
    link_demo_models(folder)  # the copy names its model files relative to itself
    data = Path(config["sources"]["publisher_impressions"]["path"]).parent.parent
    config["sources"].pop("retail")
    config["sources"]["retail_parquet"] = {"kind": "parquet", "path": str(data / "purchases.parquet")}
    config["policies"] = [str(spark_policy)]
    # One executor (one Spark session to open), and a deadline for a loaded 2-core machine:
    # the first statements of a fresh JVM compile their code paths.
    config["engine"].update(kind="spark", remote=remote, executors=1, query_timeout_seconds=300)
    config["state_dir"] = str(folder / "state")
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    approve_demo(path)
    return path


@pytest.fixture(scope="session")
def spark_config_path(spark_server, spark_demo_data_dir, demo_config_path, tmp_path_factory) -> Path:
    """The k-only demo (as demo_config_path) on Spark."""
    return spark_config(demo_config_path, spark_server.remote, tmp_path_factory.mktemp("spark-config"))


@pytest.fixture(scope="session")
def spark_dp_config_path(spark_server, spark_demo_data_dir, dp_demo_config_path, tmp_path_factory) -> Path:
    """The demo as shipped (differential privacy) on Spark."""
    return spark_config(dp_demo_config_path, spark_server.remote, tmp_path_factory.mktemp("spark-dp-config"))


def warm_engine(config_path: Path):
    """An engine whose executors have their Spark sessions open, closed afterwards."""
    from gateway.engine import Engine

    engine = Engine.from_config_file(config_path)
    engine.warm(wait=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def spark_engine(spark_config_path):
    yield from warm_engine(spark_config_path)


@pytest.fixture(scope="session")
def spark_dp_engine(spark_dp_config_path):
    yield from warm_engine(spark_dp_config_path)


def assert_same_rows(spark_table, duckdb_table, rel=1e-9) -> None:
    """Same names and types; the same rows as multisets, floats within `rel` (the engines add
    in different orders)."""
    assert spark_table.schema == duckdb_table.schema, f"{spark_table.schema} != {duckdb_table.schema}"

    def rows(table):
        return sorted((tuple(row.values()) for row in table.to_pylist()), key=repr)

    def float_key(row):
        return tuple("float" if isinstance(v, float) else v for v in row)

    left, right = sorted(rows(spark_table), key=lambda r: repr(float_key(r))), \
        sorted(rows(duckdb_table), key=lambda r: repr(float_key(r)))
    assert len(left) == len(right), f"{len(left)} rows on Spark, {len(right)} on DuckDB"
    for a, b in zip(left, right):
        for x, y in zip(a, b):
            if isinstance(x, float) and isinstance(y, float):
                assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=rel, abs_tol=1e-12), (a, b)
            else:
                assert x == y, (a, b)
