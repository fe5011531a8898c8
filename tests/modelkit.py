"""Model assets for tests: small real ONNX files made with scikit-learn and skl2onnx,
and a clean room that declares one (over a DuckDB file made from SQL).

Every test module that imports this skips, with the reason, when the models extra
(onnxruntime, onnx, scikit-learn, skl2onnx) did not install."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the models extra is not installed: pip install -e '.[models]'")
pytest.importorskip("onnxruntime", reason="the models extra is not installed: pip install -e '.[models]'")
pytest.importorskip("skl2onnx", reason="the models extra is not installed: pip install -e '.[models]'")

from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from skl2onnx import to_onnx  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO / "policies" / "models" / "purchase_propensity.onnx"


def write_classifier(path: Path, features: int = 2, seed: int = 0) -> str:
    """A logistic regression over `features` float inputs (one [n, features] matrix X,
    output `probabilities` [n, 2]); returns the file's sha256."""
    rng = np.random.default_rng(seed)
    x = rng.random((500, features)).astype(np.float32)
    y = (x.sum(axis=1) + rng.normal(0, 0.1, 500) > features / 2).astype(np.int64)
    model = LogisticRegression().fit(x, y)
    return _write(path, to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=15))


def write_regressor(path: Path, coefficients=(2.0, -1.0), intercept: float = 0.5) -> str:
    """y = intercept + coefficients . x exactly (a LinearRegression fitted on exact data),
    output `variable` [n, 1]; returns the file's sha256."""
    x = np.random.default_rng(1).random((50, len(coefficients))).astype(np.float32)
    y = intercept + x @ np.array(coefficients, dtype=np.float32)
    model = LinearRegression().fit(x, y)
    return _write(path, to_onnx(model, x[:1], target_opset=15))


def _write(path: Path, onnx_model) -> str:
    data = onnx_model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def model_entry(file: str, sha256: str, inputs=("a", "b"), output="probabilities", index=1, bounds=(0, 1),
                owner="owner_b") -> dict:
    output_spec = {"name": output, "bounds": list(bounds)}
    if index is not None:
        output_spec["index"] = index
    return {"owner": owner, "file": file, "sha256": sha256,
            "inputs": {name: {"type": "float"} for name in inputs}, "output": output_spec}


def classifier_engine(folder: Path, room_for):
    """An engine over `room_for(entry)`, the entry that of a classifier written to
    folder/clf.onnx, with PEOPLE_SQL's tables: what the model modules' fixtures build."""
    from tests.roomkit import build_engine

    sha = write_classifier(folder / "clf.onnx")
    return build_engine(folder, room_for(model_entry("clf.onnx", sha)), PEOPLE_SQL)


def scored_room(model: dict, **extra) -> dict:
    """Two owners: owner_a's people (unit id, features a and b as dimensions, a bounded
    measure spend) and owner_b's labels; owner_b brings the model. The analyst works for
    owner_b, with a rule over both tables that names the model."""
    room = {
        "cleanroom": "scored",
        "min_group_size": 5,
        "collaborators": {"owner_a": {}, "owner_b": {}},
        "models": {"m": model},
        "tables": {
            "people": {
                "owner": "owner_a", "source": "room", "relation": "people", "privacy_unit": "id",
                "columns": {"id": {"role": "join_key"}, "a": {"role": "dimension"}, "b": {"role": "dimension"},
                            "grp": {"role": "dimension"}, "spend": {"role": "measure", "bounds": [0, 100]},
                            "secret": {"role": "hidden"}},
            },
            "labels": {
                "owner": "owner_b", "source": "room", "relation": "labels", "privacy_unit": "id",
                "columns": {"id": {"role": "join_key"}, "label": {"role": "dimension"}},
            },
        },
        "rules": {
            "scoring": {"tables": ["people", "labels"], "aggregates": ["count", "count_distinct", "sum", "avg"],
                        "joins": [["people.id", "labels.id"]], "models": ["m"]},
            "plain": {"tables": ["people"], "aggregates": ["count", "sum", "avg"]},
        },
        "analysts": {"analyst": {"collaborator": "owner_b", "rules": ["scoring"], "templates": []},
                     "other": {"collaborator": "owner_a", "rules": ["plain"], "templates": []}},
    }
    room.update(extra)
    return room


# 200 people: a and b uniform on a grid, in 4 groups of 50; every one labelled.
PEOPLE_SQL = [
    "CREATE TABLE people AS SELECT i AS id, (i % 10) / 10.0 AS a, (i % 7) / 7.0 AS b, 'g' || (i % 4) AS grp, "
    "(i % 50)::DOUBLE AS spend, 'x' || i AS secret FROM range(200) t(i)",
    "CREATE TABLE labels AS SELECT i AS id, CASE WHEN i % 3 = 0 THEN 1 ELSE 0 END AS label FROM range(200) t(i)",
]
