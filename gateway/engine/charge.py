"""Pass charge: a differentially private query pays before it runs.

A measurement already released (same measurement key) is handed back from the
release cache and costs nothing: fresh noise for a repeat would let an analyst
average it away. One not yet released but already paid for by this analyst (an
identical statement still running, on any worker or host) costs nothing either:
both run, the first answer stored is the one both return (pass release).
Otherwise the ledger debits the query's (epsilon, delta) in
the transaction that checks the remaining budget, and commits before the query
runs; a query that then fails is not refunded, since its cost is fixed by its
text and a refund would tell the analyst something about the data. Nor does its
payment cover a retry (`settle_failure`): each run's outcome and time are seen,
so each run that is not a copy of one in flight pays.
"""

from __future__ import annotations

import logging

from gateway.dp.ledger import Account
from gateway.dp.noising import Measurement
from gateway.dp.policy import budget_for, plan_cost
from gateway.engine.state import QueryState


def charge(state: QueryState) -> QueryState:
    plan = state.noise_plan
    if plan is None:
        return state
    services = state.context.privacy
    cached = services.releases.get(state.measurement_key)
    if cached is not None:
        return state.evolve(charged=(0.0, 0.0), measurement=Measurement(cached.table, cached.protection, reused=True))
    cost = plan_cost(plan)  # epsilon under pure accounting, rho under zcdp
    paid_now = services.ledger.charge_once(
        Account(state.cleanroom.name, state.request.user),
        cost,
        budget_for(state.cleanroom, state.request.user),
        request_id=state.request.request_id,
        query_sha256=state.measurement_key,
    )
    if not paid_now:  # an identical statement paid (and is running, on any host): the stored answer is theirs too
        return state.evolve(charged=(0.0, 0.0))
    # (epsilon, delta), and the rho under zcdp accounting (its epsilon is then 0)
    return state.evolve(charged=(cost.epsilon, cost.delta, cost.rho) if cost.rho else (cost.epsilon, cost.delta))


def settle_failure(state: QueryState) -> None:
    """A statement that paid and then failed: its charge no longer pays for identical ones."""
    if not state.charged or not any(state.charged):
        return
    try:
        state.context.privacy.ledger.failed(Account(state.cleanroom.name, state.request.user), state.request.request_id)
    except Exception:  # the failure is reported as it is; the ledger's trouble is the operator's
        logging.getLogger("gateway.engine").exception("could not mark the failed charge of %s",
                                                      state.request.request_id)
