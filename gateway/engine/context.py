"""What the passes share for the life of an engine: the database, the policies
and the column types read from the sources."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Mapping

import duckdb

from gateway.audit_log import AuditLog
from gateway.collab.approvals import Collaboration
from gateway.config_model import GatewayConfig
from gateway.dp.services import PrivacyServices
from gateway.engine.executors import ExecutorPool
from gateway.engine.watchdog import Watchdog
from gateway.lru import LruCache
from gateway.pgcatalog import CatalogCache
from gateway.policy.model import CleanRoom
from gateway.quotas.service import QuotaService


@dataclass
class EngineContext:
    config: GatewayConfig
    database: duckdb.DuckDBPyConnection
    cleanrooms: Mapping[str, CleanRoom]
    column_types: Mapping[str, Mapping[str, Mapping[str, str]]]  # room -> table -> column -> type
    audit: AuditLog
    executors: ExecutorPool  # where statements run (a killable process each)
    collab: Collaboration | None = None  # approvals and outputs
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("gateway.engine"))
    lock: threading.Lock = field(default_factory=threading.Lock)
    analyses: LruCache = field(default_factory=LruCache)  # see recall.py
    constant_results: LruCache = field(default_factory=lambda: LruCache(256))  # see execute.py
    catalog_results: LruCache = field(default_factory=lambda: LruCache(512))  # see catalog.py
    replays: LruCache = field(default_factory=lambda: LruCache(256))  # replayed releases as published: release.py
    delivered: LruCache = field(default_factory=lambda: LruCache(1024))  # DP answers durably audited: audit.py
    watchdog: Watchdog = field(default_factory=Watchdog)  # padded answers' release times, catalog deadlines
    catalogs: CatalogCache = field(default_factory=CatalogCache)  # the catalog pass's databases and translations
    _privacy: PrivacyServices | None = field(default=None, repr=False)
    _quotas: QuotaService | None = field(default=None, repr=False)

    @property
    def quotas(self) -> QuotaService:
        """The quota service, opened on first use."""
        if self._quotas is None:
            with self.lock:
                if self._quotas is None:
                    self._quotas = QuotaService.from_config(self.config)
        return self._quotas

    @property
    def privacy(self) -> PrivacyServices:
        """The ledger, release cache and bounding key, opened on first use (only
        clean rooms with differential privacy need a ledger)."""
        if self._privacy is None:
            with self.lock:
                if self._privacy is None:
                    self._privacy = PrivacyServices.from_config(self.config)
        return self._privacy
