"""One PostgreSQL session: the state machine between the codec and the engine.

The session translates; it never decides policy. Every statement that reads
anything goes to the engine as a QueryRequest (catalog queries included: the
engine's catalog pass answers them). The session itself answers only what is
session state in PostgreSQL too (gateway.pgwire.commands).

Its phases live in their own modules, mixed in here: startup and
authentication, the simple and extended query protocols, running and
streaming results, COPY TO STDOUT, SQL cursors. The codec is gateway.pgwire.messages and
gateway.pgwire.types; the transport (sockets, TLS) is gateway.pgwire.server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from gateway.engine.types import new_request_id
from gateway.errors import GatewayError
from gateway.pgwire import messages as m
from gateway.pgwire import types as t
from gateway.pgwire.commands import SessionCommands
from gateway.pgwire.copy_out import CopyOut
from gateway.pgwire.cursors import Cursor, Cursors
from gateway.pgwire.encoded_answers import EncodedAnswers
from gateway.pgwire.extended_query import ExtendedQuery
from gateway.pgwire.portal import Failed, Portal, Statement
from gateway.pgwire.results import Results
from gateway.pgwire.settings import DEFAULTS
from gateway.pgwire.simple_query import SimpleQuery
from gateway.pgwire.startup import MAX_WORKERS, StartupPhase

__all__ = ["MAX_WORKERS", "ServerState", "Session", "Transport"]

log = logging.getLogger("gateway.pgwire")

FLUSH_AFTER_MESSAGES = 64  # pipelined messages answered before the replies are written out


class Transport(Protocol):
    """What the session needs from the connection (gateway.pgwire.server implements it)."""

    tls: bool

    async def read_message(self) -> tuple[bytes, bytes]: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def run(self, function, *args): ...  # in the engine's thread pool
    async def wait(self, future): ...  # a concurrent.futures.Future, without holding a thread


@dataclass
class ServerState:
    """Shared by every session of one server: the engine and the cancel registry."""

    engine: object
    config: object
    worker: int = 0  # this process's index among the server's worker processes
    sessions: dict[int, "Session"] = field(default_factory=dict)
    describe_cache: dict = field(default_factory=dict)
    answers: EncodedAnswers = field(default_factory=EncodedAnswers)  # repeats' rows and notices, encoded once

    def cancel(self, pid: int, secret: int) -> None:
        session = self.sessions.get(pid)
        if session is not None and secrets.compare_digest(session.secret.to_bytes(4, "big", signed=True),
                                                          secret.to_bytes(4, "big", signed=True)):
            session.cancel()


class Session(StartupPhase, SimpleQuery, ExtendedQuery, Results, SessionCommands, CopyOut, Cursors):
    def __init__(self, server: ServerState, transport: Transport, peer: str = "?"):
        self.server, self.engine, self.io, self.peer = server, server.engine, transport, peer
        self.user = self.database = ""
        self.params = dict(DEFAULTS)
        self.status = "I"  # I idle, T in transaction, E failed transaction
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.cursors: dict[str, Cursor] = {}  # DECLAREd by name (gateway.pgwire.cursors)
        self.out: list[bytes] = []
        self.pid = self.secret = 0
        self.running: str | None = None  # request id of the statement in the engine
        self.skip_until_sync = False

    # -- output ----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)

    def buffered(self) -> int:
        return sum(len(x) for x in self.out)

    async def flush(self) -> None:
        if self.out:
            self.io.write(b"".join(self.out))
            self.out.clear()
        await self.io.drain()

    def error(self, error: Exception) -> None:
        if isinstance(error, GatewayError):
            hint = error.hint
            detail = f"rule: {error.rule}" if error.rule else None
            self.send(m.error_response(error.sqlstate, error.message, hint, detail))
        elif isinstance(error, Failed):
            self.send(m.error_response(error.sqlstate, error.message, error.hint))
        else:  # an internal fault: its text may name internals, so the client gets an id to report
            request_id = new_request_id()
            log.exception("pgwire internal error (request id %s)", request_id)
            self.send(m.error_response("XX000", f"internal error (request id {request_id})"))
        if self.status == "T":
            self.status = "E"

    # -- lifecycle ----------------------------------------------------------------
    def cancel(self) -> None:
        request_id = self.running
        if request_id is not None:
            self.engine.interrupt(request_id)

    def close(self) -> None:
        self.server.sessions.pop(self.pid, None)
        self.cancel()

    # -- the message loop ---------------------------------------------------------
    async def serve(self) -> None:
        while True:
            kind, body = await self.io.read_message()
            message = m.decode(kind, body)
            if isinstance(message, m.Terminate):
                return
            if self.skip_until_sync and not isinstance(message, m.Sync):
                if isinstance(message, m.Flush):
                    await self.flush()
                continue
            try:
                await self.handle(message)
            except (GatewayError, Failed, t.BadValue) as error:
                if isinstance(error, t.BadValue):
                    error = Failed("22P02", str(error))
                self._failed(message, error)
            except m.ProtocolViolation:
                raise
            except (ConnectionError, asyncio.IncompleteReadError):
                raise
            except Exception as error:  # noqa: BLE001 - an internal fault ends the statement, not the server
                self._failed(message, error)
            if isinstance(message, (m.Query, m.Sync, m.Flush)) or len(self.out) > FLUSH_AFTER_MESSAGES:
                await self.flush()

    def _failed(self, message, error: Exception) -> None:
        """Report the error; a simple Query is over, an extended one skips to Sync."""
        self.error(error)
        if isinstance(message, m.Query):
            self.send(m.ready_for_query(self.status))
        else:
            self.skip_until_sync = True

    async def handle(self, message) -> None:
        if isinstance(message, m.Query):
            await self.simple_query(message.sql)
        elif isinstance(message, m.Parse):
            self.parse(message)
        elif isinstance(message, m.Bind):
            self.bind(message)
        elif isinstance(message, m.Describe):
            await self.describe(message)
        elif isinstance(message, m.Execute):
            await self.execute(message)
        elif isinstance(message, m.Close):
            (self.statements if message.kind == "S" else self.portals).pop(message.name, None)
            self.send(m.CLOSE_COMPLETE)
        elif isinstance(message, m.Sync):
            self.skip_until_sync = False
            self.portals.pop("", None)
            self.send(m.ready_for_query(self.status))
        elif isinstance(message, (m.Flush, m.CopyFail)):
            pass
        elif isinstance(message, m.Password):
            raise Failed("08P01", "unexpected password message")
        else:
            raise Failed("08P01", f"unsupported message type {message.type!r}")
