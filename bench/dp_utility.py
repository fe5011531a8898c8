"""Utility of the gateway's DP queries on the shipped demo policy against SmartNoise SQL, at epsilon 1.

    .venv/bin/python bench/dp_utility.py --make-venv /tmp/smartnoise-venv    # once: python3 -m venv + pip install
    .venv/bin/python bench/dp_utility.py --smartnoise-python /tmp/smartnoise-venv/bin/python \\
        [--reps 20] [--epsilon 1] [--max-ids N[,N...]] [--data-dir DIR] [--policy policies/demo.yaml] \\
        [--set max_rows_per_unit=10 --set max_groups_per_unit=8 --set max_contributions_per_unit=20 \\
         --set amount.upper=200 --set accounting=zcdp]

The data are the demo's (gateway/demo.py, 200,000 households, about 1M purchases;
generated into --data-dir, default var/demo, unless already there); the policy is
--policy (default: the shipped policies/demo.yaml) with only epsilon_per_query set
to --epsilon, the analyst's budget lifted and timing padding off (it delays answers,
never changes them), everything else as shipped (`--set`
changes one setting, to compare candidate bounds in the same run). The analyst is
the demo's `analyst`. Queries, each its own DP release:

    count_by_category  SELECT category, COUNT(*) ... GROUP BY category
    sum_by_category    SELECT category, SUM(amount) ... GROUP BY category
    avg_by_category    SELECT category, AVG(amount) ... GROUP BY category
    count_by_week      SELECT date_trunc('week', purchased_on), COUNT(*) ... GROUP BY 1

Relative error = |released - exact| / |exact|, the exact answer being the plain SQL on
the raw rows (so the bias of contribution bounds and clamping counts, not only noise),
per released group with a non-zero exact value, pooled over --reps repetitions; the
median is printed. Bias is estimated per group as the mean release over the
repetitions minus the exact value; "bias share" is the share of the mean squared
error that bias explains (sum of squared biases / sum of squared errors; the
estimate carries noise variance / reps too); "med rel bias" is the median over
groups of |bias| / |exact|. The gateway's release cache would return the first
answer again for the same text, so its `dp_releases` table is emptied before every
repetition; the ledger is SQLite in a temporary folder.

SmartNoise SQL (PyPI `smartnoise-sql`) needs opendp < 0.15 while the gateway needs
opendp 0.16, so it cannot share the project's venv: it runs in its own interpreter
(--smartnoise-python, a venv made by --make-venv DIR: smartnoise-sql, duckdb pinned to
this project's version, pandas, pyarrow) as a subprocess, over the same rows exported to
Parquet (household_id, category, amount, and week = date_trunc('week', purchased_on) as
text, since SmartNoise has no date_trunc) in an in-memory DuckDB table (2 threads),
executed through SmartNoise's PostgreSQL dialect. Settings: Privacy(epsilon, delta=1e-6),
max_ids = --max-ids (rows per household over all groups; by default the gateway policy's
max_contributions_per_unit, the comparable bound: with a `privacy.profile` it is the ceiling
each query's chosen bound stays under; or 10 without one; several, comma-separated, run
SmartNoise once each and list the others after the table), censor_dims off (the
categories and weeks are public), amount bounds as the policy's. SmartNoise gives every
noisy column the full epsilon, so its AVG (a sum and a count) would cost 2 epsilon: by
default (--smartnoise-cost equal) such a query runs at epsilon^2 / its cost per column, so
every query costs both sides the same epsilon; its reported cost (get_privacy_cost) is
printed next to the gateway's. Without
--smartnoise-python, or if SmartNoise fails, the gateway's numbers are printed and the
failure is said plainly. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WEEK = "date_trunc('week', purchased_on)"
QUERIES = {
    "count_by_category": "SELECT category, COUNT(*) AS v FROM purchases GROUP BY category",
    "sum_by_category": "SELECT category, SUM(amount) AS v FROM purchases GROUP BY category",
    "avg_by_category": "SELECT category, AVG(amount) AS v FROM purchases GROUP BY category",
    "count_by_week": f"SELECT {WEEK} AS week, COUNT(*) AS v FROM purchases GROUP BY {WEEK}",
}
SMARTNOISE_QUERIES = {name: sql.replace(WEEK, "week") for name, sql in QUERIES.items()}

# Runs inside the SmartNoise venv: argv[1] is a JSON job, prints one JSON document.
SMARTNOISE_RUNNER = r'''
import json, sys, time, traceback
job = json.loads(sys.argv[1])
out = {"results": {}, "seconds": {}, "cost": {}, "error": None}
try:
    import duckdb, snsql
    from snsql import Privacy
    out["versions"] = {"smartnoise-sql": __import__("importlib.metadata").metadata.version("smartnoise-sql"),
                       "opendp": __import__("importlib.metadata").metadata.version("opendp"),
                       "duckdb": duckdb.__version__, "python": sys.version.split()[0]}
    con = duckdb.connect()
    con.execute(f"SET threads = {job['threads']}")
    con.execute("CREATE SCHEMA bench")
    con.execute(f"CREATE TABLE bench.purchases AS SELECT * FROM read_parquet('{job['parquet']}')")

    class Cursor:  # the DB-API surface snsql's PostgresReader uses
        def __init__(self, con): self.con, self.rows, self.description = con, [], None
        def execute(self, sql):
            result = self.con.execute(sql)
            self.description = result.description
            self.rows = result.fetchall() if result.description else []
        def __iter__(self): return iter(self.rows)

    class Connection:
        def __init__(self, con): self.con = con
        def cursor(self): return Cursor(self.con)
        def commit(self): pass
        def rollback(self): pass

    low, high = job["bounds"]
    metadata = {"Collection": {"bench": {"purchases": {
        "row_privacy": False, "max_ids": job["max_ids"], "censor_dims": False,
        "household_id": {"type": "string", "private_id": True},
        "category": {"type": "string"}, "week": {"type": "string"},
        "amount": {"type": "float", "lower": float(low), "upper": float(high)}}}}}
    def reader_at(epsilon):
        return snsql.from_connection(Connection(con), engine="postgres", metadata=metadata,
                                     privacy=Privacy(epsilon=epsilon, delta=1e-6))
    for name, sql in job["queries"].items():
        sql = sql.replace("FROM purchases", "FROM bench.purchases")
        reader = reader_at(job["epsilon"])
        cost = reader.get_privacy_cost(sql)[0]
        if job["equal_cost"] and cost > job["epsilon"] * (1 + 1e-9):  # AVG: a sum and a count at epsilon each
            reader = reader_at(job["epsilon"] * job["epsilon"] / cost)
        out["cost"][name] = list(reader.get_privacy_cost(sql))
        out["results"][name], out["seconds"][name] = [], []
        for _ in range(job["reps"]):
            started = time.perf_counter()
            rows = reader.execute(sql)
            out["seconds"][name].append(time.perf_counter() - started)
            out["results"][name].append([list(r) for r in rows[1:]])
except Exception:
    out["error"] = traceback.format_exc()
print(json.dumps(out, default=str))
'''


def make_venv(folder: Path) -> None:
    """duckdb pinned to this project's version: duckdb 2.x refuses SmartNoise's
    `ROW_NUMBER() OVER (PARTITION BY id ORDER BY RANDOM())` (volatile window ORDER BY)."""
    import duckdb

    subprocess.run(["python3", "-m", "venv", str(folder)], check=True)
    subprocess.run([str(folder / "bin" / "pip"), "install", "smartnoise-sql", f"duckdb=={duckdb.__version__}",
                    "pandas", "pyarrow"], check=True)
    print(f"SmartNoise venv ready: --smartnoise-python {folder / 'bin' / 'python'}")


# -- the gateway side -----------------------------------------------------------------


def bench_policy(path: Path, epsilon: float, settings: list[str]) -> dict:
    """The policy as shipped, with epsilon_per_query = epsilon, a budget that lasts the
    run, and each --set NAME=VALUE applied (max_rows_per_unit, max_groups_per_unit,
    max_contributions_per_unit (`none` removes it, and needs profile=none), accounting,
    min_group_size_on_public_keys, amount.upper, amount.lower (which drop amount's profile),
    profile=none (no bounds chosen per query))."""
    policy = yaml.safe_load(path.read_text())
    privacy = policy["privacy"]
    privacy["epsilon_per_query"] = epsilon
    privacy["budget"] = {"epsilon": 1_000_000, "delta": 0.01, "refresh": "never"}
    policy["timing"] = {"pad": "off"}  # padding changes when answers leave, not what they are: not measured here
    for model in (policy.get("models") or {}).values():  # the copy lives elsewhere: model files by absolute path
        model["file"] = str((path.parent / model["file"]).resolve())
    for setting in settings:
        name, _, value = setting.partition("=")
        if name in ("max_rows_per_unit", "max_groups_per_unit"):
            privacy[name] = int(value)
        elif name == "max_contributions_per_unit":
            if value == "none":
                privacy.pop(name, None)
            else:
                privacy[name] = int(value)
        elif name == "accounting":
            privacy[name] = value
        elif name == "min_group_size_on_public_keys":
            privacy[name] = value.lower() in ("true", "1", "yes", "on")
        elif name in ("amount.upper", "amount.lower"):
            bounds = policy["tables"]["purchases"]["columns"]["amount"]["bounds"]
            bounds[1 if name.endswith("upper") else 0] = float(value)
            for profile in (privacy.get("profile") or {}).values():  # its edges end at the old bound
                (profile.get("measures") or {}).pop("amount", None)
        elif name == "profile" and value == "none":  # the declared bounds, as they are, for every query
            privacy.pop("profile", None)
        else:
            raise SystemExit(f"--set {setting}: unknown setting (max_rows_per_unit, max_groups_per_unit, "
                             "max_contributions_per_unit, accounting, min_group_size_on_public_keys, "
                             "amount.upper, amount.lower, profile=none)")
    return policy


def build_engine(folder: Path, data_dir: Path, policy: dict):
    from gateway.collab.demo import approve_demo
    from gateway.engine import Engine

    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["policies"] = [str(folder / "policy.yaml")]
    config["sources"]["retail"]["path"] = str(data_dir / "retail.duckdb")
    config["sources"]["publisher_impressions"]["path"] = str(data_dir / "impressions" / "*.parquet")
    config["sources"]["region_lookup"]["path"] = str(data_dir / "regions.csv")
    config["engine"].update({"data_roots": [str(data_dir)], "query_timeout_seconds": 600, "memory_limit": "4GB"})
    config["state_dir"] = str(folder / "state")
    (folder / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    approve_demo(folder / "gateway.yaml")
    return Engine.from_config_file(folder / "gateway.yaml")


def clear_release_cache(state_dir: Path) -> None:
    path = state_dir / "ledger.sqlite"
    if path.exists():
        with sqlite3.connect(path, timeout=30) as con:
            try:
                con.execute("DELETE FROM dp_releases")
            except sqlite3.OperationalError:  # no such table: nothing cached yet
                pass


def key(value) -> str | None:
    """Group keys of both sides as text: weeks as ISO dates."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = None if value is None else str(value)
    return text[:10] if text and text[:4].isdigit() else text  # SmartNoise's weeks: '2026-01-05'...


def as_map(rows) -> dict:
    return {key(r[0]): float(r[1]) for r in rows if r[1] is not None}


def gateway_side(engine, folder: Path, reps: int) -> dict:
    from gateway.engine.types import QueryRequest

    out = {}
    for name, sql in QUERIES.items():
        runs, seconds, spent = [], [], None
        for _ in range(reps):
            clear_release_cache(folder / "state")
            releases = engine.context.privacy.releases  # and what this process keeps of the entries it has seen
            releases._seen = type(releases._seen)(releases.KEPT_ENTRIES)
            started = time.perf_counter()
            release = engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql, front_end="bench"))
            seconds.append(time.perf_counter() - started)
            runs.append(as_map([tuple(r.values()) for r in release.table.to_pylist()]))
            # the first repetition pays; the ledger counts the later ones (same measurement) as paid already
            spent = spent or (release.protection or {}).get("spent")
            bounds = (release.protection or {}).get("contribution_bounds", {})
        out[name] = {"runs": runs, "seconds": seconds, "cost": spent, "bounds": bounds}
    return out


