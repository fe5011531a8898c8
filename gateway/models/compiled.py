"""Linear models compiled to a DuckDB macro: the same scores as ONNX Runtime, as SQL
arithmetic DuckDB runs inside its own vectors, without a Python call per 2,048 rows.

Which graphs compile (`classify`) is decided when the executor loads the file, from the
graph alone, and only for graphs this module understands completely:

- one float32 matrix input [n, k] (scikit-learn's export: every declared input `float`);
- one of the chains in CHAINS (Identity nodes aside): LinearClassifier (post_transform
  NONE, LOGISTIC or SOFTMAX, one coefficient row per class, at least two classes),
  LinearRegressor (NONE), or MatMul, MatMul + Add or Gemm (transA 0) with constant
  float32 weights, then at most one Sigmoid or Softmax over the last axis;
- the declared output computed by that chain.

Anything else (tree ensembles, scalers, normalizers, casts, other input types, a node
or attribute not listed) returns the reason it does not compile, and the executor
registers the ONNX Runtime function (gateway.models.scoring) instead: never a guess.

The macro computes the model's own arithmetic in double precision, where ONNX Runtime
computes it in float32 (inputs rounded to float32, float32 products and sums, its own
approximations of exp): the two differ by ONNX Runtime's rounding, within the bound
docs/models.md states per row, 1e-7 + (k + 3) 2^-24 (|b| + sum |w_i x_i|)
(tests/test_models_compiled.py holds every row to it; on the demo's declared input
ranges the difference is below 1e-6). A score is the transform of the affine map,
clamped to the declared bounds; a NULL, NaN or infinite input scores NULL, as does a row
whose affine form overflows double (inputs near 1e308): never NaN, never an error. Inputs beyond
float32's range (3.4e38), where ONNX Runtime's own float32 arithmetic may overflow to NaN
(then the function scores NULL), score the double-precision value instead: bounded
like every score.

The weights are in the macro's body, which lives only in the executor's DuckDB catalog:
the statement text, audit records, EXPLAIN and errors name the hash-derived function
(ModelFile.function) as before, and analysts can neither call it by name nor read
DuckDB's function catalogs (duckdb_functions(), duckdb_macros(): the resolver refuses
every duckdb_ name). The arithmetic cannot raise (double arithmetic and exp saturate to
infinity in DuckDB, and nothing is cast), so no error message carries a weight either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.models.files import ModelFile

TRANSFORMS = ("none", "logistic", "softmax")
# the node sequences compiled (Identity nodes aside): scikit-learn's and PyTorch's linear exports
CHAINS = frozenset({("LinearClassifier",), ("LinearRegressor",)} | {
    (*step, *last) for step in (("MatMul",), ("MatMul", "Add"), ("Gemm",)) for last in ((), ("Sigmoid",), ("Softmax",))})


@dataclass(frozen=True)
class LinearForm:
    """scores = transform(W x + b), the score being column `column` of it."""

    weights: tuple[tuple[float, ...], ...]  # [outputs][inputs], float32 values held as doubles
    biases: tuple[float, ...]  # [outputs]
    transform: str  # one of TRANSFORMS
    column: int
    graph: str  # what the graph was, for the operator's log and tests ("LinearClassifier")


class NotLinear(Exception):
    """The graph is not one this module compiles; the message says what it has instead."""


def classify(model: ModelFile, data: bytes) -> LinearForm | NotLinear:
    """The linear form of a declared model file's graph, or why it has none."""
    try:
        return _classify(model, data)
    except NotLinear as reason:
        return reason


def _classify(model: ModelFile, data: bytes) -> LinearForm:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise NotLinear("the onnx package is not installed") from None
    try:
        graph = onnx.load_from_string(data).graph
    except Exception:  # not parseable by onnx: ONNX Runtime's function decides what it is
        raise NotLinear("the onnx package cannot parse the file") from None
    if any(i.type != "float" for i in model.inputs):
        raise NotLinear("an input is not declared float")
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise NotLinear(f"the graph has {len(inputs)} inputs, not one matrix")
    matrix = inputs[0].type.tensor_type
    width = len(model.inputs)
    if matrix.elem_type != onnx.TensorProto.FLOAT or len(matrix.shape.dim) != 2 or \
            matrix.shape.dim[1].dim_value != width:
        raise NotLinear(f"the input is not one float [n, {width}] matrix")
    if any(c.dtype != np.float32 for c in constants.values()):
        raise NotLinear("a constant is not float32")
    # name -> (W [m, k], b [m], transform): the values the chain has computed so far
    values: dict[str, tuple[np.ndarray, np.ndarray, str]] = {
        inputs[0].name: (np.eye(width), np.zeros(width), "none")}
    kinds = []
    for node in graph.node:
        kinds.append(node.op_type)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx", "ai.onnx.ml"):
            raise NotLinear(f"node {node.op_type} of domain {node.domain}")
        operands = list(node.input)
        step = _STEPS.get(node.op_type)
        if step is None:
            raise NotLinear(f"node {node.op_type} is not one of {', '.join(sorted(_STEPS))}")
        results = step(operands, attributes, values, constants)
        for name, result in zip(node.output, results):
            if name and result is not None:
                values[name] = result
    chain = tuple(k for k in kinds if k != "Identity")
    if chain not in CHAINS:
        # one matrix step, so the magnitude test bounds every float32 value ONNX Runtime computes
        raise NotLinear(f"the chain {' -> '.join(chain) or 'of no node'} is not one of the linear chains compiled")
    found = values.get(model.output)
    if found is None:
        raise NotLinear(f"output {model.output} is not computed by a linear chain")
    w, b, transform = found
    outputs = w.shape[0]
    column = model.index if model.index is not None else 0
    if not 0 <= column < outputs or (model.index is None and outputs != 1):
        raise NotLinear(f"output {model.output} has {outputs} columns")
    return LinearForm(tuple(tuple(float(v) for v in row) for row in w), tuple(float(v) for v in b),
                      transform, column, "+".join(kinds))


