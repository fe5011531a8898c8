"""score('model', x, ...): a declared model's output for each row, as the resolver
types and generates it (docs/models.md).

- The model is named by a string literal, spelt exactly as declared: there is
  no case folding, so 'Propensity' is not 'propensity' and names no model.
- Each argument is a number (or NULL) bound to a declared column by the usual
  scope rules, converted with TRY_CAST to DOUBLE; the scoring function casts it
  to the model's input type and makes a row with a non-finite input NULL.
- The call is generated as the declaration's own function
  (gateway.models.files.ModelFile.function), a name that exists only in the
  gateway's executors and that an analyst's text never reaches the engine as:
  the resolver refuses every function it does not know, that name included.
- Its value is a FLOAT within the declared bounds (the scoring function clamps
  it there), so a score is aggregated, clamped and noised as a measure with
  those bounds. Where it may stand is decided by authorise: in an approved
  template wherever the template puts it (its model's owner approves the
  template), under an aggregation rule only inside an aggregate and only when
  the rule names the model.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.models.files import FUNCTION_PREFIX
from gateway.plan.allowed import AGGREGATES
from gateway.plan.arithmetic import cast, mark, typed
from gateway.plan.types import Kind, Range, Typed
from gateway.policy.model import CleanRoom, Model

if TYPE_CHECKING:
    from gateway.plan.expressions import Clause, Expressions

SCORE = "score"
_FUNCTION = re.compile(re.escape(FUNCTION_PREFIX) + r"[0-9a-f]{24}")


def resolve_score(expressions: "Expressions", node: exp.Anonymous, clause: "Clause") -> exp.Expression:
    room: CleanRoom = expressions.resolver.room
    arguments = list(node.expressions)
    first = arguments[0] if arguments else None
    if not (isinstance(first, exp.Literal) and first.is_string):
        raise Refused("score() takes the model's name as a string literal first: score('model', x, ...)",
                      rule="model.name")
    model = room.models.get(first.this)
    if model is None:
        declared = ", ".join(sorted(room.models)) or "none"
        raise Refused(f"there is no model named {first.this!r}", rule="model.unknown",
                      hint=f"models of this clean room: {declared} (names are case-sensitive)")
    inputs = model.file.inputs
    if len(arguments) - 1 != len(inputs):
        raise Refused(f"model {model.name} takes {len(inputs)} values ({', '.join(i.name for i in inputs)}), "
                      f"not {len(arguments) - 1}", rule="model.arguments")
    values = []
    for argument, declared in zip(arguments[1:], inputs):
        value = expressions(argument, clause)
        kind = typed(value).kind
        if not kind.numeric and kind is not Kind.NULL:
            raise Refused(f"input {declared.name} of model {model.name} takes a number, not {kind.value}",
                          rule="model.arguments")
        values.append(cast(value, "DOUBLE", typed(value).with_(kind=Kind.FLOAT)))
    call = exp.Anonymous(this=model.file.function, expressions=values)
    call.meta["model"] = model.name
    annotation = Typed(Kind.FLOAT, Range(model.file.lower, model.file.upper),
                       aggregate=any(typed(v).aggregate for v in values))
    return mark(call, annotation)


def is_score(node: exp.Expression) -> bool:
    """A generated score() call (also after the generated text is parsed again)."""
    return isinstance(node, exp.Anonymous) and bool(_FUNCTION.fullmatch(str(node.name).lower()))


def model_of(room: CleanRoom, node: exp.Anonymous) -> Model | None:
    """The model a generated call scores."""
    name = str(node.name).lower()
    return next((m for m in room.models.values() if m.file.function == name), None)


def models_in(sql: str, room: CleanRoom) -> tuple:
    """The model files a generated statement scores (what its executor must register)."""
    found = set(_FUNCTION.findall(sql.lower()))
    return tuple(m.file for m in room.models.values() if m.file.function in found)


def functions(room: CleanRoom) -> frozenset[str]:
    """The scoring functions a statement over this room may call (for the verify pass)."""
    return frozenset(m.file.function for m in room.models.values())


def check_rule_scores(tree: exp.Expression, room: CleanRoom, rule) -> None:
    """Under an aggregation rule a score is a measure: only inside an aggregate (never
    in WHERE, GROUP BY, a FILTER condition or bare in SELECT, where one row's score
    could pick it out), and only of a model the rule names."""
    from_rule = set(rule.models or ())
    for node in tree.find_all(exp.Anonymous):
        if not is_score(node):
            continue
        model = model_of(room, node)
        name = model.name if model is not None else str(node.name)
        if model is None or name not in from_rule:
            raise Refused(f"rule {rule.name} does not allow scoring model {name}", rule="model.not_allowed",
                          hint=f"models rule {rule.name} names: {', '.join(sorted(from_rule)) or 'none'}; "
                               "or run an approved template")
        if node.find_ancestor(*AGGREGATES) is None:
            raise Refused(f"score('{name}', ...) may only appear inside an aggregate", rule="model.outside_aggregate",
                          hint="a score is a measure: use it in AVG, SUM or another allowed aggregate")


def scored_column(scope, column: exp.Column, room: CleanRoom) -> Model | None:
    """The model whose score a column of this (sqlglot) scope is, followed through CTEs
    and derived tables that pass it on unchanged; None when it is anything else."""
    if not isinstance(column, exp.Column):
        return None
    entry = scope.selected_sources.get(column.table)
    source = entry[1] if entry is not None else None
    select = getattr(source, "expression", None)
    if not isinstance(select, exp.Select):
        return None
    for projection in select.expressions:
        if projection.alias_or_name != column.name:
            continue
        value = projection.unalias()
        if is_score(value):
            return model_of(room, value)
        return scored_column(source, value, room) if isinstance(value, exp.Column) else None
    return None


MAX_SCORE_BUCKETS = 1000


def score_buckets(scope, key: exp.Expression, room: CleanRoom) -> tuple[float, ...] | None:
    """The values a group key that buckets a score can take, from the model's declared
    bounds alone: FLOOR(score * n), optionally capped as LEAST(FLOOR(score * n), m), with
    n and m number literals (deciles: LEAST(FLOOR(score * 10), 9)). Such keys are public,
    like a dimension's declared values; None for anything else."""
    cap = None
    node = _bare(key)
    if isinstance(node, exp.Least) and len(node.expressions) == 1:
        cap = _number(node.expressions[0])
        if cap is None:
            return None
        node = _bare(node.this)
    if not isinstance(node, exp.Floor) or node.args.get("decimals") is not None:
        return None
    product = _bare(node.this)
    if not isinstance(product, exp.Mul):
        return None
    for scored, factor in ((product.this, product.expression), (product.expression, product.this)):
        n = _number(factor)
        scored = _bare(scored)
        model = model_of(room, scored) if is_score(scored) else scored_column(scope, scored, room)
        if model is None or n is None or n <= 0:
            continue
        first, last = math.floor(model.file.lower * n), math.floor(model.file.upper * n)
        if last - first >= MAX_SCORE_BUCKETS:
            return None
        values = sorted({float(min(i, cap) if cap is not None else i) for i in range(first, last + 1)})
        return tuple(values)
    return None


def _bare(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren) or (isinstance(node, (exp.Cast, exp.TryCast))
                                          and node.to.is_type(*exp.DataType.REAL_TYPES)):
        node = node.this
    return node


def _number(node: exp.Expression) -> float | None:
    node = _bare(node)
    if isinstance(node, exp.Literal) and not node.is_string:
        return float(node.this)
    return None
