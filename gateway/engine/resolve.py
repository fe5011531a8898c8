"""Pass resolve: bind every name of the statement by scope to a declared column,
type every value, and generate the statement anew from that resolution
(gateway.plan.resolve). From here on, the analyst's tree is gone: every later
pass reads and rewrites only the generated one.

Hidden columns and tables outside the analyst's reach do not exist here, so
they fail exactly like misspelt names. Templates, approved by every owner of
what they read, may name any table of the clean room.
"""

from __future__ import annotations

from gateway.engine.state import QueryState
from gateway.plan.resolve import resolve_statement
from gateway.plan.units import outer_uses
from gateway.policy.model import Analyst, CleanRoom, Table


def visible_tables(cleanroom: CleanRoom, analyst: Analyst) -> dict[str, Table]:
    """Tables an analyst may name: its own collaborator's and those of its granted rules."""
    names = {t.name for t in cleanroom.tables.values() if t.owner == analyst.collaborator}
    for rule in analyst.rules:
        names.update(cleanroom.rules[rule].tables)
    return {n: cleanroom.tables[n] for n in sorted(names)}


def resolve(state: QueryState) -> QueryState:
    room = state.cleanroom
    reachable = dict(room.tables) if state.template is not None else visible_tables(room, state.analyst)
    tree, tables_read = resolve_statement(state.tree, room, reachable, state.context.column_types[room.name],
                                          windows=state.template is not None)
    return state.evolve(tree=tree, uses=outer_uses(tree, room), tables_read=tables_read,
                        canonical_sql=tree.sql(dialect="duckdb"))
