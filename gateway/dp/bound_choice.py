"""Contribution bounds chosen per query, from the owner's DP profile of the table.

A total bound C (max_contributions_per_unit) trades bias for noise: rows of a unit
beyond C are not counted, and every count and sum is noised for C rows of every
unit. No single C is best for every query: a count by 12 categories at epsilon 1
wants a C that clips almost nothing, the same count at epsilon 0.1 a smaller one,
a sum of a heavy-tailed measure a smaller one still. So when the policy carries
the owner's profile of a table (`privacy.profile`, computed under DP by
`cleanroom contributions --epsilon E --profile`), each query over that table gets
the C, at most the declared max_contributions_per_unit (the ceiling), and for each
profiled measure it sums or averages the upper bound U, at most the declared one,
that minimise the expected squared relative error of its released values:

    bias^2 (estimated from the profile)  +  noise variance (of the query's own
    mechanisms at their share of its loss, for the sensitivity C and U give).

Privacy: the inputs are the policy (the profile is already DP, published by the
owner), the query's text (its aggregates, its number of public groups) and its
loss split, never the data the query reads. The choice is post-processing of
public information: it costs nothing and the charge stays what it was. The plan
then applies the chosen C and U like declared ones (gateway.dp.bounding clips
with them, gateway.dp.families computes the sensitivity from them), so the bound
the noise is calibrated to is the bound applied. How good the choice is depends on
the profile; that the guarantee holds does not.

The error model, per released value of a group of n = N / K rows (N the profiled
rows, K the query's public groups; filters and joins are not modelled: it assumes
the query reads the table once, grouped evenly):
- beta(C) = rows beyond C over all units / N (the profile's rows per unit);
- count: bias -beta(C);
- sum: (1 - beta) m_U / m - 1, m the mean value and m_U the mean clamped to U;
- average: (m_U + s) / m - 1, s = beta / (1 - beta) times the standard deviation of
  the clamped values: the rows a bound drops may differ from the rest (heavy units may
  buy otherwise), and the profile cannot tell how, so they are taken one standard
  deviation away, in the direction that adds to the clamping bias (without it, C = 1 would look free for averages: it weighs every
  unit alike instead of every row);
- variance: Laplace 2 (L1 / epsilon)^2, Gaussian L2^2 / (2 rho), relative to the
  value's size (n, n m), the average's by the ratio's first-order expansion.
Ties go to the larger bound (less bias).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from gateway.dp.families.base import Contribution, Sensitivity


@dataclass(frozen=True)
class Demand:
    """One released aggregate the choice weighs, by what its noisy quantities estimate:
    `rows` (a row count), `sum` (a sum) or `ratio` (a centred sum over a row count, an
    average), with the loss (epsilon, or rho under zCDP) of each."""

    estimate: str
    rows_loss: float = 0.0  # its row count (count, avg)
    sum_loss: float = 0.0  # its sum (sum) or centred sum (avg)
    measure: str | None = None  # the profiled measure it sums or averages


@dataclass(frozen=True)
class Setting:
    """The public facts of one query the choice reads."""

    ceiling: int  # max_contributions_per_unit after the policy's overrides
    rows_per_unit: int  # r
    groups_per_unit: int  # g, as the plan bounds it (no more than the public groups)
    groups: int  # K: public groups the rows spread over (1 without GROUP BY)
    pure: bool  # Laplace (epsilon) or Gaussian (rho)


@dataclass(frozen=True, eq=False)  # hashed by identity: the caches below see one object many times
class Histogram:
    """A measure's profiled values: counts[i] in [edges[i], edges[i + 1]), the last at or above edges[-1]."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def representatives(self) -> list[float]:
        mids = [(a + b) / 2 for a, b in zip(self.edges, self.edges[1:])]
        return mids + [self.edges[-1]]

    def mean(self, upper: float | None = None) -> float:
        return _mean(self, upper)

    def deviation(self, upper: float | None = None) -> float:
        """The standard deviation of the values clamped to `upper`."""
        mean = _mean(self, upper)
        return max(0.0, _mean_square(self, upper) - mean * mean) ** 0.5


@lru_cache(maxsize=4096)
def _mean(histogram: Histogram, upper: float | None) -> float:
    """The mean of the histogram's values clamped to `upper` (each bin at its midpoint,
    the last at its edge); cached: the choice asks for the same ones many times."""
    total = sum(histogram.counts)
    if not total:
        return 0.0
    cap = histogram.edges[-1] if upper is None else upper
    return sum(c * min(v, cap) for c, v in zip(histogram.counts, histogram.representatives())) / total


