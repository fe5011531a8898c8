"""The contribution report under differential privacy: noisy histograms and
quantiles only, fit for sharing beyond the owner (gateway/dp/contributions.py
has the exact report and the rules of who may ask).

Guarantee: pure epsilon-DP in the table's privacy unit (adding or removing one
unit with all its rows) at the stated epsilon, split evenly over the
measurements below by basic composition; each measurement's loss is what its
OpenDP privacy map reports (gateway/dp/mechanisms.py), never more than its
share. The report's own contribution bounds (chosen from the candidates, never
from the data) make the sensitivities finite:

- per dimension, C = largest rows candidate + 1 and M = largest groups
  candidate, from each unit's M groups of lowest keyed hash:
  - pairs: (unit, group) pairs by their rows, bins 1..C (C holds "C or more"):
    L1 sensitivity M;
  - units by their largest rows per group, bins 1..C: L1 sensitivity 1;
  - units by their number of groups, 1..M and "more": L1 sensitivity 1;
- per measure, R = max_rows_per_unit * max_groups_per_unit of the policy:
  - values: histogram over fixed edges (multiples of the declared upper bound),
    up to R values per unit (keyed hash): L1 sensitivity R;
  - quantiles 0.5, 0.9, 0.95, 0.99 over [lower, 4 * upper] (OpenDP's private
    quantile, R values per unit), one measurement each;
- the number of units: L1 sensitivity 1.

Everything else is post-processing of those noisy numbers (a count below the
noise's 95% bound over its vector reads as 0): shares clipped and count biases
per candidate bound. Where the report's own bins cut a tail (rows of a pair
beyond C, groups beyond M, values beyond 4 * upper), and where noise hides small
bins, a bias is under-estimated: the table says "at least", `tail` says where. The groups bias is weighted by units, not rows (it assumes a
unit's rows spread evenly over its groups).
"""

from __future__ import annotations

import bisect
import math

from gateway.dp import mechanisms
from gateway.dp.contributions_model import Dimension, Measure, Policy, dimensions, fresh_salt, measures, quote
from gateway.policy.model import Table

ALPHAS = (0.5, 0.9, 0.95, 0.99)
EDGE_FACTORS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)


def measurement_count(table: Table) -> int:
    return 1 + 3 * len(dimensions(table)) + (1 + len(ALPHAS)) * len(measures(table))


def dp_report(con, relation: str, table: Table, policy: Policy, rows_candidates: list[int],
              groups_candidates: list[int], epsilon: float) -> dict:
    salt = fresh_salt()
    share = epsilon / measurement_count(table)
    spent = []
    unit = quote(table.privacy_unit)

    def noisy(counts: list[int], sensitivity: int) -> list[int]:
        """Post-processing after the noise: a count below the noise's 95% bound over
        all the bins (P(|noise| > t) <= 5% / bins) reads as 0, so empty bins stay
        (mostly) empty instead of adding noise to every bias derived from them."""
        noise = mechanisms.integer_noise(sensitivity, share)
        spent.append(noise.epsilon)
        floor = noise.scale * math.log(len(counts) / 0.05) if len(counts) > 1 else 0
        return [v if v > floor else 0 for v in noise.apply(counts)]

    units_exact = con.execute(f"SELECT COUNT(DISTINCT {unit}) FROM {relation} WHERE {unit} IS NOT NULL").fetchone()[0]
    units = noisy([int(units_exact)], 1)[0]
    report = {
        "table": table.name, "privacy_unit": table.privacy_unit, "units": units,
        "policy": {"max_rows_per_unit": policy.max_rows_per_unit, "max_groups_per_unit": policy.max_groups_per_unit,
                   "epsilon_per_query": policy.epsilon, "accounting": policy.accounting},
        "dimensions": [], "measures": [],
    }
    for dimension in dimensions(table):
        report["dimensions"].append(_dimension(con, relation, unit, dimension, rows_candidates, groups_candidates,
                                               salt, noisy))
    for measure in measures(table):
        report["measures"].append(_measure(con, relation, unit, measure, policy, salt, share, noisy, spent))
    report["epsilon_spent"] = sum(spent)
    report["measurements"] = len(spent)
    return report


def _binned(rows, edges: list[int]) -> list[int]:
    """Sums per bin of (value, amount) rows: bin i holds values in (edges[i-1], edges[i]],
    the last bin values above edges[-1]."""
    sums = [0] * (len(edges) + 1)
    for value, amount in rows:
        sums[bisect.bisect_left(edges, value)] += int(amount)
    return sums


