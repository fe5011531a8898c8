"""Compile time of the gateway's analysis, cold and cached, against sqlglot.

    .venv/bin/python bench/compile.py [--runs 200] [--statements NAME,...] [--keep DIR] [--json out.json]
    .venv/bin/python bench/compile.py --compare before.json after.json

For a fixed list of representative statements, over the demo clean room (k-only,
as the test suite's `engine` fixture, and the shipped DP policy), every iteration
timing every statement in turn (round robin), median of --runs:

- cold: `Engine.compile` of a text never seen before (the statement with
  `/* cold N */` appended, N new every iteration);
- cached: the same text again through the passes a repeated statement runs up
  to its SQL (recall, the compile passes, remember), so the analysis is recalled;
  templates and refusals are never recalled, so theirs is a full analysis;
- parse: `sqlglot.parse_one` of the text the cold run compiled (postgres dialect);
- qualify: `parse_one` + `sqlglot.optimizer.qualify.qualify` with the tables'
  visible columns as schema.

Each as wall time and as the thread's CPU time. The baselines run in the same
process, in the same loop, so the ratio cold/parse holds the machine's speed and
load constant. `--json` writes every timing; `--compare` prints after/before per
statement (see bench/README.md). The code measured is the checkout this file
lives in (its path is printed).

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's gateway, not whichever one the venv installed

K_ONLY, DP = "k", "dp"
COLD_TAG = " /* cold {} */"

# name: (policy, SQL, the SQL the sqlglot baselines parse when it differs). Templates:
# the baseline parses the template's own SQL with the argument in place.
STATEMENTS: dict[str, tuple[str, str, str | None]] = {
    "aggregate_by_region": (K_ONLY,
        "SELECT region, COUNT(*) AS purchases, SUM(amount) AS revenue FROM purchases GROUP BY region ORDER BY region",
        None),
    "join_by_campaign": (K_ONLY,
        "SELECT i.campaign, COUNT(DISTINCT p.household_id) AS buyers, SUM(p.amount) AS revenue "
        "FROM purchases p JOIN impressions i ON p.household_id = i.household_id "
        "GROUP BY i.campaign ORDER BY i.campaign",
        None),
    "join_filter_having": (K_ONLY,
        "SELECT p.region, i.channel, COUNT(DISTINCT p.household_id) AS households, SUM(p.amount) AS revenue "
        "FROM purchases p JOIN impressions i ON p.household_id = i.household_id "
        "WHERE i.campaign = 'spring_sale' AND p.category IN ('dairy', 'bakery') GROUP BY 1, 2 "
        "HAVING COUNT(*) > 20 ORDER BY households DESC LIMIT 5",
        None),
    "having": (K_ONLY,
        "SELECT category, COUNT(*) AS n, AVG(amount) AS basket FROM purchases GROUP BY category "
        "HAVING COUNT(*) > 100 ORDER BY n DESC",
        None),
    "case_in_sum": (K_ONLY,
        "SELECT CASE WHEN region IN ('north', 'south') THEN 'ns' ELSE 'other' END AS zone, "
        "SUM(CASE WHEN category = 'dairy' THEN amount ELSE 0 END) AS dairy, SUM(amount) AS total "
        "FROM purchases GROUP BY 1",
        None),
    "count_filter": (K_ONLY,
        "SELECT campaign, COUNT(*) FILTER (WHERE channel = 'ctv') AS ctv, COUNT(*) AS shown "
        "FROM impressions GROUP BY campaign",
        None),
    "bi_wrapped": (K_ONLY,  # Power BI: an outer filter, order and limit over a derived aggregate
        'select "_"."region", "_"."category", "_"."s" from (select "region", "category", sum("amount") as "s" '
        'from "public"."purchases" group by "region", "category") "_" where "_"."s" > 1000 '
        'order by "_"."s" desc limit 1000001',
        None),
    "month_by_country": (K_ONLY,  # a join to the public table and a date dimension
        "SELECT r.country, date_trunc('month', p.purchased_on) AS month, COUNT(*) AS n "
        "FROM purchases p JOIN regions r ON p.region = r.region GROUP BY 1, 2 ORDER BY 1, 2",
        None),
    "template_campaign_reach": (K_ONLY, "SELECT * FROM campaign_reach('spring_sale')", "template"),
    "public_read": (K_ONLY,
        "SELECT region, region_name, country FROM regions WHERE country <> 'XX' ORDER BY region",
        None),
    "refused_join": (K_ONLY,  # refused by authorise (join.undeclared), after every earlier pass
        "SELECT COUNT(*) FROM purchases p JOIN impressions i ON p.region = i.campaign",
        None),
    "dp_aggregate_by_region": (DP,
        "SELECT region, COUNT(*) AS purchases, SUM(amount) AS revenue FROM purchases GROUP BY region",
        None),
    "dp_join_by_campaign": (DP,
        "SELECT i.campaign, COUNT(DISTINCT p.household_id) AS buyers, AVG(p.amount) AS basket "
        "FROM purchases p JOIN impressions i ON p.household_id = i.household_id GROUP BY i.campaign",
        None),
}
TIMINGS = ("cold", "cached", "parse", "qualify")
CLOCKS = ("", "_cpu")  # wall time (perf_counter), and the thread's CPU time (thread_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="timed iterations per statement (median)")
    parser.add_argument("--statements", default=None,
                        help="comma-separated names, or parts of names, to keep (default: all): "
                        + ", ".join(STATEMENTS))
    parser.add_argument("--scale", type=float, default=0.05, help="demo data scale (the test suite's 0.05)")
    parser.add_argument("--keep", type=Path, default=None, help="build the demo data here and reuse it next time")
    parser.add_argument("--json", type=Path, default=None, help="write every timing here (for --compare)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="print after/before from --json files (each side: one file, or several joined "
                        "by commas, whose timings are pooled); measures nothing")
    args = parser.parse_args()
    if args.compare:
        compare(*(pooled(side) for side in args.compare), args.compare)
        return

    names = selected(args.statements)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        configs = write_demo(folder, args.scale)
        result = measure(configs, names, args.runs)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")


def pooled(side: str) -> dict:
    """One --json file, or several (comma-separated) of the same checkout pooled:
    their timings joined, so runs taken in turns with the other side's count as one."""
    runs = [json.loads(Path(path).read_text()) for path in side.split(",") if path]
    first = runs[0]
    if len(runs) == 1:
        return first
    checkouts = sorted({run["meta"]["checkout"] for run in runs})
    meta = {**first["meta"], "checkout": " / ".join(checkouts), "runs": sum(run["meta"]["runs"] for run in runs),
            "date": f"{first['meta']['date']} ({len(runs)} files)",
            "load_start": min(min(run["meta"]["load_start"], run["meta"]["load_end"]) for run in runs),
            "load_end": max(max(run["meta"]["load_start"], run["meta"]["load_end"]) for run in runs)}
    statements = {}
    for name, row in first["statements"].items():
        if all(name in run["statements"] for run in runs):
            rows = [run["statements"][name] for run in runs]
            statements[name] = {**row, "recalled": sum(r["recalled"] for r in rows),
                                **{key: [v for r in rows for v in r.get(key, [])]
                                   for key in row if isinstance(row[key], list)}}
    return {"meta": meta, "statements": statements}


