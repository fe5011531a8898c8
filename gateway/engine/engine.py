"""The engine object front ends hold: policies, the locked database, the pipeline."""

from __future__ import annotations

from pathlib import Path

from gateway import sources
from gateway.config_model import GatewayConfig
from gateway.engine import pipeline
from gateway.engine.audit_log import AuditLog
from gateway.engine.bind import visible_tables
from gateway.engine.context import EngineContext
from gateway.engine.state import QueryState
from gateway.engine.types import ColumnInfo, QueryRequest, Release, TableInfo
from gateway.errors import UnknownCleanRoom
from gateway.policy.model import CleanRoom, Template


class Engine:
    def __init__(self, config: GatewayConfig, cleanrooms: dict[str, CleanRoom] | None = None):
        from gateway.policy.loader import load_policy

        self.config = config
        if cleanrooms is None:
            cleanrooms = {room.name: room for room in (load_policy(path) for path in config.policies)}
        self.database = sources.open_database(config)
        column_types = {name: sources.describe(self.database, room) for name, room in cleanrooms.items()}
        self.context = EngineContext(
            config=config,
            database=self.database,
            cleanrooms=cleanrooms,
            column_types=column_types,
            audit=AuditLog(Path(config.state_dir) / "audit.jsonl"),
        )

    @classmethod
    def from_config_file(cls, path: str | Path) -> "Engine":
        from gateway.config import load_config

        return cls(load_config(Path(path)))

    # -- what a user may know ---------------------------------------------
    def cleanrooms_for(self, user: str) -> list[str]:
        return sorted(name for name, room in self.context.cleanrooms.items() if user in room.analysts)

    def _room_for(self, user: str, cleanroom: str) -> CleanRoom:
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
                    ColumnInfo(c.name, types[table.name][c.name], c.role, c.description, c.values, c.bounds)
                    for c in table.visible().values()
                ),
            )
            for table in visible_tables(room, room.analysts[user]).values()
        ]

    def templates(self, user: str, cleanroom: str) -> list[Template]:
        room = self._room_for(user, cleanroom)
        return [room.templates[name] for name in room.analysts[user].templates]

    # -- running statements -----------------------------------------------
    def _start(self, request: QueryRequest) -> QueryState:
        room = self._room_for(request.user, request.cleanroom)
        return QueryState(request=request, cleanroom=room, analyst=room.analysts[request.user], context=self.context)

    def run(self, request: QueryRequest) -> Release:
        return pipeline.run(self._start(request)).release

    def compile(self, request: QueryRequest) -> QueryState:
        """Every pass up to the generated SQL, nothing executed (benchmarks, EXPLAIN)."""
        return pipeline.run(self._start(request), pipeline.COMPILE)

    def interrupt(self, request_id: str) -> bool:
        with self.context.lock:
            cursor = self.context.running.get(request_id)
        if cursor is None:
            return False
        cursor.interrupt()
        return True

    def close(self) -> None:
        self.database.close()
