"""Pass 7, audit: every statement leaves a record, released, refused or failed,
before its answer leaves the gateway.

A released statement's record is queued here; `state.audited` completes once it
is durable, and the engine hands out nothing before (Engine.run waits for it,
Engine.submit gives it to a front end that waits without a thread). Refusals and
failures wait here: they are rare, and their error must not outrun the record.

A statement that read no clean-room data (a constant like a pool's `SELECT 1`, a
catalog query answered from the policy) does not wait: its record goes into the
same chain, in order, and is made durable by the next fsync (gateway.audit_log.writer).
Anything that read a table of the room, public or private, or ran a template waits,
except the repeat of a differentially private answer this process has already
durably audited for the same analyst, statement and stored measurement
(gateway/engine/replay.py): the rows it gives were released, and recorded, before."""

from __future__ import annotations

import datetime as dt
import hashlib

from gateway.dp.policy import spent_json
from gateway.engine.replay import delivered_answer
from gateway.engine.state import QueryState
from gateway.errors import GatewayError


KEPT_REPLAY_ROWS = 1_000


def audit(state: QueryState) -> QueryState:
    released = state.release
    rows, output = released.table.num_rows, None
    if state.template is not None and state.template.output is not None:  # the table is the output's receipt
        rows, output = released.table.column("rows")[0].as_py(), released.table.column("output_id")[0].as_py()
    protection = released.protection
    answer = delivered_answer(state)
    durable = not reads_no_room_data(state) and not (answer is not None and state.context.delivered.get(answer))
    audited = state.context.audit.submit(_record(
        state,
        decision="released",
        rule=released.authorised_by,
        rows_released=rows,
        # groups whose (noisy, under differential privacy) unit count fell below k
        rows_suppressed=protection["groups"]["suppressed_below_min_group_size"] if protection else state.rows_suppressed,
        privacy_budget_spent=_spent(state),
        measurement_sha256=state.measurement_key,
        reused_release=protection["reused"] if protection else None,
        min_group_size=released.min_group_size,
        output_id=output,
    ), durable=durable)
    if answer is not None and not state.replayed:
        # Durably audited, the answer is delivered; a repeat's release is kept for the replay pass
        # (up to KEPT_REPLAY_ROWS rows: a larger one is published afresh, not held in memory).
        reused = bool(protection and protection.get("reused"))
        kept = released if reused and released.table.num_rows <= KEPT_REPLAY_ROWS else True
        delivered = state.context.delivered
        audited.add_done_callback(lambda done: done.exception() is None and delivered.put(answer, kept))
    return state.evolve(audited=audited)


def reads_no_room_data(state: QueryState) -> bool:
    """Whether the statement's answer follows from its text and the policy alone: a
    constant (rewrite.is_constant), or a catalog query (the catalog pass answered it
    from what the analyst may see of the policy, never touching the data)."""
    if state.template is not None or state.tables_read:
        return False
    return state.constant or state.release.authorised_by == "catalog"


def _spent(state: QueryState) -> dict | None:
    if state.charged is None:
        return None
    return spent_json(state.charged)


def audit_failure(state: QueryState, error: Exception) -> None:
    if isinstance(error, GatewayError):
        decision = "refused" if error.http_status in (400, 403, 404, 429) else "failed"
        # A query charged and then failed keeps its charge: the record says so.
        outcome = dict(decision=decision, rule=error.rule, sqlstate=error.sqlstate, message=error.message)
    else:
        outcome = dict(decision="failed", rule="internal", message=type(error).__name__)
    audit = state.context.audit
    recorded = audit.submit(_record(state, privacy_budget_spent=_spent(state), **outcome))
    if audit.can_wait_here():
        audit.wait(recorded)
    else:  # an event loop's thread (the wire's, for statements answered from memory) must not block:
        error.audit_record = recorded  # the front end awaits it before the error leaves


def _record(state: QueryState, **outcome) -> dict:
    request = state.request
    canonical = state.canonical_sql
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(),
        "request_id": request.request_id,
        "user": request.user,
        "collaborator": state.analyst.collaborator if state.analyst else None,
        "cleanroom": request.cleanroom,
        "policy_version": state.cleanroom.version if state.cleanroom else None,
        "front_end": request.front_end,
        "sql": request.sql,
        "template": request.template,
        "params": request.params if isinstance(request.params, dict) else list(request.params),
        "canonical_sha256": hashlib.sha256(canonical.encode()).hexdigest() if canonical else None,
        "canonical_sql": canonical,
        "template_sha256": state.authorisation.template_sha256 if state.authorisation else None,
        "approvals": list(state.authorisation.approvals) if state.authorisation else [],
        **outcome,
    }
