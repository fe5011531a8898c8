"""One PostgreSQL session: the state machine between the codec and the engine.

Startup and authentication, then the simple and extended query protocols.
The session translates; it never decides policy. Every statement that reads
anything goes to the engine as a QueryRequest (catalog queries included: the
engine's catalog pass answers them). The session itself answers only what is
session state in PostgreSQL too: transaction control on a read-only engine,
SET/SHOW of session parameters, DEALLOCATE/DISCARD.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

import pyarrow as pa
import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from gateway.engine.types import QueryRequest, Release, new_request_id
from gateway.errors import GatewayError, UnknownCleanRoom
from gateway.pgwire import messages as m
from gateway.pgwire import scram
from gateway.pgwire import types as t

log = logging.getLogger("gateway.pgwire")

SERVER_VERSION = "16.4 (cleanroom gateway)"
AUTH_FAILURE_DELAY = 0.5  # seconds: slows password guessing without holding a thread
ROWS_PER_CHUNK = 65_536
MAX_WORKERS = 64  # rows encoded and written between two drain() calls

# Reported to the client at startup and whenever they change (PostgreSQL's GUC_REPORT set).
REPORTED = ("server_version", "server_encoding", "client_encoding", "application_name", "DateStyle",
            "IntervalStyle", "TimeZone", "integer_datetimes", "standard_conforming_strings",
            "is_superuser", "session_authorization", "default_transaction_read_only", "in_hot_standby")

DEFAULTS = {
    "server_version": SERVER_VERSION, "server_version_num": "160004", "server_encoding": "UTF8",
    "client_encoding": "UTF8", "application_name": "", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
    "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on", "is_superuser": "off",
    "default_transaction_read_only": "on", "transaction_read_only": "on", "in_hot_standby": "off",
    "transaction_isolation": "read committed", "default_transaction_isolation": "read committed",
    "search_path": '"$user", public', "extra_float_digits": "1", "max_identifier_length": "63",
    "lc_messages": "C", "lc_monetary": "C", "lc_numeric": "C", "lc_time": "C", "statement_timeout": "0",
    "bytea_output": "hex", "max_index_keys": "32", "block_size": "8192", "datestyle": "ISO, MDY",
}
_CANONICAL = {name.lower(): name for name in DEFAULTS}


class Transport(Protocol):
    """What the session needs from the connection (gateway.pgwire.server implements it)."""

    tls: bool

    async def read_message(self) -> tuple[bytes, bytes]: ...
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def run(self, function, *args): ...  # in the engine's thread pool


@dataclass
class Statement:
    name: str
    sql: str
    kind: str  # query | empty | begin | commit | rollback | set | show | noop | deallocate
    param_types: list[int]
    described: tuple | None = None  # (parameter oids, fields or None), once known


@dataclass
class Portal:
    statement: Statement
    params: list
    result_formats: tuple[int, ...]
    release: Release | None = None
    fields: list[m.Field] | None = None
    batches: list[pa.RecordBatch] | None = None
    sent: int = 0  # rows sent so far (suspension)
    described: bool = False


class Failed(Exception):
    """An error for the client that is not a GatewayError (protocol-level)."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.sqlstate, self.message, self.hint = sqlstate, message, hint


@dataclass
class ServerState:
    """Shared by every session of one server: the engine and the cancel registry."""

    engine: object
    config: object
    worker: int = 0  # this process's index among the server's worker processes
    sessions: dict[int, "Session"] = field(default_factory=dict)
    describe_cache: dict = field(default_factory=dict)

    def cancel(self, pid: int, secret: int) -> None:
        session = self.sessions.get(pid)
        if session is not None and secrets.compare_digest(session.secret.to_bytes(4, "big", signed=True),
                                                          secret.to_bytes(4, "big", signed=True)):
            session.cancel()


