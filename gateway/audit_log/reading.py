"""Reading the audit: every chain of a state folder, merged into one order.

Chains are merged by (time, chain, seq): each chain keeps its own order (its
sequence numbers), and chains interleave by the time their records were made.
The single log of earlier versions (state_dir/audit.jsonl), if there is one, is
read as one more chain. With a PostgreSQL store, readers of the whole room also
take the copies of the chains written in other folders (other hosts).
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from gateway.audit_log.writer import CHAINS_FOLDER, LEGACY_LOG


def order_key(record: dict) -> tuple:
    return (record.get("time") or "", record.get("chain") or "", record.get("seq") or 0)


def chain_paths(state_dir: Path) -> list[Path]:
    """The chain files of a state folder, the legacy log (if any) first."""
    state_dir = Path(state_dir)
    legacy = state_dir / LEGACY_LOG
    folder = state_dir / CHAINS_FOLDER
    chains = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return ([legacy] if legacy.exists() else []) + chains


def is_legacy(path: Path) -> bool:
    return Path(path).name == LEGACY_LOG and Path(path).parent.name != CHAINS_FOLDER


def chain_name(path: Path) -> str:
    """A chain's name: its file's stem (records carry it); the legacy log's file name."""
    return Path(path).name if is_legacy(path) else Path(path).stem


def read_chain(path: Path, numbered: bool = False) -> list[dict]:
    """The records of one chain file in order; lines that are not JSON are skipped
    (verify reports them). numbered: each record also gets its `line` number, and the
    legacy log's records the `chain` they are read from."""
    records = []
    legacy = is_legacy(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # removed since listed
        return []
    with f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if numbered:
                record = {"line": number, **record}
                if legacy:
                    record.setdefault("chain", LEGACY_LOG)
            records.append(record)
    return records


def merged(chains: Iterable[list[dict]]) -> Iterator[dict]:
    """Records of several chains, oldest first; each chain keeps its own order."""
    return heapq.merge(*chains, key=order_key)


def read_records(state_dir: Path) -> list[dict]:
    """Every record of every chain in the state folder, as stored, merged oldest first."""
    return list(merged(read_chain(path) for path in chain_paths(state_dir)))


def tail(state_dir: Path, n: int, keep: Callable[[dict], bool] = lambda record: True,
         elsewhere: Iterator[dict] | None = None) -> list[dict]:
    """The last n records `keep` accepts, oldest first, each with its `line` in its
    chain and its `chain`. `elsewhere`: records of other folders' chains, newest first
    (ChainAnchors.newest_elsewhere), merged in."""
    if n <= 0:
        return []
    sources = [reversed(read_chain(path, numbered=True)) for path in chain_paths(state_dir)]
    if elsewhere is not None:
        sources.append(elsewhere)
    newest_first = heapq.merge(*sources, key=order_key, reverse=True)
    last: deque = deque(islice((record for record in newest_first if keep(record)), n))
    last.reverse()
    return list(last)