@lru_cache(maxsize=4096)
def _mean_square(histogram: Histogram, upper: float | None) -> float:
    total = sum(histogram.counts)
    if not total:
        return 0.0
    cap = histogram.edges[-1] if upper is None else upper
    return sum(c * min(v, cap) ** 2 for c, v in zip(histogram.counts, histogram.representatives())) / total


@dataclass(frozen=True)
class Choice:
    """The bounds one query runs with, and what they were chosen from."""

    total: int  # the max_contributions_per_unit applied
    ceiling: int
    table: str
    uppers: dict = field(default_factory=dict)  # measure -> (chosen upper, declared upper), where chosen below

    def as_json(self) -> dict:
        shown = {"from": f"the owner's DP contribution profile of {self.table} (privacy.profile)",
                 "max_contributions_per_unit": self.total, "ceiling": self.ceiling}
        if self.uppers:
            shown["upper_bounds"] = {m: {"chosen": u, "declared": d} for m, (u, d) in sorted(self.uppers.items())}
        return shown


@lru_cache(maxsize=4096)
def rows_beyond(units_by_rows: tuple[int, ...], total: int) -> float:
    """Rows the units of the profile have beyond `total` (the last bin counted at its own
    size: what it holds beyond that is clipped by every candidate alike)."""
    return float(sum(max(0, rows - total) * units for rows, units in enumerate(units_by_rows, 1)))


@lru_cache(maxsize=256)
def profiled_rows(units_by_rows: tuple[int, ...]) -> float:
    return float(sum(rows * units for rows, units in enumerate(units_by_rows, 1)))


@lru_cache(maxsize=65536)
def _rows_sensitivity(rows_per_unit: int, groups_per_unit: int, total: int, magnitude: float) -> Sensitivity:
    return Sensitivity.of_rows(Contribution(rows_per_unit, groups_per_unit, total), magnitude)


def _variance(sensitivity: Sensitivity, loss: float, pure: bool) -> float:
    if loss <= 0:
        return 0.0
    if pure:
        return 2 * (sensitivity.l1 / loss) ** 2
    return sensitivity.l2 ** 2 / (2 * loss)


class _Profiled:
    """Units by rows with what the choice reads of them computed once."""

    def __init__(self, units_by_rows):
        self.units_by_rows = tuple(units_by_rows)
        self.rows = profiled_rows(self.units_by_rows)
        self._beyond: dict[int, float] = {}

    def beyond(self, total: int) -> float:
        if total not in self._beyond:
            self._beyond[total] = rows_beyond(self.units_by_rows, total)
        return self._beyond[total]


def expected_error(total: int, uppers: dict, units_by_rows, histograms: dict,
                   declared: dict, demands: list[Demand], setting: Setting) -> float:
    """The expected squared relative error, summed over the demands, at total bound
    `total` and measure upper bounds `uppers` (measure -> U; declared ones elsewhere)."""
    profiled = units_by_rows if isinstance(units_by_rows, _Profiled) else _Profiled(units_by_rows)
    rows = profiled.rows
    if rows <= 0:
        return 0.0
    n = rows / max(1, setting.groups)
    beta = profiled.beyond(total) / rows
    r, g = setting.rows_per_unit, setting.groups_per_unit
    count_noise = _rows_sensitivity(r, g, total, 1.0)
    error = 0.0
    for demand in demands:
        rows_variance = _variance(count_noise, demand.rows_loss, setting.pure)
        if demand.estimate == "rows":
            error += beta * beta + rows_variance / (n * n)
            continue
        lower, declared_upper = declared[demand.measure]
        upper = uppers.get(demand.measure, declared_upper)
        histogram = histograms[demand.measure]
        mean, clamped = histogram.mean(), histogram.mean(upper)
        if mean <= 0:
            continue
        if demand.estimate == "sum":
            variance = _variance(_rows_sensitivity(r, g, total, max(abs(lower), abs(upper))), demand.sum_loss,
                                 setting.pure)
            error += ((1 - beta) * clamped / mean - 1) ** 2 + variance / (n * mean) ** 2
        else:  # ratio: midpoint + centred sum / count
            variance = _variance(_rows_sensitivity(r, g, total, (upper - lower) / 2), demand.sum_loss, setting.pure)
            kept = max(1.0, (1 - beta) * n)
            offset = clamped - (lower + upper) / 2
            # the rows a bound drops may differ in value from those kept (heavy units buy otherwise):
            # the profile cannot tell how, so take them one standard deviation of the values away
            shift = beta / max(1e-12, 1 - beta) * histogram.deviation(upper)
            bias = abs(clamped / mean - 1) + shift / mean  # in whichever direction: the worse one
            error += bias * bias + (variance + offset * offset * rows_variance) / (kept * mean) ** 2
    return error


