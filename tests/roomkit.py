"""Build a small clean room on real files for a test: a DuckDB file made from
SQL, a policy and a config written as YAML, and the real engine over them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from gateway.engine import Engine


@dataclass(frozen=True)
class Room:
    """A clean room a test module runs on, declared as `ROOM = Room(...)`: the `engine`
    fixture (tests/conftest.py) builds it once for the module, `fresh_engine` once per
    test."""

    policy: dict
    setup_sql: list[str]
    settings: dict = field(default_factory=dict)  # the config's engine: section, beyond build_engine's
    warm: bool = False  # every executor up before the first test, as servers start
    prepare: Callable[[Engine], None] | None = None  # after the build, e.g. approvals withdrawn

    def build(self, folder: Path) -> Engine:
        engine = build_engine(folder, copy.deepcopy(self.policy), list(self.setup_sql), **self.settings)
        if self.prepare is not None:
            self.prepare(engine)
        if self.warm:
            engine.warm(wait=True)
        return engine


def build_engine(tmp_path: Path, policy: dict, setup_sql: list[str], **engine_settings) -> Engine:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    with duckdb.connect(str(data / "room.duckdb")) as con:
        for statement in setup_sql:
            con.execute(statement)
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    config = {
        "policies": [str(policy_path)],
        "sources": {"room": {"kind": "duckdb", "path": str(data / "room.duckdb")}},
        "engine": {"threads": 2, "memory_limit": "1GB", "data_roots": [str(data)], **engine_settings},
        "state_dir": str(tmp_path / "state"),
        "users": {},
    }
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    engine = Engine.from_config_file(config_path)
    approve_all(engine)
    return engine


def approve_all(engine: Engine) -> None:
    """Record an approval of every template and every aggregation rule by every
    owner it needs, so tests of other features run; tests/test_collab_* cover
    approvals themselves."""
    _approve_rooms(engine.context.collab, engine.context.cleanrooms.values())


def approve_config(config_path: Path) -> None:
    """approve_all for a gateway config before any engine or server starts over it
    (the approvals land in the config's store, where every engine reads them)."""
    from gateway.collab.approvals import Collaboration
    from gateway.config import load_config
    from gateway.policy.loader import load_policy

    config = load_config(Path(config_path))
    _approve_rooms(Collaboration.from_config(config), [load_policy(path) for path in config.policies])


def _approve_rooms(collab, rooms) -> None:
    for room in rooms:
        for subject in collab.subjects(room):  # templates and rules alike
            for owner in sorted(subject.owners):
                collab.record_approval(room, subject.kind, subject.name, owner, "roomkit")


approve_all_templates = approve_all  # the old name: templates and rules alike


def private_table(relation: str, columns: dict, unit: str = "hh", owner: str = "a", **extra) -> dict:
    return {"owner": owner, "source": "room", "relation": relation, "privacy_unit": unit, "columns": columns, **extra}


def simple_policy(tables: dict, aggregates=("count", "count_distinct", "sum", "avg"), joins=(), k=10, templates=None) -> dict:
    policy = {
        "cleanroom": "room",
        "min_group_size": k,
        "collaborators": {"a": {}, "b": {}},
        "tables": tables,
        "rules": {"agg": {"tables": list(tables), "aggregates": list(aggregates), "joins": [list(j) for j in joins]}},
        "analysts": {"ana": {"collaborator": "a", "rules": ["agg"], "templates": list(templates or {})}},
    }
    if templates:
        policy["templates"] = templates
    return policy
