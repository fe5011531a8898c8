"""Refuse query shapes under which one privacy unit could change the rows of others.

Contribution bounding caps what each unit adds to the outer aggregate, but only
if every row reaching it belongs to exactly one unit. That holds when every
join between relations carrying private data is on their units, every inner
aggregation groups by the unit, and nothing ranks, limits or filters rows by
looking at other units' rows. Anything else is refused here, before it runs.
"""

from __future__ import annotations

from sqlglot import expressions as exp
from sqlglot.optimizer.scope import Scope, build_scope

from gateway.plan.units import unit_outputs
from gateway.errors import Refused
from gateway.policy.model import CleanRoom


def check_stable(tree: exp.Expression, room: CleanRoom) -> None:
    root = build_scope(tree)
    if root is None or not isinstance(tree, exp.Select):
        raise Refused("set operations over private tables cannot be differentially private",
                      rule="dp.set_operation", hint="run each SELECT on its own")
    for scope in root.traverse():
        private = {alias: source for alias, (_, source) in scope.selected_sources.items() if carries_private(source, room)}
        # sqlglot 30 marks a UNION inside a CTE or derived table by its set-operation scopes, not is_set_operation
        if any(carries_private(s, room) for s in scope.set_operation_scopes):
            raise Refused("set operations over private tables cannot be differentially private", rule="dp.set_operation")
        if not private:
            continue
        _joined_on_units(scope, private, room)
        if scope is not root:
            _grouped_by_unit(scope, private, room)
        for window in scope.expression.find_all(exp.Window):
            if _own_scope(window, scope) and not _partitioned_by_unit(window, private, room):
                raise Refused("window functions over private rows must be partitioned by the privacy unit",
                              rule="dp.window")
        for subquery in scope.subquery_scopes:
            if any(carries_private(s, room) for _, (_, s) in subquery.selected_sources.items()):
                raise Refused("subqueries over private tables inside expressions cannot be bounded per unit",
                              rule="dp.subquery", hint="join on the privacy unit instead")


def carries_private(source: exp.Table | Scope, room: CleanRoom) -> bool:
    if isinstance(source, exp.Table):
        table = room.tables.get(source.name)
        return table is not None and not table.public
    inner = [s for _, (_, s) in source.selected_sources.items()] + list(source.set_operation_scopes)
    return any(carries_private(s, room) for s in inner)


def _own_scope(node: exp.Expression, scope: Scope) -> bool:
    return node.find_ancestor(exp.Select) is scope.expression


def _unit_names(source, room: CleanRoom) -> set[str]:
    return {name for name, _ in unit_outputs(source, room)}


def _joined_on_units(scope: Scope, private: dict, room: CleanRoom) -> None:
    """Every relation carrying private data is linked to the others by unit = unit."""
    if len(private) < 2:
        return
    parent = {alias: alias for alias in private}

    def find(alias: str) -> str:
        while parent[alias] != alias:
            alias = parent[alias]
        return alias

    select = scope.expression
    conditions = [j.args.get("on") for j in select.args.get("joins") or []]
    for condition in filter(None, conditions):
        for eq in condition.find_all(exp.EQ):
            left, right = eq.this, eq.expression
            if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)):
                continue
            if left.table in private and right.table in private and \
                    left.name in _unit_names(private[left.table], room) and \
                    right.name in _unit_names(private[right.table], room):
                parent[find(left.table)] = find(right.table)
    if len({find(a) for a in private}) > 1:
        raise Refused(
            f"{', '.join(sorted(private))} are not joined on their privacy units",
            rule="dp.join_not_on_unit",
            hint="under differential privacy, relations holding private data join on the privacy unit",
        )


def _grouped_by_unit(scope: Scope, private: dict, room: CleanRoom) -> None:
    """An inner aggregation, DISTINCT or LIMIT must keep each row to one unit."""
    select = scope.expression
    if not isinstance(select, exp.Select):
        return
    if select.args.get("limit") or select.args.get("offset"):
        raise Refused("LIMIT inside a CTE or subquery over private rows is not allowed under differential privacy",
                      rule="dp.inner_limit")
    group = select.args.get("group")
    aggregates = any(_own_scope(a, scope) for a in select.find_all(exp.AggFunc))
    if group is None and not aggregates and not select.args.get("distinct"):
        return
    keys = list(group.expressions) if group is not None else []
    if select.args.get("distinct"):
        keys += [p.unalias() for p in select.expressions]
    for key in keys:
        if isinstance(key, exp.Column) and key.table in private and key.name in _unit_names(private[key.table], room):
            return
    raise Refused(
        "an inner aggregation over private rows must group by the privacy unit",
        rule="dp.aggregate_across_units",
        hint="aggregate per unit in CTEs; only the outer query aggregates across units",
    )


def _partitioned_by_unit(window: exp.Window, private: dict, room: CleanRoom) -> bool:
    for key in window.args.get("partition_by") or []:
        if isinstance(key, exp.Column) and key.table in private and key.name in _unit_names(private[key.table], room):
            return True
    return False
