"""What a session keeps between messages: prepared statements, portals, and the
protocol-level error that is not the engine's (a GatewayError is)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from gateway.engine.types import Release
from gateway.pgwire import messages as m


@dataclass
class Statement:
    name: str
    sql: str
    kind: str  # query | explain | empty | begin | commit | rollback | set | show | noop | deallocate | copy
    #   | declare | fetch | close (gateway.pgwire.cursors)
    param_types: list[int]
    described: tuple | None = None  # (parameter oids, fields or None), once known


@dataclass
class Portal:
    statement: Statement
    params: list
    result_formats: tuple[int, ...]
    release: Release | None = None
    fields: list[m.Field] | None = None
    encoded: object = None  # gateway.pgwire.results.EncodedFields of `fields` once known
    batches: list[pa.RecordBatch] | None = None
    whole: pa.Table | None = None  # the release's table while none of it is sent (EncodedAnswers)
    sent: int = 0  # rows sent so far (suspension)
    described: bool = False

    def take(self, limit: int | None = None) -> pa.RecordBatch | None:
        """The next batch of rows not yet taken, at most `limit` rows (None: no limit);
        None when there are none left or the limit is spent."""
        if not self.batches or (limit is not None and limit <= 0):
            return None
        batch = self.batches[0]
        if limit is not None and limit < batch.num_rows:
            self.batches[0] = batch.slice(limit)
            return batch.slice(0, limit)
        return self.batches.pop(0)


class Failed(Exception):
    """An error for the client that is not a GatewayError (protocol-level)."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.sqlstate, self.message, self.hint = sqlstate, message, hint


ABORTED = ("25P02", "current transaction is aborted, commands ignored until end of transaction block")
