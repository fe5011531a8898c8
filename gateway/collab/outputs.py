"""Template outputs: a result written into the gateway's own store instead of
being returned, readable only by the template's receivers, deleted once its
retention (from the config) is over.

The result stored is the released one, after the k threshold and every other
release step, so an output never holds more than a caller could have seen.
The locked engine database is never written: outputs live in the store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa

from gateway.errors import GatewayError
from gateway.policy.model import CleanRoom


class UnknownOutput(GatewayError):
    sqlstate = "42P01"
    http_status = 404
    title = "Unknown output"
    type_slug = "unknown-output"


@dataclass(frozen=True)
class OutputInfo:
    output_id: str
    cleanroom: str
    name: str
    template: str
    template_sha256: str
    receivers: tuple[str, ...]
    num_rows: int
    created_at: float
    expires_at: float
    request_id: str

    def as_json(self) -> dict:
        def iso(t):
            return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat()

        return {**dataclasses.asdict(self), "receivers": list(self.receivers),
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at)}


def _info(row: dict) -> OutputInfo:
    fields = {f.name for f in dataclasses.fields(OutputInfo)}
    return OutputInfo(**{**{k: v for k, v in row.items() if k in fields}, "receivers": tuple(json.loads(row["receivers"]))})


def write(collab, room: CleanRoom, template: str, digest: str | None, name: str, receivers, table: pa.Table,
          request_id: str, now: float | None = None) -> OutputInfo:
    now = time.time() if now is None else now
    purge(collab, now)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    info = OutputInfo(
        output_id=uuid.uuid4().hex[:16], cleanroom=room.name, name=name, template=template,
        template_sha256=digest or "", receivers=tuple(sorted(receivers)), num_rows=table.num_rows,
        created_at=now, expires_at=now + collab.output_retention_hours * 3600, request_id=request_id,
    )
    collab.store.execute(
        "INSERT INTO outputs (output_id, cleanroom, name, template, template_sha256, receivers, num_rows, "
        "created_at, expires_at, request_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (info.output_id, info.cleanroom, info.name, info.template, info.template_sha256,
         json.dumps(list(info.receivers)), info.num_rows, info.created_at, info.expires_at, info.request_id,
         sink.getvalue()),
    )
    return info


def purge(collab, now: float | None = None) -> int:
    """Delete outputs whose retention is over; how many were deleted."""
    now = time.time() if now is None else now
    return collab.store.execute("DELETE FROM outputs WHERE expires_at <= ?", (now,))


def _receiver(room: CleanRoom, user: str) -> str | None:
    return room.collaborator_of(user)


def list_outputs(collab, room: CleanRoom, user: str, now: float | None = None) -> list[OutputInfo]:
    """Outputs the user's collaborator receives; others' do not exist for it."""
    purge(collab, now)
    mine = _receiver(room, user)
    rows = collab.store.query(
        "SELECT output_id, cleanroom, name, template, template_sha256, receivers, num_rows, created_at, "
        "expires_at, request_id FROM outputs WHERE cleanroom = ? ORDER BY created_at DESC", (room.name,))
    return [info for info in map(_info, rows) if mine is not None and mine in info.receivers]


def read_output(collab, room: CleanRoom, user: str, name: str, now: float | None = None) -> tuple[OutputInfo, pa.Table]:
    """The newest unexpired output `name` (or output id) the user's collaborator receives."""
    for info in list_outputs(collab, room, user, now):
        if name in (info.name, info.output_id):
            (row,) = collab.store.query("SELECT data FROM outputs WHERE output_id = ?", (info.output_id,))
            with pa.ipc.open_stream(bytes(row["data"])) as reader:
                return info, reader.read_all()
    # Not yours looks the same as absent: output names are not for everyone.
    raise UnknownOutput(f"no output named {name!r}", rule="output.unknown")