def _affine(operand: str, values) -> tuple[np.ndarray, np.ndarray]:
    found = values.get(operand)
    if found is None:
        raise NotLinear(f"{operand} is not a linear function of the input")
    w, b, transform = found
    if transform != "none":
        raise NotLinear("a transform is followed by another node")
    return w, b


def _constant(operand: str, constants) -> np.ndarray:
    if operand not in constants:
        raise NotLinear(f"{operand} is not a constant")
    return constants[operand].astype(np.float64)


def _only(attributes: dict, allowed: set[str]) -> None:
    unknown = sorted(set(attributes) - allowed)
    if unknown:
        raise NotLinear(f"attribute {unknown[0]} is not understood")


def _post_transform(attributes: dict, allowed: tuple[str, ...]) -> str:
    transform = attributes.get("post_transform", b"NONE")
    transform = (transform.decode() if isinstance(transform, bytes) else str(transform)).lower()
    if transform not in allowed:
        raise NotLinear(f"post_transform {transform.upper()}")
    return transform


def _linear_classifier(operands, attributes, values, constants):
    _only(attributes, {"classlabels_ints", "classlabels_strings", "coefficients", "intercepts", "multi_class",
                       "post_transform"})
    w0, b0 = _affine(operands[0], values)
    labels = attributes.get("classlabels_ints") or attributes.get("classlabels_strings") or []
    classes = len(labels)
    coefficients = np.asarray(attributes.get("coefficients", []), dtype=np.float32).astype(np.float64)
    k = w0.shape[0]
    # one coefficient row per class: ONNX Runtime's special case of one row for two classes is not compiled
    if classes < 2 or coefficients.size != classes * k or attributes.get("multi_class", 0) != 0:
        raise NotLinear(f"LinearClassifier with {coefficients.size} coefficients for {classes} classes")
    intercepts = np.asarray(attributes.get("intercepts", [0.0] * classes), dtype=np.float32).astype(np.float64)
    if intercepts.size != classes:
        raise NotLinear("LinearClassifier intercepts are not one per class")
    transform = _post_transform(attributes, TRANSFORMS)
    w = coefficients.reshape(classes, k)
    return None, (w @ w0, w @ b0 + intercepts, transform)  # outputs: label (not compiled), probabilities


def _linear_regressor(operands, attributes, values, constants):
    _only(attributes, {"coefficients", "intercepts", "targets", "post_transform"})
    w0, b0 = _affine(operands[0], values)
    targets = int(attributes.get("targets", 1))
    coefficients = np.asarray(attributes.get("coefficients", []), dtype=np.float32).astype(np.float64)
    k = w0.shape[0]
    if coefficients.size != targets * k:
        raise NotLinear(f"LinearRegressor with {coefficients.size} coefficients for {targets} targets")
    intercepts = np.asarray(attributes.get("intercepts", [0.0] * targets), dtype=np.float32).astype(np.float64)
    if intercepts.size != targets:
        raise NotLinear("LinearRegressor intercepts are not one per target")
    _post_transform(attributes, ("none",))
    w = coefficients.reshape(targets, k)
    return ((w @ w0, w @ b0 + intercepts, "none"),)


def _matmul(operands, attributes, values, constants):
    _only(attributes, set())
    w0, b0 = _affine(operands[0], values)
    right = _constant(operands[1], constants)
    if right.ndim != 2 or right.shape[0] != w0.shape[0]:
        raise NotLinear(f"MatMul by a {list(right.shape)} constant")
    return ((right.T @ w0, right.T @ b0, "none"),)


def _add(operands, attributes, values, constants):
    _only(attributes, set())
    if len(operands) == 2 and operands[0] in constants and operands[1] not in constants:
        operands = operands[::-1]
    w0, b0 = _affine(operands[0], values)
    bias = _constant(operands[1], constants)
    if bias.ndim == 2 and bias.shape[0] == 1:
        bias = bias[0]
    if bias.ndim != 1 or bias.shape[0] not in (1, w0.shape[0]):
        raise NotLinear(f"Add of a {list(bias.shape)} constant")
    return ((w0, b0 + bias, "none"),)


