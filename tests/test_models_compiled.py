"""Linear models compiled to a DuckDB macro (gateway/models/compiled.py): which graphs
compile and which go to the ONNX Runtime function, the macro's scores against ONNX
Runtime's (clamping and NULLs as the function does), and weights that never show in
what analysts or the audit log can see."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import onnx
import onnxruntime
import pyarrow as pa
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.modelkit import DEMO_MODEL, PEOPLE_SQL, model_entry, np, scored_room, write_classifier, write_regressor
from tests.roomkit import build_engine
from gateway.engine import QueryRequest
from gateway.errors import GatewayError
from gateway.models import scoring
from gateway.models.compiled import LinearForm, NotLinear, classify, macro_sql
from gateway.models.files import ModelFile, ModelInput, file_sha256

DEMO_INPUTS = ("impressions", "campaigns", "ctv_share")


def declared(path: Path, inputs, output="probabilities", index=1, bounds=(0.0, 1.0)) -> ModelFile:
    return ModelFile(str(path), file_sha256(path.read_bytes()), tuple(ModelInput(n, "float") for n in inputs),
                     output, index, float(bounds[0]), float(bounds[1]))


def demo() -> ModelFile:
    return declared(DEMO_MODEL, DEMO_INPUTS)


def graph_file(path: Path, nodes, initializers, output="y", width=3, out_width=2) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, out_width])],
                              [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name) for name, v in
                               initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


W = [[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]]  # [3 inputs, 2 outputs]


def matmul_add(path: Path, last: str | None) -> Path:
    nodes = [helper.make_node("MatMul", ["X", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["z" if last else "y"])]
    if last:
        nodes.append(helper.make_node(last, ["z"], ["y"]))
    return graph_file(path, nodes, {"W": W, "B": [0.1, -0.2]})


def onnx_scores(model: ModelFile, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.path, providers=["CPUExecutionProvider"])
    clipped = np.clip(x, -3.4028234e38, 3.4028234e38).astype(np.float32)
    out = np.asarray(session.run([model.output], {session.get_inputs()[0].name: clipped})[0], dtype=np.float64)
    return np.clip(out[:, model.index] if out.ndim == 2 else out.reshape(-1), model.lower, model.upper)


def both_paths(model: ModelFile, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The registered function's scores (macro when it compiles) and the ONNX Runtime function's."""
    con = duckdb.connect()
    path = scoring.register(con, model)
    scoring.register_function(con, model, "onnx_only")
    columns = [f"c{i}" for i in range(x.shape[1])]
    con.register("rows", pa.table({c: x[:, i] for i, c in enumerate(columns)}))
    args = ", ".join(columns)
    got = con.execute(f"SELECT {model.function}({args}) AS s, onnx_only({args}) AS u FROM rows").fetchnumpy()
    con.close()
    as_float = lambda v: np.array([np.nan if e is None or e is np.ma.masked else e for e in v], dtype=np.float64)  # noqa: E731
    return as_float(got["s"]), as_float(got["u"]), path


# -- which graphs compile -------------------------------------------------------------

def test_the_demo_model_and_trained_regressions_compile(tmp_path):
    form = classify(demo(), DEMO_MODEL.read_bytes())
    assert isinstance(form, LinearForm) and form.graph == "LinearClassifier" and form.transform == "logistic"
    sha = write_regressor(tmp_path / "reg.onnx")
    form = classify(declared(tmp_path / "reg.onnx", ("a", "b"), "variable", 0, (-10, 10)), (tmp_path / "reg.onnx").read_bytes())
    assert isinstance(form, LinearForm) and form.graph == "LinearRegressor" and sha
    for last, transform in ((None, "none"), ("Sigmoid", "logistic"), ("Softmax", "softmax")):
        path = matmul_add(tmp_path / f"mm_{last}.onnx", last)
        form = classify(declared(path, ("a", "b", "c"), "y", 1, (-100, 100)), path.read_bytes())
        assert isinstance(form, LinearForm) and form.transform == transform, last


