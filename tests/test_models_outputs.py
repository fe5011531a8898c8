"""Row-level outputs (docs/models.md#row-level-outputs): per-unit scores written to an
output for one receiver, keyed by its own unit ids, only with every owner's approval
of that exact template; every other shape is refused when the policy loads."""

from __future__ import annotations

import pytest
import yaml

from tests.modelkit import classifier_engine, model_entry, np, scored_room, write_classifier
from gateway.collab.outputs import UnknownOutput, read_output
from gateway.collab.subjects import Kind
from gateway.engine import QueryRequest
from gateway.errors import PolicyInvalid, Refused
from gateway.policy.loader import load_policy

ROW_SQL = ("WITH scored AS (SELECT p.id, score('m', p.a, p.b) AS propensity FROM people AS p) "
           "SELECT s.id AS person, s.propensity FROM scored AS s")


def row_level_room(model: dict, sql: str = ROW_SQL, output: dict | None = None) -> dict:
    template = {"sql": sql, "row_level_output": True,
                "output": output or {"name": "person_scores", "receivers": ["owner_a"], "key": "person"}}
    room = scored_room(model, templates={"person_scores": template})
    room["analysts"]["analyst"]["templates"] = ["person_scores"]
    return room


@pytest.fixture
def engine(tmp_path):
    engine = classifier_engine(tmp_path, row_level_room)
    yield engine
    engine.close()


def run_template(engine, user="analyst"):
    return engine.run(QueryRequest(user=user, cleanroom="scored", template="person_scores", params={}))


def test_every_units_score_goes_to_the_receiver_only(engine, tmp_path):
    receipt = run_template(engine).table.to_pydict()  # run by owner_b's analyst
    assert receipt["output"] == ["person_scores"] and receipt["rows"] == [200] and receipt["receivers"] == ["owner_a"]
    room = engine.context.cleanrooms["scored"]
    _, table = read_output(engine.context.collab, room, "other", "person_scores")  # owner_a's analyst
    rows = table.sort_by("person").to_pydict()
    import onnxruntime

    ids = np.arange(200)
    session = onnxruntime.InferenceSession(str(tmp_path / "clf.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"X": np.column_stack([(ids % 10) / 10, (ids % 7) / 7])
                                               .astype(np.float32)})[0][:, 1]
    assert rows["person"] == list(range(200))
    # the compiled macro (gateway/models/compiled.py) is within 1e-6 of ONNX Runtime, not bit-identical
    assert np.allclose(rows["propensity"], expected, rtol=0, atol=1e-6)
    with pytest.raises(UnknownOutput):  # the analyst who ran it is not the receiver
        read_output(engine.context.collab, room, "analyst", "person_scores")


def test_a_row_level_template_needs_every_owner_and_is_marked_so_in_what_they_approve(engine):
    room = engine.context.cleanrooms["scored"]
    subject = engine.context.collab.subject(room, Kind.TEMPLATE, "person_scores")
    assert subject.form["row_level_output"] == {"key": "person"}
    assert subject.owners == frozenset({"owner_a", "owner_b"})
    engine.context.collab.store.execute("DELETE FROM approvals WHERE collaborator = ?", ("owner_a",))
    with pytest.raises(Refused) as refusal:
        run_template(engine)
    assert refusal.value.rule == "template.not_approved" and "owner_a" in refusal.value.message


def problems(tmp_path, room: dict) -> str:
    write_classifier(tmp_path / "clf.onnx")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(room, sort_keys=False))
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    return "\n".join(info.value.problems)


@pytest.mark.parametrize("sql, output, expected", [
    (ROW_SQL, {"name": "o", "receivers": ["owner_b"], "key": "person"},
     "templates.person_scores.output.key: person is people.id, not the privacy unit of a table owner_b owns "
     "(labels.id)"),
    (ROW_SQL, {"name": "o", "receivers": ["owner_a", "owner_b"], "key": "person"},
     "templates.person_scores.output.receivers: a row-level output goes to exactly one receiver"),
    (ROW_SQL, {"name": "o", "receivers": ["owner_a"]}, "templates.person_scores.output: a row-level output "
                                                        "names its key"),
    (ROW_SQL, {"name": "o", "receivers": ["owner_a"], "key": "propensity"},
     "templates.person_scores.output.key: propensity is not an output column passed on unchanged"),
    ("SELECT p.id + 0 AS person, score('m', p.a, p.b) AS s FROM people AS p",
     {"name": "o", "receivers": ["owner_a"], "key": "person"},
     "templates.person_scores.output.key: person is not an output column passed on unchanged"),
    ("SELECT l.id AS person, score('m', p.a, p.b) AS s FROM people AS p JOIN labels AS l ON p.id = l.id",
     {"name": "o", "receivers": ["owner_a"], "key": "person"},
     "person is labels.id, not the privacy unit of a table owner_a owns (people.id)"),
])
def test_row_level_shapes_refused_when_the_policy_loads(tmp_path, sql, output, expected):
    from gateway.models.files import file_sha256

    room = row_level_room(model_entry("clf.onnx", "0" * 64), sql=sql, output=output)
    write_classifier(tmp_path / "clf.onnx")
    room["models"]["m"]["sha256"] = file_sha256((tmp_path / "clf.onnx").read_bytes())
    assert expected in problems(tmp_path, room)


def test_row_level_needs_an_output_and_without_it_rows_are_refused(tmp_path):
    from gateway.models.files import file_sha256

    write_classifier(tmp_path / "clf.onnx")
    room = row_level_room(model_entry("clf.onnx", file_sha256((tmp_path / "clf.onnx").read_bytes())))
    del room["templates"]["person_scores"]["output"]
    assert "templates.person_scores.row_level_output: a row-level output needs an output" in problems(tmp_path, room)
    del room["templates"]["person_scores"]["row_level_output"]  # the same rows, undeclared
    assert "templates.person_scores.sql: the outer query over private tables must aggregate" in problems(tmp_path, room)