def selected(spec: str | None) -> list[str]:
    if not spec:
        return list(STATEMENTS)
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    names = [name for name in STATEMENTS if any(part in name for part in wanted)]
    if not names:
        raise SystemExit(f"no statement matches {spec!r}; names: {', '.join(STATEMENTS)}")
    return names


# -- the demo room -------------------------------------------------------------------


def write_demo(folder: Path, scale: float) -> dict[str, Path]:
    """Demo data (reused when already generated at this scale) and two configs over
    it, as the test suite writes them: the demo policy without its privacy section
    (k-only) and as shipped (DP); both with the demo's approvals recorded."""
    import inspect

    import yaml

    from gateway import demo
    from gateway.collab.demo import approve_demo

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    if "scale" in inspect.signature(demo.generate).parameters:
        demo.generate(data, scale=scale)
    else:
        demo.generate(data)
    shipped = yaml.safe_load((REPO / "policies/demo.yaml").read_text())
    for model in shipped.get("models", {}).values():  # the copies lie elsewhere: model files stay where they are
        model["file"] = str(REPO / "policies" / model["file"])
    k_only = {key: value for key, value in shipped.items() if key != "privacy"}
    configs = {}
    for kind, policy in ((K_ONLY, k_only), (DP, shipped)):
        room = folder / kind
        if room.exists():  # a kept folder: fresh state (audit log, approvals) every run
            import shutil

            shutil.rmtree(room)
        room.mkdir()
        (room / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
        config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
        config["policies"] = [str(room / "policy.yaml")]
        for source in config["sources"].values():
            source["path"] = source["path"].replace("../var/demo", str(data))
        config["engine"]["data_roots"] = [str(data)]
        config["state_dir"] = str(room / "state")
        path = room / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        approve_demo(path)
        configs[kind] = path
    return configs


# -- measuring -----------------------------------------------------------------------


def measure(configs: dict[str, Path], names: list[str], runs: int) -> dict:
    import sqlglot

    import gateway
    from gateway.engine import Engine

    print(f"gateway: {gateway.__file__} ({checkout()})")
    print(f"sqlglot {sqlglot.__version__}, python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{runs} runs per statement; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    engines = {kind: Engine.from_config_file(path) for kind, path in configs.items()
               if any(STATEMENTS[name][0] == kind for name in names)}
    started = time.perf_counter()
    result = {"meta": {"gateway": gateway.__file__, "checkout": checkout(), "sqlglot": sqlglot.__version__,
                       "python": platform.python_version(), "cores": os.cpu_count(), "runs": runs,
                       "date": dt.datetime.now().isoformat(timespec="seconds"),
                       "load_start": os.getloadavg()[0]},
              "statements": {}}
    try:
        prepared = {name: prepare(engines[STATEMENTS[name][0]], name) for name in names}
        # Round robin: every iteration times every statement, each step in turn, so a
        # change of load while the bench runs weighs on all statements and steps alike.
        for n in range(runs):
            for name, (row, steps) in prepared.items():
                for step, fn in steps.items():
                    wall, cpu = time.perf_counter(), time.thread_time()
                    got = fn(n)
                    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
                    row[step].append(wall * 1000)
                    row[step + "_cpu"].append(cpu * 1000)
                    if step == "cached" and getattr(got[1], "recalled", False):
                        row["recalled"] += 1
        result["statements"] = {name: row for name, (row, _) in prepared.items()}
    finally:
        for engine in engines.values():
            engine.close()
    result["meta"]["load_end"] = os.getloadavg()[0]
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)
    return result


