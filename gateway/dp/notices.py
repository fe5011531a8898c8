"""What an analyst is told about a differentially private result: the bounds
that can bias its values, and the notices (PostgreSQL NoticeResponses, and the
HTTP body's `notices`), made from the public protection dict alone.

Every line names a column by the name the analyst sees and an aggregate as the
analyst wrote it; the gateway's internal names never appear, and an aggregate
shown in several columns is described once.
"""

from __future__ import annotations

from gateway.dp.families import AGGREGATES
from gateway.dp.plan import NoisePlan

MAX_ROWS_LISTED = 20  # per-row intervals listed in a notice; the HTTP protection has all of them

# What max_rows_per_unit does to each aggregate when a unit has more rows in a group (each family says).
_CAPPED = {name: release.capped for name, release in AGGREGATES.items() if getattr(release, "capped", None)}


def biases(plan: NoisePlan, unit: str = "privacy unit") -> list[dict]:
    """The contribution bounds that can move this query's values away from the
    truth, whatever the noise, and which aggregates each can move (each bound once)."""
    found = []
    capped, effects = [], []
    for output, label in _labelled(plan):
        if output.aggregate in _CAPPED:
            capped.append(label)
            if _CAPPED[output.aggregate] not in effects:
                effects.append(_CAPPED[output.aggregate])
    rows, groups = plan.privacy.max_rows_per_unit, plan.groups_per_unit
    total = getattr(plan.privacy, "max_contributions_per_unit", None)
    binds = total is not None and total < rows * groups  # gateway.dp.bounding applies it
    # a bound at or above the total clips nothing the total does not (named once, as the total)
    if capped and not (binds and total <= rows):
        found.append({"bound": "max_rows_per_unit", "value": rows, "affects": capped,
                      "effect": f"a {unit} with more than {rows} row(s) in a group: " + ", ".join(effects)})
    if binds:
        labels = [label for output, label in _labelled(plan)
                  if output.aggregate in _CAPPED or (total < groups and _more_groups(plan, total))]
        each = f" up to {rows} each" if rows < total else ""
        dropped = (f", and it counts in at most {total} group(s)" if total < groups and _more_groups(plan, total)
                   else "")
        if labels:
            found.append({"bound": "max_contributions_per_unit", "value": total, "affects": labels,
                          "effect": f"a {unit} with more than {total} row(s) in all keeps {total}, filling its "
                                    f"groups in keyed-hash order{each}: its rows beyond are not counted, its sums "
                                    f"are scaled down alike{dropped}" + _chosen_total(plan)})
    if _more_groups(plan, groups) and not (binds and total < groups):
        found.append({"bound": "max_groups_per_unit", "value": groups,
                      "affects": [label for _, label in _labelled(plan)] or ["the number of groups"],
                      "effect": f"a {unit} in more than {groups} group(s) is left out of the others (chosen by a "
                                "keyed hash), which come out lower"})
    clamped: dict[tuple, list[str]] = {}
    for output, label in _labelled(plan):
        if output.bounds is not None:
            clamped.setdefault((output.bounds.lower, output.bounds.upper), []).append(label)
    chosen_uppers = {chosen for chosen, _ in getattr(plan.bound_choice, "uppers", {}).values()}
    for (lower, upper), labels in clamped.items():
        why = ""
        if upper in chosen_uppers:
            declared = next(d for u, d in plan.bound_choice.uppers.values() if u == upper)
            why = (f" (an upper bound chosen for this query from the owner's contribution profile, "
                   f"below the declared {declared:g})")
        found.append({"bound": "bounds", "value": [lower, upper], "affects": labels,
                      "effect": f"values outside [{lower:g}, {upper:g}] are clamped into it{why}"})
    return found


def _chosen_total(plan: NoisePlan) -> str:
    choice = plan.bound_choice
    if choice is None:
        return ""
    return (f" ({choice.total} was chosen for this query from the owner's contribution profile of {choice.table}, "
            f"at most the declared {choice.ceiling})")


def _more_groups(plan: NoisePlan, bound: int) -> bool:
    """The query can put one unit in more than `bound` groups."""
    return bool(plan.groups) and (not plan.public_keys or _combinations(plan) > bound)


def _labelled(plan: NoisePlan):
    return [(output, plan.label(output.column)) for output in plan.outputs]


def _combinations(plan: NoisePlan) -> int:
    count = 1
    for key in plan.groups:
        count *= len(key.values)
    return count


def notices(protection: dict) -> list[str]:
    unit = protection.get("privacy_unit") or "privacy unit"
    lines = [_header(protection, unit), _groups(protection["groups"], unit)]
    for entry in protection["aggregates"]:
        lines.append(_aggregate(entry, protection["columns"]))
    lines.append(_coverage(protection))
    if protection.get("clipped_units"):
        lines.append(_clipped(protection["clipped_units"], protection["contribution_bounds"], unit))
    return lines