class Session:
    def __init__(self, server: ServerState, transport: Transport, peer: str = "?"):
        self.server, self.engine, self.io, self.peer = server, server.engine, transport, peer
        self.user = self.database = ""
        self.params = dict(DEFAULTS)
        self.status = "I"  # I idle, T in transaction, E failed transaction
        self.statements: dict[str, Statement] = {}
        self.portals: dict[str, Portal] = {}
        self.out: list[bytes] = []
        self.pid = self.secret = 0
        self.running: str | None = None  # request id of the statement in the engine
        self.skip_until_sync = False

    # -- output ----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)

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
        else:
            request_id = new_request_id()
            log.exception("pgwire internal error (request id %s)", request_id)
            self.send(m.error_response("XX000", f"internal error (request id {request_id})"))
        if self.status == "T":
            self.status = "E"

    # -- startup -----------------------------------------------------------------
    async def start(self, startup: m.Startup) -> bool:
        """Authenticate and greet; False if the connection must close."""
        params = startup.params
        self.user = params.get("user", "")
        self.database = params.get("database") or self.user
        if not self.user:
            self.send(m.error_response("28000", "no PostgreSQL user name specified in startup packet", severity="FATAL"))
            await self.flush()
            return False
        if not await self._authenticate():
            return False
        if self.database not in self.engine.cleanrooms_for(self.user):
            error = UnknownCleanRoom(f'database "{self.database}" does not exist', rule="cleanroom.unknown",
                                     hint="each clean room is a database; \\l lists yours")
            self.send(m.error_response(error.sqlstate, error.message, error.hint, severity="FATAL"))
            await self.flush()
            return False
        for key, value in params.items():
            name = _CANONICAL.get(key.lower(), key)
            if name in ("application_name", "DateStyle", "TimeZone", "extra_float_digits", "search_path"):
                self.params[name] = value
        self.params["session_authorization"] = self.user
        self.send(m.AUTH_OK)
        for name in REPORTED:
            self.send(m.parameter_status(name, self.params[name]))
        while True:
            # The low bits name the worker process, so any worker can route a CancelRequest.
            self.pid = (secrets.randbelow(2**24 - 1) + 1) * MAX_WORKERS + self.server.worker
            if self.pid not in self.server.sessions:
                break
        self.secret = secrets.randbits(31)
        self.server.sessions[self.pid] = self
        self.send(m.backend_key_data(self.pid, self.secret))
        self.send(m.ready_for_query(self.status))
        await self.flush()
        return True

    async def _authenticate(self) -> bool:
        config = self.server.config
        user = config.users.get(self.user)
        verifier = None
        if user is not None and user.scram_sha256:
            try:
                verifier = scram.parse_verifier(user.scram_sha256)
            except scram.ScramError:
                log.error("user %s has a malformed scram_sha256 verifier", self.user)
        real = verifier is not None
        verifier = verifier or scram.mock_verifier(self.user)
        try:
            if self.io.tls and config.pg.allow_cleartext_over_tls:
                self.send(m.AUTH_CLEARTEXT)
                await self.flush()
                password = await self._password()
                ok = real and scram.check_cleartext(verifier, password.rstrip(b"\x00").decode("utf-8", "replace"))
            else:
                ok = await self._scram(verifier, real)
        except (scram.ScramError, m.ProtocolViolation):
            ok = False
        if ok:
            return True
        log.warning("pgwire: failed login for user %r from %s", self.user, self.peer)
        await asyncio.sleep(AUTH_FAILURE_DELAY)
        self.send(m.error_response("28P01", f'password authentication failed for user "{self.user}"', severity="FATAL"))
        await self.flush()
        return False

    async def _password(self) -> bytes:
        kind, body = await self.io.read_message()
        if kind != b"p":
            raise m.ProtocolViolation("expected a password message")
        return body

    async def _scram(self, verifier: scram.Verifier, real: bool) -> bool:
        self.send(m.auth_sasl([scram.MECHANISM]))
        await self.flush()
        body = await self._password()
        reader = m._Reader(body)
        mechanism = reader.cstr()
        length = reader.int32()
        if mechanism != scram.MECHANISM:
            raise scram.ScramError("unsupported SASL mechanism")
        exchange = scram.ScramExchange(verifier, real)
        self.send(m.auth_sasl_continue(exchange.first(reader.raw(length) if length >= 0 else b"")))
        await self.flush()
        final = exchange.final(await self._password())
        self.send(m.auth_sasl_final(final))
        return True

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
                self.error(error)
                if not isinstance(message, m.Query):
                    self.skip_until_sync = True
                else:
                    self.send(m.ready_for_query(self.status))
            except m.ProtocolViolation:
                raise
            except (ConnectionError, asyncio.IncompleteReadError):
                raise
            except Exception as error:  # noqa: BLE001 - an internal fault ends the statement, not the server
                self.error(error)
                if isinstance(message, m.Query):
                    self.send(m.ready_for_query(self.status))
                else:
                    self.skip_until_sync = True
            if isinstance(message, (m.Query, m.Sync, m.Flush)) or len(self.out) > 64:
                await self.flush()

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
        elif isinstance(message, m.Flush):
            pass
        elif isinstance(message, m.CopyFail):
            pass
        elif isinstance(message, m.Password):
            raise Failed("08P01", "unexpected password message")
        else:
            raise Failed("08P01", f"unsupported message type {message.type!r}")

    # -- simple protocol ------------------------------------------------------------
    async def simple_query(self, sql: str) -> None:
        pieces = split_statements(sql)
        if not pieces:
            self.send(m.EMPTY_QUERY)
        for piece in pieces:
            statement = Statement("", piece, classify(piece), [])
            portal = Portal(statement, [], ())
            try:
                if self.status == "E" and statement.kind not in ("commit", "rollback"):
                    raise Failed("25P02", "current transaction is aborted, commands ignored until end of transaction block")
                await self.run_portal(portal, 0, describe=True)
            except Exception:
                if self.status == "T":
                    self.status = "E"
                raise
            if len(self.out) > 16:
                await self.flush()
        self.send(m.ready_for_query(self.status))

    # -- extended protocol -----------------------------------------------------------
    def parse(self, message: m.Parse) -> None:
        if message.name and message.name in self.statements:
            raise Failed("42P05", f'prepared statement "{message.name}" already exists')
        if len(split_statements(message.sql)) > 1:
            raise Failed("42601", "cannot insert multiple commands into a prepared statement")
        statement = Statement(message.name, message.sql, classify(message.sql), list(message.param_types))
        if statement.kind == "query":
            count = parameter_count(message.sql)
            types = statement.param_types + [0] * max(0, count - len(statement.param_types))
            if 0 in types or t.UNKNOWN in types:
                inferred = infer_parameter_types(message.sql, count, self._column_types())
                types = [inferred[i] if types[i] in (0, t.UNKNOWN) else types[i] for i in range(len(types))]
            statement.param_types = types
        self.statements[message.name] = statement
        self.send(m.PARSE_COMPLETE)

    def bind(self, message: m.Bind) -> None:
        statement = self.statements.get(message.statement)
        if statement is None:
            raise Failed("26000", f'prepared statement "{message.statement}" does not exist')
        if self.status == "E" and statement.kind not in ("commit", "rollback"):
            raise Failed("25P02", "current transaction is aborted, commands ignored until end of transaction block")
        formats = message.param_formats
        if len(message.params) != len(statement.param_types) and statement.kind == "query":
            raise Failed("08P01", f"bind message supplies {len(message.params)} parameters, "
                                  f"but prepared statement requires {len(statement.param_types)}")
        if len(formats) not in (0, 1, len(message.params)):
            raise Failed("08P01", "wrong number of parameter formats")
        values = []
        for i, data in enumerate(message.params):
            fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
            oid = statement.param_types[i] if i < len(statement.param_types) else t.TEXT
            values.append(t.decode_parameter(data, oid, fmt))
        if message.portal and message.portal in self.portals:
            raise Failed("42P03", f'cursor "{message.portal}" already exists')
        self.portals[message.portal] = Portal(statement, values, message.result_formats)
        self.send(m.BIND_COMPLETE)

    async def describe(self, message: m.Describe) -> None:
        if message.kind == "S":
            statement = self.statements.get(message.name)
            if statement is None:
                raise Failed("26000", f'prepared statement "{message.name}" does not exist')
            oids, fields = await self.describe_statement(statement)
            self.send(m.parameter_description(oids))
            self.send(m.row_description(fields) if fields else m.NO_DATA)
            return
        portal = self.portals.get(message.name)
        if portal is None:
            raise Failed("34000", f'portal "{message.name}" does not exist')
        fields = await self.portal_fields(portal)
        portal.described = True
        self.send(m.row_description(fields) if fields else m.NO_DATA)

    async def execute(self, message: m.Execute) -> None:
        portal = self.portals.get(message.portal)
        if portal is None:
            raise Failed("34000", f'portal "{message.portal}" does not exist')
        await self.run_portal(portal, message.max_rows, describe=False)

    # -- running ----------------------------------------------------------------------
    def _column_types(self) -> dict[str, dict[str, int]]:
        key = ("columns", self.user, self.database, self._policy_version())
        cached = self.server.describe_cache.get(key)
        if cached is None:
            try:
                tables = self.engine.tables(self.user, self.database)
            except GatewayError:
                tables = []
            cached = {table.name: {c.name: t.duckdb_type_oid(c.type) for c in table.columns} for table in tables}
            self.server.describe_cache[key] = cached
        return cached

    def _policy_version(self) -> str:
        room = self.engine.cleanrooms.get(self.database)
        return getattr(room, "version", "")

    async def describe_statement(self, statement: Statement) -> tuple[list[int], list[m.Field] | None]:
        if statement.kind == "show":
            return [], [m.Field(show_name(statement.sql), t.TEXT)]
        if statement.kind != "query":
            return list(statement.param_types), None
        key = ("describe", self.user, self.database, self._policy_version(), statement.sql, tuple(statement.param_types))
        cached = self.server.describe_cache.get(key)
        if cached is None:
            dummies = [dummy_value(oid) for oid in statement.param_types]
            request = QueryRequest(user=self.user, cleanroom=self.database, sql=statement.sql, params=dummies,
                                   front_end="pgwire")
            schema = await self.io.run(self.engine.describe, request)
            fields = [m.Field(f.name, t.arrow_type_oid(f.type), t.TYPE_SIZES.get(t.arrow_type_oid(f.type), -1),
                              t.type_modifier(f.type)) for f in schema]
            cached = (list(statement.param_types), fields)
            if len(self.server.describe_cache) > 10_000:
                self.server.describe_cache.clear()
            self.server.describe_cache[key] = cached
        return cached[0], cached[1]

    async def portal_fields(self, portal: Portal) -> list[m.Field] | None:
        kind = portal.statement.kind
        if kind == "show":
            await self.run_show(portal)
        elif kind == "query" and portal.release is None:
            await self.run_query(portal)
        if portal.release is None:
            return None
        return portal.fields

    async def run_query(self, portal: Portal) -> None:
        request = QueryRequest(user=self.user, cleanroom=self.database, sql=portal.statement.sql,
                               params=list(portal.params), front_end="pgwire")
        self.running = request.request_id
        try:
            release = await self.io.run(self.engine.run, request)
        finally:
            self.running = None
        self._set_release(portal, release)

    def _set_release(self, portal: Portal, release: Release) -> None:
        table = release.table
        formats = portal.result_formats
        fields = []
        for i, f in enumerate(table.schema):
            oid = t.arrow_type_oid(f.type)
            fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
            if fmt == 1 and oid not in t.BINARY_OIDS:
                fmt = 0
            fields.append(m.Field(f.name, oid, t.TYPE_SIZES.get(oid, -1), t.type_modifier(f.type), fmt))
        portal.release, portal.fields = release, fields
        for notice in release.notices:  # how the result was protected, before its rows
            self.send(m.notice_response(notice))
        portal.batches = table.to_batches(max_chunksize=ROWS_PER_CHUNK)

    async def run_show(self, portal: Portal) -> None:
        name = show_name(portal.statement.sql)
        if name.lower() == "all":
            rows = sorted(self.params.items())
            table = pa.table({"name": [k for k, _ in rows], "setting": [v for _, v in rows],
                              "description": [""] * len(rows)})
        else:
            canonical = _CANONICAL.get(name.lower(), name)
            if canonical not in self.params:
                raise Failed("42704", f'unrecognized configuration parameter "{name}"')
            table = pa.table({name.lower(): [self.params[canonical]]})
        self._set_release(portal, Release(new_request_id(), table, "session", None))

    async def run_portal(self, portal: Portal, max_rows: int, describe: bool) -> None:
        statement = portal.statement
        kind = statement.kind
        if kind == "empty":
            self.send(m.EMPTY_QUERY)
            return
        if kind in ("begin", "commit", "rollback"):
            if kind == "begin":
                if self.status == "T":
                    self.send(m.notice_response("there is already a transaction in progress", "25001"))
                self.status = "T" if self.status == "I" else self.status
                self.send(m.command_complete("BEGIN"))
            else:
                tag = "ROLLBACK" if kind == "rollback" or self.status == "E" else "COMMIT"
                self.status = "I"
                self.send(m.command_complete(tag))
            return
        if kind == "set":
            self.apply_set(statement.sql)
            self.send(m.command_complete("SET"))
            return
        if kind in ("noop", "deallocate"):
            if kind == "deallocate":
                target = statement.sql.split()[-1].strip(';"') if len(statement.sql.split()) > 1 else ""
                if target.lower() == "all":
                    self.statements = {k: v for k, v in self.statements.items() if not k}
                else:
                    self.statements.pop(target, None)
            self.send(m.command_complete(noop_tag(statement.sql)))
            return
        if kind == "copy":
            await self.run_copy(portal)
            return
        if portal.release is None:
            if kind == "show":
                await self.run_show(portal)
            else:
                await self.run_query(portal)
        if describe and portal.fields is not None:
            self.send(m.row_description(portal.fields))
        await self.stream(portal, max_rows)

    async def run_copy(self, portal: Portal) -> None:
        """COPY (query) TO STDOUT: the query is an ordinary statement for the engine; only
        the output framing differs (CopyOutResponse, CopyData..., CopyDone)."""
        match = COPY_RE.match(_strip_comments(portal.statement.sql))
        inner, options = match.group(1), match.group(2).lower()
        csv = bool(re.search(r"\bcsv\b", options))
        header = csv and bool(re.search(r"\bheader\b(?!\s+(false|off|0)\b)", options))
        request = QueryRequest(user=self.user, cleanroom=self.database, sql=inner, params=list(portal.params),
                               front_end="pgwire")
        self.running = request.request_id
        try:
            release = await self.io.run(self.engine.run, request)
        finally:
            self.running = None
        for notice in release.notices:
            self.send(m.notice_response(notice))
        table = release.table
        self.send(m.copy_out_response(table.num_columns))
        batches = table.to_batches(max_chunksize=ROWS_PER_CHUNK) or [pa.RecordBatch.from_pylist([], schema=table.schema)]
        for index, batch in enumerate(batches):
            if csv:
                data = await self.io.run(t.encode_copy_csv, batch, header and index == 0)
            else:
                data = await self.io.run(t.encode_copy_text, batch)
            if data:
                self.send(data)  # already framed as CopyData messages, one per row
            if sum(len(x) for x in self.out) > 256 * 1024:
                await self.flush()
        self.send(m.COPY_DONE)
        self.send(m.command_complete(f"COPY {table.num_rows}"))

    async def stream(self, portal: Portal, max_rows: int) -> None:
        oids = [f.type_oid for f in portal.fields]
        formats = [f.format for f in portal.fields]
        budget = max_rows if max_rows > 0 else None
        sent_now = 0
        pending: list[tuple[int, asyncio.Future | bytes]] = []  # encodings under way, in order

        def next_batch() -> pa.RecordBatch | None:
            nonlocal sent_now
            if not portal.batches or (budget is not None and sent_now >= budget):
                return None
            batch = portal.batches[0]
            take = batch.num_rows if budget is None else min(batch.num_rows, budget - sent_now)
            if take < batch.num_rows:
                portal.batches[0] = batch.slice(take)
                batch = batch.slice(0, take)
            else:
                portal.batches.pop(0)
            sent_now += batch.num_rows
            return batch

        def schedule() -> None:
            # Large results: encode up to two batches ahead in the thread pool (pyarrow
            # releases the GIL) while the previous one is written to the client.
            while len(pending) < 2:
                batch = next_batch()
                if batch is None:
                    return
                if batch.num_rows > t.SMALL_BATCH:
                    work = asyncio.get_running_loop().run_in_executor(self.io.pool, t.encode_batch, batch, oids, formats) \
                        if hasattr(self.io, "pool") else None
                    pending.append((batch.num_rows, work if work is not None else t.encode_batch(batch, oids, formats)))
                else:
                    pending.append((batch.num_rows, t.encode_batch(batch, oids, formats)))

        try:
            schedule()
            while pending:
                rows, work = pending.pop(0)
                data = await work if isinstance(work, asyncio.Future) else work
                schedule()
                self.send(data)
                portal.sent += rows
                if sum(len(x) for x in self.out) > 256 * 1024:
                    await self.flush()  # backpressure: wait for the client before encoding more
        finally:
            for _, work in pending:
                if isinstance(work, asyncio.Future):
                    work.cancel()
        if portal.batches:
            self.send(m.PORTAL_SUSPENDED)
            return
        self.send(m.command_complete(f"SELECT {portal.sent}"))

    def apply_set(self, sql: str) -> None:
        match = SET_RE.match(sql)
        if not match:
            return  # SET TRANSACTION / SESSION CHARACTERISTICS ...: nothing to change on a read-only engine
        name, value = match.group(1), match.group(2).strip().rstrip(";").strip()
        if value.lower() == "default" or name.lower() in ("local",):
            value = DEFAULTS.get(_CANONICAL.get(name.lower(), name), "")
        value = ", ".join(_unquote(v.strip()) for v in _split_commas(value)) if value else value
        canonical = _CANONICAL.get(name.lower(), name)
        if canonical.lower() in ("client_encoding",) and value.upper().replace("-", "") not in ("UTF8", "UNICODE"):
            raise Failed("22023", f"client_encoding {value} is not supported: use UTF8")
        if canonical == "client_encoding":
            value = "UTF8"
        self.params[canonical] = value
        if canonical in REPORTED:
            self.send(m.parameter_status(canonical, value))


