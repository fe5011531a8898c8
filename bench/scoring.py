"""Scoring throughput: score() through the gateway vs ONNX Runtime alone on the same
Arrow batches (docs/models.md#throughput).

    .venv/bin/python bench/scoring.py [--rows 1000000] [--reps 7] [--threads 1]

A clean room over one DuckDB table of `rows` rows (three float features, 16 groups, a
unit per 100 rows); the demo's model (policies/models/purchase_propensity.onnx) declared
in it twice: as `m`, which executors compile to a SQL macro (a LinearClassifier:
gateway/models/compiled.py), and as `m_udf`, the same file with one Cast node appended
to its output, a node the compiler does not take, so executors score it with the ONNX
Runtime Arrow function.

Every side runs on `threads` threads: the executors' DuckDB (engine.threads), DuckDB
alone (SET threads) and ONNX Runtime alone (intra_op_num_threads). Every line below is
timed once per round, `reps` rounds, in a rotating order, so load from other processes
falls on all of them alike; medians reported, of wall time and of CPU time (this
process's and its children's, every thread: on a shared machine wall time also counts
the waits for a core, CPU time only the work). A cost and its ratio to ONNX Runtime
alone are taken within each round, their medians over rounds reported:

- gateway, macro and function: `SELECT grp, SUM(score('m', x1, x2, x3)) FROM t GROUP BY grp`
  through Engine.run (resolve, authorise, the k test, an executor process, DuckDB running
  the macro, or calling the Arrow function once per vector of 2,048 rows);
- gateway without scoring: the same statement over SUM(x1 + x2 + x3), the engine's share;
  a path's scoring cost is its time minus this one's;
- ONNX Runtime alone, on the same rows as Arrow batches of 2,048 (what the function is
  handed): per batch, the columns stacked into a float32 matrix, one session.run, the
  scores summed; the batches read from DuckDB beforehand, outside the timing; and, the
  strictest baseline, its session.run calls alone on matrices stacked beforehand (what
  turning Arrow columns into ONNX Runtime's input costs left out);
- ONNX Runtime alone on the same rows as one batch (its best case, for reference);
- DuckDB alone: SUM of the macro and of the Arrow function over the columns, and of a
  Python Arrow function that returns its first argument (the floor any function
  registered with DuckDB pays, whatever the model); SUM(x1 + x2 + x3), which reads the
  same three columns (decompressing them is most of it), is what a path's cost is over.

The target (issue 17): scoring within 1.5x of ONNX Runtime alone on the same batches.
"""

from __future__ import annotations

