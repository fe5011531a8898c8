"""The bounded result becomes a differentially private release.

Order matters (each step sees only what the one before released):
1. group keys: every public combination, or those OpenDP's partition
   selection lets through (noisy unit count over a threshold set by delta);
2. the minimum group size, applied to the noisy unit count, never the true one;
3. noise on every other quantity of the groups still standing, each by its
   family's measurement (gateway.dp.families), at its share of the query's loss
   (gateway.dp.composition); then each released value formed, post-processed
   and given its 95% interval from the noisy quantities alone;
4. the analyst's projections, HAVING, ORDER BY and LIMIT, on noisy values only;
   the intervals follow the rows that are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import sqlglot
from sqlglot import expressions as exp

from gateway.dp import notices as told
from gateway.dp import thresholds
from gateway.dp.composition import PrivacyLoss
from gateway.dp.families import AGGREGATES, QUANTITIES, Contribution
from gateway.dp.families.base import TAIL
from gateway.dp.families.clipping import CLIPPED
from gateway.dp.plan import QUANTILE_NAMES, RELEASED, Kind, NoisePlan, Output
from gateway.scratch import scratch

_ROW = "__row"  # position of a measured group, carried through the analyst's post-processing
_LOW, _HIGH = "__low", "__high"  # suffixes of a released value's interval columns


@dataclass(frozen=True)
class Measurement:
    """The noisy quantities of one query: the released groups' keys (__g*),
    outputs (__a*) and their intervals, and how they were protected. Everything
    after it is post-processing, so a repeat of the query (the release cache) reuses it."""

    table: pa.Table
    protection: dict  # JSON-able: how every quantity was protected (internal names: publish() hides them)
    reused: bool = False  # from the release cache: nothing new was spent


@dataclass(frozen=True)
class NoisyRelease:
    table: pa.Table
    protection: dict
    notices: tuple[str, ...]


def contribution(plan: NoisePlan) -> Contribution:
    return Contribution.of(plan)


def measurements(plan: NoisePlan) -> dict:
    """Every quantity's OpenDP measurement at its share of the query's loss, checked
    against the composition with the loss each one's privacy map reports."""
    bounds, composition = contribution(plan), plan.composition
    built, spent = {}, {}
    for quantity in plan.quantities:
        if quantity.kind is Kind.UNITS and not plan.unit_count:
            continue  # public keys released whatever their size: the unit count is neither noised nor paid
        family, loss = QUANTITIES[quantity.kind], composition.part(quantity.column).loss
        if quantity.kind is Kind.UNITS and not plan.public_keys:
            measurement = family.selection(bounds, loss)
        else:
            measurement = family.measurement(quantity, bounds, loss)
        built[quantity.column] = measurement
        amount = measurement.epsilon * (bounds.groups if quantity.kind is Kind.QUANTILE else 1)
        spent[quantity.column] = PrivacyLoss(loss.accounting, amount, getattr(measurement, "delta", 0.0))
    composition.check(spent)
    return built


