"""Templates run only when every owner of every table they read approved their
current canonical hash; any change voids the approvals; approvals are kept in
the store (SQLite, or PostgreSQL) and survive restarts."""

from __future__ import annotations


import pytest

from gateway.collab.approvals import Collaboration
from gateway.collab.canonical import template_hash
from gateway.collab.store import Store
from gateway.engine import Engine, QueryRequest
from gateway.audit_log import AuditLog
from gateway.errors import Refused
from tests import collabkit
from tests.collabkit import build, rewrite_policy, room_of

PARAMS = {"tier": "gold"}


def run(engine, template="joined", user="ana", params=PARAMS):
    return engine.run(QueryRequest(user=user, cleanroom="room", template=template, params=params))


ROOM = collabkit.ROOM  # fresh_engine (tests/conftest.py): the room per test, no template approved


def approve(engine, *users, template="joined"):
    for user in users:
        engine.context.collab.approve(user, room_of(engine), template)


def test_unapproved_by_one_owner_is_refused_then_runs_when_all_approved(fresh_engine):
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "template.not_approved"
    assert "a, b" in refusal.value.message
    approve(fresh_engine, "appr_a")
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "template.not_approved"
    assert "not approved by b " in refusal.value.message
    approve(fresh_engine, "appr_b")
    release = run(fresh_engine)
    assert release.authorised_by == "template:joined"
    assert release.table.to_pylist() == [{"region": "north", "households": 15}, {"region": "south", "households": 25}]


def test_a_template_reading_one_partys_tables_needs_only_that_party(fresh_engine):
    approve(fresh_engine, "appr_a", template="only_a")
    assert run(fresh_engine, "only_a", params={}).table.num_rows == 2


def test_roles_come_from_the_policy(fresh_engine):
    room = room_of(fresh_engine)
    collab = fresh_engine.context.collab
    with pytest.raises(Refused) as refusal:
        collab.approve("ana", room, "joined")  # an analyst is not an approver
    assert refusal.value.rule == "collab.not_approver"
    with pytest.raises(Refused) as refusal:
        collab.approve("appr_c", room, "joined")  # c owns no table the template reads
    assert refusal.value.rule == "template.not_an_owner"
    with pytest.raises(Refused) as refusal:
        collab.approve("appr_b", room, "only_a")  # only a's tables: b has nothing to approve
    assert refusal.value.rule == "template.not_an_owner"
    with pytest.raises(Refused) as refusal:
        collab.propose("appr_a", room, "joined")  # appr_a is no author
    assert refusal.value.rule == "collab.not_author"
    assert collab.propose("appr_b", room, "joined").proposed_by == "appr_b"


def test_one_byte_changed_in_the_sql_voids_the_approvals(tmp_path, fresh_engine):
    approve(fresh_engine, "appr_a", "appr_b")
    before = fresh_engine.context.collab.status(room_of(fresh_engine), "joined").sha256
    assert run(fresh_engine).table.num_rows == 2

    # Layout and comments are not part of the canonical template: approvals hold.
    rewrite_policy(tmp_path, lambda p: p["templates"]["joined"].update(
        sql="-- reviewed\n" + p["templates"]["joined"]["sql"].replace(" FROM", "\n   FROM")))
    assert fresh_engine.reload()
    assert fresh_engine.context.collab.status(room_of(fresh_engine), "joined").sha256 == before
    assert run(fresh_engine).table.num_rows == 2

    # One byte of what runs: 'v.region' ordering -> descending.
    rewrite_policy(tmp_path, lambda p: p["templates"]["joined"].update(
        sql=p["templates"]["joined"]["sql"].replace("ORDER BY v.region", "ORDER BY v.region DESC")))
    assert fresh_engine.reload()
    status = fresh_engine.context.collab.status(room_of(fresh_engine), "joined")
    assert status.sha256 != before
    assert status.missing == ("a", "b") and status.approvals == ()
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "template.not_approved"


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t["parameters"]["tier"].update(values=["gold", "silver", "bronze"]),  # parameter declarations
        lambda t: t.update(min_group_size=11),  # release settings
    ],
    ids=["parameters", "min_group_size"],
)
def test_parameter_and_release_changes_void_the_approvals(tmp_path, fresh_engine, change):
    approve(fresh_engine, "appr_a", "appr_b")
    rewrite_policy(tmp_path, lambda p: change(p["templates"]["joined"]))
    assert fresh_engine.reload()
    with pytest.raises(Refused):
        run(fresh_engine)


def test_revoke_withdraws_an_approval(fresh_engine):
    approve(fresh_engine, "appr_a", "appr_b")
    assert fresh_engine.context.collab.revoke("appr_b", room_of(fresh_engine), "joined") == 1
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert "not approved by b " in refusal.value.message


def test_approvals_survive_an_engine_restart(tmp_path):
    first = build(tmp_path)
    approve(first, "appr_a", "appr_b")
    first.close()
    second = Engine.from_config_file(tmp_path / "gateway.yaml")
    try:
        assert run(second).table.num_rows == 2
    finally:
        second.close()


def test_audit_records_carry_the_template_and_approval_hashes(fresh_engine):
    approve(fresh_engine, "appr_a", "appr_b")
    release = run(fresh_engine)
    record = [r for r in fresh_engine.context.audit.records() if r.get("request_id") == release.request_id][-1]
    status = fresh_engine.context.collab.status(room_of(fresh_engine), "joined")
    assert record["decision"] == "released"
    assert record["template_sha256"] == status.sha256
    assert sorted(record["approvals"]) == sorted(a.approval_sha256 for a in status.approvals)
    assert record["rows_released"] == 2
    assert record["collaborator"] == "a"
    actions = [r["decision"] for r in fresh_engine.context.audit.records() if r.get("template") == "joined"]
    assert actions[:2] == ["approved", "approved"]


# -- PostgreSQL as the store -----------------------------------------------------

def test_postgres_store_keeps_approvals(tmp_path, pg_schema):
    engine = build(tmp_path)
    try:
        room = room_of(engine)
        collab = Collaboration(Store(postgres_dsn=pg_schema), AuditLog(tmp_path / "pg-audit.jsonl"))
        collab.approve("appr_a", room, "joined")
        collab.approve("appr_b", room, "joined")
        again = Collaboration(Store(postgres_dsn=pg_schema), AuditLog(tmp_path / "pg-audit.jsonl"))  # a restart
        status = again.status(room, "joined")
        assert status.approved and status.sha256 == template_hash(room, room.templates["joined"])
        assert {a.approver for a in status.approvals} == {"appr_a", "appr_b"}
        engine.context.collab = again  # the engine now asks PostgreSQL
        assert run(engine).table.num_rows == 2
        again.revoke("appr_a", room, "joined")
        with pytest.raises(Refused):
            run(engine)
    finally:
        engine.close()