import argparse
import math
import os
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
ROWS_PER_UNIT = 100


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
    # a unit (id) has ROWS_PER_UNIT rows, as a household has many impressions: the k test's
    # COUNT(DISTINCT id) then stays small beside the scoring it is subtracted from
    units = max(rows // ROWS_PER_UNIT, 1)
    return [f"CREATE TABLE t AS SELECT i % {units} AS id, i % 16 AS grp, (hash(i) % 6000) / 100.0 AS x1, "
            f"(hash(i + 1) % 7)::DOUBLE AS x2, (hash(i + 2) % 1000) / 1000.0 AS x3 FROM range({rows}) r(i)"]


Sample = tuple[float, float]  # (wall seconds, CPU seconds)


def cpu_seconds() -> float:
    """CPU time of this process and its children (the executors), every thread, from Linux's
    schedstat (nanoseconds): what the work costs, whatever else the shared machine runs
    (wall time also counts the waits for a core). NaN where /proc has no schedstat."""
    try:
        me = os.getpid()
        pids = [me] + [int(entry.name) for entry in Path("/proc").iterdir()
                       if entry.name.isdigit() and _parent(entry) == me]
        return sum(_on_cpu(pid) for pid in pids) / 1e9
    except OSError:
        return math.nan


def _parent(entry: Path) -> int | None:
    try:
        return int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _on_cpu(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int(task.joinpath("schedstat").read_text().split()[0])
        except (OSError, ValueError):  # a thread that ended meanwhile
            pass
    return total


def sample(function) -> Sample:
    wall, cpu = time.perf_counter(), cpu_seconds()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def interleaved(functions, reps: int) -> list[list[Sample]]:
    """Each function timed `reps` times, one run of each per round in a rotating order."""
    for function in functions:
        function()  # warm
    times = [[] for _ in functions]
    for rep in range(reps):
        for i in range(len(functions)):
            which = (i + rep) % len(functions)
            times[which].append(sample(functions[which]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="DuckDB's and ONNX Runtime's threads alike")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        udf_model = with_cast(Path(folder))
        assert not isinstance(classify(model_file(MODEL), MODEL.read_bytes()), Exception)  # compiles
        assert isinstance(classify(model_file(udf_model), udf_model.read_bytes()), Exception)  # does not
        engine = build_engine(Path(folder), policy(udf_model), setup(args.rows), threads=args.threads)
        try:
            with duckdb.connect() as con:  # in memory, as executors are: the macro is created there
                samples, totals, batches = measure(engine, con, Path(folder), args)
        finally:
            engine.close()
    report(samples, totals, batches, args)


def measure(engine, con, folder: Path, args) -> tuple[dict[str, list[Sample]], dict[str, float], list]:
    """Every line's samples, all taken in the same rounds."""
    scored = "SELECT grp, SUM(score('{}', x1, x2, x3)) AS s FROM t GROUP BY grp"
    plain = "SELECT grp, SUM(x1 + x2 + x3) AS s FROM t GROUP BY grp"
    run = lambda sql: engine.run(QueryRequest(user="bench", cleanroom="bench", sql=sql))  # noqa: E731
    con.execute(f"ATTACH '{folder / 'data' / 'room.duckdb'}' AS room (READ_ONLY)")
    # the clamped features, as the gateway's SQL hands them to the function
    batches = list(con.execute("SELECT LEAST(GREATEST(x1, 0), 60), LEAST(GREATEST(x2, 0), 6), "
                               "LEAST(GREATEST(x3, 0), 1) FROM room.t").to_arrow_reader(VECTOR))
    con.execute(f"SET threads = {args.threads}")  # as the executors and ONNX Runtime alone
    scoring.register(con, model_file(MODEL))
    scoring.register_function(con, model_file(MODEL), "onnx_function")
    # DuckDB's own cost of calling an Arrow function: one that hands its first argument back
    con.create_function("identity", lambda a, b, c: a, [duckdb.sqltypes.DOUBLE] * 3, duckdb.sqltypes.DOUBLE,
                        type="arrow", side_effects=False)
    alone_sql = "SELECT SUM({}(x1, x2, x3)) FROM room.t"
    query = lambda sql: lambda: con.execute(sql).fetchall()  # noqa: E731

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1  # one node: nothing runs beside it
    session = onnxruntime.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])

    def per_batch():
        total = 0.0
        for batch in batches:
            matrix = np.column_stack([c.to_numpy(zero_copy_only=False) for c in batch.columns]).astype(np.float32)
            total += float(session.run(["probabilities"], {"X": matrix})[0][:, 1].sum())
        return total

    matrices = [np.column_stack([c.to_numpy(zero_copy_only=False) for c in b.columns]).astype(np.float32)
                for b in batches]
    whole = np.concatenate(matrices)
    lines = {
        "gateway macro": lambda: run(scored.format("m")),
        "gateway function": lambda: run(scored.format("m_udf")),
        "gateway plain": lambda: run(plain),
        "onnx batches": per_batch,
        "onnx run only": lambda: [session.run(["probabilities"], {"X": m}) for m in matrices],
        "onnx one batch": lambda: session.run(["probabilities"], {"X": whole}),
        "duckdb macro": query(alone_sql.format(model_file(MODEL).function)),
        "duckdb function": query(alone_sql.format("onnx_function")),
        "duckdb identity": query(alone_sql.format("identity")),
        "duckdb plain": query("SELECT SUM(x1 + x2 + x3) FROM room.t"),
    }
    samples = dict(zip(lines, interleaved(list(lines.values()), args.reps)))
    totals = {name: sum(run(scored.format(name)).table.column("s").to_pylist()) for name in ("m", "m_udf")}
    expected = per_batch()
    for name, total in totals.items():  # the same scores on both paths
        assert abs(expected - total) < 1e-6 * args.rows, (name, expected, total)
    return samples, totals, batches


def report(samples: dict[str, list[Sample]], totals: dict[str, float], batches: list, args) -> None:
    def median(name: str, which: int) -> float:
        return statistics.median(s[which] for s in samples[name])

    def line(label: str, name: str) -> None:
        wall, cpu = median(name, 0), median(name, 1)
        print(f"{label:<50} {wall * 1000:7.1f} ms {cpu * 1000:7.1f} ms  {args.rows / wall / 1e6:6.2f} M rows/s")

    def cost_ratio(name: str, base: str, against: str, which: int) -> tuple[float, float]:
        """Median over rounds of the cost (name - base) and of its ratio to `against`, all
        three taken in the same round."""
        rounds = list(zip(samples[name], samples[base], samples[against]))
        costs = [t[which] - b[which] for t, b, _ in rounds]
        return statistics.median(costs), statistics.median(c / a[which] for c, (_, _, a) in zip(costs, rounds))

    print(f"{args.rows:,} rows, {args.reps} rounds (medians); model {MODEL.name}; threads: DuckDB "
          f"{args.threads}, ONNX Runtime intra_op_num_threads {args.threads}")
    print(f"{'':<50} {'wall':>10} {'CPU':>10}")
    line("gateway: SUM(score(...)) by group, macro", "gateway macro")
    line("gateway: SUM(score(...)) by group, ONNX Runtime fn", "gateway function")
    line("gateway: SUM(x1 + x2 + x3) by group (no model)", "gateway plain")
    line(f"ONNX Runtime alone, {len(batches)} batches of {VECTOR}", "onnx batches")
    line("  its session.run calls (matrices stacked before)", "onnx run only")
    line("ONNX Runtime alone, one batch", "onnx one batch")
    line("DuckDB alone: SUM(macro(x1, x2, x3))", "duckdb macro")
    line("DuckDB alone: SUM(function(x1, x2, x3))", "duckdb function")
    line("DuckDB alone: SUM(identity(x1, x2, x3)), Arrow", "duckdb identity")
    line("DuckDB alone: SUM(x1 + x2 + x3) (no model)", "duckdb plain")
    print("scoring cost (minus the same statement without the model) / ONNX Runtime alone on the same batches,")
    print("medians over rounds:")
    for label, name, base, against in (
            ("gateway, macro", "gateway macro", "gateway plain", "onnx batches"),
            ("  / bare session.run", "gateway macro", "gateway plain", "onnx run only"),
            ("gateway, function", "gateway function", "gateway plain", "onnx batches"),
            ("DuckDB alone, macro", "duckdb macro", "duckdb plain", "onnx batches"),
            ("  / bare session.run", "duckdb macro", "duckdb plain", "onnx run only"),
            ("DuckDB alone, function", "duckdb function", "duckdb plain", "onnx batches")):
        (wall, wall_ratio), (cpu, cpu_ratio) = (cost_ratio(name, base, against, i) for i in (0, 1))
        print(f"  {label:<24} wall {wall * 1000:7.1f} ms {wall_ratio:6.2f}x   CPU {cpu * 1000:7.1f} ms {cpu_ratio:6.2f}x")


if __name__ == "__main__":
    main()