def exact_answers(data_dir: Path) -> dict:
    import duckdb

    with duckdb.connect(str(data_dir / "retail.duckdb"), read_only=True) as con:
        return {name: as_map(con.execute(sql).fetchall()) for name, sql in QUERIES.items()}


# -- SmartNoise -------------------------------------------------------------------------


def export_for_smartnoise(data_dir: Path, parquet: Path) -> None:
    import duckdb

    with duckdb.connect(str(data_dir / "retail.duckdb"), read_only=True) as con:
        con.execute(f"COPY (SELECT household_id, category, amount::DOUBLE AS amount, "
                    f"strftime({WEEK}, '%Y-%m-%d') AS week FROM purchases) TO '{parquet}' (FORMAT parquet)")


def smartnoise_side(python: str, parquet: Path, bounds, args) -> dict:
    job = {"parquet": str(parquet), "queries": SMARTNOISE_QUERIES, "reps": args.reps, "epsilon": args.epsilon,
           "max_ids": args.max_ids, "bounds": list(bounds), "threads": 2,
           "equal_cost": args.smartnoise_cost == "equal"}
    try:
        done = subprocess.run([python, "-c", SMARTNOISE_RUNNER, json.dumps(job)], capture_output=True, text=True,
                              timeout=args.timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"error": f"could not run {python}: {error}"}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"{python} exited {done.returncode}:\n{done.stderr[-3000:]}"}