def prepare(engine, name: str) -> tuple[dict, dict]:
    """The statement's row of results (timings empty) and its steps, each a function
    of the iteration number, run once and warmed up."""
    import sqlglot
    from sqlglot.optimizer.qualify import qualify

    kind, sql, baseline = STATEMENTS[name]
    if baseline == "template":
        baseline = template_sql(engine, sql)
    baseline = baseline or sql
    schema = visible_schema(engine)
    repeat = cached_compiler(engine)

    def cold(n):
        return compile_outcome(engine.compile, request(sql + COLD_TAG.format(n)))

    def cached(_):
        return compile_outcome(repeat, request(sql))

    def parse(n):
        sqlglot.parse_one(baseline + COLD_TAG.format(n), read="postgres")

    def parse_qualify(n):
        qualify(sqlglot.parse_one(baseline + COLD_TAG.format(n), read="postgres"), schema=schema, dialect="postgres")

    steps = {"cold": cold, "cached": cached, "parse": parse, "qualify": parse_qualify}
    qualify_error = None
    try:
        parse_qualify(-1)
    except Exception as error:  # noqa: BLE001  (the baseline only; reported, not fatal)
        del steps["qualify"]
        qualify_error = f"{type(error).__name__}: {error}"[:200]
    outcome, state = cold(-1)
    cached_outcome, _ = cached(-1)  # the first repeat analyses; later ones recall
    for n in range(-4, -1):  # warm-up: imports, caches, the allocator
        for step in steps.values():
            step(n)
    print(f"  {name:26} {outcome}", flush=True)
    row = {"policy": kind, "sql": sql, "baseline_sql": baseline, "outcome": outcome,
           "cached_outcome": cached_outcome, "recalled": 0, "cached_path": repeat.__doc__,
           "generated_sql_chars": len(state.generated_sql or "") if state is not None else None,
           "qualify_error": qualify_error, **{step + clock: [] for step in steps for clock in CLOCKS}}
    return row, steps