def test_other_graphs_go_to_the_onnx_runtime_function(tmp_path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.linear_model import LogisticRegression
    from skl2onnx import to_onnx

    x = np.random.default_rng(0).random((100, 3)).astype(np.float32)
    y = (x.sum(axis=1) > 1.5).astype(np.int64)
    for name, estimator in (("tree", DecisionTreeClassifier(max_depth=3)),
                            ("scaled", make_pipeline(StandardScaler(), LogisticRegression()))):
        fitted = estimator.fit(x, y)
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(to_onnx(fitted, x[:1], options={id(fitted): {"zipmap": False}}, target_opset=15)
                         .SerializeToString())
        model = declared(path, ("a", "b", "c"))
        assert isinstance(classify(model, path.read_bytes()), NotLinear), name
        assert scoring.register(duckdb.connect(), model) == "function", name
    # a node after the output the compiler does not know (Cast), a Sigmoid then MatMul, Gemm with transA
    cast = onnx.load(str(DEMO_MODEL))
    cast.graph.node[0].output[1] = "raw"
    cast.graph.node.append(helper.make_node("Cast", ["raw"], ["probabilities"], to=TensorProto.FLOAT))
    (tmp_path / "cast.onnx").write_bytes(cast.SerializeToString())
    reason = classify(declared(tmp_path / "cast.onnx", DEMO_INPUTS), (tmp_path / "cast.onnx").read_bytes())
    assert isinstance(reason, NotLinear) and "Cast" in str(reason)
    twice = graph_file(tmp_path / "twice.onnx", [helper.make_node("Sigmoid", ["X"], ["s"]),
                                                 helper.make_node("MatMul", ["s", "W"], ["y"])], {"W": W})
    assert isinstance(classify(declared(twice, ("a", "b", "c"), "y", 0, (-9, 9)), twice.read_bytes()), NotLinear)
    gemm = graph_file(tmp_path / "gemm.onnx", [helper.make_node("Gemm", ["X", "W"], ["y"], transA=1)], {"W": W})
    assert isinstance(classify(declared(gemm, ("a", "b", "c"), "y", 0, (-9, 9)), gemm.read_bytes()), NotLinear)


# -- the macro's scores are ONNX Runtime's --------------------------------------------

def tolerance(model: ModelFile, x: np.ndarray) -> np.ndarray:
    """The stated bound on |macro - ONNX Runtime| per row (gateway/models/compiled.py): ONNX
    Runtime's float32 rounding, (k + 3) float32 unit roundoffs of |b| + sum |w_i x_i| over
    the rows of W its score reads, plus 1e-7 for its exp and its float32 output."""
    form = classify(model, Path(model.path).read_bytes())
    weights, biases = np.abs(np.asarray(form.weights)), np.abs(np.asarray(form.biases))
    rows = range(len(weights)) if form.transform == "softmax" else (form.column,)
    magnitude = sum(biases[r] + np.abs(x) @ weights[r] for r in rows)
    return 1e-7 + (x.shape[1] + 3) * 2.0 ** -24 * magnitude


def assert_within_tolerance(model: ModelFile, x: np.ndarray, macro: np.ndarray) -> None:
    expected = onnx_scores(model, x)
    assert np.array_equal(np.isnan(macro), np.isnan(expected))
    ok = ~np.isnan(expected)
    excess = np.abs(macro - expected)[ok] - tolerance(model, x)[ok]
    assert excess.max() <= 0, (excess.max(), x[ok][excess.argmax()])


def test_the_demo_macro_scores_as_onnx_runtime_within_its_rounding():
    rng = np.random.default_rng(7)
    rows = 200_000
    x = np.column_stack([rng.uniform(-1000, 1000, rows), rng.uniform(-100, 100, rows), rng.uniform(-10, 10, rows)])
    x[: rows // 2] = np.column_stack([rng.uniform(0, 60, rows // 2), rng.integers(0, 7, rows // 2),
                                      rng.uniform(0, 1, rows // 2)])  # half within the demo's bounds
    x[-rows // 4:] *= 10.0 ** rng.integers(-4, 6, (rows // 4, 3))  # a quarter over many scales
    macro, function, path = both_paths(demo(), x)
    assert path == "macro"
    assert_within_tolerance(demo(), x, macro)
    assert np.abs(macro - function).max() <= tolerance(demo(), x).max()
    # within the declared bounds (what the demo's measures are clamped to) the scores agree to 1e-6
    assert np.abs(macro - function)[: rows // 2].max() < 1e-6


def test_bad_inputs_score_null_and_extreme_ones_as_the_function_does():
    big = 3.0e38
    x = np.array([[np.nan, 1, 1], [1, np.inf, 1], [1, 1, -np.inf], [np.inf, -np.inf, 0], [1e300, 0, 0],
                  [-1e300, 1, 1], [big, -big, 1], [1e37, 0, 0], [5, 1, 0.5]])
    macro, function, _ = both_paths(demo(), x)
    assert np.isnan(macro[:4]).all() and np.isnan(function[:4]).all()
    assert np.array_equal(np.isnan(macro), np.isnan(function))
    ok = ~np.isnan(function)
    assert np.abs(macro[ok] - function[ok]).max() < 1e-6
    con = duckdb.connect()
    scoring.register(con, demo())
    assert con.execute(f"SELECT {demo().function}(NULL, 1, 1)").fetchone() == (None,)
    # double arithmetic that overflows (inputs near 1.8e308) scores NULL: never NaN, never an error
    assert con.execute(f"SELECT {demo().function}(1.7e308, 1.7e308, 1.7e308)").fetchone() == (None,)


def test_a_non_finite_input_with_a_zero_weight_still_scores_null(tmp_path):
    # ONNX Runtime multiplies every input (0 * NaN is NaN): the macro's finite test names it too
    zero = [[0.5, -1.0], [2.0, 0.25], [0.0, 1.5]]  # input c weighs 0 in output 0
    path = graph_file(tmp_path / "zero.onnx", [helper.make_node("MatMul", ["X", "W"], ["y"])], {"W": zero})
    model = declared(path, ("a", "b", "c"), "y", 0, (-100, 100))
    x = np.array([[1, 2, np.nan], [1, 2, np.inf], [1, 2, 3]])
    macro, function, registered = both_paths(model, x)
    assert registered == "macro"
    assert np.isnan(macro[:2]).all() and np.isnan(function[:2]).all() and macro[2] == pytest.approx(4.5)


def test_scores_are_clamped_to_the_declared_bounds_as_by_the_function(tmp_path):
    write_regressor(tmp_path / "reg.onnx", coefficients=(10.0, -3.0), intercept=0.5)
    model = declared(tmp_path / "reg.onnx", ("a", "b"), "variable", 0, (1, 5))
    x = np.random.default_rng(3).uniform(-2, 2, (20_000, 2))
    macro, function, path = both_paths(model, x)
    assert path == "macro"
    assert macro.min() == 1.0 and macro.max() == 5.0 and ((macro > 1) & (macro < 5)).any()
    assert_within_tolerance(model, x, macro)
    assert np.abs(macro - function).max() <= tolerance(model, x).max()


@pytest.mark.parametrize("last", [None, "Sigmoid", "Softmax"])
def test_matmul_add_graphs_score_as_onnx_runtime(tmp_path, last):
    path = matmul_add(tmp_path / "mm.onnx", last)
    model = declared(path, ("a", "b", "c"), "y", 1, (-100, 100))
    x = np.random.default_rng(5).uniform(-5, 5, (20_000, 3))
    x[-5000:] *= 10.0 ** np.random.default_rng(6).integers(-3, 5, (5000, 3))  # and over many scales
    macro, function, registered = both_paths(model, x)
    assert registered == "macro"
    assert_within_tolerance(model, x, macro)


@pytest.mark.parametrize("classes", [1, 3, 4])
def test_softmax_over_any_number_of_classes_scores_as_onnx_runtime(tmp_path, classes):
    # the macro writes class j's softmax as 1 / (1 + sum of exp(z_i - z_j)): every column checked
    rng = np.random.default_rng(classes)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"])]
    path = graph_file(tmp_path / "softmax.onnx", nodes, {"W": rng.normal(0, 1, (3, classes)),
                                                          "B": rng.normal(0, 1, classes)}, out_width=classes)
    x = rng.uniform(-50, 50, (20_000, 3))
    x[:3] = [[np.nan, 1, 1], [1, np.inf, 1], [1, 1, -np.inf]]
    for column in range(classes):
        model = declared(path, ("a", "b", "c"), "y", column, (0, 1))
        macro, function, registered = both_paths(model, x)
        assert registered == "macro"
        assert np.isnan(macro[:3]).all() and np.isnan(function[:3]).all()  # a non-finite input: NULL
        assert_within_tolerance(model, x[3:], macro[3:])


# -- the weights stay in the executor's catalog ----------------------------------------

def weight_spellings(model: ModelFile) -> list[str]:
    form = classify(model, Path(model.path).read_bytes())
    spellings = set()
    for value in [w for row in form.weights for w in row] + list(form.biases):
        for text in (repr(value), f"{value:.17e}", f"{value:.6g}", f"{value:.4f}"[:6]):
            spellings.add(text.lstrip("-"))
    return sorted(s for s in spellings if len(s.strip("0.")) >= 3)


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compiled")
    sha = write_classifier(folder / "clf.onnx")
    engine = build_engine(folder, scored_room(model_entry("clf.onnx", sha)), PEOPLE_SQL)
    yield engine, declared(folder / "clf.onnx", ("a", "b"))
    engine.close()


def run(engine, sql, user="analyst"):
    return engine.run(QueryRequest(user=user, cleanroom="scored", sql=sql))


SCORING = "SELECT grp, avg(score('m', a, b)) AS s FROM people GROUP BY grp ORDER BY grp"


def test_the_engine_scores_with_the_macro_and_shows_no_weight(room):
    engine, model = room
    assert classify(model, Path(model.path).read_bytes()).graph == "LinearClassifier"
    release = run(engine, SCORING)
    released = release.table.to_pydict()
    ids = np.arange(200)
    a, b = (ids % 10) / 10.0, (ids % 7) / 7.0
    expected = onnx_scores(model, np.column_stack([a, b]))
    for group, value in zip(range(4), released["s"]):
        assert value == pytest.approx(float(expected[ids % 4 == group].mean()), rel=1e-6)
    request = QueryRequest(user="analyst", cleanroom="scored", sql=SCORING)
    shown = [engine.compile(request).generated_sql, json.dumps(engine.explain(request)),
             json.dumps(engine.models("analyst", "scored")), json.dumps(release.notices),
             json.dumps(release.protection, default=str), str(engine.describe(request))]
    from gateway.audit_log import read_records

    shown.append(json.dumps(read_records(Path(engine.context.config.state_dir)), default=str))
    spellings = weight_spellings(model)
    body = macro_sql(model, classify(model, Path(model.path).read_bytes()))
    assert spellings and all(s in body for s in spellings if "e" in s)  # the spellings would find a leaked body
    for text in shown:
        leaked = [s for s in spellings if s in text]
        assert not leaked, (leaked, text[:300])


@pytest.mark.parametrize("sql", [
    "SELECT * FROM duckdb_functions()",
    "SELECT macro_definition FROM duckdb_functions() WHERE function_name LIKE 'cleanroom%'",
    "SELECT * FROM duckdb_macros()",
    "SELECT * FROM main.duckdb_functions()",
    "SELECT count(*) FROM people WHERE EXISTS (SELECT 1 FROM duckdb_functions())",
])
def test_analysts_cannot_read_duckdbs_function_catalogs(room, sql):
    engine, model = room
    with pytest.raises(GatewayError) as info:
        run(engine, sql)
    message = str(info.value)
    assert not [s for s in weight_spellings(model) if s in message]
    assert getattr(info.value, "rule", None) or "request id" in message


def test_a_failing_scoring_statement_names_no_weight(room):
    engine, model = room
    for sql in ("SELECT avg(score('m', a, b)) FROM people WHERE b = 'x'",
                "SELECT avg(score('m', a)) FROM people"):
        with pytest.raises(GatewayError) as info:
            run(engine, sql)
        assert not [s for s in weight_spellings(model) if s in str(info.value)], str(info.value)


def test_the_gateways_own_catalog_lists_no_scoring_function(room):
    engine, model = room
    for sql in ("SELECT * FROM information_schema.routines", "SELECT * FROM pg_catalog.pg_proc"):
        released = run(engine, sql)
        assert released.authorised_by == "catalog"  # the gateway's emulated catalog, never DuckDB's
        text = json.dumps(released.table.to_pydict(), default=str)
        assert "cleanroom_model" not in text and model.function not in text
        assert not [s for s in weight_spellings(model) if s in text]