# -- the numbers ----------------------------------------------------------------------------


def utility(exact: dict, runs: list[dict]) -> dict:
    """Median relative error, median relative bias, bias share of the MSE, groups released."""
    relative, released = [], []
    by_group: dict = {}
    for run in runs:
        released.append(sum(1 for g in run if exact.get(g)))
        for g, v in run.items():
            if exact.get(g):
                relative.append(abs(v - exact[g]) / abs(exact[g]))
                by_group.setdefault(g, []).append(v)
    squared_bias = squared_error = 0.0
    relative_bias = []
    for g, values in by_group.items():
        bias = statistics.fmean(values) - exact[g]
        squared_bias += bias * bias
        squared_error += statistics.fmean((v - exact[g]) ** 2 for v in values)
        relative_bias.append(abs(bias) / abs(exact[g]))
    return {
        "median_relative_error": statistics.median(relative) if relative else None,
        "median_relative_bias": statistics.median(relative_bias) if relative_bias else None,
        "bias_share": squared_bias / squared_error if squared_error else None,
        "groups": statistics.median(released) if released else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=20, help="repetitions of each query on each side")
    parser.add_argument("--epsilon", type=float, default=1.0, help="epsilon per query (both sides)")
    parser.add_argument("--max-ids", default=None,
                        help="SmartNoise: max_ids (rows per household, all groups), or several separated by commas "
                             "(the first is compared in the main table, the others listed after it); default: the "
                             "policy's max_contributions_per_unit (its ceiling), or 10 without one")
    parser.add_argument("--smartnoise-cost", choices=("equal", "per-column"), default="equal",
                        help="equal (default): a SmartNoise query whose columns would cost more than --epsilon in "
                             "all (AVG: a sum and a count) runs each at a share, so it costs --epsilon like the "
                             "gateway's; per-column: every column at --epsilon (SmartNoise's own default)")
    parser.add_argument("--policy", type=Path, default=REPO / "policies" / "demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one setting of the policy (repeatable)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "var" / "demo", help="demo data (made if missing)")
    parser.add_argument("--smartnoise-python", default=None, help="interpreter of a venv holding smartnoise-sql")
    parser.add_argument("--make-venv", type=Path, default=None, metavar="DIR",
                        help="create DIR as a venv with smartnoise-sql, duckdb, pandas, pyarrow and exit")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the SmartNoise subprocess may take")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args()
    if args.make_venv:
        make_venv(args.make_venv)
        return
    from gateway.demo import generate

    generate(args.data_dir)
    policy = bench_policy(args.policy, args.epsilon, args.set)
    if args.max_ids is None:
        args.max_ids = str(policy["privacy"].get("max_contributions_per_unit") or 10)
    max_ids = [int(v) for v in str(args.max_ids).split(",") if v.strip()]
    args.max_ids = max_ids[0]
    bounds = policy["tables"]["purchases"]["columns"]["amount"]["bounds"]
    exact = exact_answers(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        engine = build_engine(folder, args.data_dir, policy)
        try:
            gateway = gateway_side(engine, folder, args.reps)
        finally:
            engine.close()
        if args.smartnoise_python:
            parquet = folder / "purchases.parquet"
            export_for_smartnoise(args.data_dir, parquet)
            smartnoise = smartnoise_side(args.smartnoise_python, parquet, bounds, args)
            others = {}
            for other in max_ids[1:]:
                args.max_ids = other
                others[other] = smartnoise_side(args.smartnoise_python, parquet, bounds, args)
            args.max_ids = max_ids[0]
        else:
            smartnoise = {"error": "not run: pass --smartnoise-python (make one with --make-venv DIR)"}
            others = {}
    report(args, policy, exact, gateway, smartnoise)
    for other, result in others.items():
        if result.get("error"):
            print(f"SmartNoise at max_ids {other}: FAILED\n{result['error']}")
            continue
        cells = []
        for name in QUERIES:
            sn = utility(exact[name], [as_map(rows) for rows in result["results"][name]])
            cells.append(f"{name} {sn['median_relative_error']:.5f} (bias share {sn['bias_share']:.2f})")
        print(f"SmartNoise at max_ids {other}: " + "; ".join(cells))


def report(args, policy: dict, exact: dict, gateway: dict, smartnoise: dict) -> None:
    privacy = policy["privacy"]
    bounds = policy["tables"]["purchases"]["columns"]["amount"]["bounds"]
    print(f"demo data ({args.data_dir}), epsilon {args.epsilon} per query, {args.reps} repetitions; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"gateway: {args.policy.name}{' with ' + ', '.join(args.set) if args.set else ''}: max_rows_per_unit "
          f"{privacy['max_rows_per_unit']}, max_groups_per_unit {privacy['max_groups_per_unit']}, "
          f"max_contributions_per_unit {privacy.get('max_contributions_per_unit', '-')}, amount bounds "
          f"{bounds}, accounting {privacy.get('accounting', 'pure')}, min_group_size_on_public_keys "
          f"{privacy.get('min_group_size_on_public_keys', True)}")
    failed = smartnoise.get("error")
    if failed and failed.startswith("not run"):
        print(f"SmartNoise: {failed}")
    elif failed:
        print("SmartNoise: FAILED, its columns are empty. What failed:\n" + failed.rstrip())
    else:
        print(f"SmartNoise: max_ids {args.max_ids}, censor_dims off, cost {args.smartnoise_cost}; "
              f"{smartnoise.get('versions')}")
    header = (f"{'query':18} {'gw med rel err':>14} {'sn med rel err':>14} {'gw rel bias':>11} {'sn rel bias':>11} "
              f"{'gw bias share':>13} {'sn bias share':>13} {'gw groups':>9} {'sn groups':>9} {'gw ms':>7} "
              f"{'sn ms':>7} {'gw cost':>9} {'sn cost':>9}")
    print(header)
    numbers = {}
    for name in QUERIES:
        g = gateway[name]
        gw = utility(exact[name], g["runs"])
        sn = None
        if not failed:
            sn = utility(exact[name], [as_map(rows) for rows in smartnoise["results"][name]])
            sn["ms"] = statistics.median(smartnoise["seconds"][name]) * 1000
            sn["cost"] = f"eps {smartnoise['cost'][name][0]:.2f}"
        gw["ms"] = statistics.median(g["seconds"]) * 1000
        spent = g["cost"] or {}  # {"epsilon", "delta"}, and "rho" under zcdp accounting
        gw["cost"] = f"rho {spent['rho']:.3f}" if spent.get("rho") else f"eps {spent.get('epsilon', float('nan')):.2f}"
        numbers[name] = {"gateway": gw, "smartnoise": sn}

        def cell(side, field, width, fmt):
            value = None if side is None else side.get(field)
            if value is None or isinstance(value, str):
                return f"{'-' if value is None else value:>{width}}"
            return f"{value:{width}{fmt}}"

        print(f"{name:18} {cell(gw, 'median_relative_error', 14, '.5f')} {cell(sn, 'median_relative_error', 14, '.5f')} "
              f"{cell(gw, 'median_relative_bias', 11, '.5f')} {cell(sn, 'median_relative_bias', 11, '.5f')} "
              f"{cell(gw, 'bias_share', 13, '.2f')} {cell(sn, 'bias_share', 13, '.2f')} "
              f"{cell(gw, 'groups', 9, '.0f')} {cell(sn, 'groups', 9, '.0f')} {cell(gw, 'ms', 7, '.0f')} "
              f"{cell(sn, 'ms', 7, '.0f')} {cell(gw, 'cost', 9, '')} {cell(sn, 'cost', 9, '')}")
    for name in QUERIES:
        bounds = gateway[name].get("bounds") or {}
        chosen = bounds.get("chosen_for_this_query")
        if chosen:
            uppers = "".join(f", {m} upper {u['chosen']:g} (declared {u['declared']:g})"
                             for m, u in (chosen.get("upper_bounds") or {}).items())
            print(f"gateway {name}: max_contributions_per_unit {chosen['max_contributions_per_unit']} chosen from the "
                  f"profile (ceiling {chosen['ceiling']}){uppers}")
    print(f"groups: released groups with a non-zero exact value, median per repetition (categories: "
          f"{len(exact['count_by_category'])}, weeks: {len(exact['count_by_week'])})")
    if args.json:
        args.json.write_text(json.dumps({"settings": {"epsilon": args.epsilon, "reps": args.reps, "set": args.set,
                                                      "max_ids": args.max_ids}, "numbers": numbers}, indent=2))


if __name__ == "__main__":
    main()