# -- statement helpers (front-end translation, no policy) ------------------------------

SET_RE = re.compile(r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?(?!TRANSACTION\b|SESSION\s+CHARACTERISTICS\b)"
                    r"([A-Za-z_][\w.]*)\s*(?:=|\bTO\b)\s*(.*)$", re.IGNORECASE | re.DOTALL)
# COPY (SELECT ...) TO STDOUT [WITH] [(FORMAT csv, HEADER ...)]: the inner query goes to the engine.
COPY_RE = re.compile(r"^\s*COPY\s*\((.*)\)\s*TO\s+STDOUT\b(.*?);?\s*$", re.IGNORECASE | re.DOTALL)
TIME_ZONE_RE = re.compile(r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?TIME\s+ZONE\s+(.*)$", re.IGNORECASE | re.DOTALL)


def _split_commas(value: str) -> list[str]:
    return [part for part in re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", value)]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace(value[0] * 2, value[0])
    return value


def classify(sql: str) -> str:
    words = re.findall(r"[A-Za-z_]+", _strip_comments(sql)[:200])
    if not words:
        return "empty"
    first = words[0].upper()
    second = words[1].upper() if len(words) > 1 else ""
    if first in ("BEGIN",) or (first == "START" and second == "TRANSACTION"):
        return "begin"
    if first in ("COMMIT", "END") or (first == "COMMIT" and second == "PREPARED"):
        return "commit"
    if first in ("ROLLBACK", "ABORT"):
        return "rollback"
    if first == "SET":
        return "set"
    if first == "SHOW":
        return "show"
    if first in ("RESET", "DISCARD", "UNLISTEN") or (first == "SAVEPOINT") or (first == "RELEASE"):
        return "noop"
    if first == "DEALLOCATE":
        return "deallocate"
    if first == "COPY" and COPY_RE.match(_strip_comments(sql)):
        return "copy"
    return "query"


def noop_tag(sql: str) -> str:
    words = _strip_comments(sql).split()
    first = words[0].upper().rstrip(";") if words else ""
    return {"DISCARD": "DISCARD ALL" if len(words) > 1 and words[1].upper().startswith("ALL") else "DISCARD",
            "RESET": "RESET", "UNLISTEN": "UNLISTEN", "SAVEPOINT": "SAVEPOINT", "RELEASE": "RELEASE",
            "DEALLOCATE": "DEALLOCATE"}.get(first, first)


def show_name(sql: str) -> str:
    words = _strip_comments(sql).strip().rstrip(";").split(None, 1)
    name = words[1].strip() if len(words) > 1 else ""
    if name.lower().replace(" ", "") in ("transactionisolationlevel",):
        return "transaction_isolation"
    if name.lower().replace(" ", "") == "timezone":
        return "TimeZone"
    return _unquote(name)


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL).strip()


def split_statements(sql: str) -> list[str]:
    """The statements of a simple Query, split on top-level semicolons."""
    if ";" not in sql:
        return [sql] if _strip_comments(sql) else []
    try:
        tokens = sqlglot.Dialect.get_or_raise("postgres").tokenize(sql)
    except SqlglotError:
        return [sql]
    pieces, start = [], 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            pieces.append(sql[start : token.start])
            start = token.end + 1
    pieces.append(sql[start:])
    return [p for p in pieces if _strip_comments(p)]


_PARAM_RE = re.compile(r"\$(\d+)")


def parameter_count(sql: str) -> int:
    numbers = [int(n) for n in _PARAM_RE.findall(re.sub(r"'(?:[^']|'')*'", "''", sql))]
    return max(numbers, default=0)


def infer_parameter_types(sql: str, count: int, columns: dict[str, dict[str, int]]) -> list[int]:
    """A type for each $n from what it is compared with or cast to; text when unknown."""
    types = [t.TEXT] * count
    if not count:
        return types
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except (SqlglotError, ValueError, RecursionError):
        return types
    aliases: dict[str, str] = {}
    for table in tree.find_all(exp.Table):
        aliases[(table.alias_or_name or "").lower()] = table.name.lower()
    by_column: dict[str, int] = {}
    for table, cols in columns.items():
        for name, oid in cols.items():
            by_column.setdefault(name.lower(), oid)

    def column_oid(node: exp.Expression) -> int | None:
        if isinstance(node, exp.Column):
            table = aliases.get(node.table.lower(), node.table.lower()) if node.table else None
            if table and table in columns:
                return columns[table].get(node.name) or columns[table].get(node.name.lower())
            return by_column.get(node.name.lower())
        return None

    for node in tree.find_all(exp.Parameter):
        name = node.name
        if not name.isdigit() or not (1 <= int(name) <= count):
            continue
        index = int(name) - 1
        parent = node.parent
        oid = None
        if isinstance(parent, (exp.Cast, exp.TryCast)):
            oid = t.duckdb_type_oid(parent.to.sql(dialect="duckdb"))
        elif isinstance(parent, (exp.Limit, exp.Offset, exp.Fetch)):
            oid = t.INT8
        elif isinstance(parent, exp.Binary):
            other = parent.expression if parent.this is node else parent.this
            oid = column_oid(other)
        elif isinstance(parent, exp.In):
            oid = column_oid(parent.this)
        elif isinstance(parent, exp.Between):
            oid = column_oid(parent.this)
        if oid:
            types[index] = oid
    return types


def dummy_value(oid: int):
    if oid in (t.INT2, t.INT4, t.INT8, t.OID):
        return 1
    if oid in (t.FLOAT4, t.FLOAT8):
        return 1.0
    if oid == t.NUMERIC:
        return Decimal(1)
    if oid == t.BOOL:
        return True
    if oid == t.DATE:
        return dt.date(2000, 1, 1)
    if oid in (t.TIMESTAMP, t.TIMESTAMPTZ):
        return dt.datetime(2000, 1, 1)
    return "x"
