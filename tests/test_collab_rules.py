"""Ad-hoc queries run under an aggregation rule only while every owner of every
table the rule covers approved its current canonical hash (or a looser version
the current one only tightens). Loosening edits void the approvals, tightening
edits carry them forward (audited), and a revoke refuses the very next
identical statement, recalled analysis or not."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway.auth import hash_token
from gateway.cli import main as cli
from gateway.engine import Engine, QueryRequest
from gateway.errors import Refused
from tests import collabkit
from tests.collabkit import build, policy, rewrite_policy, room_of

SQL = ("SELECT v.region, COUNT(DISTINCT v.hh) AS households FROM visits AS v "
       "JOIN loyalty AS l ON v.hh = l.hh GROUP BY v.region ORDER BY v.region")
ROWS = [{"region": "north", "households": 15}, {"region": "south", "households": 25}]


def run(engine, sql=SQL, user="ana"):
    return engine.run(QueryRequest(user=user, cleanroom="room", sql=sql))


def approve(engine, *users, rule="agg"):
    for user in users:
        engine.context.collab.approve(user, room_of(engine), rule, kind="rule")


def status(engine, rule="agg"):
    return engine.context.collab.status(room_of(engine), rule, "rule")


ROOM = collabkit.UNAPPROVED_RULES  # fresh_engine (tests/conftest.py): the room per test, nothing approved


def test_unapproved_by_one_owner_is_refused_then_runs_when_all_approved(fresh_engine):
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "rule.not_approved" and refusal.value.sqlstate == "42501"
    assert "not approved by a, b " in refusal.value.message
    approve(fresh_engine, "appr_a")
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "rule.not_approved"
    assert "not approved by b " in refusal.value.message and "cleanroom rule approve agg" in refusal.value.hint
    approve(fresh_engine, "appr_b")
    release = run(fresh_engine)
    assert release.authorised_by == "rule:agg"
    assert release.table.to_pylist() == ROWS

    # The audit record carries the approvals it ran under; the refusals were audited too.
    records = fresh_engine.context.audit.records()
    record = [r for r in records if r.get("request_id") == release.request_id][-1]
    assert sorted(record["approvals"]) == sorted(a.approval_sha256 for a in status(fresh_engine).approvals)
    assert len(record["approvals"]) == 2
    refused = [r for r in records if r.get("decision") == "refused" and r.get("rule") == "rule.not_approved"]
    assert len(refused) == 2 and refused[-1]["sql"] == SQL


def test_a_query_the_rule_does_not_allow_keeps_its_own_refusal(fresh_engine):
    # Unapproved rule, but the query breaks the rule anyway: the rule's check speaks first.
    with pytest.raises(Refused) as refusal:
        run(fresh_engine, "SELECT region, hh FROM visits")
    assert refusal.value.rule != "rule.not_approved"


def test_roles_come_from_the_policy(fresh_engine):
    collab, room = fresh_engine.context.collab, room_of(fresh_engine)
    with pytest.raises(Refused) as refusal:
        collab.approve("ana", room, "agg", kind="rule")
    assert refusal.value.rule == "collab.not_approver"
    with pytest.raises(Refused) as refusal:
        collab.approve("appr_c", room, "agg", kind="rule")  # c owns no table the rule covers
    assert refusal.value.rule == "rule.not_an_owner"
    with pytest.raises(Refused) as refusal:
        collab.propose("appr_a", room, "agg", kind="rule")
    assert refusal.value.rule == "collab.not_author"
    assert collab.propose("appr_b", room, "agg", kind="rule").proposed_by == "appr_b"


@pytest.mark.parametrize(
    "loosen, reason",
    [
        (lambda p: p["rules"]["agg"]["aggregates"].append("min"), "rule.aggregates: added min"),
        (lambda p: p.update(min_group_size=5), "cleanroom.min_group_size lowered"),
        (lambda p: p["analysts"].update(ana2={"collaborator": "b", "rules": ["agg"]}), "analysts.ana2"),
        (lambda p: p["tables"]["visits"]["columns"]["region"].update(values=["north", "south"]),
         "tables.visits.columns.region.values changed"),
    ],
    ids=["aggregate", "room_k", "analyst", "column_values"],
)
def test_a_loosening_edit_voids_the_approvals(tmp_path, fresh_engine, loosen, reason):
    from gateway.collab.canonical import loosenings

    approve(fresh_engine, "appr_a", "appr_b")
    assert run(fresh_engine).table.num_rows == 2
    before = fresh_engine.context.collab.subject(room_of(fresh_engine), "rule", "agg").form
    rewrite_policy(tmp_path, loosen)
    assert fresh_engine.reload()
    after = fresh_engine.context.collab.subject(room_of(fresh_engine), "rule", "agg").form
    assert any(reason in found for found in loosenings(before, after)), loosenings(before, after)
    current = status(fresh_engine)
    assert current.missing == ("a", "b") and current.approvals == ()
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "rule.not_approved"


def test_a_tightening_edit_carries_the_approvals_forward(tmp_path, fresh_engine):
    approve(fresh_engine, "appr_a", "appr_b")
    first = status(fresh_engine)

    def tighten(p):
        p["rules"]["agg"]["aggregates"].remove("avg")  # one aggregate fewer
        p["rules"]["agg"]["min_group_size"] = 12  # and a stricter k
        p["tables"]["loyalty"]["max_epsilon_per_query"] = 0.5  # an owner's new cap is tighter too

    rewrite_policy(tmp_path, tighten)
    assert fresh_engine.reload()
    release = run(fresh_engine)  # north has 15 households, south 25: both pass k = 12
    assert release.table.to_pylist() == ROWS and release.min_group_size == 12
    now = status(fresh_engine)
    assert now.sha256 != first.sha256 and now.approved
    assert {a.collaborator for a in now.approvals} == {"a", "b"}
    assert {a.approver for a in now.approvals} == {"appr_a", "appr_b"}  # still the approvers who approved
    for approval in now.approvals:
        assert approval.carried_from["rule_sha256"] == first.sha256
        assert approval.carried_from["approval_sha256"] in {a.approval_sha256 for a in first.approvals}
        assert any("avg" in change for change in approval.carried_from["tightened"])
    carried = [r for r in fresh_engine.context.audit.records() if r.get("decision") == "carried_forward"]
    assert {r["collaborator"] for r in carried} == {"a", "b"}
    assert all(r["from_sha256"] == first.sha256 and r["rule_sha256"] == now.sha256 for r in carried)
    assert all(r["aggregation_rule"] == "agg" for r in carried)
    record = [r for r in fresh_engine.context.audit.records() if r.get("request_id") == release.request_id][-1]
    assert sorted(record["approvals"]) == sorted(a.approval_sha256 for a in now.approvals)

    # A later loosening (avg back) is compared with what was approved: it needs new approvals.
    rewrite_policy(tmp_path, lambda p: p["rules"]["agg"]["aggregates"].append("avg")
                   or p["rules"]["agg"].update(min_group_size=12))
    assert fresh_engine.reload()
    # avg back at k = 12 with the cap: looser than the tightened version, but no looser than the
    # first approved one, whose approvals (k = 10, avg) still cover it: carried from there.
    assert status(fresh_engine).approved


def test_a_tightening_then_a_loosening_beyond_the_first_approval_needs_new_approvals(tmp_path, fresh_engine):
    approve(fresh_engine, "appr_a", "appr_b")
    rewrite_policy(tmp_path, lambda p: p["rules"]["agg"].update(min_group_size=12))
    assert fresh_engine.reload() and status(fresh_engine).approved
    rewrite_policy(tmp_path, lambda p: p["rules"]["agg"]["aggregates"].append("median"))
    assert fresh_engine.reload()
    assert status(fresh_engine).missing == ("a", "b")
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "rule.not_approved"


def test_revoke_takes_effect_on_the_very_next_identical_statement(fresh_engine):
    approve(fresh_engine, "appr_a", "appr_b")
    run(fresh_engine)
    state = fresh_engine._start(QueryRequest(user="ana", cleanroom="room", sql=SQL))
    from gateway.engine.recall import cache_key

    assert fresh_engine.context.analyses.get(cache_key(state)) is not None  # the repeat is recalled
    assert run(fresh_engine).table.to_pylist() == ROWS
    assert fresh_engine.context.collab.revoke("appr_b", room_of(fresh_engine), "agg", kind="rule") == 1
    with pytest.raises(Refused) as refusal:
        run(fresh_engine)
    assert refusal.value.rule == "rule.not_approved" and "not approved by b " in refusal.value.message
    approve(fresh_engine, "appr_b")
    assert run(fresh_engine).table.to_pylist() == ROWS


def test_a_revoked_rule_falls_back_to_another_approved_rule_that_allows_the_query(tmp_path):
    room = policy()
    room["rules"]["agg2"] = dict(room["rules"]["agg"])
    room["analysts"]["ana"]["rules"] = ["agg", "agg2"]
    engine = build(tmp_path, room)  # every rule approved by every owner
    try:
        assert run(engine).authorised_by == "rule:agg"
        engine.context.collab.revoke("appr_a", room_of(engine), "agg", kind="rule")
        assert run(engine).authorised_by == "rule:agg2"  # recalled analysis dropped, analysed afresh
        engine.context.collab.revoke("appr_a", room_of(engine), "agg2", kind="rule")
        with pytest.raises(Refused) as refusal:
            run(engine)
        assert refusal.value.rule == "rule.not_approved" and "rule agg " in refusal.value.message
    finally:
        engine.close()


def test_reading_the_store_on_every_repeat_is_cheap(fresh_engine):
    """The per-statement cost of re-checking a recalled rule's approvals: one
    small indexed read of the store (SQLite here)."""
    import time

    from gateway.engine.authorise import rule_approvals

    approve(fresh_engine, "appr_a", "appr_b")
    state = fresh_engine._start(QueryRequest(user="ana", cleanroom="room", sql=SQL))
    rule = room_of(fresh_engine).rules["agg"]
    rule_approvals(state, rule)
    started = time.perf_counter()
    for _ in range(200):
        assert len(rule_approvals(state, rule)) == 2
    per_check = (time.perf_counter() - started) / 200
    assert per_check < 0.005, f"{per_check * 1000:.2f} ms per approval check"


# -- strictest policy of all owners -------------------------------------------


def test_each_owners_k_applies_to_every_rule_and_template_reading_its_table(tmp_path):
    room = policy()
    room["tables"]["loyalty"]["min_group_size"] = 20  # b is stricter than the room (10) and than a
    engine = build(tmp_path, room, approved=True)
    try:
        release = run(engine)
        assert release.min_group_size == 20 and release.table.to_pylist() == [ROWS[1]]  # north (15) suppressed
        templated = engine.run(QueryRequest(user="ana", cleanroom="room", template="joined", params={"tier": "gold"}))
        assert templated.min_group_size == 20 and templated.table.num_rows == 1
        only_a = run(engine, "SELECT region, COUNT(DISTINCT hh) AS n FROM visits GROUP BY region ORDER BY region")
        assert only_a.min_group_size == 10  # b's k is for b's table: a query not reading it keeps the room's
    finally:
        engine.close()


def test_an_owners_epsilon_cap_is_part_of_what_template_approvers_approved(tmp_path):
    engine = build(tmp_path, approved=True)
    try:
        before = engine.context.collab.status(room_of(engine), "joined")
        assert before.approved
        rewrite_policy(tmp_path, lambda p: p["tables"]["loyalty"].update(max_epsilon_per_query=0.5))
        assert engine.reload()
        after = engine.context.collab.status(room_of(engine), "joined")
        assert after.sha256 != before.sha256 and not after.approved
        only_a = engine.context.collab.status(room_of(engine), "only_a")  # reads visits only: unaffected
        assert only_a.approved
    finally:
        engine.close()


def test_a_templates_privacy_settings_are_part_of_its_hash(tmp_path):
    engine = build(tmp_path, approved=True)
    try:
        before = engine.context.collab.status(room_of(engine), "joined").sha256
        rewrite_policy(tmp_path, lambda p: p["templates"]["joined"].update(privacy={"epsilon_per_query": 2.0}))
        assert engine.reload()
        assert engine.context.collab.status(room_of(engine), "joined").sha256 != before
    finally:
        engine.close()


# -- CLI and HTTP ----------------------------------------------------------------


@pytest.fixture
def config_path(tmp_path):
    build(tmp_path, rules_approved=False).close()
    path = tmp_path / "gateway.yaml"
    config = yaml.safe_load(path.read_text())
    config["users"] = {name: {"token_sha256": hash_token(f"secret-{name}")} for name in ("ana", "appr_a", "appr_b")}
    path.write_text(yaml.safe_dump(config))
    return path


def rule_cli(config_path, *args, token=None):
    return cli(["rule", *args, "--config", str(config_path)] + (["--token", token] if token else []))


def test_cli_round_trip(config_path, capsys):
    assert rule_cli(config_path, "status", "agg") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["rule"] == "agg" and shown["owners"] == ["a", "b"] and shown["missing"] == ["a", "b"]
    assert rule_cli(config_path, "approve", "agg") == 2
    assert "a valid token is required" in capsys.readouterr().err
    assert rule_cli(config_path, "approve", "agg", token="secret-ana") == 1
    assert "collab.not_approver" in capsys.readouterr().err
    assert rule_cli(config_path, "propose", "agg", token="secret-appr_b") == 0
    assert json.loads(capsys.readouterr().out)["proposed_by"] == "appr_b"
    assert rule_cli(config_path, "approve", "agg", token="secret-appr_a") == 0
    assert json.loads(capsys.readouterr().out)["missing"] == ["b"]
    assert rule_cli(config_path, "approve", "agg", token="secret-appr_b") == 0
    assert json.loads(capsys.readouterr().out)["approved"] is True

    engine = Engine.from_config_file(config_path)  # what the CLI stored is what the engine reads
    try:
        assert run(engine).table.to_pylist() == ROWS
        assert rule_cli(config_path, "revoke", "agg", token="secret-appr_a") == 0
        out = json.loads(capsys.readouterr().out)
        assert out["revoked"] == 1 and out["missing"] == ["a"]
        with pytest.raises(Refused):
            run(engine)
    finally:
        engine.close()
    assert rule_cli(config_path, "status", "nope") == 1
    assert "rule.unknown" in capsys.readouterr().err


def test_http_round_trip(config_path):
    from gateway.http.app import create_app

    engine = Engine.from_config_file(config_path)
    try:
        client = create_app(lambda: engine).test_client()

        def auth(user):
            return {"Authorization": f"Bearer secret-{user}"}

        query = {"sql": SQL}
        refused = client.post("/v1/query", json=query, headers=auth("ana"))
        assert refused.status_code == 403
        problem = refused.get_json()
        assert problem["rule"] == "rule.not_approved" and problem["sqlstate"] == "42501"
        assert "a, b" in problem["detail"]

        shown = client.get("/v1/rules/agg/status", headers=auth("ana"))
        assert shown.status_code == 200 and shown.get_json()["missing"] == ["a", "b"]
        assert client.post("/v1/rules/agg/approve", headers=auth("ana")).status_code == 403
        assert client.post("/v1/rules/agg/propose", headers=auth("appr_b")).get_json()["proposed_by"] == "appr_b"
        first = client.post("/v1/rules/agg/approve", headers=auth("appr_a"))
        assert first.status_code == 200 and first.get_json()["missing"] == ["b"] and first.get_json()["approval_sha256"]
        assert client.post("/v1/rules/agg/approve", headers=auth("appr_b")).get_json()["approved"] is True

        ran = client.post("/v1/query", json=query, headers=auth("ana"))
        assert ran.status_code == 200, ran.get_json()
        revoked = client.post("/v1/rules/agg/revoke", headers=auth("appr_b"))
        assert revoked.get_json()["revoked"] == 1 and revoked.get_json()["missing"] == ["b"]
        again = client.post("/v1/query", json=query, headers=auth("ana"))  # the identical statement, recalled
        assert again.status_code == 403 and again.get_json()["rule"] == "rule.not_approved"

        unknown = client.get("/v1/rules/nope/status", headers=auth("ana"))
        assert unknown.status_code == 404 and unknown.get_json()["rule"] == "rule.unknown"
        assert client.get("/v1/rules/agg/status").status_code == 401
    finally:
        engine.close()


def test_the_demo_approves_its_rules_as_both_owners(demo_config_path):
    from gateway.collab.approvals import Collaboration
    from gateway.config import load_config
    from gateway.policy.loader import load_policy

    config = load_config(demo_config_path)
    room = load_policy(config.policies[0])
    collab = Collaboration.from_config(config)
    for name in room.rules:
        shown = collab.status(room, name, "rule")
        assert shown.approved and shown.owners == ("publisher", "retailer")
        assert {a.approver for a in shown.approvals} == {"retailer_approver", "publisher_approver"}
    records = [r for r in collab.audit.records() if r.get("rule") == "rule.approved"]
    assert {r["front_end"] for r in records} == {"demo"}
