"""How a data owner's table contributes, and the bias each candidate bound would
cause: the evidence for a policy's max_rows_per_unit, max_groups_per_unit,
max_contributions_per_unit and measure bounds (`cleanroom contributions`,
gateway/cli/dp.py).

Only an owner runs it, on its own tables: the user must be a member of the
clean room with the `approver` role for the collaborator that owns every table
asked for, and must not be an analyst there (an analyst never gets exact
statistics of anyone's rows). Every run, and every refusal, is audited.

What is measured follows the gateway's own bounding (gateway/dp/bounding.py):
per privacy unit and group, a count keeps min(rows, max_rows_per_unit) and a sum
is scaled by min(1, max_rows_per_unit / rows) after clamping values into the
declared bounds; a unit keeps max_groups_per_unit of its groups, picked by a
keyed hash, so the report gives the expected effect of that choice: a unit with
g groups keeps each with probability min(1, G / g). The total bound C is
measured as the gateway applies it, after both: each unit's groups in the order
of a keyed hash (a fresh key each run), the first G kept, each allowed
least(max_rows_per_unit, C - what the earlier ones kept). Rows outside a dimension's
public keys (declared values, or the declared range of time buckets) are left
out by the gateway: the report counts them apart.

Exact mode (the default) reads the rows and reports exact numbers. DP mode
(`epsilon`) releases only noisy histograms and quantiles (pure epsilon-DP in the
privacy unit at the stated epsilon, split evenly over them; see dp_report), fit
for sharing with the other collaborators.
"""

from __future__ import annotations

import datetime as dt

from gateway import sources
from gateway.audit_log import AuditLog
from gateway.dp import gaussian, mechanisms
from gateway.dp.accounting import query_rho
from gateway.dp.contributions_dp import dp_profile, dp_report
from gateway.dp.contributions_model import Dimension, Measure, Policy, dimensions, fresh_salt, literal, measures, quote
from gateway.dp.families.base import Contribution, Sensitivity
from gateway.dp.ledger import MAX_EPSILON, Account, Budget, Ledger, Spend
from gateway.errors import Refused
from gateway.policy.model import CleanRoom, MemberRole, Table

__all__ = ["Dimension", "Measure", "NotAnOwner", "Policy", "count_noise_ci95", "dimensions", "measures", "report_for"]

ROWS_CANDIDATES = (1, 2, 3, 5, 10, 20, 50)
GROUPS_CANDIDATES = (1, 2, 3, 4, 6, 8, 12)
TOTALS_CANDIDATES = (5, 10, 15, 20, 30, 50)
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


class NotAnOwner(Refused):
    """Refused: only a table's owner may see how its rows contribute."""


# -- who may ask, about what -------------------------------------------------------


def owned_tables(room: CleanRoom, user: str, asked: list[str] | None) -> tuple[str, list[Table]]:
    """(collaborator, tables) the user may profile, or NotAnOwner. `asked` None or
    empty: every private table the user's collaborator owns."""
    if user in room.analysts:
        raise NotAnOwner(f"{user} is an analyst in clean room {room.name}: contribution reports are for data owners",
                         rule="contributions.analyst",
                         hint="run it as a member with the approver role of the collaborator owning the table")
    member = room.members.get(user)
    if member is None or MemberRole.APPROVER not in member.roles:
        raise NotAnOwner(f"{user} may not read contribution reports in clean room {room.name} "
                         "(needs the approver role of the collaborator owning the table)",
                         rule="contributions.not_owner", hint="roles are granted under members: in the policy")
    collaborator = member.collaborator
    if not asked:
        tables = [t for t in room.tables.values() if t.owner == collaborator and not t.public]
        if not tables:
            raise NotAnOwner(f"{collaborator} owns no private table in clean room {room.name}",
                             rule="contributions.no_tables")
        return collaborator, sorted(tables, key=lambda t: t.name)
    tables = []
    for name in asked:
        table = room.tables.get(name)
        if table is None:
            raise Refused(f"no table {name!r} in clean room {room.name}", rule="contributions.unknown_table",
                          hint=f"your tables: {', '.join(sorted(t.name for t in room.tables.values() if t.owner == collaborator))}")
        if table.owner != collaborator:
            raise NotAnOwner(f"table {name} belongs to {table.owner}: {user} reads reports of {collaborator}'s "
                             "tables only", rule="contributions.not_your_table")
        if table.public or table.privacy_unit is None:
            raise Refused(f"table {name} is public: it has no privacy unit whose contributions to bound",
                          rule="contributions.public_table")
        tables.append(table)
    return collaborator, tables


