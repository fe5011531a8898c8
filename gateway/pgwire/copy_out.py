"""COPY (query) TO STDOUT: the query is an ordinary statement for the engine;
only the output framing differs (CopyOutResponse, CopyData per row, CopyDone)."""

from __future__ import annotations

import re

import pyarrow as pa

from gateway.pgwire import messages as m
from gateway.pgwire import types as t
from gateway.pgwire.portal import Portal
from gateway.pgwire.results import FLUSH_BYTES, ROWS_PER_CHUNK
from gateway.pgwire.statements import COPY_RE, strip_comments


class CopyOut:
    async def run_copy(self, portal: Portal) -> None:
        match = COPY_RE.match(strip_comments(portal.statement.sql))
        inner, options = match.group(1), match.group(2).lower()
        csv = bool(re.search(r"\bcsv\b", options))
        header = csv and bool(re.search(r"\bheader\b(?!\s+(false|off|0)\b)", options))
        release = await self.run_engine(inner, list(portal.params))
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
            if self.buffered() > FLUSH_BYTES:
                await self.flush()
        self.send(m.COPY_DONE)
        self.send(m.command_complete(f"COPY {table.num_rows}"))
