"""Statements the session answers itself, because in PostgreSQL too they are
session state: transaction control (no-ops on a read-only engine, but the
transaction status clients track is kept), SET, DEALLOCATE, DISCARD and the like."""

from __future__ import annotations

from gateway.pgwire import messages as m
from gateway.pgwire.portal import Failed, Statement
from gateway.pgwire.settings import REPORTED, BadSetting, parse_set
from gateway.pgwire.statements import noop_tag

SESSION_KINDS = ("begin", "commit", "rollback", "set", "noop", "deallocate")


class SessionCommands:
    def run_command(self, statement: Statement) -> None:
        kind = statement.kind
        if kind == "begin":
            if self.status == "T":
                self.send(m.notice_response("there is already a transaction in progress", "25001"))
            self.status = "T" if self.status == "I" else self.status
            self.send(m.command_complete("BEGIN"))
        elif kind in ("commit", "rollback"):
            tag = "ROLLBACK" if kind == "rollback" or self.status == "E" else "COMMIT"
            self.status = "I"
            self.end_transaction()
            self.send(m.command_complete(tag))
        elif kind == "set":
            self.apply_set(statement.sql)
            self.send(m.command_complete("SET"))
        else:
            if kind == "deallocate":
                self._deallocate(statement.sql)
            self.send(m.command_complete(noop_tag(statement.sql)))

    def _deallocate(self, sql: str) -> None:
        target = sql.split()[-1].strip(';"') if len(sql.split()) > 1 else ""
        if target.lower() == "all":
            self.statements = {k: v for k, v in self.statements.items() if not k}
        else:
            self.statements.pop(target, None)

    def apply_set(self, sql: str) -> None:
        try:
            setting = parse_set(sql)
        except BadSetting as error:
            raise Failed("22023", str(error)) from None
        if setting is None:
            return  # SET TRANSACTION / SESSION CHARACTERISTICS ...: nothing to change on a read-only engine
        name, value = setting
        self.params[name] = value
        if name in REPORTED:
            self.send(m.parameter_status(name, value))
