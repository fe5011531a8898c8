"""The gateway's own configuration (operators edit it): sources, engine limits,
listeners, user credentials, where policies and the audit log live.

Secrets are stored hashed; policies carry permissions, never credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from gateway.quotas.limits import HostQuotas


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source is read. The config's schema, its checks
    (gateway/config.py) and the attaching (gateway/sources.py) all follow this table."""

    name: str
    reach: str  # "file": one table read through a view; "attached": a database file; "server": a dsn
    scan: str | None = None  # file kinds: the DuckDB table function reading `path`
    attach_type: str | None = None  # attached and server kinds: ATTACH's TYPE (None: a DuckDB file)
    extensions: tuple[str, ...] = ()  # DuckDB extensions it needs, in load order (wheels from PyPI)
    folder: bool = False  # `path` is a table's folder, not a file or a glob


SOURCE_KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (
    SourceKind("duckdb", "attached"),
    SourceKind("sqlite", "attached", attach_type="sqlite", extensions=("sqlite_scanner",)),
    SourceKind("parquet", "file", scan="read_parquet"),
    SourceKind("csv", "file", scan="read_csv"),  # options: header, delim (gateway/sources.py)
    SourceKind("delta", "file", scan="delta_scan", extensions=("delta",), folder=True),
    # iceberg reads its manifests with avro, which it would otherwise try to download
    SourceKind("iceberg", "file", scan="iceberg_scan", extensions=("avro", "iceberg"), folder=True),
    SourceKind("postgres", "server", attach_type="postgres", extensions=("postgres_scanner",)),
    SourceKind("mysql", "server", attach_type="mysql", extensions=("mysql_scanner",)),
)}


@dataclass(frozen=True)
class Source:
    """A read-only data source attached into DuckDB.

    kind: one of SOURCE_KINDS. File kinds use `path` (a file or a glob; a table's folder for delta and
    iceberg, or an Iceberg metadata file); server kinds use `dsn`
    (libpq key=value for postgres, "host=... user=... database=..." for mysql).
    """

    name: str
    kind: str
    path: Path | None = None
    dsn: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)  # e.g. csv header/delim


@dataclass(frozen=True)
class EngineSettings:
    kind: str = "duckdb"  # or "spark": statements run on a Spark Connect server (gateway/spark/session.py)
    remote: str | None = None  # spark: the server, "sc://host:15002"
    threads: int = 2  # DuckDB threads per executor
    executors: int = 2  # executor processes per front-end process (see gateway/engine/executors.py)
    memory_limit: str = "2GB"
    temp_directory: Path | None = None
    max_temp_directory_size: str = "4GB"
    query_timeout_seconds: float = 30.0
    max_result_rows: int = 1_000_000
    data_roots: tuple[Path, ...] = ()  # allowed_directories once locked
    policy_reload_seconds: float = 1.0  # poll policy files this often and reload on change; 0: never


@dataclass(frozen=True)
class User:
    name: str
    token_sha256: str | None = None  # hex sha256 of the bearer token
    scram_sha256: str | None = None  # SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2


@dataclass(frozen=True)
class PgSettings:
    host: str = "127.0.0.1"
    port: int = 5433
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_cleartext_over_tls: bool = False


@dataclass(frozen=True)
class StoreSettings:
    """Where the gateway keeps its own state (approvals, proposals, outputs):
    SQLite under state_dir unless a PostgreSQL DSN is given."""

    postgres_dsn: str | None = None
    output_retention_hours: float = 720.0  # outputs are deleted this long after they are written


@dataclass(frozen=True)
class GatewayConfig:
    path: Path  # the config file itself; relative paths in it resolve against its folder
    policies: tuple[Path, ...]  # one clean room per policy file
    sources: Mapping[str, Source]
    users: Mapping[str, User]
    engine: EngineSettings = EngineSettings()
    http: HttpSettings = HttpSettings()
    pg: PgSettings = PgSettings()
    state_dir: Path = Path("var")  # audit log, ledgers, caches
    store: StoreSettings = StoreSettings()
    quotas: HostQuotas = HostQuotas()  # defaults and ceilings of every policy's quotas (gateway/quotas/limits.py)
    operators: tuple[str, ...] = ()  # users who may read GET /v1/metrics (every analyst's usage)
