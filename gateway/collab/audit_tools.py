"""Reading the audit log: verify its chain, show its end, filter it for auditors.

The log itself (gateway.audit_log) is append-only and hash-chained;
these only read it.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

from gateway.audit_log import Anchor, verify


def verify_file(path: Path, store=None) -> tuple[list[str], int]:
    """(problems with line numbers, number of lines). Besides the chain, the log's
    end is checked against its anchor in `store` (gateway.collab.store.Store; by
    default the SQLite store beside the log, where one exists): records removed
    from the end, or the whole log emptied or deleted, leave a chain that is
    intact but shorter than its anchor."""
    path = Path(path)
    records = []
    if path.exists():
        with open(path, "rb") as f:
            records = [line for line in f if line.strip()]
    problems = verify(path) if records else []
    if store is None and not (path.parent / "collab.sqlite").exists():
        return problems, len(records)  # no anchor store to compare with
    anchor = Anchor(store, path)
    first, last = (_record(records[0]), _record(records[-1])) if records else (None, None)
    head = anchor.load(first.get("hash") if first else None)
    if head is None:
        return problems, len(records)
    if not records:
        problems.append(f"the log is empty or missing, but {anchor.describe()} anchors {head['seq']} records")
    elif last.get("seq", len(records)) < head["seq"]:
        problems.append(f"the log ends at record {last.get('seq', len(records))}, but {anchor.describe()} anchors "
                        f"record {head['seq']}: records at its end were removed")
    else:
        anchored = next((r for r in map(_record, reversed(records)) if r.get("seq") == head["seq"]), None)
        if anchored is None or anchored.get("hash") != head["hash"]:
            problems.append(f"record {head['seq']} is not the one {anchor.describe()} anchors")
    return problems, len(records)


def _record(line: bytes) -> dict:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def tail(path: Path, n: int, keep=lambda record: True) -> list[dict]:
    """The last n records `keep` accepts, oldest first; lines that are not JSON are skipped
    (verify reports them)."""
    path = Path(path)
    if not path.exists() or n <= 0:
        return []
    last: deque = deque(maxlen=n)
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and keep(record):
                last.append({"line": number, **record})
    return list(last)
