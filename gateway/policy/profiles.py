"""Checks of `privacy.profile`, the owners' DP contribution profiles (gateway.dp.bound_choice
picks each query's bounds from them): what the JSON Schema cannot say about them."""

from __future__ import annotations

from typing import Any

from gateway.yamlsource import KeyPath

Problems = list[tuple[KeyPath, str]]


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _numbers(value: Any) -> list | None:
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return value


def profile_problems(data: dict) -> Problems:
    room = _map(data.get("privacy"))
    profiles = _map(room.get("profile"))
    if not profiles:
        return []
    found: Problems = []
    ceiling = room.get("max_contributions_per_unit")
    if not isinstance(ceiling, int):
        found.append((("privacy", "profile"), "a profile needs max_contributions_per_unit: the most any query's "
                                               "chosen bound may be (the ceiling)"))
    tables = _map(data.get("tables"))
    for name, profile in profiles.items():
        at = ("privacy", "profile", name)
        table = tables.get(name)
        if not isinstance(table, dict):
            declared = ", ".join(sorted(tables)) or "none"
            found.append((at, f"unknown table {name!r} (declared: {declared})"))
            continue
        if table.get("public") is True:
            found.append((at, f"table {name!r} is public: it has no privacy unit to profile"))
            continue
        if not isinstance(profile, dict):
            continue
        units = _numbers(profile.get("units_by_rows"))
        if units is not None and isinstance(ceiling, int) and len(units) < ceiling + 1:
            found.append((at + ("units_by_rows",), f"{len(units)} numbers cannot show the bias of every bound up to "
                                                    f"max_contributions_per_unit {ceiling}: count units with 1 to "
                                                    f"{ceiling} rows and one bin above ({ceiling + 1} numbers at least)"))
        if units is not None and not any(units):
            found.append((at + ("units_by_rows",), "every count is 0: the profile says nothing about the table"))
        columns = _map(table.get("columns"))
        for column, measure in _map(profile.get("measures")).items():
            found += _measure_problems(at + ("measures", column), name, column, columns.get(column), measure)
    return found


def _measure_problems(at: KeyPath, table: str, column: str, spec: Any, measure: Any) -> Problems:
    if not isinstance(spec, dict):
        return [(at, f"table {table!r} has no column {column!r}")]
    bounds = spec.get("bounds")
    if spec.get("role") != "measure" or _numbers(bounds) is None or len(bounds) != 2:
        return [(at, f"{table}.{column} is not a measure with declared bounds")]
    lower, upper = bounds
    if lower < 0:
        return [(at, f"{table}.{column} has a negative lower bound ({lower:g}): only an upper bound is chosen per "
                     "query, for measures bounded below by 0 or more")]
    edges, counts = _numbers(_map(measure).get("edges")), _map(measure).get("counts")
    if edges is None:
        return []
    found: Problems = []
    if any(b <= a for a, b in zip(edges, edges[1:])):
        found.append((at + ("edges",), "edges must increase"))
    elif edges[0] != lower or edges[-1] != upper:
        found.append((at + ("edges",), f"edges must run from the declared lower bound {lower:g} to the declared "
                                       f"upper bound {upper:g} (they run from {edges[0]:g} to {edges[-1]:g})"))
    if isinstance(counts, list) and len(counts) != len(edges):
        found.append((at + ("counts",), f"{len(counts)} counts for {len(edges)} edges: one count per edge (the last "
                                        "counts values at or above the upper bound)"))
    return found