def candidates(given, default, current: int | None) -> list[int]:
    values = set(given or default) | ({current} if current is not None else set())
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > 100_000]
    if bad:
        raise ValueError(f"candidate bounds must be integers from 1 to 100000, not {bad}")
    return sorted(values)


def count_noise_ci95(policy: Policy, groups: int, rows: int, total: int | None = None) -> float | None:
    """Half-width of the 95% noise interval on one released COUNT(*) by a dimension
    at the policy's per-query epsilon, with max_groups_per_unit = `groups`,
    max_rows_per_unit = `rows` and max_contributions_per_unit = `total`, the query's
    loss split evenly between the unit count every query releases and the row count
    (as gateway/dp/plan.py splits it): Laplace with the row count's L1 sensitivity
    (min(total, groups * rows)) under pure accounting, Gaussian with its L2 under
    zcdp (gateway/dp/families/base.py, Sensitivity.of_rows)."""
    if policy.epsilon is None:
        return None
    sensitivity = Sensitivity.of_rows(Contribution(rows, groups, total))
    if policy.accounting == "zcdp":
        return gaussian.integer_noise(sensitivity.l2, query_rho(policy.epsilon) / 2).ci95()
    return mechanisms.integer_noise(int(sensitivity.l1), policy.epsilon / 2).ci95()


# -- exact report -----------------------------------------------------------------------


def _fraction(part: float, whole: float) -> float:
    return 0.0 if not whole else part / whole


def _relative(value: float, truth: float) -> float | None:
    return None if not truth else value / truth - 1


def _quantiles(values) -> dict:
    keys = [f"p{q * 100:g}" for q in QUANTILES]
    return dict(zip(keys, [None if v is None else float(v) for v in values]))


def exact_report(con, relation: str, table: Table, policy: Policy, rows_candidates: list[int],
                 groups_candidates: list[int], totals_candidates: list[int] = ()) -> dict:
    """Exact statistics of `relation` (SQL naming the table in `con`, a DuckDB connection)."""
    unit = quote(table.privacy_unit)
    kept = policy.max_rows_per_unit, policy.max_groups_per_unit
    total_rows, null_units = con.execute(
        f"SELECT COUNT(*), COUNT(*) FILTER (WHERE {unit} IS NULL) FROM {relation}").fetchone()
    quantile_list = "[" + ", ".join(repr(q) for q in QUANTILES) + "]"
    units, rows, per_unit_q, per_unit_max = con.execute(
        f"SELECT COUNT(*), SUM(n), quantile_cont(n, {quantile_list}), MAX(n) FROM "
        f"(SELECT COUNT(*) AS n FROM {relation} WHERE {unit} IS NOT NULL GROUP BY {unit})").fetchone()
    report = {
        "table": table.name, "privacy_unit": table.privacy_unit, "rows": int(total_rows),
        "rows_without_unit": int(null_units), "units": int(units),
        "rows_per_unit": {**_quantiles(per_unit_q or [None] * len(QUANTILES)), "max": per_unit_max,
                          "mean": _fraction(rows or 0, units)},
        "policy": {"max_rows_per_unit": kept[0], "max_groups_per_unit": kept[1],
                   "max_contributions_per_unit": policy.max_contributions_per_unit,
                   "epsilon_per_query": policy.epsilon, "accounting": policy.accounting},
        "dimensions": [], "measures": [],
    }
    table_measures = measures(table)
    for dimension in dimensions(table):
        found = _exact_dimension(con, relation, unit, dimension, table_measures, policy, rows_candidates,
                                 groups_candidates)
        found["max_contributions_per_unit"] = _exact_totals(con, relation, unit, dimension, table_measures, policy,
                                                            totals_candidates, found)
        report["dimensions"].append(found)
    for measure in table_measures:
        report["measures"].append(_exact_measure(con, relation, unit, measure))
    return report


