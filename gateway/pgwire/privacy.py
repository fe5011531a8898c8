"""The privacy budget and EXPLAIN over the wire. The engine decides and computes
(Engine.budget, Engine.explain); this module only turns their JSON-able dicts
into result tables.

    SHOW cleanroom.budget          (or SHOW privacy_budget)  -> one row
    EXPLAIN [(FORMAT JSON|TEXT)] <select>                     -> "QUERY PLAN" rows
"""

from __future__ import annotations

import json
import re

import pyarrow as pa

from gateway.pgwire.portal import Failed
from gateway.pgwire.statements import strip_comments

BUDGET_NAMES = frozenset({"cleanroom.budget", "privacy_budget", "cleanroom.privacy_budget"})

BUDGET_SCHEMA = pa.schema([
    ("enabled", pa.bool_()),
    ("epsilon_spent", pa.float64()), ("epsilon_remaining", pa.float64()), ("epsilon_budget", pa.float64()),
    ("delta_spent", pa.float64()), ("delta_remaining", pa.float64()), ("delta_budget", pa.float64()),
    ("queries", pa.int64()), ("refresh", pa.string()), ("renews_at", pa.string()), ("protection", pa.string()),
])

PLAN_COLUMN = "QUERY PLAN"
PLAN_SCHEMA = pa.schema([(PLAN_COLUMN, pa.string())])

_EXPLAIN_RE = re.compile(r"^\s*EXPLAIN\b\s*(?:\((?P<options>[^)]*)\)\s*|(?P<words>(?:(?:ANALYZE|ANALYSE|VERBOSE)\s+)*))",
                         re.IGNORECASE)


def is_budget(name: str) -> bool:
    return name.lower() in BUDGET_NAMES


def budget_table(budget: dict) -> pa.Table:
    """Engine.budget's dict as one row; NULLs where the clean room has no budget."""
    def amount(part: str, key: str):
        value = (budget.get(part) or {}).get(key)
        return None if value is None else float(value)

    enabled = bool(budget.get("enabled"))
    row = {
        "enabled": enabled,
        "epsilon_spent": amount("spent", "epsilon"), "epsilon_remaining": amount("remaining", "epsilon"),
        "epsilon_budget": amount("budget", "epsilon"),
        "delta_spent": amount("spent", "delta"), "delta_remaining": amount("remaining", "delta"),
        "delta_budget": amount("budget", "delta"),
        "queries": budget.get("queries"),
        "refresh": None if budget.get("refresh") is None else str(budget["refresh"]),
        "renews_at": None if budget.get("renews_at") is None else str(budget["renews_at"]),
        "protection": budget.get("protection") or ("differential privacy" if enabled else None),
    }
    return pa.Table.from_pylist([row], schema=BUDGET_SCHEMA)


def explain_target(sql: str) -> tuple[str, str]:
    """(the statement being explained, "text" or "json") of an EXPLAIN; refuses ANALYZE,
    which would run the statement."""
    text = strip_comments(sql)
    match = _EXPLAIN_RE.match(text)
    if match is None:
        raise Failed("42601", "syntax error in EXPLAIN")
    options = (match.group("options") or "").lower()
    words = (match.group("words") or "").lower()
    if "analy" in words or re.search(r"\banaly[sz]e\b(?!\s+(false|off|0)\b)", options):
        raise Failed("0A000", "EXPLAIN ANALYZE is not supported: it would run the statement",
                     "EXPLAIN shows the privacy cost and protection without running anything")
    form = "json" if re.search(r"\bformat\s+json\b", options) else "text"
    if re.search(r"\bformat\s+(xml|yaml)\b", options):
        raise Failed("0A000", "EXPLAIN supports FORMAT TEXT and FORMAT JSON")
    target = text[match.end():].strip().rstrip(";")
    if not target:
        raise Failed("42601", "EXPLAIN needs a statement")
    return target, form


def plan_table(explained: dict, form: str) -> pa.Table:
    """Engine.explain's dict as rows of text (FORMAT JSON: one row of JSON). FORMAT TEXT
    starts with what an analyst reads first: the cost, each aggregate's 95% interval
    and what can bias it; then the whole account as pretty JSON, one line a row."""
    text = json.dumps(explained, indent=2, default=str)
    lines = [text] if form == "json" else summary(explained) + text.splitlines()
    return pa.table({PLAN_COLUMN: pa.array(lines, pa.string())})


def summary(explained: dict) -> list[str]:
    """The readable head of EXPLAIN's text: nothing that is not also in the JSON below it."""
    dp = explained.get("differential_privacy")
    cost = explained.get("cost") or {}
    if not dp:
        return [f"no differential privacy: {explained.get('protection') or 'k-thresholds only'}", ""]
    spent = ", ".join(f"{name} {value:g}" for name, value in cost.items() if isinstance(value, (int, float)))
    lines = [f"cost: {spent}" + (" (answered before: free)" if explained.get("answered_before") else "")]
    needed = (dp.get("groups") or {}).get("to_be_released") or {}
    if needed.get("summary"):
        lines.append(f"groups: {needed['summary']}")
    for entry in dp.get("aggregates", []):
        shown = ", ".join(entry["columns"]) or "in an expression"
        lines.append(f"{shown}: {entry['sql']}: 95% interval (noise only) {entry['interval']['text']}")
    lines += [note for note in dp.get("notes", []) if note.startswith("intervals cover")]
    return lines + [""]
