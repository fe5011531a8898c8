"""The passes every statement goes through, in order, and the driver that runs them.

Each pass is a function QueryState -> QueryState in its own module, named for
what it does. New behaviour is a new pass here or a change to one.
"""

from __future__ import annotations

from gateway.engine import audit, authorise, bind, catalog, execute, parse, release, rewrite
from gateway.collab import outputs
from gateway.engine.state import QueryState

# Up to the SQL DuckDB will run: what `compile` and EXPLAIN need.
COMPILE = (
    parse.parse,
    catalog.catalog,  # catalog-only statements are answered here, from the policy
    bind.bind,
    authorise.authorise,
    rewrite.rewrite,
)

PASSES = COMPILE + (
    execute.execute,
    release.release,
    outputs.deliver,  # templates with an output store their result instead of returning it
    audit.audit,
)


def run(state: QueryState, passes=PASSES) -> QueryState:
    """Run the passes; a refusal or failure is audited before it reaches the client."""
    try:
        for step in passes:
            state = step(state)
    except Exception as error:  # refusals, and internal faults reported by request id only
        audit.audit_failure(state, error)
        raise
    return state
