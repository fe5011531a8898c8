"""Append-only, hash-chained audit log in a JSON-lines file.

Each record carries the hash of the one before, so an edited, deleted or
reordered record breaks the chain. Appends take an exclusive file lock (several
gunicorn workers share the file) and are fsync'd before the answer leaves.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

GENESIS = "0" * 64


def record_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict) -> dict:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record = json.loads(json.dumps(record, default=str))  # what is hashed is what is stored
            record["prev"] = self._last_hash(fd)
            record["hash"] = record_hash(record)
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
            os.fsync(fd)
            return record
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _last_hash(fd: int) -> str:
        size = os.lseek(fd, 0, os.SEEK_END)
        if size == 0:
            return GENESIS
        chunk = 4096
        while True:  # read backwards until a whole last line is in hand
            start = max(0, size - chunk)
            os.lseek(fd, start, os.SEEK_SET)
            tail = os.read(fd, size - start)
            lines = tail.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or start == 0:
                return json.loads(lines[-1])["hash"]
            chunk *= 4

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            return [json.loads(line) for line in f if line.strip()]


def verify(path: Path) -> list[str]:
    """Problems in the chain, one line each; empty when intact."""
    problems: list[str] = []
    prev = GENESIS
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                problems.append(f"line {number}: not a JSON record")
                prev = None
                continue
            if prev is not None and record.get("prev") != prev:
                problems.append(f"line {number}: chain broken (a record before it was removed, edited or moved)")
            if record.get("hash") != record_hash(record):
                problems.append(f"line {number}: record edited (its hash does not match its content)")
            prev = record.get("hash")
    return problems
