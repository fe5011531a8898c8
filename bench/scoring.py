"""Scoring throughput: score() through the gateway vs ONNX Runtime alone on the same
Arrow batches (docs/models.md#throughput).

    .venv/bin/python bench/scoring.py [--rows 1000000] [--reps 5]

A clean room over one DuckDB table of `rows` rows (three float features, 16 groups);
the demo's model (policies/models/purchase_propensity.onnx) declared in it. Timed, each
`reps` times, medians reported:

- gateway: `SELECT grp, SUM(score('m', x1, x2, x3)) FROM t GROUP BY grp` through
  Engine.run (resolve, authorise, the k test, an executor process, DuckDB calling the
  registered Arrow function once per vector of 2,048 rows);
- gateway without scoring: the same statement over SUM(x1 + x2 + x3), the engine's share;
- ONNX Runtime alone, on the same rows as Arrow batches of 2,048 (what the function is
  handed): per batch, the columns stacked into a float32 matrix, one session.run, the
  scores summed; the batches read from DuckDB beforehand, outside the timing;
- ONNX Runtime alone on the same rows as one batch (its best case, for reference);
- DuckDB alone calling a Python Arrow function that returns its first argument: the floor
  any scoring function registered with DuckDB pays, whatever the model.

The target (issue 17): the gateway within 1.5x of ONNX Runtime alone on the same batches.
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
from gateway.models.files import file_sha256  # noqa: E402
from tests.roomkit import build_engine  # noqa: E402

MODEL = REPO / "policies" / "models" / "purchase_propensity.onnx"
VECTOR = 2048  # DuckDB's vector size: the batches an Arrow function is called with


def policy() -> dict:
    return {
        "cleanroom": "bench", "min_group_size": 10, "collaborators": {"a": {}},
        "models": {"m": {"owner": "a", "file": str(MODEL), "sha256": file_sha256(MODEL.read_bytes()),
                         "inputs": {"impressions": {"type": "float"}, "campaigns": {"type": "float"},
                                    "ctv_share": {"type": "float"}},
                         "output": {"name": "probabilities", "index": 1, "bounds": [0, 1]}}},
        "tables": {"t": {"owner": "a", "source": "room", "relation": "t", "privacy_unit": "id",
                         "columns": {"id": {"role": "join_key"}, "grp": {"role": "dimension"},
                                     "x1": {"role": "measure", "bounds": [0, 60]},
                                     "x2": {"role": "measure", "bounds": [0, 6]},
                                     "x3": {"role": "measure", "bounds": [0, 1]}}}},
        "rules": {"r": {"tables": ["t"], "aggregates": ["count", "sum"], "models": ["m"]}},
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
        engine = build_engine(Path(folder), policy(), setup(args.rows))
        try:
            scored = "SELECT grp, SUM(score('m', x1, x2, x3)) AS s FROM t GROUP BY grp"
            plain = "SELECT grp, SUM(x1 + x2 + x3) AS s FROM t GROUP BY grp"
            run = lambda sql: engine.run(QueryRequest(user="bench", cleanroom="bench", sql=sql))  # noqa: E731
            gateway = timed(lambda: run(scored), args.reps)
            without = timed(lambda: run(plain), args.reps)
            gateway_total = sum(run(scored).table.column("s").to_pylist())
        finally:
            engine.close()
        with duckdb.connect(str(Path(folder) / "data" / "room.duckdb"), read_only=True) as con:
            # the clamped features, as the gateway's SQL hands them to the function
            reader = con.execute("SELECT LEAST(GREATEST(x1, 0), 60), LEAST(GREATEST(x2, 0), 6), "
                                 "LEAST(GREATEST(x3, 0), 1) FROM t").to_arrow_reader(VECTOR)
            batches = list(reader)
            # DuckDB's own cost of calling an Arrow function: one that hands its first argument back
            con.create_function("identity", lambda a, b, c: a, [duckdb.sqltypes.DOUBLE] * 3, duckdb.sqltypes.DOUBLE,
                                type="arrow", side_effects=False)
            identity = timed(lambda: con.execute("SELECT SUM(identity(x1, x2, x3)) FROM t").fetchall(), args.reps)
            no_function = timed(lambda: con.execute("SELECT SUM(x1) FROM t").fetchall(), args.reps)
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
    assert abs(per_batch() - gateway_total) < 1e-6 * args.rows, (per_batch(), gateway_total)  # same scores

    def line(name, times):
        median = statistics.median(times)
        print(f"{name:<48} {median * 1000:9.1f} ms  {args.rows / median / 1e6:7.2f} M rows/s")

    print(f"{args.rows:,} rows, {args.reps} runs each (medians); model {MODEL.name}")
    line("gateway: SUM(score(...)) by group", gateway)
    line("gateway: SUM(x1 + x2 + x3) by group (no model)", without)
    line(f"ONNX Runtime alone, {len(batches)} batches of {VECTOR}", alone)
    line("ONNX Runtime alone, one batch", one_batch)
    line("DuckDB alone: SUM(identity(x1, x2, x3)), Arrow UDF", identity)
    line("DuckDB alone: SUM(x1)", no_function)
    print(f"gateway / ONNX Runtime on the same batches: {statistics.median(gateway) / statistics.median(alone):.2f}x")


if __name__ == "__main__":
    main()
