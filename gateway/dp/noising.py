"""The bounded result becomes a differentially private release.

Order matters (each step sees only what the one before released):
1. group keys: every public combination, or those OpenDP's partition
   selection lets through (noisy unit count over a threshold set by delta);
2. the minimum group size, applied to the noisy unit count, never the true one;
3. noise on every other quantity of the groups still standing;
4. the analyst's projections, HAVING, ORDER BY and LIMIT, on noisy values only.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from gateway.dp import mechanisms
from gateway.dp.plan import RELEASED, Kind, NoisePlan, Quantity


@dataclass(frozen=True)
class Measurement:
    """The noisy quantities of one query: the released groups' keys (__g*) and
    outputs (__a*), and how they were protected. Everything after it is
    post-processing, so a repeat of the query (the release cache) reuses it."""

    table: pa.Table
    protection: dict  # JSON-able: how every column was protected
    reused: bool = False  # from the release cache: nothing new was spent


@dataclass(frozen=True)
class NoisyRelease:
    table: pa.Table
    protection: dict
    notices: tuple[str, ...]


def measure(plan: NoisePlan, bounded: pa.Table, privacy_unit: str) -> Measurement:
    """Steps 1 to 3: the only place private numbers meet noise."""
    columns = {name: bounded.column(name).to_pylist() for name in bounded.column_names}
    units = columns["__units"]
    counter, units_info, selection = _unit_counting(plan)
    if plan.public_keys:
        noisy_units = dict(enumerate(counter.apply(units)))
        selection["candidates"] = len(units)
    else:
        released = counter.apply({str(i): count for i, count in enumerate(units)})
        noisy_units = {int(i): count for i, count in released.items()}
    kept = [i for i in sorted(noisy_units) if noisy_units[i] >= plan.min_group_size]
    selection["min_group_size"] = plan.min_group_size
    # Counted among released noisy counts only (post-processing); with private selection,
    # how many candidates failed the selection is never counted.
    selection["suppressed_below_min_group_size"] = len(noisy_units) - len(kept)
    selection["released"] = len(kept)

    noisy = {"__units": [noisy_units[i] for i in kept]}
    info = {"__units": units_info}
    for quantity in plan.quantities[1:]:
        values = [columns[quantity.column][i] for i in kept]
        noisy[quantity.column], info[quantity.column] = _noised(quantity, values, plan)

    arrays, names = [], []
    for key in plan.groups:
        arrays.append(bounded.column(key.column).take(pa.array(kept, pa.int64())))
        names.append(key.column)
    for output in plan.outputs:
        arrays.append(pa.array(_released(output, noisy), type=pa.int64() if _is_count(output) else pa.float64()))
        names.append(output.column)
    if not arrays:  # SELECT 1 FROM t GROUP BY ...: only the number of rows is released
        arrays, names = [pa.array([None] * len(kept), pa.null())], ["__none"]
    protection = {**_summary(plan, selection, _aggregates(plan, info)), "privacy_unit": privacy_unit}
    return Measurement(pa.Table.from_arrays(arrays, names=names), protection)


def _unit_counting(plan: NoisePlan):
    """How every group's unit count is noised (and, without public keys, how groups are
    selected): the measurement, what the analyst is told of it, the group selection."""
    privacy, units_q = plan.privacy, plan.quantities[0]
    sensitivity = units_q.sensitivity(plan.groups_per_unit, 1)
    if plan.public_keys:
        counter = mechanisms.integer_noise(int(sensitivity), units_q.epsilon)
        selection = {"keys": "public" if plan.groups else "none (one group)"}
        return counter, {"sensitivity": sensitivity, **_noise_info(counter)}, selection
    selector = mechanisms.partition_selection(privacy.max_groups_per_unit, 1, units_q.epsilon, privacy.delta)
    info = {"sensitivity": sensitivity, **_noise_info(selector), "threshold": selector.threshold}
    return selector, info, {"keys": "selected privately", "threshold": selector.threshold, "delta": selector.delta}


def _aggregates(plan: NoisePlan, info: dict) -> list[dict]:
    return [{"output": o.column, "aggregate": o.aggregate, "noise": [info[q] for q in o.quantities]}
            for o in plan.outputs]


def _summary(plan: NoisePlan, groups: dict, aggregates: list[dict]) -> dict:
    privacy = plan.privacy
    return {
        "mechanism": privacy.mechanism.value,
        "epsilon": plan.epsilon,
        "delta": plan.delta,
        "contribution_bounds": {"max_rows_per_unit": privacy.max_rows_per_unit,
                                "max_groups_per_unit": plan.groups_per_unit},
        "groups": groups,
        "aggregates": aggregates,
    }


def publish(plan: NoisePlan, measurement: Measurement) -> NoisyRelease:
    """Step 4, and what the analyst is told."""
    table = _post(plan, measurement.table)
    protection = dict(measurement.protection)
    protection["columns"] = _columns(plan, protection["aggregates"])
    protection["reused"] = measurement.reused
    notices = _notices(protection)
    if measurement.reused:
        notices.insert(0, "the same question was answered before: the same noisy answer is returned, "
                          "and nothing was spent")
    return NoisyRelease(table, protection, tuple(notices))


def released_schema(plan: NoisePlan, bounded: pa.Schema) -> pa.Schema:
    """The columns a release will have, from the bounded SQL's columns alone
    (wire clients describe a statement before it runs)."""
    fields = [bounded.field(key.column) for key in plan.groups]
    fields += [pa.field(o.column, pa.int64() if _is_count(o) else pa.float64()) for o in plan.outputs]
    return _post(plan, pa.schema(fields or [pa.field("__none", pa.null())]).empty_table()).schema


def _columns(plan: NoisePlan, aggregates: list[dict]) -> dict:
    """Released column name -> how its value was noised, where a column shows one aggregate as is."""
    by_output = {entry["output"]: entry for entry in aggregates}
    return {name: by_output[source] for name, source in plan.released_from if source in by_output}


def _noised(quantity: Quantity, values: list, plan: NoisePlan) -> tuple[list, dict]:
    measurement, info = _mechanism(quantity, plan)
    if quantity.kind is Kind.QUANTILE:
        return [measurement.apply(v or []) for v in values], info
    return measurement.apply(values), info


def _mechanism(quantity: Quantity, plan: NoisePlan):
    """The measurement that noises one quantity, and what the analyst is told of it."""
    rows = plan.privacy.max_rows_per_unit
    sensitivity = quantity.sensitivity(plan.groups_per_unit, rows)
    if quantity.kind is Kind.ROWS:
        measurement = mechanisms.integer_noise(int(sensitivity), quantity.epsilon)
        return measurement, {"sensitivity": sensitivity, **_noise_info(measurement)}
    if quantity.kind in (Kind.SUM, Kind.CENTERED_SUM):
        measurement = mechanisms.float_noise(float(sensitivity), quantity.epsilon)
        return measurement, {"sensitivity": sensitivity, **_noise_info(measurement)}
    # a unit holds up to `rows` values in each of up to groups_per_unit groups
    per_group = quantity.epsilon / plan.groups_per_unit
    measurement = mechanisms.quantile(quantity.alpha, quantity.bounds.lower, quantity.bounds.upper, rows, per_group)
    info = {"mechanism": measurement.mechanism, "epsilon": quantity.epsilon,
            "epsilon_per_group": per_group, "sensitivity": sensitivity, "scale": measurement.scale,
            "alpha": quantity.alpha, "grid_step": measurement.grid_step}
    return measurement, info


def describe(plan: NoisePlan) -> dict:
    """How a query would be protected and what it costs, before it runs (EXPLAIN)."""
    _, units_info, groups = _unit_counting(plan)
    if plan.public_keys:
        groups["candidates"] = _combinations(plan)
    info = {"__units": units_info}
    for quantity in plan.quantities[1:]:
        info[quantity.column] = _mechanism(quantity, plan)[1]
    aggregates = _aggregates(plan, info)
    groups.update(min_group_size=plan.min_group_size, applied_to="noisy unit count")
    return {**_summary(plan, groups, aggregates), "columns": _columns(plan, aggregates)}


def _combinations(plan: NoisePlan) -> int:
    count = 1
    for key in plan.groups:
        count *= len(key.values)
    return count


def _noise_info(measurement) -> dict:
    return {"mechanism": measurement.mechanism, "epsilon": measurement.epsilon,
            "scale": measurement.scale, "ci95": measurement.ci95()}


def _is_count(output) -> bool:
    return output.aggregate in ("count", "count_distinct")


def _released(output, noisy: dict) -> list:
    first = noisy[output.quantities[0]]
    if output.aggregate != "avg":
        return first
    lower, upper = output.bounds.lower, output.bounds.upper
    midpoint = (lower + upper) / 2
    averages = []
    for centered, count in zip(first, noisy[output.quantities[1]]):
        # midpoint + noisy centred sum over noisy count, forced into the bounds: finite, post-processing only
        averages.append(None if count <= 0 else min(max(midpoint + centered / count, lower), upper))
    return averages


def _post(plan: NoisePlan, table: pa.Table) -> pa.Table:
    """The analyst's own expressions, HAVING, ORDER BY and LIMIT, over noisy values."""
    with duckdb.connect(config={"enable_external_access": False}) as con:
        con.register(RELEASED, table)
        return con.execute(plan.post_sql).to_arrow_table()


