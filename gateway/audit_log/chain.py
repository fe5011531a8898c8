"""One writer's hash chain: how records are chained into lines, and what breaks a chain.

Each record carries its chain's name, its sequence number in the chain and the hash
of the record before (GENESIS for the first), so an edited, deleted, reordered or
moved record breaks the chain. A record's hash is over its canonical JSON (sorted
keys, no spaces) without the hash; its line is that JSON with the hash appended as
the last member.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Iterable

GENESIS = "0" * 64


def record_hash(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def normalised(record: dict) -> dict:
    """A copy of the record as JSON gives it back: what is hashed is what is stored, so
    a record holding anything JSON would change (a tuple, a date, an int key) makes a
    round trip first."""
    record = dict(record) if _json_native(record) else json.loads(json.dumps(record, default=str))
    record.pop("hash", None)
    return record


def chain_lines(records: list[dict], chain: str | None, seq: int, prev: str) -> tuple[list[str], int, str]:
    """Chain the records after (seq, prev), in place (each gains chain, seq, prev and
    hash); their lines, and the new head's (seq, hash)."""
    lines = []
    for record in records:
        seq += 1
        if chain is not None:
            record["chain"] = chain
        record["seq"], record["prev"] = seq, prev
        body = json.dumps(record, sort_keys=True, separators=(",", ":"))
        record["hash"] = prev = hashlib.sha256(body.encode()).hexdigest()
        lines.append(f'{body[:-1]},"hash":"{prev}"}}\n')
    return lines, seq, prev


class ChainCheck:
    """The outcome of reading one chain's lines in order: its problems (one line
    each), its records (those that parse), and whether its last line was cut short."""

    def __init__(self):
        self.problems: list[str] = []
        self.records: list[dict] = []
        self.torn_tail = False

    @property
    def last(self) -> dict | None:
        return self.records[-1] if self.records else None

    def at(self, seq: int) -> dict | None:
        """The record numbered seq, if it is where it should be."""
        if 1 <= seq <= len(self.records) and self.records[seq - 1].get("seq", seq) == seq:
            return self.records[seq - 1]
        return next((r for r in self.records if r.get("seq") == seq), None)


def check_lines(lines: Iterable[bytes], chain: str | None) -> ChainCheck:
    """Check a chain's lines, in order. `chain`: the name its records must carry (None
    for the legacy single log, whose records carry none).

    A last line without its newline that is not JSON was being written when its
    writer stopped (a crash, kill -9): it was never made durable, so no answer
    waited on it. It is not a problem of the chain: were it a record the anchor
    names, the anchor check reports the chain as ending too early."""
    check = ChainCheck()
    lines = list(lines)
    prev: str | None = GENESIS
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            if number == len(lines) and not raw.endswith(b"\n"):
                check.torn_tail = True
            else:
                check.problems.append(f"line {number}: not a JSON record")
            prev = None
            continue
        if prev is not None and record.get("prev") != prev:
            check.problems.append(f"line {number}: chain broken (a record before it was removed, edited or moved)")
        if record.get("hash") != record_hash(record):
            check.problems.append(f"line {number}: record edited (its hash does not match its content)")
        elif record.get("seq", number) != number:
            check.problems.append(f"line {number}: record {record['seq']} is out of place")
        if chain is not None and record.get("chain") != chain:
            check.problems.append(f"line {number}: a record of chain {record.get('chain')!r} moved into this one")
        check.records.append(record)
        prev = record.get("hash")
    return check


def _json_native(value) -> bool:
    """Whether JSON gives the value back as it is (then it needs no round trip)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json_native(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _json_native(item) for key, item in value.items())
    return False