def _exact_dimension(con, relation, unit, dimension: Dimension, table_measures: list[Measure], policy: Policy,
                     rows_candidates, groups_candidates) -> dict:
    k_now, g_now = policy.max_rows_per_unit, policy.max_groups_per_unit
    clamped = [f"LEAST(GREATEST({m.column}, {m.lower!r}), {m.upper!r})" for m in table_measures]
    sums = "".join(f", SUM({c}) AS __s{i}, SUM({m.column}) AS __raw{i}"
                   for i, (c, m) in enumerate(zip(clamped, table_measures)))
    # __u unit, __g group, __c its rows, __gu the unit's groups, __mc its largest __c
    base = (f"WITH base AS (SELECT {unit} AS __u, {dimension.expression} AS __g, {dimension.in_keys} AS __inside, * "
            f"FROM {relation} WHERE {unit} IS NOT NULL), "
            f"pairs AS (SELECT __u, __g, COUNT(*) AS __c{sums} FROM base WHERE __inside GROUP BY __u, __g), "
            "units AS (SELECT __u, COUNT(*) AS __gu, MAX(__c) AS __mc FROM pairs GROUP BY __u), "
            "joined AS (SELECT p.*, un.__gu, un.__mc FROM pairs AS p JOIN units AS un USING (__u)) ")
    outside = con.execute(f"{base} SELECT COUNT(*) FILTER (WHERE NOT __inside OR __inside IS NULL), COUNT(*) "
                          "FROM base").fetchone()

    def kept_rows(k: int, g: int) -> str:
        return f"SUM(LEAST(__c, {k}) * LEAST(1.0, {g} / __gu))"

    def kept_sum(i: int, k: int, g: int) -> str:
        return f"SUM(__s{i} * LEAST(1.0, {k} / __c) * LEAST(1.0, {g} / __gu))"

    selects = ["COUNT(*)", "SUM(__c)", "COUNT(DISTINCT __g)", "COUNT(DISTINCT __u)"]
    selects += [f"SUM(__raw{i})" for i in range(len(table_measures))]
    for k in rows_candidates:
        selects += [f"COUNT(*) FILTER (WHERE __c > {k})", f"COUNT(DISTINCT __u) FILTER (WHERE __mc > {k})",
                    kept_rows(k, g_now)] + [kept_sum(i, k, g_now) for i in range(len(table_measures))]
    for g in groups_candidates:
        selects += [f"COUNT(DISTINCT __u) FILTER (WHERE __gu > {g})", kept_rows(k_now, g)]
        selects += [kept_sum(i, k_now, g) for i in range(len(table_measures))]
    values = list(con.execute(f"{base} SELECT {', '.join(selects)} FROM joined").fetchone())
    pairs, rows, groups, units = (int(v or 0) for v in values[:4])
    del values[:4]
    raw = [float(values.pop(0) or 0) for _ in table_measures]
    quantile_list = "[" + ", ".join(repr(q) for q in QUANTILES) + "]"
    pair_q, pair_max, unit_q, unit_max, group_median = con.execute(
        f"{base} SELECT (SELECT quantile_cont(__c, {quantile_list}) FROM pairs), (SELECT MAX(__c) FROM pairs), "
        f"(SELECT quantile_cont(__gu, {quantile_list}) FROM units), (SELECT MAX(__gu) FROM units), "
        "(SELECT median(n) FROM (SELECT SUM(__c) AS n FROM pairs GROUP BY __g))").fetchone()

    def sum_bias(kept_sums) -> dict:
        return {m.name: _relative(float(v or 0), r) for m, v, r in zip(table_measures, kept_sums, raw)}

    by_rows = []
    for k in rows_candidates:
        over_pairs, over_units, kept = values[0], values[1], float(values[2] or 0)
        kept_sums = values[3:3 + len(table_measures)]
        del values[:3 + len(table_measures)]
        noise = count_noise_ci95(policy, g_now, k, policy.max_contributions_per_unit)
        by_rows.append({
            "bound": k, "current": k == k_now, "pairs_clipped": _fraction(over_pairs, pairs),
            "units_clipped": _fraction(over_units, units), "count_bias": _relative(kept, rows),
            "sum_bias": sum_bias(kept_sums), "count_noise_ci95": noise,
            "noise_per_median_group": None if noise is None or not group_median else noise / float(group_median),
        })
    by_groups = []
    for g in groups_candidates:
        over_units, kept = values[0], float(values[1] or 0)
        kept_sums = values[2:2 + len(table_measures)]
        del values[:2 + len(table_measures)]
        noise = count_noise_ci95(policy, g, k_now, policy.max_contributions_per_unit)
        by_groups.append({
            "bound": g, "current": g == g_now, "units_clipped": _fraction(over_units, units),
            "count_bias": _relative(kept, rows), "sum_bias": sum_bias(kept_sums), "count_noise_ci95": noise,
            "noise_per_median_group": None if noise is None or not group_median else noise / float(group_median),
        })
    return {
        "name": dimension.name, "public_keys": dimension.public, "groups": groups,
        "rows_outside_keys": int(outside[0]), "share_outside_keys": _fraction(outside[0], outside[1]),
        "median_group_rows": None if group_median is None else float(group_median),
        "rows_per_unit_group": {**_quantiles(pair_q or [None] * len(QUANTILES)), "max": pair_max,
                                "mean": _fraction(rows, pairs)},
        "groups_per_unit": {**_quantiles(unit_q or [None] * len(QUANTILES)), "max": unit_max,
                            "mean": _fraction(pairs, units)},
        "max_rows_per_unit": by_rows, "max_groups_per_unit": by_groups,
    }