def cached_compiler(engine):
    """How a repeated statement reaches its SQL: the engine's passes up to and
    including recall.remember (recall first, so a known text skips the analysis)."""
    from gateway.engine import pipeline, recall

    passes = getattr(pipeline, "PASSES", ())
    remember = getattr(recall, "remember", None)
    if remember in passes and hasattr(engine, "_start"):
        upto = tuple(passes[: passes.index(remember) + 1])

        def repeat(request):
            """pipeline.PASSES up to recall.remember"""
            return pipeline.run(engine._start(request), upto)

        return repeat

    def repeat(request):
        """Engine.compile (no recall path found in pipeline.PASSES)"""
        return engine.compile(request)

    return repeat


def compile_outcome(fn, req) -> tuple[str, object]:
    from gateway.errors import GatewayError

    try:
        return "ok", fn(req)
    except GatewayError as error:
        return f"{type(error).__name__}:{error.rule}", None


def request(sql: str):
    from gateway.engine import QueryRequest

    return QueryRequest(user="analyst", cleanroom="demo", sql=sql, front_end="bench")


def template_sql(engine, sql: str) -> str:
    """The template's own SQL with the call's argument in place of its parameter."""
    import re

    name, argument = re.match(r"SELECT \* FROM (\w+)\((.*)\)$", sql).groups()
    template = next(t for t in engine.templates("analyst", "demo") if t.name == name)
    (parameter,) = template.parameters
    return template.sql.replace(f":{parameter}", argument)


def visible_schema(engine) -> dict:
    return {table.name: {column.name: column.type for column in table.columns}
            for table in engine.tables("analyst", "demo")}


