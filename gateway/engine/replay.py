"""Pass replay: a differentially private answer this process already gave the same
analyst for the same statement comes back as it was given.

A dashboard redraws the same tiles all day. The first run of a statement pays and is
noised; every later run publishes the same stored measurement with the same
post-processing, so its rows never change (gateway/engine/release.py). Once such a
repeat has been published, the release itself is kept (keyed by `delivered_answer`),
and the next repeat takes it from here instead of running the charge, release and
post-processing passes again.

What still runs for every repeat: recall checks the rule's approvals in the store
(a revocation stops the very next repeat), admit counts it in the analyst's quotas,
audit records it. The charge is nothing, as for any reused release. Its audit record
is not waited for once the first answer under the same key is durable (audit.py):
the rows it gives were released, and recorded, before."""

from __future__ import annotations

import dataclasses

from gateway.engine import recall
from gateway.engine.state import QueryState
from gateway.engine.types import Release


def delivered_answer(state: QueryState) -> tuple | None:
    """What identifies a differentially private answer to this analyst: the statement
    as recalled (room, policy version, user, text, parameters, intervals) and the stored
    measurement it publishes. The same key always publishes the same rows (the
    measurement is stored once and never changes). None for what is not such an answer
    (k-only results run again; templates are checked and written afresh)."""
    if state.noise_plan is None or state.measurement_key is None or state.template is not None:
        return None
    statement = recall.cache_key(state)
    return None if statement is None else (statement, state.measurement_key)


def kept(state: QueryState) -> bool:
    """Whether this pass will answer the statement (for admit: it needs no executor)."""
    return _given(state) is not None


def replay(state: QueryState) -> QueryState:
    given = _given(state)
    if given is None:
        return state
    release = dataclasses.replace(given, request_id=state.request.request_id)
    return state.evolve(release=release, charged=(0.0, 0.0), replayed=True)


def in_memory(state: QueryState) -> bool:
    """Whether a statement would be answered by this pass with no I/O that can wait:
    its analysis is recalled, its release kept, and the store holding the approvals
    recall reads is this host's SQLite file (a read in WAL mode never waits for a
    writer; a PostgreSQL round trip could, so those run on a front end's thread)."""
    if state.context.collab is None or state.context.collab.store.postgres_dsn is not None:
        return False
    key = recall.cache_key(state)
    found = state.context.analyses.get(key) if key is not None else None
    if found is None or found["noise_plan"] is None:
        return False
    return _given(state.evolve(**found)) is not None


def _given(state: QueryState) -> Release | None:
    answer = delivered_answer(state)
    given = state.context.delivered.get(answer) if answer is not None else None
    return given if isinstance(given, Release) else None  # True: delivered, its repeat not yet published
