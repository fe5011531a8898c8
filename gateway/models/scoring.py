"""The scoring function executors register with DuckDB: ONNX Runtime over Arrow
batches, one call per DuckDB vector, clamped to the declared bounds. Linear graphs
are registered as a SQL macro instead (gateway.models.compiled: the same scores up to
ONNX Runtime's float32 rounding, without a Python call per vector); `register` chooses
from the graph.

No row's value can make it fail: a NULL, NaN or infinite input makes that
row's score NULL (aggregates skip it), never an error; values are cast to the
declared input type, integers clamped to int64's range first; the output is
clamped to [lower, upper], and a NaN the model produces is NULL. So a score is
a bounded measure whatever the data, and k thresholds, contribution bounding
and noise apply to it as to any declared measure.

Registered only by the gateway, under a name only the resolver writes
(ModelFile.function); analysts cannot create functions (the engine is locked
and CREATE FUNCTION never passes the resolver).
"""

from __future__ import annotations

import inspect

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.models.compiled import LinearForm, NotLinear, classify, macro_sql
from gateway.models.files import Layout, ModelFile, load, read

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_LIMIT = 2.0 ** 62  # well inside int64, so the cast of a clamped double never overflows


class Scorer:
    """Callable DuckDB gives Arrow arrays (one per argument) and takes an Arrow array back."""

    def __init__(self, model: ModelFile):
        self.model = model
        self.session, self.layout = load(model)
        self.output = [model.output]
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        # DuckDB counts a function's parameters from its signature: one per declared input
        self.__signature__ = inspect.Signature([inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY)
                                                for i in range(len(model.inputs))])

    def __call__(self, *columns: pa.Array) -> pa.Array:
        values = [_floats(column) for column in columns]
        rows = len(values[0]) if values else 0
        matrix = np.column_stack(values)
        valid = np.isfinite(matrix).all(axis=1)
        if valid.all():  # the usual case: no copy through a mask
            if self.layout.tensor is not None:  # one matrix input: the stacked columns as they are
                return self._scores({self.layout.tensor: _as(matrix, self.layout.dtype)}, rows, None)
            return self._scores(self._feed(values, None), rows, None)
        if not valid.any():
            return pa.nulls(rows, pa.float64())
        return self._scores(self._feed(values, valid), rows, valid)

    def _scores(self, feed: dict, rows: int, valid: np.ndarray | None) -> pa.Array:
        result = np.asarray(self.session.run(self.output, feed)[0], dtype=np.float64)
        if result.ndim == 2:
            result = result[:, self.model.index]
        result = result.reshape(-1)
        if valid is not None:
            scores = np.full(rows, np.nan)
            scores[valid] = result
        else:
            scores = result
        scores = np.clip(scores, self.model.lower, self.model.upper)  # NaN stays NaN: NULL below
        nan = np.isnan(scores)
        return pa.array(scores, type=pa.float64(), mask=nan if nan.any() else None)

    def _feed(self, values: list[np.ndarray], valid: np.ndarray | None) -> dict[str, np.ndarray]:
        """The graph's inputs from the rows (only the `valid` ones, when given)."""
        layout: Layout = self.layout
        if layout.tensor is not None:
            matrix = np.column_stack([v if valid is None else v[valid] for v in values])
            return {layout.tensor: _as(matrix, layout.dtype)}
        feed = {}
        for declared, value in zip(self.model.inputs, values):
            graph = self._inputs[declared.name]
            column = _as(value if valid is None else value[valid], graph.type)
            feed[declared.name] = column.reshape(-1, 1) if len(graph.shape) == 2 else column
        return feed


def _floats(column) -> np.ndarray:
    """One argument as float64, NULL as NaN (the resolver passes DOUBLEs)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        column = pc.fill_null(column.cast(pa.float64()), np.nan)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _as(values: np.ndarray, onnx_type: str) -> np.ndarray:
    dtype = _DTYPES[onnx_type]
    if dtype is np.int64:
        return np.rint(np.clip(values, -_INT64_LIMIT, _INT64_LIMIT)).astype(np.int64)
    if dtype is np.float32:  # beyond float32's range a value would become infinite
        limit = _FLOAT32_MAX
        if values.size and max(-values.min(), values.max()) > limit:
            values = np.clip(values, -limit, limit)
        return values.astype(np.float32)
    return values.astype(dtype, copy=False)


def register(connection, model: ModelFile) -> str:
    """Make the declaration's function (ModelFile.function) callable on a DuckDB connection
    (an executor's): a SQL macro when the graph is linear (gateway.models.compiled), the
    ONNX Runtime function for every other graph. Returns which: "macro" or "function"."""
    form = classify(model, read(model))  # the declared bytes (read checks the sha256 again)
    if isinstance(form, NotLinear):
        register_function(connection, model, model.function)
        return "function"
    register_macro(connection, model, form)
    return "macro"


def register_function(connection, model: ModelFile, name: str) -> None:
    """The ONNX Runtime function under `name`: one Python call per DuckDB vector."""
    connection.create_function(
        name, Scorer(model), [duckdb.sqltypes.DOUBLE] * len(model.inputs), duckdb.sqltypes.DOUBLE,
        type="arrow", null_handling="special", exception_handling="default", side_effects=False)


def register_macro(connection, model: ModelFile, form: LinearForm) -> None:
    """The compiled macro: the model's arithmetic in SQL, no Python call per vector."""
    connection.execute(macro_sql(model, form))


def ensure_registered(connection, models, registered: set[str]) -> None:
    """Register the models a statement scores that this connection does not have yet."""
    for model in models:
        if model.function not in registered:
            register(connection, model)
            registered.add(model.function)
