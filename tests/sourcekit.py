"""Sources without a policy or an engine: a GatewayConfig of just the sources
(what gateway.sources opens and locks), and the SQL name of a source's relation."""

from __future__ import annotations

from pathlib import Path

from gateway.config_model import EngineSettings, GatewayConfig, Source
from gateway.policy.model import Table
from gateway.sources import relation_for


def make_config(tmp_path: Path, sources: list[Source], **engine) -> GatewayConfig:
    engine.setdefault("data_roots", (tmp_path / "data",))
    return GatewayConfig(
        path=tmp_path / "gateway.yaml",
        policies=(),
        sources={s.name: s for s in sources},
        users={},
        engine=EngineSettings(**engine),
        state_dir=tmp_path / "state",
    )


def ref(source: str, relation: str | None = None) -> str:
    return relation_for(Table(name="t", owner="o", source=source, relation=relation, columns={})).sql("duckdb")