def checkout() -> str:
    """The commit of the checkout measured, and whether its files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "gateway")
    return commit + (" + uncommitted changes under gateway/" if dirty else "")


# -- reporting -----------------------------------------------------------------------


def medians(row: dict) -> dict[str, float | None]:
    """Per step and clock ("cold", "cold_cpu", ...), the median in ms."""
    return {step + clock: statistics.median(row[step + clock]) if row.get(step + clock) else None
            for step in TIMINGS for clock in CLOCKS}


def p10(values: list[float] | None) -> float | None:
    """The 10th percentile: on a busy machine, closer than the median to what the code costs."""
    return statistics.quantiles(values, n=10)[0] if values and len(values) > 1 else None


def fmt(value: float | None, width: int, digits: int = 2) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def print_table(result: dict) -> None:
    meta = result["meta"]
    print(f"\ngateway: {meta['gateway']} ({meta['checkout']})")
    print(f"median of {meta['runs']} runs each (round robin over statements); load average {meta['load_start']:.1f} "
          f"at start, {meta['load_end']:.1f} at end, on {meta['cores']} cores; {meta['seconds']} s")
    print(f"{'':33} {'---------------- wall time ----------------':>52}  {'------ CPU time -----':>21}")
    print(f"{'statement':26} {'policy':>6} {'cold ms':>8} {'cached ms':>9} {'parse ms':>8} {'qualify ms':>10} "
          f"{'cold/parse':>10}  {'cold ms':>7} {'cold/parse':>10} {'recalled':>8}  outcome")
    rows = []
    for name, row in result["statements"].items():
        m = medians(row)
        rows.append(m)
        print(f"{name:26} {row['policy']:>6} {fmt(m['cold'], 8)} {fmt(m['cached'], 9, 3)} {fmt(m['parse'], 8, 3)} "
              f"{fmt(m['qualify'], 10)} {fmt(ratio(m['cold'], m['parse']), 10, 1)}  {fmt(m['cold_cpu'], 7)} "
              f"{fmt(ratio(m['cold_cpu'], m['parse_cpu']), 10, 1)} {row['recalled']:>8}  {row['outcome']}")
        if row.get("qualify_error"):
            print(f"{'':26} qualify baseline failed: {row['qualify_error']}")
    overall = {key: median_of(m[key] for m in rows) for key in rows[0]} if rows else {}
    print(f"{'median over statements':26} {'':>6} {fmt(overall.get('cold'), 8)} {fmt(overall.get('cached'), 9, 3)} "
          f"{fmt(overall.get('parse'), 8, 3)} {fmt(overall.get('qualify'), 10)} "
          f"{fmt(median_of(ratio(m['cold'], m['parse']) for m in rows), 10, 1)}  {fmt(overall.get('cold_cpu'), 7)} "
          f"{fmt(median_of(ratio(m['cold_cpu'], m['parse_cpu']) for m in rows), 10, 1)}")
    print("cold: Engine.compile of a new text; cached: the same text repeated (recalled: runs that recalled the "
          f"analysis; path: {next(iter(result['statements'].values()))['cached_path'] if rows else '-'}); "
          "CPU time: the thread's (time.thread_time), which a busy machine inflates far less than wall time")


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def median_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def compare(before: dict, after: dict, paths) -> None:
    """After/before per statement, of the medians (wall and CPU time) and of the
    10th percentiles (wall); and each run's cold/parse ratio after/before, which
    discounts a machine that was slower or busier during one of the runs."""
    for label, run, path in (("before", before, paths[0]), ("after", after, paths[1])):
        meta = run["meta"]
        print(f"{label}: {path}  gateway {meta['gateway']} ({meta['checkout']}), {meta['runs']} runs, "
              f"{meta['date']}, load {meta['load_start']:.1f}..{meta['load_end']:.1f}")
    print(f"{'':26} {'------------ cold (new text) ------------':>51} {'---- cached ----':>17} "
          f"{'-- (cold/parse) --':>18}")
    print(f"{'statement':26} {'before ms':>9} {'after ms':>9} {'wall a/b':>9} {'p10 a/b':>8} {'cpu a/b':>8} "
          f"{'wall a/b':>8} {'cpu a/b':>8} {'wall a/b':>8} {'cpu a/b':>9}  outcome")
    columns: dict[str, list] = {}
    over: dict[str, list] = {"wall": [], "cpu": []}
    for name, b_row in before["statements"].items():
        a_row = after["statements"].get(name)
        if a_row is None:
            print(f"{name:26} not in after")
            continue
        b, a = medians(b_row), medians(a_row)
        r = {"cold": ratio(a["cold"], b["cold"]), "p10": ratio(p10(a_row["cold"]), p10(b_row["cold"])),
             "cold_cpu": ratio(a["cold_cpu"], b["cold_cpu"]),
             "cached": ratio(a["cached"], b["cached"]), "cached_cpu": ratio(a["cached_cpu"], b["cached_cpu"]),
             "norm": ratio(ratio(a["cold"], a["parse"]), ratio(b["cold"], b["parse"])),
             "norm_cpu": ratio(ratio(a["cold_cpu"], a["parse_cpu"]), ratio(b["cold_cpu"], b["parse_cpu"]))}
        for column, value in r.items():
            columns.setdefault(column, []).append(value)
        for clock, key in (("wall", "cold"), ("cpu", "cold_cpu")):
            if r[key] is not None and r[key] > 1.2:
                over[clock].append(f"{name} {r[key]:.2f}")
        outcome = a_row["outcome"] if a_row["outcome"] == b_row["outcome"] else \
            f"CHANGED {b_row['outcome']} -> {a_row['outcome']}"
        print(f"{name:26} {fmt(b['cold'], 9)} {fmt(a['cold'], 9)} {fmt(r['cold'], 9)} {fmt(r['p10'], 8)} "
              f"{fmt(r['cold_cpu'], 8)} {fmt(r['cached'], 8)} {fmt(r['cached_cpu'], 8)} {fmt(r['norm'], 8)} "
              f"{fmt(r['norm_cpu'], 9)}  {outcome}")
    for name in after["statements"].keys() - before["statements"].keys():
        print(f"{name:26} not in before")
    m = {column: median_of(values) for column, values in columns.items()}
    print(f"{'median ratio':26} {'':>9} {'':>9} {fmt(m.get('cold'), 9)} {fmt(m.get('p10'), 8)} "
          f"{fmt(m.get('cold_cpu'), 8)} {fmt(m.get('cached'), 8)} {fmt(m.get('cached_cpu'), 8)} "
          f"{fmt(m.get('norm'), 8)} {fmt(m.get('norm_cpu'), 9)}")
    print("a/b: after / before of the medians (p10: of the 10th percentiles)")
    print("target: cold after/before <= 1.2; over it by wall time: "
          f"{', '.join(over['wall']) or 'none'}; by CPU time: {', '.join(over['cpu']) or 'none'}")


if __name__ == "__main__":
    main()
