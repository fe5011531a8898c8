"""Gateway config loading: the demo config, path resolution, and located problems."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from gateway.config import load_config, source_problems
from gateway.errors import PolicyInvalid
from gateway.policy.loader import load_policy
from tests.demokit import link_demo_models

REPO = Path(__file__).resolve().parent.parent
TOKEN = hashlib.sha256(b"secret").hexdigest()
SCRAM = "SCRAM-SHA-256$4096:c2FsdHNhbHQ=$c3RvcmVka2V5c3RvcmVka2V5:c2VydmVya2V5c2VydmVya2V5"


def write(folder: Path, text: str) -> Path:
    (folder / "policy.yaml").write_text((REPO / "policies" / "demo.yaml").read_text())
    link_demo_models(folder)  # the copy names its model files relative to itself
    path = folder / "gateway.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_config(path)
    return [p.replace(str(path), "gateway.yaml", 1) for p in info.value.problems]


def test_demo_config_loads_with_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = load_config(REPO / "config" / "demo.yaml")
    assert config.path == REPO / "config" / "demo.yaml"
    assert config.policies == (REPO / "policies" / "demo.yaml",)
    assert config.sources["retail"].kind == "duckdb"
    assert config.sources["retail"].path == REPO / "var" / "demo" / "retail.duckdb"
    assert config.sources["publisher_impressions"].path == REPO / "var" / "demo" / "impressions" / "*.parquet"
    assert config.engine.data_roots == (REPO / "var" / "demo",)
    assert config.engine.query_timeout_seconds == 30.0 and config.engine.threads == 2
    assert config.http.port == 8080 and config.pg.port == 5433 and config.pg.tls_cert is None
    assert config.state_dir == REPO / "var" / "state"
    assert config.users["analyst"].token_sha256 == hashlib.sha256(b"analyst").hexdigest()


def test_demo_policy_matches_demo_config_sources():
    config = load_config(REPO / "config" / "demo.yaml")
    assert source_problems(config, load_policy(config.policies[0])) == []


def test_minimal_config_gets_defaults(tmp_path):
    config = load_config(write(tmp_path, f"""\
        policies: [policy.yaml]
        sources:
          db: {{kind: postgres, dsn: "host=db dbname=shop user=reader"}}
          flat: {{kind: csv, path: data/x.csv, options: {{header: true, delim: ";"}}}}
        users:
          ana: {{token_sha256: {TOKEN}, scram_sha256: "{SCRAM}"}}
        """))
    assert config.sources["db"].dsn == "host=db dbname=shop user=reader" and config.sources["db"].path is None
    assert config.sources["flat"].options == {"header": True, "delim": ";"}
    assert config.sources["flat"].path == tmp_path / "data" / "x.csv"
    assert config.users["ana"].scram_sha256 == SCRAM
    assert config.engine.data_roots == () and config.http.workers == 2
    assert config.state_dir == tmp_path / "var"


def test_source_problems(tmp_path):
    found = problems(write(tmp_path, """\
        policies: [policy.yaml]
        engine:
          data_roots: [data]
        sources:
          a: {kind: oracle, path: data/a}
          b: {kind: parquet}
          c: {kind: postgres, path: x.db}
          d: {kind: parquet, path: data/d.parquet, options: {header: true}}
          e: {kind: csv, path: elsewhere/e.csv, options: {header: "yes", quote: "'"}}
          f: {kind: mysql, dsn: "host=h", path: data/f}
        users:
          ana: {token_sha256: x}
        """))
    assert found == [
        "gateway.yaml:5:7: sources.a.kind: 'oracle' is not one of ['duckdb', 'sqlite', 'parquet', 'csv', 'delta', 'iceberg', 'postgres', 'mysql']",
        "gateway.yaml:6:3: sources.b: a parquet source needs path (a file or a glob)",
        "gateway.yaml:7:3: sources.c: a postgres source needs dsn (connection string)",
        "gateway.yaml:7:23: sources.c.path: a postgres source is a server: use dsn, not path",
        "gateway.yaml:8:44: sources.d.options: options apply to csv sources only (this one is parquet)",
        f"gateway.yaml:9:18: sources.e.path: {tmp_path / 'elsewhere' / 'e.csv'} is outside engine.data_roots, so the engine could not read it",
        "gateway.yaml:9:51: sources.e.options.header: 'yes' is not of type 'boolean'",
        "gateway.yaml:9:66: sources.e.options.quote: unknown key (allowed: header, delim)",
        "gateway.yaml:10:35: sources.f.path: a mysql source is a server: use dsn, not path",
        "gateway.yaml:12:9: users.ana.token_sha256: write 64 lowercase hex digits (sha256 of the token) (got 'x')",
    ]


def test_user_credentials(tmp_path):
    found = problems(write(tmp_path, f"""\
        policies: [policy.yaml]
        sources: {{}}
        users:
          upper: {{token_sha256: {TOKEN.upper()}}}
          none: {{}}
          scram: {{scram_sha256: "SCRAM-SHA-256$4096:salt"}}
          good: {{scram_sha256: "{SCRAM}"}}
        """))
    assert found[0].startswith("gateway.yaml:4:11: users.upper.token_sha256: write 64 lowercase hex digits")
    assert found[1] == "gateway.yaml:5:3: users.none: a user needs token_sha256 (HTTP) or scram_sha256 (Postgres wire), or both"
    assert found[2].startswith("gateway.yaml:6:11: users.scram.scram_sha256: write SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
    assert len(found) == 3


def test_missing_policy_files_tls_pairs_and_limits(tmp_path):
    found = problems(write(tmp_path, f"""\
        policies: [policy.yaml, nowhere.yaml]
        sources: {{}}
        engine: {{threads: 0, memory_limit: lots, query_timeout_seconds: 0}}
        http: {{port: 70000}}
        pg: {{tls_cert: cert.pem}}
        users: {{ana: {{token_sha256: {TOKEN}}}}}
        """))
    assert found == [
        f"gateway.yaml:1:25: policies[1]: no such policy file: {tmp_path / 'nowhere.yaml'}",
        "gateway.yaml:3:10: engine.threads: 0 is less than the minimum of 1",
        "gateway.yaml:3:22: engine.memory_limit: write a size such as 512MB or 2GB (got 'lots')",
        "gateway.yaml:3:42: engine.query_timeout_seconds: 0 is less than or equal to the minimum of 0",
        "gateway.yaml:4:8: http.port: 70000 is greater than the maximum of 65535",
        "gateway.yaml:5:1: pg: tls_cert and tls_key go together: give both or neither",
        f"gateway.yaml:5:6: pg.tls_cert: no such file: {tmp_path / 'cert.pem'}",
    ]


def test_unknown_and_duplicate_keys_and_syntax(tmp_path):
    found = problems(write(tmp_path, f"""\
        policies: [policy.yaml]
        source: {{}}
        sources: {{}}
        users:
          ana: {{token_sha256: {TOKEN}}}
          ana: {{token_sha256: {TOKEN}}}
        """))
    assert found == [
        "gateway.yaml:2:1: source: unknown key (did you mean 'sources'?)",
        "gateway.yaml:6:3: users.ana: duplicate key (first defined on line 5)",
    ]
    found = problems(write(tmp_path, "policies: [policy.yaml\nsources: {}\n"))
    assert len(found) == 1 and found[0].startswith("gateway.yaml:2:8: (top level): YAML syntax error:")


def test_source_problems_compare_policy_and_config(tmp_path):
    config = load_config(write(tmp_path, f"""\
        policies: [policy.yaml]
        sources:
          retail: {{kind: parquet, path: r.parquet}}
          region_lookup: {{kind: sqlite, path: r.db}}
        users: {{ana: {{token_sha256: {TOKEN}}}}}
        """))
    found = source_problems(config, load_policy(config.policies[0]))
    assert found == [
        ("tables.purchases.relation", "source 'retail' is a parquet file: remove relation"),
        ("tables.impressions.source", f"no source 'publisher_impressions' in {config.path} (declared: region_lookup, retail)"),
        ("tables.regions", "source 'region_lookup' is a sqlite database: name the table in relation"),
    ]