def _notices(protection: dict) -> list[str]:
    groups, bounds = protection["groups"], protection["contribution_bounds"]
    lines = [
        f"differential privacy: {protection['mechanism']}, epsilon {protection['epsilon']:g}"
        + (f", delta {protection['delta']:g}" if protection["delta"] else "")
        + f" per {protection['privacy_unit']}; each contributes at most {bounds['max_rows_per_unit']} "
        f"row(s) to a group and appears in at most {bounds['max_groups_per_unit']} group(s)",
    ]
    if groups["keys"] == "selected privately":
        lines.append(f"groups were selected privately (noisy unit count at least {groups['threshold']}); "
                     "how many were not released is not disclosed")
    lines.append(f"{groups['suppressed_below_min_group_size']} group(s) had a noisy unit count below "
                 f"{groups['min_group_size']} and were suppressed; {groups['released']} released")
    shown = {id(entry): name for name, entry in protection.get("columns", {}).items()}
    for entry in protection["aggregates"]:
        where = f"column {shown[id(entry)]}" if id(entry) in shown else "used in an expression"
        for noise_ in entry["noise"]:
            spread = f"95% within ±{noise_['ci95']:.4g}" if noise_.get("ci95") is not None \
                else f"candidate grid step {noise_.get('grid_step'):.4g}"
            lines.append(f"{entry['aggregate']} ({where}): {noise_['mechanism']}, "
                         f"epsilon {noise_['epsilon']:.4g}, sensitivity {noise_['sensitivity']:g}, "
                         f"scale {noise_['scale']:.4g}, {spread}")
    return lines