def measure(plan: NoisePlan, bounded: pa.Table, privacy_unit: str) -> Measurement:
    """Steps 1 to 3: the only place private numbers meet noise."""
    columns = {name: bounded.column(name).to_pylist() for name in bounded.column_names}
    built = measurements(plan)
    units = columns["__units"]
    if not plan.unit_count:
        noisy_units = None
        kept = list(range(len(units)))
    else:
        counter = built["__units"]
        if plan.public_keys:
            noisy_units = dict(enumerate(counter.apply(units)))
        else:
            released = counter.apply({str(i): count for i, count in enumerate(units)})
            noisy_units = {int(i): count for i, count in released.items()}
        kept = [i for i in sorted(noisy_units) if noisy_units[i] >= plan.min_group_size]
    groups = _groups(plan, built)
    # Counted among released noisy counts only (post-processing); with private selection,
    # how many candidates failed the selection is never counted.
    groups["suppressed_below_min_group_size"] = (len(units) if noisy_units is None else len(noisy_units)) - len(kept)
    groups["released"] = len(kept)
    if plan.public_keys:
        groups["candidates"] = len(units)

    noisy = {"__units": [noisy_units[i] for i in kept]} if noisy_units is not None else {}
    for quantity in plan.quantities[1:]:
        family = QUANTITIES[quantity.kind]
        noisy[quantity.column] = family.noise(built[quantity.column], [columns[quantity.column][i] for i in kept])

    arrays, names = [], []
    for key in plan.groups:
        arrays.append(bounded.column(key.column).take(pa.array(kept, pa.int64())))
        names.append(key.column)
    for output in plan.outputs:
        family = AGGREGATES[output.aggregate]
        _add_released(arrays, names, output.column, family.release(output, noisy, built), family.integer)
    if "__clipped" in noisy:
        clipped = Output("__clipped", "count", ("__clipped",))
        _add_released(arrays, names, "__clipped", CLIPPED.release(clipped, noisy, built), integer=True)
    if not arrays:  # SELECT 1 FROM t GROUP BY ...: only the number of rows is released
        arrays, names = [pa.array([None] * len(kept), pa.null())], ["__none"]
    protection = {**_static(plan, built), "groups": groups, "privacy_unit": privacy_unit}
    return Measurement(pa.Table.from_arrays(arrays, names=names), protection)


def _add_released(arrays: list, names: list, column: str, released: list, integer: bool) -> None:
    kind = pa.int64() if integer else pa.float64()
    for suffix, part in (("", "value"), (_LOW, "low"), (_HIGH, "high")):
        arrays.append(pa.array([getattr(r, part) for r in released], type=kind))
        names.append(column + suffix)


def _groups(plan: NoisePlan, built: dict) -> dict:
    if plan.public_keys:
        k = plan.applied_min_group_size  # None: every group released, k not applied
        return {"keys": "public" if plan.groups else "none (one group)", "min_group_size": k}
    selector = built["__units"]
    return {"keys": "selected privately", "threshold": selector.threshold, "delta": selector.delta,
            "min_group_size": plan.min_group_size}


def _static(plan: NoisePlan, built: dict) -> dict:
    """What the plan and its measurements say, before any data (internal names kept:
    publish() and describe() turn them into the analyst's)."""
    bounds = contribution(plan)
    quantities = {q.column: QUANTITIES[q.kind].describe(q, bounds, built[q.column]) for q in plan.quantities
                  if q.column in built}
    intervals = {o.column: AGGREGATES[o.aggregate].interval(o, built) for o in plan.outputs}
    summary = {
        "mechanism": plan.privacy.mechanism.value,
        "accounting": plan.accounting,
        "epsilon": plan.epsilon,
        "delta": plan.delta,
        "composition": plan.composition.as_json(),
        "contribution_bounds": _bounds_json(bounds, plan.bound_choice),
        "quantities": quantities,
        "intervals": intervals,
    }
    if plan.rho:
        summary["rho"] = plan.rho
    return summary


def _bounds_json(bounds: Contribution, choice=None) -> dict:
    """The bounds this query's guarantee rests on: the total only where it is tighter than
    rows x groups (otherwise it bounds nothing the other two do not); and, when they were
    chosen for this query from the owner's profile (gateway.dp.bound_choice), what from."""
    shown = {"max_rows_per_unit": bounds.rows_per_unit, "max_groups_per_unit": bounds.groups_per_unit}
    if bounds.binds:
        shown["max_contributions_per_unit"] = bounds.total_per_unit
    if choice is not None:
        shown["chosen_for_this_query"] = choice.as_json()
    return shown