def _gemm(operands, attributes, values, constants):
    _only(attributes, {"alpha", "beta", "transA", "transB"})
    if attributes.get("transA", 0) != 0:
        raise NotLinear("Gemm with transA")
    w0, b0 = _affine(operands[0], values)
    right = _constant(operands[1], constants)
    if attributes.get("transB", 0):
        right = right.T
    if right.ndim != 2 or right.shape[0] != w0.shape[0]:
        raise NotLinear(f"Gemm by a {list(right.shape)} constant")
    alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
    bias = _constant(operands[2], constants) if len(operands) > 2 and operands[2] else np.zeros(right.shape[1])
    bias = bias.reshape(-1)
    if bias.shape[0] not in (1, right.shape[1]):
        raise NotLinear(f"Gemm bias of {bias.shape[0]} values")
    return ((alpha * right.T @ w0, alpha * right.T @ b0 + beta * bias, "none"),)


def _identity(operands, attributes, values, constants):
    found = values.get(operands[0])
    if found is None:
        raise NotLinear(f"{operands[0]} is not a linear function of the input")
    return (found,)


def _sigmoid(operands, attributes, values, constants):
    _only(attributes, set())
    w, b = _affine(operands[0], values)
    return ((w, b, "logistic"),)


def _softmax(operands, attributes, values, constants):
    _only(attributes, {"axis"})
    if attributes.get("axis", -1) not in (-1, 1):
        raise NotLinear("Softmax over the rows")
    w, b = _affine(operands[0], values)
    return ((w, b, "softmax"),)


_STEPS = {"LinearClassifier": _linear_classifier, "LinearRegressor": _linear_regressor, "MatMul": _matmul,
          "Add": _add, "Gemm": _gemm, "Identity": _identity, "Sigmoid": _sigmoid, "Softmax": _softmax}


def _number(value: float) -> str:
    """A double literal DuckDB reads back exactly (the exponent makes it a DOUBLE, not a DECIMAL)."""
    return f"{value:.17e}"


def macro_sql(model: ModelFile, form: LinearForm) -> str:
    """CREATE MACRO (in the in-memory catalog: a TEMP one would not reach the executor's cursors)
    for the declaration's function; its body holds the weights.

    One CASE over flat double arithmetic, which DuckDB runs a vector at a time: each affine
    form is written once in the body and DuckDB's common-subexpression pass evaluates it once
    per row, the finite test included. The transform is folded into the forms so that no row
    pays for a negation or a maximum:

    - logistic: 1 / (1 + exp(-z)), with -z written as its own affine form;
    - softmax: exp(z_j) / sum_i exp(z_i) = 1 / (1 + sum_{i != j} exp(z_i - z_j)), one affine
      form per other class (an exp that overflows to infinity gives the score's limit, 0; no
      maximum is subtracted because none can give NaN);
    - none: z, clamped to the declared bounds.
    """
    arguments = [f"x{i}" for i in range(len(model.inputs))]
    weights = np.asarray(form.weights, dtype=np.float64)
    biases = np.asarray(form.biases, dtype=np.float64)
    j = form.column
    if form.transform == "logistic":
        forms = [(-weights[j], -biases[j])]
    elif form.transform == "softmax":
        others = [i for i in range(len(weights)) if i != j]
        forms = [(weights[i] - weights[j], biases[i] - biases[j]) for i in others] or [(weights[j] * 0.0, 0.0)]
    else:
        forms = [(weights[j], biases[j])]
    # the first form is the finite test: it names every input (0.0 * x where its weight is 0, so a
    # NaN or infinite input still makes it non-finite, as it makes ONNX Runtime's score NaN)
    written = [_affine_sql(w, b, arguments, every_input=(n == 0)) for n, (w, b) in enumerate(forms)]
    if form.transform == "logistic":
        score = f"1.0 / (1.0 + exp({written[0]}))"
    elif form.transform == "softmax":
        score = "1.0" if not others else f"1.0 / (1.0 + {' + '.join(f'exp({f})' for f in written)})"
    else:
        score = written[0]
    # a probability needs no clamp when the declared bounds hold [0, 1]
    within = form.transform != "none" and model.lower <= 0.0 and model.upper >= 1.0
    bounded = score if within else f"LEAST(GREATEST({score}, {_number(model.lower)}), {_number(model.upper)})"
    return (f"CREATE OR REPLACE MACRO {model.function}({', '.join(arguments)}) AS "
            f"(CASE WHEN isfinite({written[0]}) THEN {bounded} END)")


def _affine_sql(weights: np.ndarray, bias: float, arguments: list[str], every_input: bool) -> str:
    terms = [f"{_number(float(w))} * {x}" for w, x in zip(weights, arguments) if w != 0.0 or every_input]
    return "(" + " + ".join([_number(float(bias))] + terms) + ")"
