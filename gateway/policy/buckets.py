"""The `buckets:` of a date or timestamp dimension: validated, then built.

    purchased_on:
      role: dimension
      buckets: {from: 2026-01-01, to: 2026-12-31, by: [day, week, month]}

The schema checks the shape (three keys, yyyy-mm-dd, known periods); here the
rest: only on a dimension without `values`, real calendar dates, from <= to,
and no period giving more public keys than a query may release. The column's
type (DATE or TIMESTAMP) is checked against its source when the gateway
starts (gateway.sources.describe). What buckets do: gateway.dp.time_buckets.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from gateway.policy.model import MAX_BUCKETS, BucketUnit, TimeBuckets
from gateway.yamlsource import KeyPath

Problems = list[tuple[KeyPath, str]]


def bucket_problems(at: KeyPath, buckets: Any, role: Any, has_values: bool) -> Problems:
    if role != "dimension":
        return [(at, f"only dimensions declare buckets (this column is {role})")]
    if has_values:
        return [(at, "a column declares either values or buckets, not both")]
    spec = buckets if isinstance(buckets, dict) else {}
    days: dict[str, datetime.date] = {}
    found: Problems = []
    for key in ("from", "to"):
        text = spec.get(key)
        if not (isinstance(text, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text)):
            continue  # the schema reported it
        try:
            days[key] = datetime.date.fromisoformat(text)
        except ValueError:
            found.append((at + (key,), f"{text!r} is not a calendar date"))
    if len(days) < 2:
        return found
    if days["from"] > days["to"]:
        return [(at + ("to",), f"to {days['to']} is before from {days['from']}")]
    by = spec.get("by") if isinstance(spec.get("by"), list) else []
    units = [BucketUnit(u) for u in by if isinstance(u, str) and u in BucketUnit._value2member_map_]
    declared = TimeBuckets(days["from"], days["to"], tuple(units))
    for unit in declared.units:
        count = len(declared.starts(unit))
        if count > MAX_BUCKETS:
            found.append((at + ("by",), f"{days['from']} to {days['to']} holds {count} {unit.value}s, more than "
                                        f"the {MAX_BUCKETS} public keys a query may release: shorten the range "
                                        f"or drop {unit.value}"))
    return found


def buckets_from(spec: dict) -> TimeBuckets:
    """A valid document's `buckets:` as the model's TimeBuckets."""
    units = tuple(BucketUnit(u) for u in spec["by"])
    return TimeBuckets(datetime.date.fromisoformat(spec["from"]), datetime.date.fromisoformat(spec["to"]), units)
