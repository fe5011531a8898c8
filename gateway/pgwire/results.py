"""Running a portal and streaming its rows.

Rows are encoded from Arrow batches (gateway.pgwire.types), up to two batches
ahead in the thread pool while the previous one is written, and the session
waits for the client (drain) every 256 KiB: a large result never sits whole in
the socket buffer, and a slow client slows only its own session.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import pyarrow as pa

from gateway import pgtypes
from gateway.engine.types import QueryRequest, Release
from gateway.pgwire import messages as m
from gateway.pgwire import types as t
from gateway.pgwire.declared import declared_oids, field_oids, needs_lookup
from gateway.pgwire.commands import SESSION_KINDS
from gateway.pgwire.cursors import CURSOR_KINDS
from gateway.pgwire.ids import request_id
from gateway.pgwire.portal import Failed, Portal
from gateway.pgwire.privacy import budget_table, explain_target, is_budget, plan_table
from gateway.pgwire.settings import canonical, intervals_on, show_name

ROWS_PER_CHUNK = 65_536
FLUSH_BYTES = 256 * 1024
ENCODE_AHEAD = 2
MAX_CACHED_DESCRIPTIONS = 10_000  # batches being encoded while one is written


class Results:
    async def run_portal(self, portal: Portal, max_rows: int, describe: bool) -> None:
        kind = portal.statement.kind
        if kind == "empty":
            self.send(m.EMPTY_QUERY)
            return
        if kind in SESSION_KINDS:
            self.run_command(portal.statement)
            return
        if kind == "copy":
            await self.run_copy(portal)
            return
        if kind in CURSOR_KINDS:
            await self.run_cursor_command(portal, describe)
            return
        if portal.release is None:
            if kind == "show":
                await self.run_show(portal)
            elif kind == "explain":
                await self.run_explain(portal)
            else:
                await self.run_query(portal)
        if describe and portal.fields is not None:
            self.send(portal.encoded.row_description)
        await self.stream(portal, max_rows)

    async def run_engine(self, sql: str, params: list) -> Release:
        """A statement through the engine, cancellable by a CancelRequest meanwhile."""
        request = QueryRequest(user=self.user, cleanroom=self.database, sql=sql, params=params, front_end="pgwire",
                               request_id=request_id(), intervals=intervals_on(self.params))
        self.running = request.request_id
        try:
            if self.engine.runs_in_memory(request):  # a pool's `SELECT 1`, a kept replay: no thread needed
                try:
                    release, audited = self.engine.submit(request)
                except Exception as error:  # refused on the loop: its record is durable before the error leaves
                    recorded = getattr(error, "audit_record", None)
                    if recorded is not None:
                        await self.io.wait(recorded)
                    raise
            else:
                release, audited = await self.io.run(self.engine.submit_committed, request)
            await self.io.wait(audited)  # the audit record is durable before any row leaves
            return release
        finally:
            self.running = None

    async def run_query(self, portal: Portal) -> None:
        params = list(portal.params)
        release = await self.run_engine(portal.statement.sql, params)
        schema = release.table.schema
        # The fields (and their RowDescription) follow from the schema the engine just returned, the
        # result formats and the declared uuid/json types of this text: encoded once per policy version.
        key = ("fields", self.user, self.database, self._policy_version(), portal.statement.sql,
               tuple(type(p).__name__ for p in params), release.authorised_by in ("catalog", "session"),
               portal.result_formats, schema)
        encoded = self.server.describe_cache.get(key)
        if encoded is None:
            declared = await self.declared_types(portal.statement.sql, params, schema, release.authorised_by)
            encoded = _encode_fields(schema, portal.result_formats, declared)
            if len(self.server.describe_cache) > MAX_CACHED_DESCRIPTIONS:
                self.server.describe_cache.clear()
            self.server.describe_cache[key] = encoded
        self._set_release(portal, release, encoded=encoded)

    async def declared_types(self, sql: str, params: list, schema: pa.Schema, authorised_by: str = "") -> dict | None:
        """uuid/json/jsonb columns that Arrow carries as strings (gateway.pgwire.declared), once per text."""
        if authorised_by in ("catalog", "session") or not needs_lookup(schema):
            return None
        key = ("declared", self.user, self.database, self._policy_version(), sql, tuple(type(p).__name__ for p in params),
               intervals_on(self.params))
        cached = self.server.describe_cache.get(key)
        if cached is None:
            request = QueryRequest(user=self.user, cleanroom=self.database, sql=sql, params=params, front_end="pgwire",
                                   request_id=request_id(), intervals=intervals_on(self.params))
            cached = await self.io.run(declared_oids, self.engine, request)
            if len(self.server.describe_cache) > MAX_CACHED_DESCRIPTIONS:
                self.server.describe_cache.clear()
            self.server.describe_cache[key] = cached
        return cached

    def _set_release(self, portal: Portal, release: Release, declared: dict | None = None,
                     encoded: "EncodedFields | None" = None) -> None:
        table = release.table
        if encoded is None:
            encoded = _encode_fields(table.schema, portal.result_formats, declared)
        portal.release, portal.fields, portal.encoded = release, encoded.fields, encoded
        if release.notices:  # how the result was protected, before its rows
            self.send(self.server.answers.notices(release.notices))
        portal.batches = table.to_batches(max_chunksize=ROWS_PER_CHUNK)
        portal.whole = table

    async def run_show(self, portal: Portal) -> None:
        name = show_name(portal.statement.sql)
        if is_budget(name):
            budget = getattr(self.engine, "budget", None)
            if budget is None:
                raise Failed("0A000", "this gateway does not report privacy budgets")
            table = budget_table(await self.io.run(budget, self.user, self.database))
            self._set_release(portal, Release(request_id(), table, "session", None))
            return
        if name.lower() == "all":
            rows = sorted(self.params.items())
            table = pa.table({"name": [k for k, _ in rows], "setting": [v for _, v in rows],
                              "description": [""] * len(rows)})
        else:
            if canonical(name) not in self.params:
                raise Failed("42704", f'unrecognized configuration parameter "{name}"')
            table = pa.table({name.lower(): [self.params[canonical(name)]]})
        self._set_release(portal, Release(request_id(), table, "session", None))

    async def run_explain(self, portal: Portal) -> None:
        """EXPLAIN <select>: Engine.explain's account of the statement (cost, protection), nothing run."""
        explain = getattr(self.engine, "explain", None)
        if explain is None:
            raise Failed("0A000", "this gateway does not explain statements")
        target, form = explain_target(portal.statement.sql)
        request = QueryRequest(user=self.user, cleanroom=self.database, sql=target, params=list(portal.params),
                               front_end="pgwire", request_id=request_id(), intervals=intervals_on(self.params))
        table = plan_table(await self.io.run(explain, request), form)
        self._set_release(portal, Release(request.request_id, table, "session", None))

    async def stream(self, portal: Portal, max_rows: int) -> None:
        """The portal's rows, up to max_rows (0: all), then PortalSuspended or CommandComplete."""
        await self.send_rows(portal, max_rows)
        if portal.batches:
            self.send(m.PORTAL_SUSPENDED)
            return
        self.send(m.command_complete(f"SELECT {portal.sent}"))

    async def send_rows(self, portal: Portal, max_rows: int) -> int:
        """DataRows for up to max_rows (0: all) of the portal's rows not sent yet; how many."""
        oids, formats = portal.encoded.oids, portal.encoded.formats
        budget = max_rows if max_rows > 0 else None
        whole, portal.whole = portal.whole, None
        if whole is not None and portal.sent == 0 and (budget is None or budget >= whole.num_rows):
            encoded = self.server.answers.rows(whole, oids, formats)  # a small answer, maybe a repeat's
            if encoded is not None:
                portal.batches = []
                self.send(encoded)
                portal.sent = whole.num_rows
                return whole.num_rows
        sent_now = 0
        pending: list[tuple[int, asyncio.Future | bytes]] = []  # encodings under way, in order

        def schedule() -> None:
            nonlocal sent_now
            # pyarrow releases the GIL, so large batches encode in the pool while we write.
            while len(pending) < ENCODE_AHEAD:
                batch = portal.take(None if budget is None else budget - sent_now)
                if batch is None:
                    return
                sent_now += batch.num_rows
                if batch.num_rows > t.SMALL_BATCH and hasattr(self.io, "pool"):
                    work = asyncio.get_running_loop().run_in_executor(self.io.pool, t.encode_batch, batch, oids, formats)
                    pending.append((batch.num_rows, work))
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
                if self.buffered() > FLUSH_BYTES:
                    await self.flush()  # backpressure: wait for the client before encoding more
        finally:
            for _, work in pending:
                if isinstance(work, asyncio.Future):
                    work.cancel()
        return sent_now


class EncodedFields(NamedTuple):
    """A result's fields and what is derived from them: the RowDescription message, OIDs and formats."""

    fields: list[m.Field]
    row_description: bytes
    oids: list[int]
    formats: list[int]


def _encode_fields(schema: pa.Schema, formats: tuple[int, ...], declared: dict | None) -> EncodedFields:
    fields = []
    oids = field_oids(schema, declared)
    for i, f in enumerate(schema):
        oid = oids[i]
        fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
        if fmt == 1 and oid not in t.BINARY_OIDS:
            fmt = 0
        fields.append(m.Field(f.name, oid, pgtypes.TYPE_SIZES.get(oid, -1), t.type_modifier(f.type), fmt))
    return EncodedFields(fields, m.row_description(fields), [f.type_oid for f in fields], [f.format for f in fields])
