"""Verifying the audit of a state folder: every chain, against its anchor.

- Each chain file: its hash chain (an edited, removed, reordered or moved record
  breaks it), and its end against the head anchored in the store (records removed
  from the end, or the file emptied, leave an intact but shorter chain).
- Each chain anchored in the store but absent here: removed, if it was written in
  this folder. With a PostgreSQL store, a chain written elsewhere (another host or
  state folder of the room) is verified from its copy in PostgreSQL, and a local
  chain is also compared with its copy: either tampered alone shows.
- The single log of earlier versions (state_dir/audit.jsonl), if there is one, is
  verified as before, against its own anchor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit_log.anchors import ChainAnchors, LegacyAnchor
from gateway.audit_log.chain import ChainCheck, check_lines
from gateway.audit_log.reading import chain_paths, is_legacy
from gateway.audit_log.writer import CHAINS_FOLDER, LEGACY_LOG
from gateway.storage import Database

TORN = "its last line is incomplete: its writer stopped while writing it (no answer waited for it)"


@dataclass
class ChainReport:
    chain: str
    where: str  # the file, or which PostgreSQL copy
    records: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    anchored: bool = False

    def summary(self) -> str:
        end = "end matches its anchor" if self.anchored else "not anchored yet"
        return f"ok ({self.records} records, chain intact, {end})"


def verify_state(state_dir: Path, store: Database | None = None) -> list[ChainReport]:
    """A report per chain of the state folder, and per chain the store anchors that
    is not here. `store`: the gateway's store (by default the SQLite store in the
    folder, where one exists; without any store only the chains are checked)."""
    state_dir = Path(state_dir)
    anchors = _anchors(state_dir, store)
    heads = anchors.heads() if anchors is not None else {}
    reports, here = [], set()
    for path in chain_paths(state_dir):
        if is_legacy(path):
            reports.append(_verify_legacy(path, store))
            continue
        here.add(path.stem)
        reports.append(_verify_file(path, anchors, heads.get(path.stem)))
    if not (state_dir / LEGACY_LOG).exists():
        missing = _legacy_missing(state_dir / LEGACY_LOG, store)
        if missing is not None:
            reports.append(missing)
    for name, head in heads.items():
        if name not in here:
            reports.append(_verify_absent(name, head, anchors, state_dir / CHAINS_FOLDER))
    return reports


def verify_chain_file(path: Path, store: Database | None = None) -> ChainReport:
    """One file: a chain (state_dir/audit/*.jsonl) or the legacy log."""
    path = Path(path)
    if is_legacy(path):
        return _verify_legacy(path, store)
    state_dir = path.parent.parent
    anchors = _anchors(state_dir, store)
    head = anchors.heads().get(path.stem) if anchors is not None else None
    return _verify_file(path, anchors, head)


def _anchors(state_dir: Path, store: Database | None) -> ChainAnchors | None:
    if store is None and not (state_dir / "collab.sqlite").exists():
        return None  # no store to compare with
    return ChainAnchors(store, state_dir / CHAINS_FOLDER)


def _verify_file(path: Path, anchors: ChainAnchors | None, head: dict | None) -> ChainReport:
    check = check_lines(_lines(path), path.stem)
    report = ChainReport(path.stem, str(path), len(check.records), list(check.problems))
    if check.torn_tail:
        report.notes.append(TORN)
    if head is not None:
        _against_anchor(report, check, head, anchors.describe())
        if anchors.copies_records:
            _against_copy(report, check, anchors)
    return report


def _verify_absent(name: str, head: dict, anchors: ChainAnchors, folder: Path) -> ChainReport:
    """A chain the store anchors that is not in this folder."""
    written_here = not anchors.copies_records or head["location"] == anchors.location
    if written_here:
        report = ChainReport(name, str(folder / f"{name}.jsonl"), 0, anchored=True)
        report.problems.append(f"the chain is missing (removed or moved away), but {anchors.describe()} "
                               f"anchors its record {head['seq']}")
        return report
    check = check_lines(anchors.copy_of(name), name)
    report = ChainReport(name, f"PostgreSQL copy of {head['location']}/{name}.jsonl", len(check.records),
                         [f"copy: {problem}" for problem in check.problems])
    _against_anchor(report, check, head, anchors.describe())
    return report


def _against_anchor(report: ChainReport, check: ChainCheck, head: dict, where: str, what: str = "chain",
                    empty: str = "the chain is empty, but {where} anchors its record {seq}") -> None:
    """The end of a chain (or of the old single log) against the head anchored for it."""
    report.anchored = True
    last = check.last
    if last is None:
        report.problems.append(empty.format(where=where, seq=head["seq"]))
    elif last.get("seq", len(check.records)) < head["seq"]:
        report.problems.append(f"the {what} ends at record {last.get('seq', len(check.records))}, but {where} "
                               f"anchors record {head['seq']}: records at its end were removed")
    else:
        anchored = check.at(head["seq"])
        if anchored is None or anchored.get("hash") != head["hash"]:
            report.problems.append(f"record {head['seq']} is not the one {where} anchors")


def _against_copy(report: ChainReport, check: ChainCheck, anchors: ChainAnchors) -> None:
    """The file against its copy in PostgreSQL (the records up to its anchor)."""
    copy = check_lines(anchors.copy_of(report.chain), report.chain)
    report.problems.extend(f"PostgreSQL copy: {problem}" for problem in copy.problems)
    differing = [r["seq"] for r in copy.records
                 if (mine := check.at(r.get("seq", 0))) is None or mine.get("hash") != r.get("hash")]
    if differing:
        report.problems.append(f"{len(differing)} record(s) differ from their copy in PostgreSQL, "
                               f"the first is record {differing[0]}")


def _verify_legacy(path: Path, store: Database | None) -> ChainReport:
    """The single shared log of earlier versions: its chain, and its end against its
    anchor (audit_anchors, keyed by its first record's hash)."""
    check = check_lines(_lines(path), None)
    report = ChainReport(LEGACY_LOG, str(path), len(check.records), list(check.problems))
    if check.torn_tail:
        report.notes.append(TORN)
    stores = _legacy_stores(path, store)
    if not stores:
        return report
    first = check.records[0] if check.records else None
    found = LegacyAnchor(stores, path).load(first.get("hash") if first else None)
    if found is None:
        return report
    _against_anchor(report, check, found[0], found[1].describe(), what="log",
                    empty="the log is empty or missing, but {where} anchors {seq} records")
    return report


def _legacy_missing(path: Path, store: Database | None) -> ChainReport | None:
    stores = _legacy_stores(path, store)
    if not stores:
        return None
    found = LegacyAnchor(stores, path).load(None)
    if found is None:
        return None
    report = ChainReport(LEGACY_LOG, str(path), 0, anchored=True)
    report.problems.append(f"the log is empty or missing, but {found[1].describe()} anchors {found[0]['seq']} records")
    return report


def _legacy_stores(path: Path, store: Database | None) -> list[Database]:
    """Where the legacy log's anchor may be: the store given, and the SQLite store
    beside the log (earlier versions kept it there even with a PostgreSQL store)."""
    stores = [store] if store is not None else []
    beside = path.parent / "collab.sqlite"
    if beside.exists() and (store is None or store.sqlite_path is None
                            or Path(store.sqlite_path).resolve() != beside.resolve()):
        stores.append(Database(sqlite_path=beside))
    return stores


def _lines(path: Path) -> list[bytes]:
    try:
        with open(path, "rb") as f:
            return f.readlines()
    except FileNotFoundError:
        return []