def _dimension(con, relation, unit, dimension: Dimension, rows_candidates, groups_candidates, salt, noisy) -> dict:
    top_rows, top_groups = max(rows_candidates) + 1, max(groups_candidates)
    salt_sql = "'" + salt + "'"
    ranked = (f"WITH base AS (SELECT {unit} AS __u, {dimension.expression} AS __g FROM {relation} "
              f"WHERE {unit} IS NOT NULL AND ({dimension.in_keys})), "
              f"pairs AS (SELECT __u, __g, COUNT(*) AS __c, hash(__u, __g, {salt_sql}) AS __h FROM base "
              "GROUP BY __u, __g), "
              "ranked AS (SELECT *, row_number() OVER (PARTITION BY __u ORDER BY __h) AS __r, "
              "COUNT(*) OVER (PARTITION BY __u) AS __gu, MAX(__c) OVER (PARTITION BY __u) AS __mc FROM pairs) ")
    rows_bins = list(range(1, top_rows))  # and one bin above: top_rows or more
    pairs = noisy(_binned(con.execute(f"{ranked} SELECT __c, COUNT(*) FROM ranked WHERE __r <= {top_groups} "
                                      "GROUP BY 1").fetchall(), rows_bins), top_groups)
    by_max = noisy(_binned(con.execute(f"{ranked} SELECT __mc, COUNT(*) FROM ranked WHERE __r = 1 GROUP BY 1")
                           .fetchall(), rows_bins), 1)
    sizes = list(range(1, top_groups + 1))
    by_groups = noisy(_binned(con.execute(f"{ranked} SELECT __gu, COUNT(*) FROM ranked WHERE __r = 1 GROUP BY 1")
                              .fetchall(), sizes), 1)
    pair_total, unit_total, grouped_total = sum(pairs), sum(by_max), sum(by_groups)
    row_total = sum(c * n for c, n in enumerate(pairs, 1))  # the last bin at top_rows: at least that
    rows_table = []
    for k in rows_candidates:
        lost = sum(n * (c - k) for c, n in enumerate(pairs, 1) if c > k)
        rows_table.append({
            "bound": k, "pairs_clipped": _share(sum(pairs[k:]), pair_total),
            "units_clipped": _share(sum(by_max[k:]), unit_total),
            "count_bias": None if not row_total else -lost / row_total,
        })
    groups_table = []
    for g in groups_candidates:
        over = sum(n for size, n in enumerate(by_groups, 1) if size > g)
        lost = sum(n * (1 - g / size) for size, n in enumerate(by_groups, 1) if size > g)
        groups_table.append({"bound": g, "units_clipped": _share(over, grouped_total),
                             "count_bias_units_weighted": None if not grouped_total else -lost / grouped_total})
    return {
        "name": dimension.name, "public_keys": dimension.public,
        "histograms": {"pairs_by_rows": _labelled(pairs), "units_by_largest_rows": _labelled(by_max),
                       "units_by_groups": _labelled(by_groups)},
        "tail": {"rows_per_pair_counted_up_to": top_rows, "units_with_more_groups_than": top_groups,
                 "share_of_units": _share(by_groups[-1], grouped_total)},
        "max_rows_per_unit": rows_table, "max_groups_per_unit": groups_table,
    }


def _labelled(counts: list[int]) -> dict:
    """{"1": n, "2": n, ..., "K+": n}, leaving out empty bins below the last."""
    last = len(counts)
    return {(f"{i}+" if i == last else str(i)): n for i, n in enumerate(counts, 1) if n or i == last}


