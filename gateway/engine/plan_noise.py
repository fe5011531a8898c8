"""Pass plan_noise: in a clean room with differential privacy, an authorised
query over private tables gets its noise plan (gateway.dp.plan): what it
releases, what it costs, how each unit's contribution is bounded.

The cost and the plan come from the statement's text and the policy only.
The measurement key names the noisy quantities the plan releases; equal keys
mean the same measurement, so the release cache hands back the same noise.
"""

from __future__ import annotations

import dataclasses

from sqlglot import expressions as exp

from gateway.dp import plan as dp_plan
from gateway.dp.policy import query_privacy
from gateway.dp.public_filters import refuse_empty_filters
from gateway.dp.release_cache import ReleaseCache
from gateway.engine.state import Authority, QueryState


def plan_noise(state: QueryState) -> QueryState:
    room, authorisation = state.cleanroom, state.authorisation
    if room.privacy is None or authorisation.min_group_size is None:  # k only, or public tables only
        return state
    if not state.describing:  # before any charge: a filter the policy says matches nothing is refused
        refuse_empty_filters(state.tree)
    privacy = query_privacy(room, state.request.user, _authority(state), state.tables_read)
    plan = dp_plan.plan(state.tree, room, state.tables_read, privacy, authorisation.min_group_size, state.template)
    return state.evolve(noise_plan=plan, measurement_key=measurement_key(state, plan))


def _authority(state: QueryState):
    """The privacy settings of the rule or template that authorised the query."""
    if state.template is not None:
        return state.template.privacy
    authorisation = state.authorisation
    return state.cleanroom.rules[authorisation.name].privacy if authorisation.authority is Authority.RULE else None


def measurement_key(state: QueryState, plan: dp_plan.NoisePlan) -> str:
    """The release cache's key (ReleaseCache.key) for what decides the noisy
    quantities: the clean room and its policy version, the rows they are computed
    from with table aliases renamed by position, the privacy settings and the
    quantities. Output names, HAVING, ORDER BY and LIMIT are post-processing and
    stay out, so they reuse the same answer.

    The analyst is part of it: a free repeat of another party's question would
    tell an analyst what the other party asked."""
    settings = {
        "analyst": state.request.user,
        "privacy": dataclasses.asdict(plan.privacy),
        "min_group_size": plan.min_group_size,
        "groups": [dataclasses.asdict(g) for g in plan.groups],
        "quantities": [dataclasses.asdict(q) for q in plan.quantities],
        "outputs": [dataclasses.asdict(o) for o in plan.outputs],
    }
    rows = _without_aliases(plan.rows).sql(dialect="duckdb")
    return ReleaseCache.key(state.cleanroom.name, state.cleanroom.version, rows, settings)


def _without_aliases(tree: exp.Expression) -> exp.Expression:
    tree = tree.copy()
    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    names: dict[str, str] = {}

    def renamed(name: str) -> exp.Identifier:
        return exp.to_identifier(names.setdefault(name, f"_t{len(names)}"))

    for node in list(tree.walk()):
        if isinstance(node, exp.TableAlias) and node.name:
            node.set("this", renamed(node.name))
        elif isinstance(node, exp.Column) and node.table:
            node.set("table", renamed(node.table))
        elif isinstance(node, exp.Table) and not node.db and node.name in ctes:
            node.set("this", renamed(node.name))
    return tree
