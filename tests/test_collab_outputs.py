"""Outputs: a template's released result stored for its receivers only, and
deleted once its retention is over."""

from __future__ import annotations

import time

import pytest

from gateway.collab.outputs import UnknownOutput, list_outputs, purge, read_output
from gateway.collab.store import Store
from gateway.collab.approvals import Collaboration
from gateway.collab import outputs
from gateway.engine import QueryRequest
from gateway.audit_log import AuditLog
from tests import collabkit
from tests.collabkit import build, room_of
from tests.roomkit import Room


def approve_to_b(engine) -> None:
    collabkit.withdraw_approvals(engine)
    for user in ("appr_a", "appr_b"):
        engine.context.collab.approve(user, room_of(engine), "to_b")


ROOM = Room(collabkit.policy(), collabkit.SETUP, prepare=approve_to_b)  # fresh_engine: to_b approved by both


def run_to_b(engine):
    return engine.run(QueryRequest(user="ana", cleanroom="room", template="to_b", params={"tier": "gold"}))


def test_the_result_goes_to_the_output_not_the_caller(fresh_engine):
    receipt = run_to_b(fresh_engine)
    assert receipt.table.column_names == ["output", "output_id", "rows", "receivers", "expires_at"]
    assert receipt.table.column("rows").to_pylist() == [2]
    assert receipt.table.column("receivers").to_pylist() == ["b"]
    info, table = read_output(fresh_engine.context.collab, room_of(fresh_engine), "audit_b", "joined_for_b")
    assert table.to_pylist() == [{"region": "north", "households": 15}, {"region": "south", "households": 25}]
    assert info.template == "to_b" and info.receivers == ("b",)
    record = [r for r in fresh_engine.context.audit.records() if r.get("request_id") == receipt.request_id][-1]
    assert record["rows_released"] == 2 and record["output_id"] == info.output_id


def test_outputs_pass_the_same_threshold(tmp_path):
    from tests.collabkit import SETUP, policy
    from tests.roomkit import build_engine

    room = policy()
    room["templates"]["to_b"]["min_group_size"] = 20  # north has 15 households: suppressed
    engine = build_engine(tmp_path, room, SETUP)
    try:
        run_to_b(engine)
        _, table = read_output(engine.context.collab, room_of(engine), "appr_b", "joined_for_b")
        assert table.to_pylist() == [{"region": "south", "households": 25}]
    finally:
        engine.close()


def test_outputs_are_invisible_to_non_receivers(fresh_engine):
    run_to_b(fresh_engine)
    collab, room = fresh_engine.context.collab, room_of(fresh_engine)
    for user in ("ana", "appr_a", "appr_c", "nobody"):  # a's analyst ran it, yet a does not receive it
        assert list_outputs(collab, room, user) == []
        with pytest.raises(UnknownOutput):
            read_output(collab, room, user, "joined_for_b")
    assert [o.name for o in list_outputs(collab, room, "appr_b")] == ["joined_for_b"]


def test_outputs_expire_after_their_retention(fresh_engine):
    run_to_b(fresh_engine)
    collab, room = fresh_engine.context.collab, room_of(fresh_engine)
    (info,) = list_outputs(collab, room, "audit_b")
    assert info.expires_at - info.created_at == pytest.approx(collab.output_retention_hours * 3600)
    later = info.expires_at + 1
    with pytest.raises(UnknownOutput):
        read_output(collab, room, "audit_b", "joined_for_b", now=later)
    assert collab.store.query("SELECT COUNT(*) AS n FROM outputs") == [{"n": 0}]  # deleted, not just hidden
    assert purge(collab, later) == 0


def test_retention_comes_from_the_config(tmp_path):
    import yaml

    from gateway.engine import Engine

    build(tmp_path).close()
    config = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    config["store"] = {"output_retention_hours": 0.5}
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    engine = Engine.from_config_file(tmp_path / "gateway.yaml")
    try:
        assert engine.context.collab.output_retention_hours == 0.5
    finally:
        engine.close()


def test_outputs_in_postgres(fresh_engine, pg_schema, tmp_path):
    collab = Collaboration(Store(postgres_dsn=pg_schema), AuditLog(tmp_path / "a.jsonl"), output_retention_hours=1)
    room = room_of(fresh_engine)
    import pyarrow as pa

    table = pa.table({"region": ["north"], "households": [15]})
    info = outputs.write(collab, room, "to_b", "h" * 64, "joined_for_b", ("b",), table, "req1")
    assert read_output(collab, room, "appr_b", "joined_for_b")[1].to_pylist() == table.to_pylist()
    with pytest.raises(UnknownOutput):
        read_output(collab, room, "appr_a", "joined_for_b")
    assert purge(collab, time.time() + 3601) == 1
    assert list_outputs(collab, room, "appr_b") == [] and info.num_rows == 1