def _measure(con, relation, unit, measure: Measure, policy: Policy, salt, share, noisy, spent) -> dict:
    per_unit = policy.max_rows_per_unit * policy.max_groups_per_unit
    column, salt_sql = measure.column, "'" + salt + "'"
    values = [float(v) for (v,) in con.execute(
        f"SELECT v FROM (SELECT {column}::DOUBLE AS v, row_number() OVER (PARTITION BY {unit} "
        f"ORDER BY hash({unit}, {column}, {salt_sql})) AS r FROM {relation} "
        f"WHERE {unit} IS NOT NULL AND {column} IS NOT NULL) WHERE r <= {per_unit}").fetchall()]
    edges = [measure.lower] + [measure.upper * f for f in EDGE_FACTORS if measure.upper * f > measure.lower]
    counts = [0] * (len(edges) + 1)  # below lower, [e0, e1), ..., at or above the last edge
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    counts = noisy(counts, per_unit)
    total = sum(counts)
    by_upper = []
    for i, edge in enumerate(edges[1:], 2):
        by_upper.append({"upper": edge, "current": edge == measure.upper,
                         "rows_clipped": _share(sum(counts[i:]), total)})
    quantiles = {}
    high = measure.upper * 4
    for alpha in ALPHAS:
        mechanism = mechanisms.quantile(alpha, measure.lower, high, per_unit, share)
        spent.append(mechanism.epsilon)
        quantiles[f"p{alpha * 100:g}"] = mechanism.apply(values)
    return {"name": measure.name, "bounds": [measure.lower, measure.upper], "values_per_unit": per_unit,
            "below_lower": _share(counts[0], total), "quantiles": quantiles, "quantile_range": [measure.lower, high],
            "histogram": {"edges": edges, "counts": counts}, "upper_bound": by_upper}


def _share(part: float, whole: float) -> float | None:
    return None if not whole else part / whole


def _bins(counts: list[int], top: int) -> dict:
    return {(f"{i}+" if i == top else str(i)): n for i, n in enumerate(counts, 1)}


# -- the profile an owner publishes into the policy (privacy.profile) ------------------------

PROFILE_BINS = 50  # per measure: equal bins from the declared lower to the declared upper bound


def dp_profile(con, relation: str, table: Table, ceiling: int, epsilon: float) -> dict:
    """The table's contribution profile under pure epsilon-DP in its privacy unit, as
    `privacy.profile.<table>` holds it (gateway/dp/bound_choice.py reads it), split
    evenly over its histograms:
    - units by their rows in the table, bins 1..ceiling and one for more: a unit is in
      one bin, L1 sensitivity 1;
    - per measure bounded below by 0 or more: its values, up to `ceiling` of each unit
      (keyed hash, a fresh key each run), over PROFILE_BINS equal bins from the declared
      lower to the declared upper bound and one at or above it: L1 sensitivity `ceiling`.
    Counts are rounded and floored at 0 after the noise (post-processing)."""
    salt_sql = "'" + fresh_salt() + "'"
    unit = quote(table.privacy_unit)
    profiled = [m for m in measures(table) if m.lower >= 0]
    share = epsilon / (1 + len(profiled))
    spent = []

    def noisy(counts: list[int], sensitivity: int) -> list[int]:
        noise = mechanisms.integer_noise(sensitivity, share)
        spent.append(noise.epsilon)
        return [max(0, int(v)) for v in noise.apply(counts)]

    per_unit = con.execute(f"SELECT n, COUNT(*) FROM (SELECT COUNT(*) AS n FROM {relation} WHERE {unit} IS NOT NULL "
                           f"GROUP BY {unit}) GROUP BY n").fetchall()
    bins = [0] * (ceiling + 1)
    for rows, units in per_unit:
        bins[min(int(rows), ceiling + 1) - 1] += int(units)
    profile = {"epsilon": epsilon, "units_by_rows": noisy(bins, 1), "measures": {}}
    for measure in profiled:
        width = (measure.upper - measure.lower) / PROFILE_BINS
        edges = [measure.lower + i * width for i in range(PROFILE_BINS)] + [measure.upper]
        values = con.execute(
            f"SELECT v FROM (SELECT {measure.column}::DOUBLE AS v, row_number() OVER (PARTITION BY {unit} "
            f"ORDER BY hash({unit}, {measure.column}, {salt_sql})) AS r FROM {relation} "
            f"WHERE {unit} IS NOT NULL AND {measure.column} IS NOT NULL) WHERE r <= {ceiling}").fetchall()
        counts = [0] * len(edges)
        for (v,) in values:
            counts[max(0, bisect.bisect_right(edges, v) - 1)] += 1
        profile["measures"][measure.name] = {"edges": [_tidy(e) for e in edges], "counts": noisy(counts, ceiling)}
    if not profile["measures"]:
        del profile["measures"]
    profile["epsilon_spent"] = sum(spent)
    return profile


def _tidy(edge: float) -> float | int:
    return int(edge) if float(edge).is_integer() else round(edge, 6)