def _exact_totals(con, relation, unit, dimension: Dimension, table_measures: list[Measure], policy: Policy,
                  totals: list[int], found: dict) -> list[dict]:
    """Per candidate total C, with max_rows_per_unit and max_groups_per_unit at the
    policy's values, as the gateway bounds: a unit's groups in keyed-hash order, the
    first G kept, each allowed least(r, C - what the earlier ones kept)."""
    if not totals:
        return []
    k_now, g_now = policy.max_rows_per_unit, policy.max_groups_per_unit
    sums = "".join(f", SUM(LEAST(GREATEST({m.column}, {m.lower!r}), {m.upper!r})) AS __s{i}, SUM({m.column}) AS __raw{i}"
                   for i, m in enumerate(table_measures))
    base = (f"WITH base AS (SELECT {unit} AS __u, {dimension.expression} AS __g, * FROM {relation} "
            f"WHERE {unit} IS NOT NULL AND ({dimension.in_keys})), "
            f"pairs AS (SELECT __u, __g, COUNT(*) AS __c{sums}, row_number() OVER (PARTITION BY __u "
            f"ORDER BY hash(__u, __g, {literal(fresh_salt())}), __g) AS __rank FROM base GROUP BY __u, __g), "
            f"kept AS (SELECT *, SUM(LEAST(__c, {k_now})) OVER (PARTITION BY __u ORDER BY __rank ROWS BETWEEN "
            f"UNBOUNDED PRECEDING AND 1 PRECEDING) AS __before, SUM(CASE WHEN __rank <= {g_now} THEN LEAST(__c, {k_now}) "
            f"ELSE 0 END) OVER (PARTITION BY __u) AS __all, __rank <= {g_now} AS __in FROM pairs) ")
    selects = ["SUM(__c)", "COUNT(DISTINCT __u)", *[f"SUM(__raw{i})" for i in range(len(table_measures))]]
    for total in totals:
        allowed = f"GREATEST(LEAST({k_now}, {total} - COALESCE(__before, 0)), 0)"
        selects += [f"COUNT(DISTINCT __u) FILTER (WHERE __all > {total})",
                    f"SUM(LEAST(__c, {allowed})) FILTER (WHERE __in)"]
        selects += [f"SUM(__s{i} * LEAST(1.0, {allowed} / __c)) FILTER (WHERE __in)" for i in range(len(table_measures))]
    values = list(con.execute(f"{base} SELECT {', '.join(selects)} FROM kept").fetchone())
    rows, units = float(values[0] or 0), values[1]
    raw = [float(v or 0) for v in values[2:2 + len(table_measures)]]
    del values[:2 + len(table_measures)]
    median = found["median_group_rows"]
    by_total = []
    for total in totals:
        over_units, kept = values[0], float(values[1] or 0)
        kept_sums = values[2:2 + len(table_measures)]
        del values[:2 + len(table_measures)]
        noise = count_noise_ci95(policy, g_now, k_now, total)
        by_total.append({
            "bound": total, "current": total == policy.max_contributions_per_unit,
            "units_clipped": _fraction(over_units, units), "count_bias": _relative(kept, rows),
            "sum_bias": {m.name: _relative(float(v or 0), r) for m, v, r in zip(table_measures, kept_sums, raw)},
            "count_noise_ci95": noise,
            "noise_per_median_group": None if noise is None or not median else noise / float(median),
        })
    return by_total