def publish(plan: NoisePlan, measurement: Measurement) -> NoisyRelease:
    """Step 4, and what the analyst is told."""
    table, rows_of = _post(plan, measurement.table)
    stored = measurement.protection
    protection = _public(plan, stored, unit=stored.get("privacy_unit") or "privacy unit")
    protection["groups"] = {**stored["groups"], "returned": table.num_rows}
    protection["privacy_unit"] = stored.get("privacy_unit")
    _per_row(protection, plan, stored, measurement.table, rows_of)
    protection["reused"] = measurement.reused
    notices = told.notices(protection)
    if measurement.reused:
        notices.insert(0, "the same question was answered before: the same noisy answer is returned, "
                          "and nothing was spent")
    return NoisyRelease(table, protection, tuple(notices))


def _public(plan: NoisePlan, stored: dict, unit: str) -> dict:
    """The protection an analyst sees: each aggregate once, by what they wrote, and
    each released column by its own name; no internal name."""
    shown = _shown(plan)
    aggregates, columns = [], {}
    for output in plan.outputs:
        label = plan.label(output.column)
        interval = stored["intervals"][output.column]
        aggregates.append({"aggregate": output.aggregate, "sql": label, "columns": [n for n, _ in shown[output.column]],
                           "noise": [stored["quantities"][q] for q in output.quantities], "interval": interval})
        for name, _ in shown[output.column]:
            columns[name] = {"aggregate": output.aggregate, "sql": label, "interval": interval["text"]}
    public = {key: stored[key] for key in ("mechanism", "accounting", "epsilon", "delta", "composition",
                                           "contribution_bounds") if key in stored}
    if "rho" in stored:
        public["rho"] = stored["rho"]
    public.update(aggregates=aggregates, columns=columns, intervals_cover="noise only",
                  bias=told.biases(plan, unit))
    if "__clipped" in stored["quantities"]:
        info = stored["quantities"]["__clipped"]
        parameter = "epsilon" if "epsilon" in info else "rho"
        public["clipped_units"] = {"mechanism": info["mechanism"], "parameter": parameter, "loss": info[parameter],
                                   "half_width": info["ci95"]}
    return public


def _shown(plan: NoisePlan) -> dict[str, list[tuple[str, int]]]:
    """Per output: the released columns (name, position) that show it as it is. A
    name repeated in the result gets its position: `count (column 3)`."""
    names = [name for name, _ in plan.released_from]
    shown = {output.column: [] for output in plan.outputs}
    for position, (name, source) in enumerate(plan.released_from):
        if source in shown:
            unique = name if names.count(name) == 1 else f"{name} (column {position + 1})"
            shown[source].append((unique, position))
    return shown


def interval_columns(plan: NoisePlan) -> list[tuple[str, int]]:
    """(name in the protection JSON, position) of every released column that shows an
    aggregate as it is and has a per-row interval (not a quantile's rank interval), in
    column order: what `SET cleanroom.intervals = on` adds `_low` / `_high` columns for."""
    ranked = {o.column for o in plan.outputs if o.aggregate in QUANTILE_NAMES}
    found = [(name, position) for column, shown in _shown(plan).items() if column not in ranked
             for name, position in shown]
    return sorted(found, key=lambda item: item[1])


def _per_row(protection: dict, plan: NoisePlan, stored: dict, measured: pa.Table, rows_of: list[list[int]]) -> None:
    """Each returned row's interval, per column showing an aggregate as it is; a row
    that DISTINCT made of several measured ones gets the hull of theirs."""
    for output in plan.outputs:
        if stored["intervals"][output.column]["kind"] == "rank":
            rows = None  # quantiles: a rank interval, the same for every row
        else:
            lows = measured.column(output.column + _LOW).to_pylist()
            highs = measured.column(output.column + _HIGH).to_pylist()
            rows = [_hull([(lows[i], highs[i]) for i in measured_rows]) for measured_rows in rows_of]
        for name, _ in _shown(plan)[output.column]:
            protection["columns"][name]["intervals"] = rows
    if "clipped_units" in protection:
        values = measured.column("__clipped").to_pylist()
        protection["clipped_units"]["by_row"] = [sum(values[i] for i in measured_rows) for measured_rows in rows_of]


