"""Reading the audit log: verify its chain, show its end, filter it for auditors.

The log itself (gateway.engine.audit_log) is append-only and hash-chained;
these only read it.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

from gateway.engine.audit_log import verify


def verify_file(path: Path) -> tuple[list[str], int]:
    """(problems with line numbers, number of lines); a missing log has no records and no problems."""
    path = Path(path)
    if not path.exists():
        return [], 0
    with open(path, "rb") as f:
        count = sum(1 for line in f if line.strip())
    return verify(path), count


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
