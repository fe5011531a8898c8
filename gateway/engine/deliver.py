"""Pass, deliver (after release): a template that declares an output stores
its released result in the gateway's output store, for its receivers only, and
the caller gets a one-row receipt instead of the rows."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from gateway.collab.outputs import write
from gateway.engine.state import QueryState


def deliver(state: QueryState) -> QueryState:
    template = state.template
    if template is None or template.output is None or state.release is None:
        return state
    collab = state.context.collab
    release = state.release
    info = write(collab, state.cleanroom, template.name, state.authorisation.template_sha256, template.output.name,
                 template.output.receivers, release.table, release.request_id)
    receipt = pa.table({
        "output": [info.name], "output_id": [info.output_id], "rows": [info.num_rows],
        "receivers": [", ".join(info.receivers)], "expires_at": [info.as_json()["expires_at"]],
    })
    notice = f"result written to output {info.name} for {', '.join(info.receivers)}, kept until {info.as_json()['expires_at']}"
    return state.evolve(release=dataclasses.replace(release, table=receipt, notices=release.notices + (notice,)))
