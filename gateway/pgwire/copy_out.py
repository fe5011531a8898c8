"""COPY (query) TO STDOUT: the query is an ordinary statement for the engine;
only the output framing differs (CopyOutResponse, CopyData per row, CopyDone)."""

from __future__ import annotations

import re
import struct

import pyarrow as pa
import pyarrow.compute as pc

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
                data = await self.io.run(encode_copy_csv, batch, header and index == 0)
            else:
                data = await self.io.run(encode_copy_text, batch)
            if data:
                self.send(data)  # already framed as CopyData messages, one per row
            if self.buffered() > FLUSH_BYTES:
                await self.flush()
        self.send(m.COPY_DONE)
        self.send(m.command_complete(f"COPY {table.num_rows}"))


# -- the rows, as CopyData messages (vectorised, like gateway.pgwire.types' DataRows) --------------


def encode_copy_text(batch: pa.RecordBatch) -> bytes:
    """CopyData messages for COPY ... TO STDOUT text format: tab-separated, \\N for NULL, backslash escapes."""
    if batch.num_rows == 0:
        return b""
    columns = []
    for i, field in enumerate(batch.schema):
        cells = t.text_cells(batch.column(i), t.field_oid(field))
        for raw, escaped in ((b"\\", b"\\\\"), (b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r")):
            cells = pc.replace_substring(cells, raw, escaped)
        columns.append(pc.fill_null(cells, b"\\N"))
    lines = pc.binary_join_element_wise(*columns, pa.scalar(b"\n"), b"\t") if len(columns) > 1 else \
        pc.binary_join_element_wise(columns[0], pa.scalar(b"\n"), b"")
    if len(columns) > 1:  # the newline joined as a last column got a tab before it
        lines = pc.replace_substring_regex(lines, b"\t\n$", b"\n")
    return _copy_messages(lines)


def _copy_messages(lines: pa.Array) -> bytes:
    """One CopyData message per row, as PostgreSQL sends them (psycopg parses one row per message)."""
    lines = pc.cast(lines, pa.binary())
    prefix = t.big_endian(pc.cast(pc.add(pc.binary_length(lines), 4), pa.int32()), "i", 4)
    return _concat(pc.binary_join_element_wise(pa.scalar(b"d"), prefix, lines, b""))


def _concat(binary: pa.Array) -> bytes:
    offsets = binary.buffers()[1]
    start = struct.unpack_from("<i", offsets, binary.offset * 4)[0]
    end = struct.unpack_from("<i", offsets, (binary.offset + len(binary)) * 4)[0]
    return memoryview(binary.buffers()[2])[start:end].tobytes()


def encode_copy_csv(batch: pa.RecordBatch, header: bool) -> bytes:
    """CopyData messages for COPY ... TO STDOUT (FORMAT csv): PostgreSQL's text values, quoted when needed, NULL empty."""
    columns = []
    for i, field in enumerate(batch.schema):
        cells = pc.cast(t.text_cells(batch.column(i), t.field_oid(field)), pa.string())
        quoted = pc.binary_join_element_wise(pa.scalar('"'), pc.replace_substring(cells, '"', '""'), pa.scalar('"'), "")
        needs = pc.or_(pc.match_substring_regex(cells, '[",\\r\\n]'), pc.equal(pc.utf8_length(cells), 0))
        columns.append(pc.fill_null(pc.if_else(needs, quoted, cells), ""))
    head = (",".join(_csv_name(f.name) for f in batch.schema) + "\n").encode() if header else b""
    head = b"d" + struct.pack("!i", len(head) + 4) + head if head else b""
    if batch.num_rows == 0:
        return head
    lines = pc.binary_join_element_wise(*columns, ",") if len(columns) > 1 else columns[0]
    lines = pc.binary_join_element_wise(lines, pa.scalar("\n"), "")
    return head + _copy_messages(lines)


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in '",\r\n') or not name else name
