"""Scoring throughput: score() through the gateway vs ONNX Runtime alone on the same
Arrow batches (docs/models.md#throughput).

    .venv/bin/python bench/scoring.py [--rows 1000000] [--reps 5]

A clean room over one DuckDB table of `rows` rows (three float features, 16 groups);
the demo's model (policies/models/purchase_propensity.onnx) declared in it twice: as `m`,
which executors compile to a SQL macro (a LinearClassifier: gateway/models/compiled.py),
and as `m_udf`, the same file with one Cast node appended to its output, a node the
compiler does not take, so executors score it with the ONNX Runtime Arrow function.
Timed, each `reps` times, medians reported:

- gateway, macro and function: `SELECT grp, SUM(score('m', x1, x2, x3)) FROM t GROUP BY grp`
  through Engine.run (resolve, authorise, the k test, an executor process, DuckDB running
  the macro, or calling the Arrow function once per vector of 2,048 rows);
- gateway without scoring: the same statement over SUM(x1 + x2 + x3), the engine's share;
  a path's scoring cost is its line minus this one;
- ONNX Runtime alone, on the same rows as Arrow batches of 2,048 (what the function is
  handed): per batch, the columns stacked into a float32 matrix, one session.run, the
  scores summed; the batches read from DuckDB beforehand, outside the timing;
- ONNX Runtime alone on the same rows as one batch (its best case, for reference);
- DuckDB alone (one thread, as ONNX Runtime alone has): SUM of the macro and of the Arrow
  function over the columns, SUM(x1), and a Python Arrow function that returns its first
  argument: the floor any function registered with DuckDB pays, whatever the model.

The target (issue 17): scoring within 1.5x of ONNX Runtime alone on the same batches.
DuckDB calls a scalar Arrow function once per vector (2,048 rows, fixed when DuckDB is
compiled); no setting of duckdb_settings() changes it, so the function path cannot take
larger batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime  # noqa: E402

from gateway.engine import QueryRequest  # noqa: E402
from gateway.models import scoring  # noqa: E402
from gateway.models.compiled import classify  # noqa: E402
from gateway.models.files import ModelFile, ModelInput, file_sha256  # noqa: E402
from tests.roomkit import build_engine  # noqa: E402

MODEL = REPO / "policies" / "models" / "purchase_propensity.onnx"
VECTOR = 2048  # DuckDB's vector size: the batches an Arrow function is called with


INPUTS = {"impressions": {"type": "float"}, "campaigns": {"type": "float"}, "ctv_share": {"type": "float"}}


def with_cast(folder: Path) -> Path:
    """The demo model with a Cast (float to float) after its output: the same scores, but
    a graph the compiler does not take, so executors register the ONNX Runtime function."""
    import onnx

    model = onnx.load(str(MODEL))
    [node] = model.graph.node
    node.output[1] = "probabilities_raw"
    model.graph.node.append(onnx.helper.make_node("Cast", ["probabilities_raw"], ["probabilities"],
                                                  to=onnx.TensorProto.FLOAT))
    path = folder / "propensity_cast.onnx"
    onnx.save(model, str(path))
    return path


def declaration(path: Path) -> dict:
    return {"owner": "a", "file": str(path), "sha256": file_sha256(path.read_bytes()), "inputs": INPUTS,
            "output": {"name": "probabilities", "index": 1, "bounds": [0, 1]}}


def model_file(path: Path) -> ModelFile:
    return ModelFile(str(path), file_sha256(path.read_bytes()), tuple(ModelInput(n, "float") for n in INPUTS),
                     "probabilities", 1, 0.0, 1.0)


def policy(udf_model: Path) -> dict:
    return {
        "cleanroom": "bench", "min_group_size": 10, "collaborators": {"a": {}},
        "models": {"m": declaration(MODEL), "m_udf": declaration(udf_model)},
        "tables": {"t": {"owner": "a", "source": "room", "relation": "t", "privacy_unit": "id",
                         "columns": {"id": {"role": "join_key"}, "grp": {"role": "dimension"},
                                     "x1": {"role": "measure", "bounds": [0, 60]},
                                     "x2": {"role": "measure", "bounds": [0, 6]},
                                     "x3": {"role": "measure", "bounds": [0, 1]}}}},
        "rules": {"r": {"tables": ["t"], "aggregates": ["count", "sum"], "models": ["m", "m_udf"]}},
        "analysts": {"bench": {"collaborator": "a", "rules": ["r"]}},
    }


def setup(rows: int) -> list[str]:
    return [f"CREATE TABLE t AS SELECT i AS id, i % 16 AS grp, (hash(i) % 6000) / 100.0 AS x1, "
            f"(hash(i + 1) % 7)::DOUBLE AS x2, (hash(i + 2) % 1000) / 1000.0 AS x3 FROM range({rows}) r(i)"]


def timed(function, reps: int) -> list[float]:
    function()  # warm: executors started, the model registered, files cached
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        udf_model = with_cast(Path(folder))
        assert not isinstance(classify(model_file(MODEL), MODEL.read_bytes()), Exception)  # compiles
        assert isinstance(classify(model_file(udf_model), udf_model.read_bytes()), Exception)  # does not
        engine = build_engine(Path(folder), policy(udf_model), setup(args.rows))
        try:
            scored = "SELECT grp, SUM(score('{}', x1, x2, x3)) AS s FROM t GROUP BY grp"
            plain = "SELECT grp, SUM(x1 + x2 + x3) AS s FROM t GROUP BY grp"
            run = lambda sql: engine.run(QueryRequest(user="bench", cleanroom="bench", sql=sql))  # noqa: E731
            macro = timed(lambda: run(scored.format("m")), args.reps)
            function = timed(lambda: run(scored.format("m_udf")), args.reps)
            without = timed(lambda: run(plain), args.reps)
            totals = {name: sum(run(scored.format(name)).table.column("s").to_pylist()) for name in ("m", "m_udf")}
        finally:
            engine.close()
        with duckdb.connect() as con:  # in memory, as executors are: the macro is created there
            con.execute(f"ATTACH '{Path(folder) / 'data' / 'room.duckdb'}' AS room (READ_ONLY)")
            con.execute("USE room")
            # the clamped features, as the gateway's SQL hands them to the function
            reader = con.execute("SELECT LEAST(GREATEST(x1, 0), 60), LEAST(GREATEST(x2, 0), 6), "
                                 "LEAST(GREATEST(x3, 0), 1) FROM t").to_arrow_reader(VECTOR)
            batches = list(reader)
            con.execute("SET threads = 1")  # as ONNX Runtime alone below
            con.execute("USE memory")
            scoring.register(con, model_file(MODEL))
            scoring.register_function(con, model_file(MODEL), "onnx_function")
            # DuckDB's own cost of calling an Arrow function: one that hands its first argument back
            con.create_function("identity", lambda a, b, c: a, [duckdb.sqltypes.DOUBLE] * 3, duckdb.sqltypes.DOUBLE,
                                type="arrow", side_effects=False)
            alone_sql = "SELECT SUM({}(x1, x2, x3)) FROM room.t"
            duck_macro = timed(lambda: con.execute(alone_sql.format(model_file(MODEL).function)).fetchall(),
                               args.reps)
            duck_function = timed(lambda: con.execute(alone_sql.format("onnx_function")).fetchall(), args.reps)
            identity = timed(lambda: con.execute(alone_sql.format("identity")).fetchall(), args.reps)
            no_function = timed(lambda: con.execute("SELECT SUM(x1) FROM room.t").fetchall(), args.reps)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])

    def per_batch():
        total = 0.0
        for batch in batches:
            matrix = np.column_stack([c.to_numpy(zero_copy_only=False) for c in batch.columns]).astype(np.float32)
            total += float(session.run(["probabilities"], {"X": matrix})[0][:, 1].sum())
        return total

    whole = np.column_stack([np.concatenate([b.column(i).to_numpy() for b in batches]) for i in range(3)])
    whole = whole.astype(np.float32)
    alone = timed(per_batch, args.reps)
    one_batch = timed(lambda: session.run(["probabilities"], {"X": whole}), args.reps)
    expected = per_batch()
    for name, total in totals.items():  # the same scores on both paths
        assert abs(expected - total) < 1e-6 * args.rows, (name, expected, total)

    median = statistics.median
    onnx_alone = median(alone)

    def line(name, times):
        print(f"{name:<52} {median(times) * 1000:9.1f} ms  {args.rows / median(times) / 1e6:7.2f} M rows/s")

    print(f"{args.rows:,} rows, {args.reps} runs each (medians); model {MODEL.name}")
    line("gateway: SUM(score(...)) by group, macro", macro)
    line("gateway: SUM(score(...)) by group, ONNX Runtime function", function)
    line("gateway: SUM(x1 + x2 + x3) by group (no model)", without)
    line(f"ONNX Runtime alone, {len(batches)} batches of {VECTOR}", alone)
    line("ONNX Runtime alone, one batch", one_batch)
    line("DuckDB alone, 1 thread: SUM(macro(x1, x2, x3))", duck_macro)
    line("DuckDB alone, 1 thread: SUM(function(x1, x2, x3))", duck_function)
    line("DuckDB alone, 1 thread: SUM(identity(x1, x2, x3)), Arrow", identity)
    line("DuckDB alone, 1 thread: SUM(x1)", no_function)
    print("scoring cost / ONNX Runtime alone on the same batches:")
    for name, times, base in (("gateway, macro", macro, without), ("gateway, function", function, without),
                              ("DuckDB alone, macro", duck_macro, no_function),
                              ("DuckDB alone, function", duck_function, no_function)):
        cost = median(times) - median(base)
        print(f"  {name:<24} {cost * 1000:8.1f} ms  {cost / onnx_alone:5.2f}x")
    print(f"gateway total / ONNX Runtime alone: macro {median(macro) / onnx_alone:.2f}x, "
          f"function {median(function) / onnx_alone:.2f}x")


if __name__ == "__main__":
    main()
