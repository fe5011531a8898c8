"""Differentially private training (docs/models.md#training): a logistic or linear
regression fitted with diffprivlib on rows the gateway never releases, exported
with skl2onnx as a model file a policy can declare.

The guarantee is diffprivlib's: epsilon-DP with respect to adding or removing one
row, given the declared bounds. So the rows are first made to fit them: one row
per privacy unit (the first one the engine returns; the others are dropped), every
feature and the label clamped to their declared bounds, and the bounds, never the
data, set the norms the mechanisms are calibrated to.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from gateway.models.files import EXTRA_HINT

KINDS = ("logistic", "linear")


class TrainingUnavailable(Exception):
    """diffprivlib, scikit-learn or skl2onnx is not installed."""


@dataclass(frozen=True)
class Trained:
    onnx: bytes  # the model file
    sha256: str
    features: tuple[str, ...]  # in the order the model takes them
    output: str  # `probabilities` (logistic: column 1 is the positive class) or `variable` (linear)
    index: int
    bounds: tuple[float, float]  # of the score: [0, 1], or the label's declared bounds
    rows: int  # units the model was fitted on (not released: a count noised by nothing)


def fit(kind: str, table: pa.Table, unit: str, label: str, bounds: dict[str, tuple[float, float]],
        epsilon: float, seed: int | None = None) -> Trained:
    """Fit `kind` on `table` (one column per feature, `unit`, `label`) under epsilon-DP."""
    try:
        from diffprivlib.models import LinearRegression as DPLinear
        from diffprivlib.models import LogisticRegression as DPLogistic
        from skl2onnx import to_onnx
        from sklearn.linear_model import LinearRegression, LogisticRegression
    except ImportError:
        raise TrainingUnavailable(f"training needs diffprivlib and skl2onnx: {EXTRA_HINT}") from None
    features = tuple(c for c in table.column_names if c not in (unit, label))
    table = _one_row_per_unit(table, unit)
    x = np.column_stack([_clamped(table[c], bounds[c]) for c in features]) if features else np.zeros((0, 0))
    y = _clamped(table[label], bounds[label])
    low = np.array([bounds[c][0] for c in features])
    high = np.array([bounds[c][1] for c in features])
    with warnings.catch_warnings():  # diffprivlib warns about bounds it was given, by design
        warnings.simplefilter("ignore")
        if kind == "logistic":
            norm = math.sqrt(sum(max(abs(a), abs(b)) ** 2 for a, b in zip(low, high)))
            private = DPLogistic(epsilon=epsilon, data_norm=norm, random_state=seed)
            private.fit(x, (y >= 0.5).astype(np.int64))
            plain = LogisticRegression()
            plain.classes_ = np.array([0, 1])
            score_bounds, output, index = (0.0, 1.0), "probabilities", 1
        else:
            private = DPLinear(epsilon=epsilon, bounds_X=(low, high), bounds_y=bounds[label], random_state=seed)
            private.fit(x, y)
            plain = LinearRegression()
            score_bounds, output, index = tuple(map(float, bounds[label])), "variable", 0
    # the DP coefficients in a plain scikit-learn model, which skl2onnx knows how to export
    plain.coef_, plain.intercept_ = private.coef_, np.atleast_1d(private.intercept_)
    plain.n_features_in_ = len(features)
    options = {id(plain): {"zipmap": False}} if kind == "logistic" else None
    model = to_onnx(plain, x[:1].astype(np.float32), options=options, target_opset=15)
    model.producer_version = ""
    data = model.SerializeToString()
    return Trained(data, hashlib.sha256(data).hexdigest(), features, output, index, score_bounds, table.num_rows)


def _one_row_per_unit(table: pa.Table, unit: str) -> pa.Table:
    units = table[unit].to_pylist()
    first: dict = {}
    for position, value in enumerate(units):
        if value is not None:
            first.setdefault(value, position)
    return table.take(sorted(first.values()))


def _clamped(column: pa.ChunkedArray, bounds: tuple[float, float]) -> np.ndarray:
    """A column as floats inside its bounds; NULL (and NaN) as the lower bound, so a
    missing value moves a row no further than the bounds allow."""
    values = np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    values = np.where(np.isfinite(values), values, bounds[0])
    return np.clip(values, bounds[0], bounds[1])
