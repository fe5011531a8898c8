"""Model assets in the policy (docs/models.md): a declared ONNX file loads into the
model; a file that is not the declared one, or does not match its declared inputs
and output, is a policy error at the key that says otherwise, with file:line:col."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.modelkit import model_entry, scored_room, write_classifier, write_regressor
from gateway.errors import PolicyInvalid
from gateway.models.files import FUNCTION_PREFIX, ModelInput
from gateway.policy.loader import load_policy
from gateway.policy.model import Bounds


def write_policy(folder: Path, room: dict) -> Path:
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(room, sort_keys=False))
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    return info.value.problems


def line_of(path: Path, text: str) -> int:
    """The line a key is written on (first occurrence)."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.fixture
def classifier(tmp_path) -> tuple[str, str]:
    (tmp_path / "models").mkdir()
    return "models/clf.onnx", write_classifier(tmp_path / "models" / "clf.onnx")


def test_a_declared_model_loads_with_its_file_resolved_against_the_policy(tmp_path, classifier):
    file, sha = classifier
    room = load_policy(write_policy(tmp_path, scored_room(model_entry(file, sha))))
    model = room.models["m"]
    assert model.owner == "owner_b" and model.bounds == Bounds(0.0, 1.0)
    assert model.file.path == str(tmp_path / "models" / "clf.onnx")
    assert model.file.inputs == (ModelInput("a", "float"), ModelInput("b", "float"))
    assert (model.file.output, model.file.index, model.file.sha256) == ("probabilities", 1, sha)
    assert re.fullmatch(re.escape(FUNCTION_PREFIX) + "[0-9a-f]{24}", model.file.function)
    assert room.rules["scoring"].models == ("m",) and room.rules["plain"].models is None


def test_the_function_name_changes_with_anything_that_changes_what_is_scored(tmp_path, classifier):
    file, sha = classifier
    first = load_policy(write_policy(tmp_path, scored_room(model_entry(file, sha)))).models["m"].file
    narrower = load_policy(write_policy(tmp_path, scored_room(model_entry(file, sha, bounds=(0, 0.5)))))
    assert narrower.models["m"].file.function != first.function


def test_a_file_whose_hash_is_not_the_declared_one_is_refused_at_the_sha256_key(tmp_path, classifier):
    file, sha = classifier
    path = write_policy(tmp_path, scored_room(model_entry(file, "0" * 64)))
    [problem] = problems_of(path)
    line = line_of(path, "sha256:")
    assert problem.startswith(f"{path}:{line}:5: models.m.sha256: the file's sha256 is {sha}, not the declared")


def test_a_file_replaced_after_its_declaration_is_refused(tmp_path, classifier):
    file, sha = classifier
    write_classifier(tmp_path / file, seed=3)  # other weights, same shape
    [problem] = problems_of(write_policy(tmp_path, scored_room(model_entry(file, sha))))
    assert ": models.m.sha256: the file's sha256 is " in problem


@pytest.mark.parametrize("change, key, message", [
    ({"inputs": ("a", "b", "c")}, "models.m.inputs", "the file takes one 2-column matrix"),
    ({"output": "label_probabilities"}, "models.m.output.name", "the file has no output 'label_probabilities'"),
    ({"output": "label", "index": None}, "models.m.output.name", "output label is tensor(int64)"),
    ({"index": 2}, "models.m.output.index", "output probabilities has 2 columns: index 2 is not one of them"),
    ({"index": None}, "models.m.output.index", "declare which one is the score"),
])
def test_a_file_that_does_not_match_its_declaration_is_refused_where_the_declaration_differs(
        tmp_path, classifier, change, key, message):
    file, sha = classifier
    entry = model_entry(file, sha, **change)
    [problem] = problems_of(write_policy(tmp_path, scored_room(entry)))
    assert re.match(rf".*policy\.yaml:\d+:\d+: {re.escape(key)}: ", problem), problem
    assert message in problem


def test_an_input_declared_with_another_type_than_the_file_takes(tmp_path, classifier):
    file, sha = classifier
    entry = model_entry(file, sha)
    entry["inputs"]["b"]["type"] = "double"
    path = write_policy(tmp_path, scored_room(entry))
    [problem] = problems_of(path)
    assert f"{path}:{line_of(path, ' b:')}:" in problem and "models.m.inputs.b: the file's matrix input is tensor(float)" \
        in problem


def test_a_missing_file_and_a_file_that_is_not_onnx(tmp_path, classifier):
    _, sha = classifier
    [missing] = problems_of(write_policy(tmp_path, scored_room(model_entry("models/none.onnx", sha))))
    assert "models.m.file: cannot read the model file: No such file or directory" in missing
    junk = tmp_path / "models" / "junk.onnx"
    junk.write_bytes(b"not a model")
    from gateway.models.files import file_sha256

    [problem] = problems_of(write_policy(tmp_path, scored_room(model_entry("models/junk.onnx",
                                                                           file_sha256(junk.read_bytes())))))
    assert "models.m.file: ONNX Runtime cannot load the file" in problem


def test_a_regressor_with_a_one_column_output(tmp_path):
    sha = write_regressor(tmp_path / "reg.onnx")
    entry = model_entry("reg.onnx", sha, output="variable", index=0, bounds=(-10, 10))
    room = load_policy(write_policy(tmp_path, scored_room(entry)))
    assert room.models["m"].file.index == 0


def test_declaration_problems_the_schema_and_the_checks_report_all_at_once(tmp_path, classifier):
    file, sha = classifier
    entry = model_entry(file, sha.upper(), owner="nobody", bounds=(1, 0))
    entry["inputs"]["a"]["type"] = "string"
    entry["weights"] = "inline"
    room = scored_room(entry)
    room["rules"]["scoring"]["models"] = ["M"]  # names are case-sensitive
    path = write_policy(tmp_path, room)
    found = "\n".join(problems_of(path))
    assert "models.m.sha256: write the file's sha256 as 64 lowercase hex digits" in found
    assert "models.m.owner: unknown collaborator 'nobody'" in found
    assert "models.m.output.bounds: lower bound 1 must be below upper bound 0" in found
    assert "models.m.inputs.a.type: 'string' is not one of ['float', 'double', 'int64']" in found
    assert "models.m.weights: unknown key" in found
    assert "rules.scoring.models[0]: unknown model 'M' (declared: m)" in found