def upper_candidates(declared: float, quantiles: dict, maximum: float | None) -> list[float]:
    found = {declared}
    for value in (*[quantiles.get(k) for k in ("p90", "p95", "p99", "p99.9")], maximum):
        if value is not None and value > 0:
            found.add(float(f"{value:.3g}"))  # three significant digits: a bound a person would write
    return sorted(found)


def _exact_measure(con, relation, unit, measure: Measure) -> dict:
    column = measure.column
    quantile_list = "[" + ", ".join(repr(q) for q in QUANTILES) + "]"
    where = f"WHERE {unit} IS NOT NULL AND {column} IS NOT NULL"
    rows, low, high, total, q, minimum, maximum = con.execute(
        f"SELECT COUNT(*), COUNT(*) FILTER (WHERE {column} < {measure.lower!r}), "
        f"COUNT(*) FILTER (WHERE {column} > {measure.upper!r}), SUM({column})::DOUBLE, "
        f"quantile_cont({column}::DOUBLE, {quantile_list}), MIN({column})::DOUBLE, MAX({column})::DOUBLE "
        f"FROM {relation} {where}").fetchone()
    quantiles = _quantiles(q or [None] * len(QUANTILES))
    uppers = upper_candidates(measure.upper, quantiles, maximum)
    selects = []
    for upper in uppers:
        selects += [f"COUNT(*) FILTER (WHERE {column} > {upper!r})",
                    f"SUM(LEAST(GREATEST({column}, {measure.lower!r}), {upper!r}))::DOUBLE"]
    values = con.execute(f"SELECT {', '.join(selects)} FROM {relation} {where}").fetchone() if rows else [0] * 2 * len(uppers)
    by_upper = []
    for i, upper in enumerate(uppers):
        by_upper.append({"upper": upper, "current": upper == measure.upper, "rows_clipped": _fraction(values[2 * i], rows),
                         "sum_bias": _relative(float(values[2 * i + 1] or 0), total or 0),
                         "sensitivity_vs_current": _fraction(max(abs(measure.lower), abs(upper)),
                                                             max(abs(measure.lower), abs(measure.upper)))})
    return {"name": measure.name, "bounds": [measure.lower, measure.upper], "rows": int(rows),
            "below_lower": _fraction(low, rows), "above_upper": _fraction(high, rows),
            "min": minimum, "max": maximum, "quantiles": quantiles, "upper_bound": by_upper}


