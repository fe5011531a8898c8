"""The passes every statement goes through, in order, and the driver that runs them.

Each pass is a function QueryState -> QueryState in its own module, named for
what it does. New behaviour is a new pass here or a change to one.
"""

from __future__ import annotations

from gateway.engine import (admit, audit, authorise, catalog, charge, deliver, execute, flatten, intervals,
                            over_released, own_tables, parse, plan_noise, public_range, recall, release, replay,
                            resolve, rewrite, series_limit, timing, verify)
from gateway.engine.state import QueryState

# Up to the SQL DuckDB will run: what `compile` and EXPLAIN need.
COMPILE = (
    parse.parse,
    catalog.catalog,  # catalog-only statements are answered here, from the policy
    own_tables.own_tables,  # cleanroom.budget, cleanroom.releases: the analyst's own, from the ledger
    resolve.resolve,  # every name bound by scope; the statement generated anew from that binding
    flatten.flatten,  # the derived tables BI tools wrap around a query, merged into it
    public_range.public_range,  # MIN/MAX of a declared range or value list: answered from the policy
    series_limit.series_limit,  # a BI tool's top-n series: the outer aggregate, kept to its top released keys
    over_released.peel,  # an outer query over one aggregate: run later on its released rows
    authorise.authorise,
    plan_noise.plan_noise,  # differential privacy: what is released and what it costs
    rewrite.rewrite,
    verify.verify,  # a second, independent look at the SQL that will run
)

# Once a statement has its release, only these still run.
AFTER_RELEASE = (
    over_released.post_process,  # the peeled outer query, on the released rows only
    intervals.interval_columns,  # SET cleanroom.intervals = on: each noisy column's interval as two columns
    deliver.deliver,  # templates with an output store their result instead of returning it
    audit.audit,
    timing.pad,  # an answer over private tables leaves at a time the rows do not decide
)

# A replayed release was post-processed when it was first published: only these run.
AFTER_REPLAY = (audit.audit, timing.pad)

PASSES = (
    recall.recall,  # a repeated statement brings back its analysis and skips COMPILE
    *COMPILE,
    recall.remember,
    admit.admit,  # the analyst's quotas: statements at once, per minute, engine seconds per hour
    replay.replay,  # a DP answer given to this analyst before: the same release, published once
    charge.charge,  # differential privacy: reuse a released answer, or pay before running
    execute.execute,
    release.release,
    *AFTER_RELEASE,
)


def run(state: QueryState, passes=PASSES) -> QueryState:
    """Run the passes; a refusal or failure is audited before it reaches the client."""
    try:
        for step in passes:
            if _needed(step, state):
                state = step(state)
    except Exception as error:  # refusals, and internal faults reported by request id only
        charge.settle_failure(state)  # paid, then failed: a retry pays again
        audit.audit_failure(state, error)
        raise
    finally:
        if state.admission is not None:  # the analyst's quota slot (admit.py)
            state.admission.close()
    return state


_COMPILE, _AFTER_RELEASE, _AFTER_REPLAY = frozenset(COMPILE), frozenset(AFTER_RELEASE), frozenset(AFTER_REPLAY)


def _needed(step, state: QueryState) -> bool:
    """A pass runs unless an earlier one already did its work: the catalog pass
    answers catalog statements itself, recall restores a known analysis, and replay
    a published answer."""
    if step in _AFTER_RELEASE:
        return not state.replayed or step in _AFTER_REPLAY
    if state.release is not None:
        return False
    return not (state.generated_sql is not None and step in _COMPILE)
