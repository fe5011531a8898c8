"""The audit log: one hash chain per writing process, each anchored in the store.

- chain: how records are chained and hashed, and what breaks a chain;
- writer: AuditLog, each process's own chain with group commit (records of
  statements that read no clean-room data need not wait for the fsync);
- anchors: each chain's head in the gateway's store, and with PostgreSQL a copy of
  its records, so no host holds the only copy;
- reading: every chain of a state folder merged by (time, chain, seq);
- verifying: every chain against its anchor and its copy, and chains that are gone.

docs/operators.md ("The audit log: durability model") says what each choice costs.
"""

from __future__ import annotations

from pathlib import Path

from gateway.audit_log.chain import GENESIS, check_lines, record_hash
from gateway.audit_log.reading import chain_name, chain_paths, is_legacy, read_records, tail
from gateway.audit_log.verifying import ChainReport, verify_chain_file, verify_state
from gateway.audit_log.writer import CHAINS_FOLDER, LEGACY_LOG, AuditLog

__all__ = ["AuditLog", "CHAINS_FOLDER", "ChainReport", "GENESIS", "LEGACY_LOG", "chain_name", "chain_paths",
           "read_records", "record_hash", "tail", "verify", "verify_chain_file", "verify_state"]


def verify(path: Path) -> list[str]:
    """Problems in one chain file's hash chain, one line each; empty when intact.
    Anchors are checked by verify_state and verify_chain_file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    return check_lines(lines, None if is_legacy(path) else path.stem).problems
