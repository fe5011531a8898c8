"""Passes recall and remember: the analysis of a statement, from its text to
the SQL DuckDB runs, depends only on the text, its parameters, the user and the
clean room's policy version. BI tools repeat the same statements all day, so a
repeat skips straight to execution.

Templates are not recalled: their approvals are checked on every run, so a
revoked approval takes effect at once. Analyses authorised by an aggregation
rule are recalled, but the rule's approvals are checked again on every repeat
(authorise.rule_approvals) for the same reason.
"""

from __future__ import annotations

import dataclasses
import json

from gateway.engine.authorise import rule_approvals
from gateway.engine.state import Authority, QueryState
from gateway.errors import Refused


# What the analysis passes produce, and so what a recalled analysis restores
# (the differential-privacy plan among them, where the state has one: a repeat
# must be noised and charged like the first run).
ANALYSIS_FIELDS = ("tree", "canonical_sql", "uses", "tables_read", "outer", "authorisation", "noise_plan",
                   "measurement_key", "generated_sql", "counts_suppressed", "constant")


def cache_key(state: QueryState) -> tuple | None:
    request = state.request
    if request.template is not None or not isinstance(request.sql, str):
        return None
    params = request.params
    if isinstance(params, (list, tuple)) and all(type(p) in _SCALARS for p in params):
        params = tuple((type(p), p) for p in params)  # the type keeps 1, 1.0, True and "1" apart
    else:
        try:  # repr keeps 1, "1" and date(…) apart; json keeps lists and dicts comparable
            params = json.dumps(params, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            return None
    # intervals: with cleanroom.intervals on, a query over a derived aggregate compiles with placeholders
    return (state.cleanroom.name, state.cleanroom.version, request.user, request.sql, params, request.intervals)


_SCALARS = frozenset((str, int, float, bool, type(None)))


def recall(state: QueryState) -> QueryState:
    key = cache_key(state)
    found = state.context.analyses.get(key) if key is not None else None
    if found is None:
        return state
    authorisation = found["authorisation"]
    if authorisation is not None and authorisation.authority is Authority.RULE:
        # Approvals are state, not policy: ask the store again on every repeat (one
        # indexed read; the rule's hash is cached per policy version), so a revoked
        # approval takes effect on the very next statement, in every worker.
        rule = state.cleanroom.rules[authorisation.name]
        try:
            approvals = rule_approvals(state, rule)
        except Refused:
            return state  # analyse afresh: another rule may allow it, else authorise refuses as usual
        if approvals != authorisation.approvals:  # another owner's approval, or one carried forward
            found = {**found, "authorisation": dataclasses.replace(authorisation, approvals=approvals)}
    return state.evolve(**found, recalled=True)


def in_memory(state: QueryState) -> bool:
    """Whether the statement would run from memory alone: a repeat of a constant
    statement (rewrite.is_constant) whose result execute keeps, needing neither
    the store (approvals), the ledger nor DuckDB. Only its audit record waits on I/O."""
    key = cache_key(state)
    found = state.context.analyses.get(key) if key is not None else None
    if found is None or not found["constant"] or found["noise_plan"] is not None:
        return False
    if found["authorisation"] is None or found["authorisation"].authority is Authority.RULE:
        return False
    return state.context.constant_results.get(found["generated_sql"]) is not None


def remember(state: QueryState) -> QueryState:
    if state.recalled:
        return state
    key = cache_key(state)
    if key is not None and state.generated_sql is not None and state.release is None:
        state.context.analyses.put(key, {name: getattr(state, name) for name in ANALYSIS_FIELDS})
    return state
