"""Filters the policy alone says match nothing, refused before anything is charged.

`WHERE region = 'atlantis'` on a dimension whose declared values do not include
atlantis, `region IN ('mars', 'venus')`, or a time filter that lies entirely
outside a column's declared bucket range: the policy says the answer is empty,
so running it would only spend budget on noise. Such statements are refused at
compile time (rules filter.undeclared_value and filter.outside_range), with a
hint listing what is declared. The decision reads the statement's text and the
policy, never the data, so a refusal reveals nothing about the rows.

What is checked: the outer query's WHERE and the ON of its inner joins; a term
is empty when it is an equality or IN list comparing a dimension with declared
values (or lower()/upper() of it) with constants that are all outside them;
an AND is empty when one of its terms is, or when its comparisons of a bucketed
column with constants leave no moment of the declared range; an OR when all of
its branches are. Values compare exactly as DuckDB compares them: text is
case-sensitive, so 'North' is not the declared 'north'.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlglot import expressions as exp

from gateway.dp import time_buckets
from gateway.errors import Refused
from gateway.policy.model import Role


def refuse_empty_filters(tree: exp.Expression) -> None:
    if not isinstance(tree, exp.Select):
        return
    where = tree.args.get("where")
    conditions = [where.this] if where is not None else []
    for join in tree.args.get("joins") or []:
        inner = not join.side and (join.kind or "").upper() in ("", "INNER")
        if inner and join.args.get("on") is not None:
            conditions.append(join.args["on"])
    for condition in conditions:
        refusal = _empty(condition)
        if refusal is not None:
            raise refusal


def _empty(condition: exp.Expression) -> Refused | None:
    terms = time_buckets.conjuncts(condition)
    for term in terms:
        refusal = _empty_term(term)
        if refusal is not None:
            return refusal
    return _outside_range(terms)


def _empty_term(term: exp.Expression) -> Refused | None:
    if isinstance(term, exp.Or):
        branches = _disjuncts(term)
        refusals = [_empty(branch) for branch in branches]
        return refusals[0] if all(r is not None for r in refusals) else None
    if isinstance(term, exp.EQ):
        for side, other in ((term.this, term.expression), (term.expression, term.this)):
            refusal = _undeclared(side, [other])
            if refusal is not None:
                return refusal
        return None
    if isinstance(term, exp.In) and not term.args.get("query") and not term.args.get("unnest"):
        return _undeclared(term.this, list(term.expressions))
    return None


def _disjuncts(node: exp.Expression) -> list[exp.Expression]:
    node = node.unnest() if isinstance(node, exp.Paren) else node
    if isinstance(node, exp.Or):
        return _disjuncts(node.this) + _disjuncts(node.expression)
    return [node]


# -- declared values -------------------------------------------------------------------

_FOLDS = {exp.Lower: str.lower, exp.Upper: str.upper}


def _undeclared(side: exp.Expression, constants: list[exp.Expression]) -> Refused | None:
    """A refusal when `side` is a dimension with declared values (or lower/upper of
    one) and every constant is a value it can never take."""
    fold = None
    if type(side) in _FOLDS:
        fold, side = _FOLDS[type(side)], side.this
    declared = side.meta.get("declared") if isinstance(side, exp.Column) else None
    spec = declared.spec if declared is not None else None
    if spec is None or spec.role is not Role.DIMENSION or spec.values is None or not constants:
        return None
    values = spec.values
    if all(isinstance(v, str) for v in values):
        if fold is not None and not all(v.isascii() for v in values):
            return None  # DuckDB's and Python's case mappings may differ beyond ASCII
        texts = [c.this for c in constants if isinstance(c, exp.Literal) and c.is_string]
        if len(texts) != len(constants):
            return None
        possible = {fold(v) for v in values} if fold else set(values)
        if any(t in possible for t in texts):
            return None
        return _refusal(declared, values, texts, fold is None)
    if fold is None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        numbers = [_number(c) for c in constants]
        if None in numbers:
            return None
        if any(n in {Decimal(str(v)) for v in values} for n in numbers):
            return None
        return _refusal(declared, values, [str(c.sql()) for c in constants], False)
    return None


def _number(node: exp.Expression) -> Decimal | None:
    negative = isinstance(node, exp.Neg)
    node = node.this if negative else node
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    try:
        value = Decimal(str(node.this))
    except InvalidOperation:
        return None
    return -value if negative else value


def _refusal(declared, values, asked: list[str], exact_text: bool) -> Refused:
    name = f"{declared.table}.{declared.column}"
    shown = ", ".join(repr(a) if isinstance(a, str) and exact_text else str(a) for a in asked)
    hint = f"declared values of {name}: {', '.join(map(str, values))}"
    if exact_text:
        near = sorted({v for v in values for a in asked if isinstance(v, str) and v.lower() == a.lower()})
        hint += " (compared exactly, letter case included"
        hint += f"; did you mean {', '.join(repr(v) for v in near)}?)" if near else ")"
    return Refused(
        f"{name} never takes {shown}: the policy declares its values, so this filter matches nothing "
        "and the answer would be empty; nothing was charged",
        rule="filter.undeclared_value",
        hint=hint,
    )


# -- declared time ranges --------------------------------------------------------------


def _outside_range(terms: list[exp.Expression]) -> Refused | None:
    """Comparisons of a bucketed column with constants that together leave nothing of its range."""
    seen: list[exp.Column] = []
    for term in terms:
        for node in term.find_all(exp.Column):
            if time_buckets.bucketed(node) is not None and not any(time_buckets.same_column(node, s) for s in seen):
                seen.append(node)
    for column in seen:
        kind = time_buckets.column_kind(column)
        if kind is None or not kind.temporal:
            continue
        buckets = time_buckets.bucketed(column)
        reach = time_buckets.declared_range(buckets, kind)
        reach = reach.meet(time_buckets.conjunction_interval(terms, column))
        if reach.empty:
            return time_buckets.outside_range(column, buckets)
    return None