def choose(table: str, units_by_rows: tuple[int, ...], histograms: dict, declared: dict, demands: list[Demand],
           setting: Setting) -> Choice:
    """The total bound C in 1..ceiling and, per measure a demand sums or averages, the
    upper bound among its histogram's edges (at most the declared one) that minimise
    expected_error; ties go to the larger bound. Depends on its arguments only."""
    measures = sorted({d.measure for d in demands if d.measure is not None})
    units_by_rows = _Profiled(units_by_rows)
    best = None
    for total in range(setting.ceiling, 0, -1):
        uppers = {}
        for measure in measures:  # measures add separately to the error: each its own best U at this C
            own = [d for d in demands if d.measure == measure]
            candidates = [e for e in histograms[measure].edges[1:] if e <= declared[measure][1]]
            scored = [(expected_error(total, {measure: u}, units_by_rows, histograms, declared, own, setting), -u)
                      for u in candidates]
            uppers[measure] = -min(scored)[1]
        score = expected_error(total, uppers, units_by_rows, histograms, declared, demands, setting)
        if best is None or score < best[0]:
            best = (score, total, uppers)
    _, total, uppers = best
    chosen = {m: (u, declared[m][1]) for m, u in uppers.items() if u < declared[m][1]}
    return Choice(total, setting.ceiling, table, chosen)


# -- one query's plan -------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _histogram(measure) -> Histogram:
    """One Histogram per profiled measure of the policy, so the means cached for it serve every query."""
    return Histogram(measure.edges, measure.counts)


def choose_for(room, privacy, tables_read, groups, builder, outputs: dict, composition) -> Choice | None:
    """The choice for a query on public keys (or none) that reads one private table the
    policy profiles, with a declared max_contributions_per_unit; None otherwise (the
    declared bounds apply). Reads the policy, the query's text and its loss split only."""
    profiles = {p.table: p for p in (room.privacy.profiles or ())}
    private = [t for t in tables_read if not room.tables[t].public]
    if privacy.max_contributions_per_unit is None or len(private) != 1 or private[0] not in profiles:
        return None
    table, profile = private[0], profiles[private[0]]
    if privacy.max_contributions_per_unit > len(profile.units_by_rows) - 1:  # a rule's or analyst's higher ceiling:
        return None  # the profile cannot show the bias of bounds beyond what it counts
    histograms = {m.column: _histogram(m) for m in profile.measures}
    declared = {m: (room.tables[table].columns[m].bounds.lower, room.tables[table].columns[m].bounds.upper)
                for m in histograms}
    kinds = {q.column: str(getattr(q.kind, "value", q.kind)) for q in builder.quantities}
    demands = []
    for output in outputs.values():  # by the kinds of its quantities: the families, not aggregate names, decide
        losses = [composition.part(q).loss.amount for q in output.quantities]
        shape = tuple(kinds.get(q) for q in output.quantities)
        traced = builder.measures.get(output.column)
        measure = traced[1] if traced is not None and traced[0] == table and traced[1] in histograms else None
        if shape == ("rows",):
            demands.append(Demand("rows", rows_loss=losses[0]))
        elif shape == ("sum",) and measure is not None:
            demands.append(Demand("sum", sum_loss=losses[0], measure=measure))
        elif shape == ("centered_sum", "rows") and measure is not None:
            demands.append(Demand("ratio", rows_loss=losses[1], sum_loss=losses[0], measure=measure))
    if not demands:
        return None
    combinations = 1
    for key in groups:
        combinations *= len(key.values)
    setting = Setting(ceiling=privacy.max_contributions_per_unit, rows_per_unit=privacy.max_rows_per_unit,
                      groups_per_unit=max(1, min(privacy.max_groups_per_unit, combinations)),
                      groups=combinations, pure=composition.total.pure)
    return choose(table, profile.units_by_rows, histograms, declared, demands, setting)
