"""Reading the audit log: verify every chain, show its end, filter it for auditors.

The log itself (gateway.audit_log) is one hash chain per writing process, each
anchored in the gateway's store; these only read it. With a PostgreSQL store, the
room's chains written by other hosts are read and verified from their copies there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from gateway.audit_log import AuditLog, ChainReport, verify_chain_file, verify_state
from gateway.audit_log import tail as tail_of_folder
from gateway.storage import Database


def verify_room(state_dir: Path, store: Database | None = None) -> tuple[list[str], list[str], int, int]:
    """Verify every chain of the state folder and every chain the store anchors.
    (problems, one line each and prefixed by where; the per-chain lines of a
    report; number of chains; number of records)."""
    reports = verify_state(state_dir, store)
    return _lines(reports)


def verify_file(path: Path, store: Database | None = None) -> tuple[list[str], list[str], int, int]:
    """One chain file (or the legacy log) against its anchor."""
    return _lines([verify_chain_file(path, store)])


def _lines(reports: list[ChainReport]) -> tuple[list[str], list[str], int, int]:
    problems, lines = [], []
    for report in reports:
        problems.extend(f"{report.where}: {problem}" for problem in report.problems)
        if report.problems:
            lines.extend(f"{report.where}: {problem}" for problem in report.problems)
        else:
            lines.append(f"{report.where}: {report.summary()}")
        lines.extend(f"{report.where}: note: {note}" for note in report.notes)
    return problems, lines, len(reports), sum(report.records for report in reports)


def tail(audit: AuditLog | Path, n: int, keep: Callable[[dict], bool] = lambda record: True,
         rooms: set[str] | None = None) -> list[dict]:
    """The last n records `keep` accepts, oldest first, from every chain: those of the
    state folder and, with a PostgreSQL store, the copies of the other folders' chains
    (of `rooms` only, when given). `audit`: the engine's AuditLog, or a state folder."""
    if rooms is not None:
        accepted = keep
        keep = lambda record: record.get("cleanroom") in rooms and accepted(record)  # noqa: E731
    if isinstance(audit, AuditLog):
        audit.flush()  # this process's records nobody waited for are written too
        elsewhere = audit.anchors.newest_elsewhere(rooms)
        return tail_of_folder(audit.state_dir, n, keep, elsewhere)
    return tail_of_folder(Path(audit), n, keep)
