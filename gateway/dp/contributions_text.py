"""The contribution report as a person reads it: one block per table, a table per
dimension and measure (`cleanroom contributions`; `--json` prints the dict itself)."""

from __future__ import annotations


def _pct(value, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"
    return "0.0%" if text in ("+0.0%", "-0.0%") else text


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))).rstrip()
            for r in [header, *rows]]


def _quantiles(stats: dict) -> str:
    return "  ".join(f"{k} {_num(v)}" for k, v in stats.items() if k != "mean" and v is not None)


def render(result: dict) -> str:
    lines = []
    if result["mode"] == "dp":
        dp = result["dp"]
        lines.append(f"Differentially private report: epsilon {dp['epsilon']} in all ({dp['guarantee']}); "
                     f"{dp['charged_to']}. Every number below is noisy or derived from noisy counts.")
    else:
        lines.append("Exact report: for the owner only; do not share it (run with --epsilon for a DP report).")
    for table in result["tables"]:
        lines.append("")
        lines += (_dp_table(table) if result["mode"] == "dp" else _exact_table(table, result["owner"]))
    if "profile" in result:
        lines += ["", _profile_yaml(result["profile"])]
    return "\n".join(lines)


def _profile_yaml(profiles: dict) -> str:
    """The profile as the policy holds it: paste it under `privacy:` (flow-style lists, one line each)."""
    lines = ["# paste under privacy: in the policy (docs/privacy.md#bounds-chosen-per-query)", "profile:"]
    for table, profile in profiles.items():
        lines += [f"  {table}:", f"    epsilon: {profile['epsilon']:g}   # spent on this table's profile",
                  f"    units_by_rows: {_flow(profile['units_by_rows'])}"]
        if profile.get("measures"):
            lines.append("    measures:")
            for name, measure in profile["measures"].items():
                lines += [f"      {name}:", f"        edges: {_flow(measure['edges'])}",
                          f"        counts: {_flow(measure['counts'])}"]
    return "\n".join(lines)


def _flow(values: list) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) + "]"


def _exact_table(t: dict, owner: str) -> list[str]:
    policy = t["policy"]
    lines = [f"{t['table']} (owner {owner}): {_num(t['rows'])} rows, {_num(t['units'])} units ({t['privacy_unit']}); "
             f"rows without a unit (dropped): {_num(t['rows_without_unit'])}",
             f"  rows per unit: {_quantiles(t['rows_per_unit'])}",
             f"  policy now: max_rows_per_unit {policy['max_rows_per_unit']}, max_groups_per_unit "
             f"{policy['max_groups_per_unit']}{_total(policy)}, epsilon {policy['epsilon_per_query']} per query "
             f"({policy['accounting']})"]
    for d in t["dimensions"]:
        keys = "public keys" if d["public_keys"] else "keys selected privately"
        lines += ["", f"dimension {d['name']} ({keys}): {_num(d['groups'])} groups, median group {_num(d['median_group_rows'])} "
                      f"rows, {_pct(d['share_outside_keys'])} of rows outside the keys",
                  f"  rows per unit and group: {_quantiles(d['rows_per_unit_group'])}",
                  f"  groups per unit:         {_quantiles(d['groups_per_unit'])}"]
        sums = list(d["max_rows_per_unit"][0]["sum_bias"]) if d["max_rows_per_unit"] else []
        header = ["max_rows_per_unit", "pairs clipped", "units clipped", "count bias", *[f"sum({m}) bias" for m in sums],
                  "count noise ±95%", "noise/median group"]
        rows = [[f"{r['bound']}{' (now)' if r['current'] else ''}", _pct(r["pairs_clipped"]), _pct(r["units_clipped"]),
                 _pct(r["count_bias"], True), *[_pct(r["sum_bias"][m], True) for m in sums],
                 _num(r["count_noise_ci95"]), _pct(r["noise_per_median_group"])] for r in d["max_rows_per_unit"]]
        lines += _grid(header, rows)
        header = ["max_groups_per_unit", "units clipped", "count bias", *[f"sum({m}) bias" for m in sums],
                  "count noise ±95%", "noise/median group"]
        rows = [[f"{r['bound']}{' (now)' if r['current'] else ''}", _pct(r["units_clipped"]), _pct(r["count_bias"], True),
                 *[_pct(r["sum_bias"][m], True) for m in sums], _num(r["count_noise_ci95"]),
                 _pct(r["noise_per_median_group"])] for r in d["max_groups_per_unit"]]
        lines += _grid(header, rows)
        if d.get("max_contributions_per_unit"):
            header[0] = "max_contributions_per_unit"
            rows = [[f"{r['bound']}{' (now)' if r['current'] else ''}", _pct(r["units_clipped"]),
                     _pct(r["count_bias"], True), *[_pct(r["sum_bias"][m], True) for m in sums],
                     _num(r["count_noise_ci95"]), _pct(r["noise_per_median_group"])]
                    for r in d["max_contributions_per_unit"]]
            lines += _grid(header, rows)
    for m in t["measures"]:
        lines += ["", f"measure {m['name']}, bounds [{_num(m['bounds'][0])}, {_num(m['bounds'][1])}]: {_num(m['rows'])} "
                      f"values, {_pct(m['below_lower'])} below, {_pct(m['above_upper'])} above; min {_num(m['min'])}, "
                      f"max {_num(m['max'])}",
                  f"  quantiles: {_quantiles(m['quantiles'])}"]
        rows = [[f"{_num(r['upper'])}{' (now)' if r['current'] else ''}", _pct(r["rows_clipped"]),
                 _pct(r["sum_bias"], True), f"{r['sensitivity_vs_current']:.2f}x"] for r in m["upper_bound"]]
        lines += _grid(["upper bound", "rows clipped", "sum bias", "sum noise vs now"], rows)
    lines += ["", "Bias: exact, as the gateway bounds (counts keep min(rows, bound) per unit and group, sums are",
              "clamped and scaled alike; the groups a unit keeps are hash-picked, so that column is the expectation),",
              "each row with the other bound at its policy value (the max_contributions_per_unit rows apply all three,",
              "with a fresh hash key). Noise: one COUNT(*) by the dimension at the policy's epsilon per query, split",
              "between its unit count and row count, its sensitivity min(total, rows x groups)."]
    return lines