# -- one run, as the command makes it ----------------------------------------------------


def report_for(config, room: CleanRoom, user: str, asked: list[str] | None = None, *, epsilon: float | None = None,
               rows: list[int] | None = None, groups: list[int] | None = None, totals: list[int] | None = None,
               front_end: str = "cli", profile: int | None = None) -> dict:
    """The report on the user's tables, exact or (epsilon given) under DP; audited,
    refusals included. Under DP the stated epsilon is recorded in the ledger as a
    charge to the account `owner:<collaborator>` (no analyst's budget is touched)
    before any row is read."""
    audit = AuditLog.for_config(config)
    record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(), "user": user,
              "collaborator": room.collaborator_of(user), "cleanroom": room.name, "policy_version": room.version,
              "front_end": front_end, "tables": list(asked or []), "mode": "exact" if epsilon is None else "dp"}
    try:
        collaborator, tables = owned_tables(room, user, asked)
    except Refused as refusal:
        audit.append({**record, "decision": "refused", "rule": refusal.rule, "message": refusal.message})
        raise
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and 0 < epsilon <= 100):
        raise ValueError(f"epsilon must be in (0, 100], not {epsilon!r}")
    if profile is not None and (epsilon is None or not 1 <= profile <= 100_000):
        raise ValueError("--profile CEILING needs --epsilon (a profile is only published under DP) and a CEILING "
                         "from 1 to 100000")
    policy = Policy.of(room)
    rows = candidates(rows, ROWS_CANDIDATES, policy.max_rows_per_unit)
    groups = candidates(groups, GROUPS_CANDIDATES, policy.max_groups_per_unit)
    totals = candidates(totals, TOTALS_CANDIDATES, policy.max_contributions_per_unit)
    result = {"cleanroom": room.name, "owner": collaborator, "mode": record["mode"], "tables": []}
    if epsilon is not None:
        result["dp"] = _charge_owner(config, room, collaborator, user, epsilon, [t.name for t in tables])
    audit.append({**record, "tables": [t.name for t in tables], "decision": "reported",
                  "rule": "contributions.report", **({"epsilon": epsilon} if epsilon is not None else {})})
    con = sources.open_database(config)
    try:
        for table in tables:
            relation = sources.relation_for(table).sql(dialect="duckdb")
            if profile is not None:
                result.setdefault("profile", {})[table.name] = dp_profile(con, relation, table, profile,
                                                                          epsilon / len(tables))
            elif epsilon is None:
                result["tables"].append(exact_report(con, relation, table, policy, rows, groups, totals))
            else:
                result["tables"].append(dp_report(con, relation, table, policy, rows, groups, epsilon / len(tables)))
    finally:
        con.close()
    return result


def _charge_owner(config, room: CleanRoom, collaborator: str, user: str, epsilon: float, tables: list[str]) -> dict:
    account = Account(room.name, f"owner:{collaborator}")
    ledger = Ledger.from_config(config)
    balance = ledger.charge(account, Spend(epsilon), Budget(MAX_EPSILON), request_id=f"contributions:{user}",
                            query_sha256="contributions:" + ",".join(tables))
    return {"epsilon": epsilon, "accounting": "pure", "guarantee": "epsilon-DP in each table's privacy unit",
            "charged_to": f"the stated epsilon, recorded in the ledger as {account.analyst!r} (no analyst's budget)",
            "owner_total_epsilon": balance.spent.epsilon}
