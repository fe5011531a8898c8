"""Where an expression stands in its query (its clause, which decides what it may
contain), and the type checks every kind of resolved expression shares
(gateway.plan.expressions, gateway.plan.aggregation)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan.allowed import function_name
from gateway.plan.arithmetic import typed
from gateway.plan.types import Kind, Typed


@dataclass(frozen=True)
class Clause:
    """Where an expression stands, which decides what it may contain."""

    name: str  # SELECT, WHERE, GROUP BY, HAVING, ORDER BY, ON, QUALIFY, FILTER, ...
    aggregates: bool = False  # aggregates of this scope allowed
    windows: bool = False
    outputs: dict | None = None  # output name -> resolved projection, for names no relation has


def combine(result: Typed, *parts: exp.Expression) -> Typed:
    """`result`, marked as aggregated when any part holds an aggregate of this scope."""
    return result.with_(aggregate=any(typed(p).aggregate for p in parts))


def expect(node: exp.Expression, kinds: tuple[Kind, ...], where: exp.Expression) -> None:
    kind = typed(node).kind
    if kind not in kinds and kind is not Kind.NULL:
        wanted = " or ".join(k.value for k in kinds)
        raise Refused(f"{function_name(where)} takes {wanted}, not {kind.value}", rule="expr.type")


def aggregate_here(clause: Clause) -> Refused:
    """The refusal of an aggregate where the clause allows none."""
    if clause.name == "WHERE":
        return Refused("aggregates are not allowed in WHERE: use HAVING", rule="where.aggregate")
    return Refused(f"aggregates are not allowed in {clause.name}", rule="aggregate.position")