def _total(policy: dict) -> str:
    total = policy.get("max_contributions_per_unit")
    return "" if total is None else f", max_contributions_per_unit {total}"


def _dp_table(t: dict) -> list[str]:
    lines = [f"{t['table']}: about {_num(t['units'])} units ({t['privacy_unit']}); {t['measurements']} noisy "
             f"measurements, epsilon {t['epsilon_spent']:.4g} spent on this table"]
    for d in t["dimensions"]:
        h = d["histograms"]
        lines += ["", f"dimension {d['name']}",
                  "  pairs (unit, group) by rows: " + "  ".join(f"{k}: {_num(v)}" for k, v in h["pairs_by_rows"].items()),
                  "  units by groups:             " + "  ".join(f"{k}: {_num(v)}" for k, v in h["units_by_groups"].items())]
        now_rows, now_groups = t["policy"]["max_rows_per_unit"], t["policy"]["max_groups_per_unit"]
        lines += _grid(["max_rows_per_unit", "pairs clipped", "units clipped", "count bias (at least)"],
                       [[f"{r['bound']}{' (now)' if r['bound'] == now_rows else ''}", _pct(r["pairs_clipped"]),
                         _pct(r["units_clipped"]), _pct(r["count_bias"], True)] for r in d["max_rows_per_unit"]])
        lines += _grid(["max_groups_per_unit", "units clipped", "count bias (units weighted)"],
                       [[f"{r['bound']}{' (now)' if r['bound'] == now_groups else ''}", _pct(r["units_clipped"]),
                         _pct(r["count_bias_units_weighted"], True)] for r in d["max_groups_per_unit"]])
    for m in t["measures"]:
        lines += ["", f"measure {m['name']}, bounds [{_num(m['bounds'][0])}, {_num(m['bounds'][1])}], up to "
                      f"{m['values_per_unit']} values per unit: " + "  ".join(f"{k} {_num(v)}" for k, v in m["quantiles"].items())]
        lines += _grid(["upper bound", "rows clipped"],
                       [[f"{_num(r['upper'])}{' (now)' if r['current'] else ''}", _pct(r["rows_clipped"])]
                        for r in m["upper_bound"]])
    lines += ["", "Each bound alone (the other unbounded). Bins the noise could not tell from empty read as 0, and",
              "contributions beyond the report's own bins count as the last bin: biases are at least these."]
    return lines