def _header(protection: dict, unit: str) -> str:
    bounds = protection["contribution_bounds"]
    if protection.get("accounting") == "zcdp":
        loss = f"rho {protection['rho']:.4g} (zCDP; epsilon {protection['epsilon']:g} as zCDP)"
        name = "gaussian"
    else:
        loss, name = f"epsilon {protection['epsilon']:g}", protection["mechanism"]
    delta = f", delta {protection['delta']:g}" if protection["delta"] else ""
    total = bounds.get("max_contributions_per_unit")
    in_all = "" if total is None else f", {total} row(s) in all"
    chosen = bounds.get("chosen_for_this_query")
    if chosen is not None:
        in_all += (f" (chosen for this query from the owner's contribution profile, at most {chosen['ceiling']})"
                   if total is not None else "")
    return (f"differential privacy: {name}, {loss}{delta} per {unit}; each contributes at most "
            f"{bounds['max_rows_per_unit']} row(s) to a group{in_all} and appears in at most "
            f"{bounds['max_groups_per_unit']} group(s)")


def _groups(groups: dict, unit: str) -> str:
    released, k = groups["released"], groups["min_group_size"]
    returned = groups.get("returned")
    after = "" if returned is None or returned == released else \
        f"; {returned} row(s) returned after HAVING / LIMIT / OFFSET"
    suppressed = groups["suppressed_below_min_group_size"]
    below = f"{suppressed} suppressed (noisy count of {unit} below {k})"
    if groups["keys"] == "selected privately":
        return (f"groups were selected privately: a group is released only if its noisy count of {unit} reaches "
                f"{max(groups['threshold'], k):,}; groups that did not are neither shown nor counted; "
                f"{released} released" + (f", {below}" if suppressed else "") + after)
    candidates = groups.get("candidates")
    if k is None:  # min_group_size_on_public_keys: false
        where = f"{candidates} group(s) on the declared keys" if groups["keys"] == "public" else "one group (no GROUP BY)"
        return f"{where}: all released, whatever their size (the noise protects small ones){after}"
    if groups["keys"] == "public":
        return f"{candidates} group(s) on the declared keys: {released} released, {below}{after}"
    return ("one group (no GROUP BY): " + ("released" if released else f"suppressed (noisy count of {unit} "
                                                                       f"below {k})") + after)


def _aggregate(entry: dict, columns: dict) -> str:
    shown = entry["columns"]
    where = ("column " + ", ".join(shown)) if shown else "used in an expression, HAVING or ORDER BY"
    noise = "; ".join(_noise(n) for n in entry["noise"])
    interval = entry["interval"]
    text = f"{where}: {entry['sql']}: {noise}; 95% interval (noise only): {interval['text']}"
    if interval.get("per_row") and shown:
        rows = columns[shown[0]].get("intervals") or []
        listed = ", ".join("NULL" if low is None else f"[{low:.4g}, {high:.4g}]"
                           for low, high in rows[:MAX_ROWS_LISTED])
        more = f" and {len(rows) - MAX_ROWS_LISTED} more" if len(rows) > MAX_ROWS_LISTED else ""
        text += f"; by row: {listed}{more}" if rows else ""
    return text


def _noise(info: dict) -> str:
    parameter = "epsilon" if "epsilon" in info else "rho"
    return (f"{info['mechanism']}, {parameter} {info[parameter]:.4g}, sensitivity {info['sensitivity']:g} "
            f"({info['sensitivity_metric']}), scale {info['scale']:.4g}")


def _coverage(protection: dict) -> str:
    found = protection.get("bias") or []
    if not found:
        return "intervals cover the noise only; no contribution bound can bias these values"
    parts = [f"{_bound(b)}: {b['effect']} ({', '.join(b['affects'])})" for b in found]
    return "intervals cover the noise only, not the bias of the contribution bounds: " + "; ".join(parts)


def _bound(bias: dict) -> str:
    if bias["bound"] == "bounds":
        return "chosen bounds" if "chosen for this query" in bias["effect"] else "declared bounds"
    return f"{bias['bound']} {bias['value']}"


def _clipped(clipped: dict, bounds: dict, unit: str) -> str:
    rows = clipped.get("by_row") or []
    listed = ", ".join(str(v) for v in rows[:MAX_ROWS_LISTED])
    more = f" and {len(rows) - MAX_ROWS_LISTED} more" if len(rows) > MAX_ROWS_LISTED else ""
    total = bounds.get("max_contributions_per_unit")
    allowed = f"{bounds['max_rows_per_unit']} row(s)" if total is None else \
        f"the row(s) they may add there ({bounds['max_rows_per_unit']}, or less once {total} in all are spent)"
    return (f"clipping: noisy count of {unit} with more than {allowed} in a group "
            f"({clipped['mechanism']}, {clipped['parameter']} {clipped['loss']:.4g}, 95% ±{clipped['half_width']:,.0f} "
            f"each): {listed}{more}" if rows else
            f"clipping: no released group to count clipped {unit} in")
