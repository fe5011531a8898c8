"""A model's owner approves every use of its model (docs/models.md#approvers): the
file's hash and declaration are part of what is approved, so a new file, or new
bounds, needs every owner's approval again; other parties see the declaration,
never the weights or where the file lies."""

from __future__ import annotations

import pytest
import yaml

from tests.modelkit import classifier_engine, scored_room, write_classifier
from gateway.collab.subjects import Kind
from gateway.engine import QueryRequest
from gateway.errors import Refused

TEMPLATE_SQL = "SELECT grp, avg(score('m', a, b)) AS s FROM people GROUP BY grp"


def room_with_template(model: dict) -> dict:
    room = scored_room(model, templates={"scores_by_group": {"sql": TEMPLATE_SQL}})
    room["analysts"]["analyst"]["templates"] = ["scores_by_group"]
    return room


@pytest.fixture
def engine(tmp_path):
    engine = classifier_engine(tmp_path, room_with_template)
    yield engine
    engine.close()


def run_template(engine):
    return engine.run(QueryRequest(user="analyst", cleanroom="scored", template="scores_by_group", params={}))


def test_the_model_owner_approves_a_template_that_reads_none_of_its_tables(engine):
    room = engine.context.cleanrooms["scored"]
    subject = engine.context.collab.subject(room, Kind.TEMPLATE, "scores_by_group")
    assert subject.tables == frozenset({"people"})  # owner_a's table only
    assert subject.owners == frozenset({"owner_a", "owner_b"})  # owner_b brings the model
    model = subject.form["models"]["m"]
    assert model["sha256"] == room.models["m"].file.sha256 and model["owner"] == "owner_b"
    assert "path" not in model  # where the file lies on one machine is not what is approved
    rule = engine.context.collab.subject(room, Kind.RULE, "scoring")
    assert rule.form["models"]["m"]["lower"] == 0.0 and "owner_b" in rule.owners
    plain = engine.context.collab.subject(room, Kind.RULE, "plain")
    assert "models" not in plain.form  # a rule that scores nothing keeps its hash


def test_a_new_declaration_needs_every_owner_again_the_model_owner_included(engine, tmp_path):
    assert run_template(engine).table.num_rows == 4
    before = engine.context.collab.subject(engine.context.cleanrooms["scored"], Kind.TEMPLATE, "scores_by_group")
    policy = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    policy["models"]["m"]["output"]["bounds"] = [0, 0.5]  # the SQL is unchanged; what it releases is not
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    assert engine.reload()
    room = engine.context.cleanrooms["scored"]
    after = engine.context.collab.subject(room, Kind.TEMPLATE, "scores_by_group")
    assert after.sha256 != before.sha256
    with pytest.raises(Refused) as refusal:
        run_template(engine)
    assert refusal.value.rule == "template.not_approved" and "owner_a, owner_b" in refusal.value.message
    engine.context.collab.record_approval(room, Kind.TEMPLATE, "scores_by_group", "owner_a", "approver_a")
    with pytest.raises(Refused) as refusal:
        run_template(engine)
    assert "not approved by owner_b" in refusal.value.message
    engine.context.collab.record_approval(room, Kind.TEMPLATE, "scores_by_group", "owner_b", "approver_b")
    released = run_template(engine).table.to_pydict()
    assert max(released["s"]) <= 0.5  # the new bounds clamp every score


def test_a_rule_that_scores_needs_the_model_owner_and_a_new_file_needs_it_again(engine, tmp_path):
    sql = "SELECT grp, avg(score('m', a, b)) AS s FROM people GROUP BY grp"
    request = QueryRequest(user="analyst", cleanroom="scored", sql=sql)
    assert engine.run(request).authorised_by == "rule:scoring"
    sha = write_classifier(tmp_path / "clf2.onnx", seed=9)
    policy = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    policy["models"]["m"].update(file="clf2.onnx", sha256=sha)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    assert engine.reload()
    with pytest.raises(Refused) as refusal:
        engine.run(QueryRequest(user="analyst", cleanroom="scored", sql=sql))
    assert refusal.value.rule == "rule.not_approved"
