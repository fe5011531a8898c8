"""Pass admit: a statement that will run on the engine takes its place in its
analyst's and its collaborator's quotas, or is refused with QuotaExceeded
(SQLSTATE 53400, HTTP 429 with Retry-After) before anything is charged or run.

A constant statement (rewrite.is_constant: `SELECT 1` from a connection pool)
reads no data and is answered from memory after its first run, so it is not
counted. A kept replay of a differentially private answer (replay.py) runs on no
executor: it counts in the per-minute windows, not among the statements running at
once. The admission it sets is closed by the pipeline driver; the executor
reports the engine seconds the statement used (gateway/quotas/service.py), counted
on the padding ladder when the answer's time is padded (gateway/engine/timing.py)."""

from __future__ import annotations

from gateway.engine import replay, timing
from gateway.engine.state import QueryState
from gateway.quotas.service import Admission

__all__ = ["Admission", "admit"]


def admit(state: QueryState) -> QueryState:
    if state.constant:
        return state
    admission = state.context.quotas.admit(state.cleanroom, state.request.user, state.analyst.collaborator,
                                           runs_on_engine=not replay.kept(state))
    step = timing.padding_step(state)  # the first padding step when this answer's time is padded, else None
    if step is not None:  # its raw engine time must not leak through the hourly count either
        admission.count_on_ladder(step, state.context.config.engine.query_timeout_seconds)
    return state.evolve(admission=admission)
