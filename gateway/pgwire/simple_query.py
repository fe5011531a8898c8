"""The simple query protocol: one Query message, possibly several statements,
each described and run in turn, then one ReadyForQuery."""

from __future__ import annotations

from gateway.pgwire import messages as m
from gateway.pgwire.portal import ABORTED, Failed, Portal, Statement
from gateway.pgwire.statements import classify, split_statements


class SimpleQuery:
    async def simple_query(self, sql: str) -> None:
        pieces = split_statements(sql)
        if not pieces:
            self.send(m.EMPTY_QUERY)
        for piece in pieces:
            statement = Statement("", piece, classify(piece), [])
            portal = Portal(statement, [], ())
            try:
                if self.status == "E" and statement.kind not in ("commit", "rollback"):
                    raise Failed(*ABORTED)
                await self.run_portal(portal, 0, describe=True)
            except Exception:
                if self.status == "T":
                    self.status = "E"
                raise
            if len(self.out) > 16:
                await self.flush()
        self.send(m.ready_for_query(self.status))
