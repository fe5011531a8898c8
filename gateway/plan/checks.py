"""Checks of the arguments whose value decides whether DuckDB can fail or how long
it works on a row: LIKE patterns, date parts, intervals, literal dates, window
frames. All of them read literals, so they are decided when the statement is
resolved, the same for every table's contents."""

from __future__ import annotations

import datetime
import re

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan.allowed import LIKE_MAX_PERCENT, MAX_INTERVAL_DAYS, NAMED_REFUSALS, function_name




def check_pattern(pattern: str) -> None:
    """Pattern shapes whose matching cost is linear in the text: `_` with at most one
    `%`, or `%` alone up to LIKE_MAX_PERCENT times (DuckDB matches those segment by
    segment); `_` between several `%` backtracks and grows with the text's length."""
    percent = pattern.count("%")
    if (percent > 1 and "_" in pattern) or percent > LIKE_MAX_PERCENT:
        raise Refused(f"the pattern {pattern!r} is too costly to match", rule="expr.pattern",
                      hint=f"use '_' with at most one '%', or at most {LIKE_MAX_PERCENT} '%' without '_'")


def date_part(node: exp.Expression | None, allowed: frozenset[str], function: str) -> str:
    if isinstance(node, (exp.Var, exp.Identifier)) or (isinstance(node, exp.Literal) and node.is_string):
        part = str(node.name if not isinstance(node, exp.Literal) else node.this).lower()
        if part in allowed:
            return part
    raise Refused(f"{function} takes one of {', '.join(sorted(allowed))} as its part", rule="expr.date_part")


_UNIT_DAYS = {"microsecond": 1 / 86_400_000_000, "millisecond": 1 / 86_400_000, "second": 1 / 86_400,
              "minute": 1 / 1440, "hour": 1 / 24, "day": 1, "week": 7, "month": 30.44, "year": 365.25,
              "decade": 3652.5, "century": 36525}
_INTERVAL_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def whole_number(node: exp.Expression) -> int | None:
    """The value of an integer literal, negative ones included; None for anything else."""
    if isinstance(node, exp.Neg):
        inner = whole_number(node.this)
        return -inner if inner is not None else None
    if isinstance(node, exp.Literal) and node.is_int:
        return int(node.this)
    return None


def interval_days(text: str) -> float:
    """The length of a literal interval in days; refused past 100 years."""
    days = _days(text)
    if days > MAX_INTERVAL_DAYS:
        raise Refused(f"INTERVAL '{text}' is longer than 100 years", rule="expr.interval")
    return days


def _days(text: str) -> float:
    text = text.lower().strip()
    total, position = 0.0, 0
    while position < len(text):
        match = _INTERVAL_PART.match(text, position)
        unit = match.group(2).rstrip("s") if match else None
        if unit in ("min", "mins"):
            unit = "minute"
        if match is None or unit not in _UNIT_DAYS:
            raise Refused(f"INTERVAL '{text}' is not of the form 'N unit [N unit ...]'", rule="expr.interval")
        total += abs(float(match.group(1))) * _UNIT_DAYS[unit]
        position = match.end()
    if position == 0:
        raise Refused("an empty INTERVAL", rule="expr.interval")
    return total


_FRAME_BOUNDS = ("UNBOUNDED", "CURRENT ROW")


def window_spec(spec: exp.WindowSpec | None) -> exp.WindowSpec | None:
    if spec is None:
        return None
    only(spec, "kind", "start", "start_side", "end", "end_side")
    parts = {"kind": str(spec.args.get("kind") or "").upper() or None}
    if parts["kind"] not in (None, "ROWS", "RANGE"):
        raise Refused("window frames are ROWS or RANGE", rule="bind.unsupported")
    for key in ("start", "end"):
        bound = spec.args.get(key)
        if bound is None:
            continue
        if isinstance(bound, exp.Literal) and bound.is_int and int(bound.this) <= 1_000_000:
            parts[key] = exp.Literal.number(int(bound.this))
        elif str(bound).upper() in _FRAME_BOUNDS:
            parts[key] = str(bound).upper()
        else:
            raise Refused("window frame bounds are UNBOUNDED, CURRENT ROW or a whole number", rule="bind.unsupported")
        side = spec.args.get(f"{key}_side")
        if side is not None:
            if str(side).upper() not in ("PRECEDING", "FOLLOWING"):
                raise Refused("window frame sides are PRECEDING or FOLLOWING", rule="bind.unsupported")
            parts[f"{key}_side"] = str(side).upper()
    return exp.WindowSpec(**parts)


def literal_moment(text: str, kind_name: str) -> None:
    """A date or timestamp literal is a real one between years 1 and 9999: with
    shifts of at most 100 years, arithmetic on it stays inside DuckDB's range."""
    try:
        if kind_name == "date":
            datetime.date.fromisoformat(text.strip())
        else:
            datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise Refused(f"{text!r} is not a {kind_name} between the years 1 and 9999 (written YYYY-MM-DD)",
                      rule="expr.type") from None


def only(node: exp.Expression, *keys: str) -> None:
    """Refuse a node carrying any argument the resolver does not read: what it does not
    understand never reaches the engine."""
    extra = [k for k, v in node.args.items() if k not in keys and not _absent(v)]
    if extra:
        raise Refused(f"{node.key.upper()} with {', '.join(extra)} is not supported", rule="bind.unsupported",
                      hint="rewrite the statement with plainer SQL")


def _absent(value) -> bool:
    """An argument sqlglot leaves unset: None, False or empty (0 is a value)."""
    return value is None or value is False or (isinstance(value, (list, str)) and not value)


def refuse_unknown(node: exp.Expression):
    """The refusal for a node no resolver handler takes, with the most specific rule."""
    kind = type(node)
    if kind in NAMED_REFUSALS:
        rule, message = NAMED_REFUSALS[kind]
        raise Refused(message, rule=rule)
    if isinstance(node, (exp.SimilarTo, exp.Glob, exp.RegexpLike, exp.RegexpILike, exp.RegexpExtract,
                         exp.RegexpReplace, exp.RegexpSplit)):
        raise Refused(f"{function_name(node)} is not allowed: regular expressions and globs can cost time that "
                      "depends on a row", rule="expr.pattern", hint="use LIKE with a literal pattern")
    if isinstance(node, (exp.Dot, exp.Bracket, exp.Struct, exp.Tuple, exp.Star)):
        raise Refused(f"{node.sql(dialect='postgres')[:60]} is not a column", rule="bind.row_reference")
    if isinstance(node, (exp.Func, exp.Anonymous)):
        raise Refused(f"function {function_name(node)}() is not allowed", rule="function.not_allowed",
                      hint="only allow-listed functions may be used (see docs/analysts.md)")
    raise Refused(f"{node.key.upper()} is not supported", rule="bind.unsupported",
                  hint="rewrite the statement with plainer SQL")
