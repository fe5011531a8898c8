"""The gateway's own state: approvals, proposals and outputs.

SQLite (WAL, one file under state_dir) by default; PostgreSQL when the config
names a DSN, so several gateway hosts share one state (gateway/storage.py).
Each write opens its own connection (writes are rare: approvals, proposals,
outputs). Reads are on the path of every statement an aggregation rule
authorises (its approvals are checked on every run), so they go through
Database.query: each thread keeps one autocommit reading connection, and every
read sees the latest committed writes of every process.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config_model import GatewayConfig
from gateway.storage import Database

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS approvals (
        cleanroom TEXT NOT NULL, template TEXT NOT NULL, template_sha256 TEXT NOT NULL,
        collaborator TEXT NOT NULL, approver TEXT NOT NULL, approved_at TEXT NOT NULL,
        approval_sha256 TEXT NOT NULL,
        PRIMARY KEY (cleanroom, template, template_sha256, collaborator))""",
    """CREATE TABLE IF NOT EXISTS proposals (
        cleanroom TEXT NOT NULL, template TEXT NOT NULL, template_sha256 TEXT NOT NULL,
        author TEXT NOT NULL, proposed_at TEXT NOT NULL,
        PRIMARY KEY (cleanroom, template, template_sha256))""",
    """CREATE TABLE IF NOT EXISTS outputs (
        output_id TEXT PRIMARY KEY, cleanroom TEXT NOT NULL, name TEXT NOT NULL,
        template TEXT NOT NULL, template_sha256 TEXT NOT NULL, receivers TEXT NOT NULL,
        num_rows INTEGER NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL, data {blob} NOT NULL)""",
]


class Store(Database):
    """The approvals, proposals and outputs tables (gateway/storage.py runs the SQL)."""

    def __init__(self, sqlite_path: Path | None = None, postgres_dsn: str | None = None):
        super().__init__(sqlite_path, postgres_dsn)
        self.create(SCHEMA, blob="BLOB|BYTEA")

    @classmethod
    def from_config(cls, config: GatewayConfig) -> "Store":
        return cls.for_config(config, "collab.sqlite")
