"""Training under differential privacy (docs/models.md#training): a training template's
rows never leave; `Engine.train` (cleanroom train, POST /v1/train) charges epsilon,
fits diffprivlib's regression, and stores an ONNX file whose declaration a policy
can add as a model owned by the requester's collaborator."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.modelkit import classifier_engine, model_entry, scored_room, write_classifier
from gateway.collab.subjects import Kind
from gateway.engine import QueryRequest
from gateway.errors import BadParameter, GatewayError, PolicyInvalid, Refused
from gateway.policy.loader import load_policy

TRAINING_SQL = "SELECT p.id, p.a, p.b, l.label FROM people AS p JOIN labels AS l ON p.id = l.id"
TRAINING = {"sql": TRAINING_SQL, "training": {"kind": "logistic", "label": "label"},
            "bounds": {"a": [0, 1], "b": [0, 1], "label": [0, 1]}}


def training_room(model: dict, template: dict | None = None) -> dict:
    room = scored_room(model, templates={"fit_people": template or TRAINING},
                       privacy={"epsilon_per_query": 1.0, "budget": {"epsilon": 5.0}})
    room["analysts"]["analyst"]["templates"] = ["fit_people"]
    return room


@pytest.fixture
def engine(tmp_path):
    engine = classifier_engine(tmp_path, training_room)
    yield engine
    engine.close()


def test_a_fit_is_charged_stored_and_declared_for_the_requester(engine, tmp_path):
    receipt = engine.train("analyst", "scored", "fit_people", {}, "people_model", 2.0).table.to_pydict()
    assert engine.budget("analyst", "scored")["spent"]["epsilon"] == pytest.approx(2.0)
    declaration = json.loads(receipt["declaration"][0])["people_model"]
    assert declaration["owner"] == "owner_b" and receipt["owner"] == ["owner_b"]  # the analyst's collaborator
    assert list(declaration["inputs"]) == ["a", "b"]
    assert declaration["output"] == {"name": "probabilities", "index": 1, "bounds": [0.0, 1.0]}
    assert str(tmp_path / "state") in declaration["file"]  # never released: a file in the gateway's state
    policy = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    policy["models"]["people_model"] = declaration
    (tmp_path / "with_model.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    room = load_policy(tmp_path / "with_model.yaml")  # the file is the declared one, with the declared shape
    assert room.models["people_model"].file.sha256 == receipt["sha256"][0]


def test_the_rows_of_a_training_template_are_never_released(engine):
    with pytest.raises(Refused) as refusal:
        engine.run(QueryRequest(user="analyst", cleanroom="scored", template="fit_people", params={}))
    assert refusal.value.rule == "template.training"


def test_a_fit_needs_every_owners_approval_and_a_budget(engine):
    room = engine.context.cleanrooms["scored"]
    assert engine.context.collab.subject(room, Kind.TEMPLATE, "fit_people").form["training"] == \
        {"kind": "logistic", "label": "label"}
    with pytest.raises(GatewayError) as refusal:  # more than the budget of 5 holds
        engine.train("analyst", "scored", "fit_people", {}, "m2", 6.0)
    assert refusal.value.rule == "privacy.budget"
    assert engine.budget("analyst", "scored")["spent"]["epsilon"] == 0  # refused before anything was spent
    engine.train("analyst", "scored", "fit_people", {}, "m3", 4.0)
    with pytest.raises(GatewayError) as refusal:
        engine.train("analyst", "scored", "fit_people", {}, "m4", 2.0)
    assert refusal.value.rule == "privacy.budget"
    engine.context.collab.store.execute("DELETE FROM approvals WHERE collaborator = ?", ("owner_a",))
    with pytest.raises(Refused) as refusal:
        engine.train("analyst", "scored", "fit_people", {}, "m5", 0.5)
    assert refusal.value.rule == "template.not_approved"


@pytest.mark.parametrize("name, epsilon", [("bad name", 1.0), ("ok", 0), ("ok", "1"), ("ok", True), ("m", 1.0)])
def test_bad_training_requests(engine, name, epsilon):
    with pytest.raises(GatewayError) as error:
        engine.train("analyst", "scored", "fit_people", {}, name, epsilon)
    assert isinstance(error.value, (BadParameter, Refused)) and error.value.rule.startswith("train.")


@pytest.mark.parametrize("change, expected", [
    ({"bounds": {"a": [0, 1], "label": [0, 1]}}, "templates.fit_people.bounds: b needs bounds"),
    ({"training": {"kind": "logistic", "label": "nope"}}, "templates.fit_people.training.label: nope is not"),
    ({"sql": "SELECT p.a, p.id, p.b, l.label FROM people AS p JOIN labels AS l ON p.id = l.id",
      "bounds": {"a": [0, 1], "b": [0, 1], "label": [0, 1], "id": [0, 1]}},
     "the first output column (a) must be a table's privacy unit"),
    ({"bounds": {"a": [0, 1], "b": [0, 1], "label": [0, 2]}}, "a logistic regression's label is 0 or 1"),
    ({"output": {"name": "o", "receivers": ["owner_a"]}}, "a training template releases nothing"),
])
def test_training_templates_refused_when_the_policy_loads(tmp_path, change, expected):
    sha = write_classifier(tmp_path / "clf.onnx")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(training_room(model_entry("clf.onnx", sha), {**TRAINING, **change})))
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    assert expected in "\n".join(info.value.problems)
