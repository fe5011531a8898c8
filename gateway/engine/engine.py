"""The engine object front ends hold: policies, the locked database, the pipeline."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import Future
from pathlib import Path

import pyarrow as pa
import sqlglot

from gateway import sources
from gateway.audit_log import AuditLog
from gateway.collab.approvals import Collaboration
from gateway.collab.reload import PolicyWatcher, load_with_fallback, remember_good
from gateway.config import load_config
from gateway.config_model import GatewayConfig
from gateway.dp import noising, thresholds
from gateway.dp.ledger import Account
from gateway.dp.policy import budget_for
from gateway.engine import intervals, over_released, parse, pipeline, recall, replay, train
from gateway.engine.context import EngineContext
from gateway.engine.executors import ExecutorPool
from gateway.engine.resolve import visible_tables
from gateway.engine.rewrite import BOOKKEEPING_COLUMNS
from gateway.engine.state import QueryState
from gateway.engine.types import ColumnInfo, QueryRequest, Release, TableInfo
from gateway.errors import PolicyInvalid, UnknownCleanRoom
from gateway.models.files import TRAIN_FRONT_END
from gateway.models.scoring import ensure_registered
from gateway.policy.loader import load_policy
from gateway.policy.model_assets import model_listing
from gateway.policy.model import CleanRoom, Template
from gateway.scratch import scratch


class Engine:
    def __init__(self, config: GatewayConfig, cleanrooms: dict[str, CleanRoom] | None = None):
        self.config = config
        from_files = cleanrooms is None
        problems: list[str] = []
        if from_files:  # a policy that fails validation falls back to its last good version
            cleanrooms, problems = load_with_fallback(config)
        self.database = sources.open_database(config)
        column_types = {name: sources.describe(self.database, room) for name, room in cleanrooms.items()}
        self._scoring: set[str] = set()  # scoring functions on self.database, for describe()'s binding
        _register_models(self.database, cleanrooms, self._scoring)
        audit_log = AuditLog.for_config(config)  # anchored in the store, copied to it if PostgreSQL
        self.context = EngineContext(
            config=config,
            database=self.database,
            cleanrooms=cleanrooms,
            column_types=column_types,
            audit=audit_log,
            executors=ExecutorPool(config, config.engine.executors),
            collab=Collaboration.from_config(config, audit_log),
        )
        for room in cleanrooms.values():  # approvals of tightened rules continue (gateway.collab.approvals)
            self.context.collab.carry_forward(room)
        self.context.executors.warm()  # in the background: no statement should wait for an interpreter
        self._reload_lock = threading.Lock()
        self._policy_status = _status("stale" if problems else "ok", cleanrooms, problems)
        self._watcher = None  # polled by requests: see gateway.collab.reload
        if from_files and config.engine.policy_reload_seconds > 0:
            self._watcher = PolicyWatcher(config.policies, self.reload, config.engine.policy_reload_seconds)

    # -- reloading policies while serving ------------------------------------
    def reload(self) -> bool:
        """Re-read the config's policy files and swap them in whole. On any
        problem the old policies keep serving, and the problem is logged and
        reported by policy_status() (GET /v1/health). Returns whether it swapped."""
        with self._reload_lock:
            serving = self.context.cleanrooms
            try:
                rooms = {room.name: room for room in (load_policy(path) for path in self.config.policies)}
                cursor = self.database.cursor()  # queries may be running on the shared connection
                try:
                    types = {name: sources.describe(cursor, room) for name, room in rooms.items()}
                finally:
                    cursor.close()
                _register_models(self.database, rooms, self._scoring)
                for room in rooms.values():  # before the swap: the new rules' first statements find them
                    self.context.collab.carry_forward(room)
            except Exception as error:  # PolicyInvalid, or a file gone missing mid-edit
                problems = error.problems if isinstance(error, PolicyInvalid) else [f"{type(error).__name__}: {error}"]
                self.context.log.error("policy reload refused, the previous policies keep serving:\n%s", "\n".join(problems))
                self._policy_status = _status("stale", serving, problems)
                return False
            # Types first: a query that starts in between sees old rooms, whose tables they still describe.
            self.context.column_types = {**self.context.column_types, **types}
            self.context.cleanrooms = rooms
            remember_good(self.config.state_dir, self.config.policies)
            self._policy_status = _status("ok", rooms, [])
            self.context.log.info("policies reloaded: %s", ", ".join(f"{n} {r.version[:12]}" for n, r in rooms.items()))
            return True

    def policy_status(self, detail: bool = True) -> dict:
        """For GET /v1/health: "ok", or "stale" with why the files on disk are not the
        ones serving. Without detail, problems are only counted: their text names
        tables and columns, which an unauthenticated caller need not learn."""
        self._poll_policies()
        status = dict(self._policy_status)
        if not detail:
            status["problems"] = len(status["problems"])
            status.pop("serving")
        return status

    def _poll_policies(self) -> None:
        if self._watcher is not None:
            self._watcher.poll()

    @classmethod
    def from_config_file(cls, path: str | Path) -> "Engine":
        return cls(load_config(Path(path)))

    @property
    def cleanrooms(self) -> dict[str, CleanRoom]:
        return dict(self.context.cleanrooms)

    # -- what a user may know ---------------------------------------------
    def cleanrooms_for(self, user: str) -> list[str]:
        self._poll_policies()
        return sorted(name for name, room in self.context.cleanrooms.items() if user in room.analysts)

    def _room_for(self, user: str, cleanroom: str) -> CleanRoom:
        self._poll_policies()
        room = self.context.cleanrooms.get(cleanroom)
        if room is None or user not in room.analysts:  # not yours looks the same as absent
            raise UnknownCleanRoom(f'clean room "{cleanroom}" does not exist', rule="cleanroom.unknown")
        return room

    def tables(self, user: str, cleanroom: str) -> list[TableInfo]:
        room = self._room_for(user, cleanroom)
        types = self.context.column_types[room.name]
        return [
            TableInfo(
                name=table.name,
                owner=table.owner,
                public=table.public,
                description=table.description,
                columns=tuple(
                    ColumnInfo(c.name, types[table.name][c.name], c.role, c.description, c.values, c.bounds,
                               c.buckets)
                    for c in table.visible().values()
                ),
            )
            for table in visible_tables(room, room.analysts[user]).values()
        ]

    def train(self, user: str, cleanroom: str, template: str, params: dict, name: str, epsilon) -> Release:
        """Fit a differentially private regression on a training template's rows, charged to
        the user's budget (gateway/engine/train.py); the receipt holds the model's declaration."""
        epsilon = train.check_request(name, epsilon)
        request = QueryRequest(user=user, cleanroom=cleanroom, template=template, params=params,
                               front_end=TRAIN_FRONT_END)
        state = pipeline.run(self._start(request), train.train_passes(name, epsilon))
        self.context.audit.wait(state.audited)  # durable before the receipt leaves, as any answer
        return state.release

    def models(self, user: str, cleanroom: str) -> list[dict]:
        """The room's model assets as its analysts may see them: never a file or its weights."""
        room = self._room_for(user, cleanroom)
        analyst = room.analysts[user]
        return model_listing(room, analyst.rules, analyst.templates)

    def templates(self, user: str, cleanroom: str) -> list[Template]:
        room = self._room_for(user, cleanroom)
        return [room.templates[name] for name in room.analysts[user].templates]

    # -- running statements -----------------------------------------------
    def _start(self, request: QueryRequest, room: CleanRoom | None = None) -> QueryState:
        room = room or self._room_for(request.user, request.cleanroom)
        return QueryState(request=request, cleanroom=room, analyst=room.analysts[request.user], context=self.context)

    def run(self, request: QueryRequest) -> Release:
        release, audited = self.submit(request)
        self.context.audit.wait(audited)  # the audit record is durable before the answer leaves
        return release

    def submit(self, request: QueryRequest) -> tuple[Release, Future]:
        """Run the statement; the release must not leave before the future completes
        (its audit record is then durable) and not at all if it raises. For front
        ends that wait without holding a thread; others call run."""
        state = pipeline.run(self._start(request))
        return state.release, state.audited

    def submit_committed(self, request: QueryRequest) -> tuple[Release, Future]:
        """submit, then commit the statement's audit record in this thread (a front end's
        worker thread): the front end's event loop then waits only for a padded answer's
        time, not for a hand-off to another thread (gateway.audit_log.writer)."""
        release, audited = self.submit(request)
        self.context.audit.commit_queued()
        return release, audited

    def runs_in_memory(self, request: QueryRequest) -> bool:
        """Whether submit would return without I/O that can wait (recall.in_memory: a
        constant; replay.in_memory: a kept DP answer), so that a front end may call it on
        its event loop. Never while a policy check is due: a
        reload reads files and describes sources."""
        if self._watcher is not None and self._watcher.due():
            return False
        room = self.context.cleanrooms.get(request.cleanroom)
        if room is None or request.user not in room.analysts:
            return False
        state = self._start(request, room)
        return recall.in_memory(state) or replay.in_memory(state)

    def compile(self, request: QueryRequest, *, describing: bool = False) -> QueryState:
        """Every pass up to the generated SQL, nothing executed (benchmarks, EXPLAIN).
        describing: the parameters are stand-ins (a wire client describes a statement
        before it binds), so checks of which values a filter can match wait for the real ones."""
        return pipeline.run(self._start(request).evolve(describing=describing), pipeline.COMPILE)

    def describe(self, request: QueryRequest) -> pa.Schema:
        """The result columns of a statement without running it on the private
        data: every policy pass, then DuckDB binds (LIMIT 0 never scans) the SQL."""
        state = self.compile(request, describing=True)
        if state.release is not None:  # answered by an engine pass (the catalog)
            return state.release.table.schema
        cursor = self.database.cursor()
        try:
            schema = cursor.sql(state.generated_sql).limit(0).to_arrow_table().schema
        finally:
            cursor.close()
        if state.noise_plan is not None:  # the bounded SQL's columns are not what is released
            schema = noising.released_schema(state.noise_plan, schema)
            if request.intervals and state.outer is None:
                schema = intervals.with_interval_fields(state.noise_plan, schema)
        elif state.counts_suppressed:  # the k test's bookkeeping never leaves
            schema = pa.schema(list(schema)[: len(schema) - BOOKKEEPING_COLUMNS])
        return schema if state.outer is None else over_released.outer_schema(state.outer, schema)

    # -- differential privacy ---------------------------------------------
    def budget(self, user: str, cleanroom: str) -> dict:
        """The user's privacy budget in this clean room: spent, remaining, renewal."""
        room = self._room_for(user, cleanroom)
        if room.privacy is None:
            return {"cleanroom": room.name, "enabled": False,
                    "protection": f"k-thresholds only (min_group_size {room.min_group_size}), no noise"}
        balance = self.context.privacy.ledger.balance(Account(room.name, user), budget_for(room, user))
        return {"enabled": True, **balance.as_json()}

    def explain(self, request: QueryRequest) -> dict:
        """What a statement would cost and how its result would be protected, from
        its text and the policy alone: nothing runs and nothing is charged."""
        state = self.compile(request)
        plan = state.noise_plan
        explained = {"authorised_by": state.authorisation.authorised_by if state.authorisation else "catalog",
                     "min_group_size": state.authorisation.min_group_size if state.authorisation else None}
        if plan is not None:  # the k the released groups clear; none on public keys released whatever their size
            explained["min_group_size"] = plan.applied_min_group_size
        if plan is None:
            explained["differential_privacy"] = None
            explained["cost"] = {"epsilon": 0.0, "delta": 0.0}
            return explained
        reused = self.context.privacy.releases.get(state.measurement_key) is not None
        explained["differential_privacy"] = _described(state, noising.describe(plan))
        explained["cost"] = {"epsilon": 0.0 if reused else plan.epsilon, "delta": 0.0 if reused else plan.delta}
        explained["answered_before"] = reused  # a repeat returns the same noisy answer, free
        explained["budget"] = self.budget(request.user, request.cleanroom)
        return explained

    def warm(self, wait: bool = False) -> None:
        """Start any executor process not yet started. With wait (a front end about to take
        traffic): until all are up, and what this process loads on its first statement is
        loaded now (the SQL dialect's parser tables, the scratch database)."""
        self.context.executors.warm(wait)
        if wait:
            sqlglot.parse_one("SELECT 1", read=parse.DIALECT)
            with scratch() as cursor:
                cursor.execute("SELECT 1").fetchall()

    def interrupt(self, request_id: str) -> bool:
        """Cancel a running statement: its executor is killed (certain, unlike DuckDB's interrupt)."""
        return self.context.executors.cancel(request_id)

    def close(self) -> None:
        self.context.audit.close()  # records nobody waited for are made durable too
        self.context.executors.close()
        self.database.close()


def _described(state, described: dict) -> dict:
    """noising.describe's dict, with the privacy unit named and, under private group
    selection, what a group needs to be released said in that unit."""
    room = state.cleanroom
    unit = " / ".join(sorted({room.tables[t].privacy_unit for t in state.tables_read if not room.tables[t].public}))
    described = {**described, "privacy_unit": unit}
    needed = described.get("groups", {}).get("to_be_released")
    if needed is not None:
        needed["summary"] = thresholds.sentence(needed, unit)
    return described


def _register_models(database, rooms: dict[str, CleanRoom], registered: set[str]) -> None:
    """Scoring functions on the engine's own database: describe() binds generated SQL there
    (LIMIT 0: nothing is scored). Executors register their own (gateway/executor_main.py)."""
    ensure_registered(database, [m.file for room in rooms.values() for m in room.models.values()], registered)


def _status(status: str, rooms, problems: list[str]) -> dict:
    return {
        "status": status,
        "checked_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "serving": {name: room.version for name, room in rooms.items()},
        "problems": list(problems),
    }