def _hull(intervals: list[tuple]) -> list | None:
    known = [(low, high) for low, high in intervals if low is not None]
    if not known:
        return [None, None]
    return [min(low for low, _ in known), max(high for _, high in known)]


def released_schema(plan: NoisePlan, bounded: pa.Schema) -> pa.Schema:
    """The columns a release will have, from the bounded SQL's columns alone
    (wire clients describe a statement before it runs)."""
    fields = [bounded.field(key.column) for key in plan.groups]
    for output in plan.outputs:
        kind = pa.int64() if AGGREGATES[output.aggregate].integer else pa.float64()
        fields += [pa.field(output.column + suffix, kind) for suffix in ("", _LOW, _HIGH)]
    return _post(plan, pa.schema(fields or [pa.field("__none", pa.null())]).empty_table())[0].schema


def _post(plan: NoisePlan, table: pa.Table) -> tuple[pa.Table, list[list[int]]]:
    """The analyst's own expressions, HAVING, ORDER BY and LIMIT, over noisy values;
    and for each returned row, the measured rows it comes from."""
    numbered = table.append_column(_ROW, pa.array(range(table.num_rows), pa.int64()))
    post = sqlglot.parse_one(plan.post_sql, read="duckdb")
    with scratch() as con:
        con.register(RELEASED, numbered)
        if not post.args.get("distinct"):  # one more column changes nothing else
            result = con.execute(post.select(exp.column(_ROW, quoted=True)).sql(dialect="duckdb")).to_arrow_table()
            rows = [[i] for i in result.column(result.num_columns - 1).to_pylist()]
            return result.remove_column(result.num_columns - 1), rows
        result = con.execute(plan.post_sql).to_arrow_table()
        every = post.copy()
        for key in ("distinct", "order", "limit", "offset"):
            every.set(key, None)
        every = con.execute(every.select(exp.column(_ROW, quoted=True)).sql(dialect="duckdb")).to_arrow_table()
    merged: dict[tuple, list[int]] = {}
    visible = every.num_columns - 1
    for row in zip(*(every.column(i).to_pylist() for i in range(every.num_columns))):
        merged.setdefault(tuple(row[:visible]), []).append(row[visible])
    shown = zip(*(result.column(i).to_pylist() for i in range(result.num_columns))) if result.num_columns else []
    return result, [merged.get(tuple(row), []) for row in shown]


def describe(plan: NoisePlan) -> dict:
    """How a query would be protected and what it costs, before it runs (EXPLAIN):
    every aggregate's noise and the interval its values will have."""
    built = measurements(plan)
    stored = _static(plan, built)
    groups = _groups(plan, built)
    groups.update(applied_to="noisy unit count" if plan.unit_count else "nothing: every group on public keys "
                                                                         "is released")
    if plan.public_keys:
        groups["candidates"] = _combinations(plan)
    else:  # what a group must clear, in units, before anything is paid
        selector = built["__units"]
        needed = thresholds.units_needed(selector.threshold, selector.scale, plan.min_group_size)
        if plan.accounting != "pure":  # thresholds' margin is Laplace's: the Gaussian one-sided 95% point
            needed["units_for_95_percent"] = needed["noisy_units_at_least"] + int(selector.ci(2 * TAIL))
        groups["to_be_released"] = needed
    described = {**_public(plan, stored, unit="privacy unit"), "groups": groups}
    described["notes"] = [told._coverage(described)] + [
        f"{entry['sql']}: 95% interval (noise only) {entry['interval']['text']}" for entry in described["aggregates"]]
    return described


def _combinations(plan: NoisePlan) -> int:
    count = 1
    for key in plan.groups:
        count *= len(key.values)
    return count
