"""The extended query protocol: Parse, Bind, Describe and Execute (Close, Sync
and Flush are in the session's dispatch).

A statement is described without touching the private data: the engine checks
it with stand-in parameter values and binds the SQL it would run (LIMIT 0).
Descriptions are cached per user, clean room, policy version and text.
"""

from __future__ import annotations

import sqlglot
from sqlglot.errors import SqlglotError

from gateway import pgtypes
from gateway.pgtypes import parameter_oid
from gateway.engine.parse import TemplateCall, template_call
from gateway.engine.types import QueryRequest
from gateway.errors import GatewayError
from gateway.pgwire import messages as m
from gateway.pgwire import types as t
from gateway.pgwire.declared import field_oids
from gateway.pgwire.ids import request_id
from gateway.pgwire.parameters import dummy_value, infer_parameter_types, sample_value
from gateway.pgwire.privacy import BUDGET_SCHEMA, PLAN_SCHEMA, explain_target, is_budget
from gateway.pgwire.portal import ABORTED, Failed, Portal, Statement
from gateway.pgwire.settings import intervals_on, show_name
from gateway.pgwire.statements import classify, parameter_count, split_statements

MAX_CACHED_DESCRIPTIONS = 10_000


class ExtendedQuery:
    def parse(self, message: m.Parse) -> None:
        if message.name and message.name in self.statements:
            raise Failed("42P05", f'prepared statement "{message.name}" already exists')
        if len(split_statements(message.sql)) > 1:
            raise Failed("42601", "cannot insert multiple commands into a prepared statement")
        statement = Statement(message.name, message.sql, classify(message.sql), list(message.param_types))
        if statement.kind in ("query", "explain"):
            count = parameter_count(message.sql)
            types = statement.param_types + [0] * max(0, count - len(statement.param_types))
            if 0 in types or pgtypes.UNKNOWN in types:
                sql = explain_target(message.sql)[0] if statement.kind == "explain" else message.sql
                call = self._template_call(sql)
                if call is not None:  # a template's $n take its declared parameter types
                    inferred = [_parameter_oid(call, i + 1) for i in range(count)]
                else:
                    inferred = infer_parameter_types(sql, count, self._column_types())
                types = [inferred[i] if types[i] in (0, pgtypes.UNKNOWN) else types[i] for i in range(len(types))]
            statement.param_types = types
        self.statements[message.name] = statement
        self.send(m.PARSE_COMPLETE)

    def bind(self, message: m.Bind) -> None:
        statement = self.statements.get(message.statement)
        if statement is None:
            raise Failed("26000", f'prepared statement "{message.statement}" does not exist')
        if self.status == "E" and statement.kind not in ("commit", "rollback"):
            raise Failed(*ABORTED)
        formats = message.param_formats
        if len(message.params) != len(statement.param_types) and statement.kind in ("query", "explain"):
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
            encoded = statement.described
            if encoded is None or encoded[0] is not oids or encoded[1] is not fields:
                # statement descriptions come from describe_cache, which is keyed by the policy version:
                # the encoded messages are reused only while the very same description is
                encoded = (oids, fields, m.parameter_description(oids) + (m.row_description(fields) if fields else m.NO_DATA))
                statement.described = encoded
            self.send(encoded[2])
            return
        portal = self.portals.get(message.name)
        if portal is None and message.name in self.cursors:  # a DECLAREd cursor is a portal too (psycopg asks)
            portal = self.cursors[message.name].portal
        if portal is None:
            raise Failed("34000", f'portal "{message.name}" does not exist')
        fields = await self.portal_fields(portal)
        portal.described = True
        self.send(portal.encoded.row_description if fields else m.NO_DATA)

    async def execute(self, message: m.Execute) -> None:
        portal = self.portals.get(message.portal)
        if portal is None:
            raise Failed("34000", f'portal "{message.portal}" does not exist')
        await self.run_portal(portal, message.max_rows, describe=False)

    def _column_types(self) -> dict[str, dict[str, int]]:
        """Column OIDs of the tables this user may query, for parameter type inference."""
        key = ("columns", self.user, self.database, self._policy_version())
        cached = self.server.describe_cache.get(key)
        if cached is None:
            try:
                tables = self.engine.tables(self.user, self.database)
            except GatewayError:
                tables = []
            cached = {table.name: {c.name: pgtypes.duckdb_type_oid(c.type) for c in table.columns} for table in tables}
            self.server.describe_cache[key] = cached
        return cached

    def _template_call(self, sql: str) -> TemplateCall | None:
        """`SELECT * FROM template(...)` for a template this user may run (gateway.engine.parse), else None."""
        key = ("template-call", self.user, self.database, self._policy_version(), sql)
        if key in self.server.describe_cache:
            return self.server.describe_cache[key]
        call = None
        room = self.engine.cleanrooms.get(self.database)
        analyst = room.analysts.get(self.user) if room is not None else None
        if analyst is not None and analyst.templates:
            try:
                call = template_call(sqlglot.parse_one(sql, read="postgres"), room, analyst.templates)
            except (GatewayError, SqlglotError, ValueError, RecursionError):
                call = None  # the engine reports what is wrong when the statement runs
        self.server.describe_cache[key] = call
        return call

    def _policy_version(self) -> str:
        room = self.engine.cleanrooms.get(self.database)
        return getattr(room, "version", "")

    async def describe_statement(self, statement: Statement) -> tuple[list[int], list[m.Field] | None]:
        if statement.kind == "show":
            name = show_name(statement.sql)
            if is_budget(name):
                return [], _fields(BUDGET_SCHEMA)
            return [], [m.Field(name, t.TEXT)]
        if statement.kind == "explain":
            explain_target(statement.sql)  # ANALYZE and unknown formats fail here already
            return list(statement.param_types), _fields(PLAN_SCHEMA)
        if statement.kind == "fetch":
            fetched = self.fetched(statement.sql)
            return [], fetched.fields if fetched is not None else None
        if statement.kind != "query":
            return list(statement.param_types), None
        key = ("describe", self.user, self.database, self._policy_version(), statement.sql, tuple(statement.param_types))
        cached = self.server.describe_cache.get(key)
        if cached is None:
            dummies = [dummy_value(oid) for oid in statement.param_types]
            call = self._template_call(statement.sql)
            if call is not None:  # stand-ins a template accepts: its declared values and ranges
                declared = {p.name: p for p in call.template.parameters}
                for i in range(len(dummies)):
                    name = call.parameter_of(i + 1)
                    if name is not None:
                        dummies[i] = sample_value(declared[name], statement.param_types[i])
            request = QueryRequest(user=self.user, cleanroom=self.database, sql=statement.sql, params=dummies,
                                   front_end="pgwire", request_id=request_id(), intervals=intervals_on(self.params))
            schema = await self.io.run(self.engine.describe, request)
            declared = await self.declared_types(statement.sql, dummies, schema)
            fields = []
            for field, oid in zip(schema, field_oids(schema, declared)):
                fields.append(m.Field(field.name, oid, pgtypes.TYPE_SIZES.get(oid, -1), t.type_modifier(field.type)))
            cached = (list(statement.param_types), fields)
            if len(self.server.describe_cache) > MAX_CACHED_DESCRIPTIONS:
                self.server.describe_cache.clear()
            self.server.describe_cache[key] = cached
        return cached[0], cached[1]

    async def portal_fields(self, portal: Portal) -> list[m.Field] | None:
        kind = portal.statement.kind
        if kind == "fetch":
            fetched = self.fetched(portal.statement.sql)
            if fetched is None:
                return None
            portal.encoded = fetched.encoded
            return fetched.fields
        if kind == "show":
            await self.run_show(portal)
        elif kind == "explain" and portal.release is None:
            await self.run_explain(portal)
        elif kind == "query" and portal.release is None:
            await self.run_query(portal)
        if portal.release is None:
            return None
        return portal.fields


def _parameter_oid(call: TemplateCall, number: int) -> int:
    name = call.parameter_of(number)
    declared = {p.name: p for p in call.template.parameters}
    return parameter_oid(declared[name]) if name in declared else t.TEXT


def _fields(schema) -> list[m.Field]:
    return [m.Field(f.name, oid, pgtypes.TYPE_SIZES.get(oid, -1)) for f, oid in ((f, t.field_oid(f)) for f in schema)]
