"""Statement leases: a process reserves several statements of a subject's
per-minute window in one transaction and admits them locally, without the
database, for the rest of the same second.

Why: one transaction per statement costs more than a tenth of what a small
statement costs the whole gateway. A lease is counted in the database as if its
statements had all run in that second, so no process, and no set of processes,
ever admits more than the limit; the unused part is given back when the second
is over (with the process's next transaction, or by its flusher within about a
second), so other processes may see the window fuller than it is for that long.

How many: at most one second's share of the limit (limit // 60), and at most a
quarter of the room left in the window, never fewer than one. Near its limit a
subject's leases are one statement each: admission is then exact, statement by
statement, across processes. A limit below 120 per minute never leases more
than one. Engine seconds are checked when a lease is taken: the few statements
admitted from a lease in the same second are not checked again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Iterable


def lease_size(statements_per_minute: int, room: float) -> int:
    """Statements to reserve when `room` statements still fit in the window (room >= 1)."""
    return max(1, min(statements_per_minute // 60, int(room) // 4))


@dataclass
class _Lease:
    second: int  # the 1-second slot its statements are counted in
    granted: int
    used: int


class Leases:
    """This process's leases, by subject. Thread-safe; a forked child starts
    with none (its parent gives back what it reserved)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._by_subject: dict[str, _Lease] = {}

    def _own(self) -> None:
        if self._pid != os.getpid():
            self._pid, self._by_subject = os.getpid(), {}

    def take(self, subjects: Iterable[str], second: int) -> bool:
        """Admit one statement from the leases of every subject, if each has one
        left in this second; otherwise take nothing."""
        with self._lock:
            self._own()
            leases = [self._by_subject.get(subject) for subject in subjects]
            if not all(lease is not None and lease.second == second and lease.used < lease.granted
                       for lease in leases):
                return False
            for lease in leases:
                lease.used += 1
            return True

    def surrender(self, subjects: Iterable[str]) -> list[tuple[str, int, int]]:
        """Drop the subjects' leases: (subject, second, unused statements) to give back."""
        with self._lock:
            self._own()
            dropped = [(subject, self._by_subject.pop(subject)) for subject in subjects if subject in self._by_subject]
        return [(subject, lease.second, lease.granted - lease.used) for subject, lease in dropped
                if lease.granted > lease.used]

    def expired(self, second: int | None = None) -> list[tuple[str, int, int]]:
        """Drop the leases of seconds before `second` (None: every lease): what they left unused."""
        with self._lock:
            self._own()
            old = [subject for subject, lease in self._by_subject.items() if second is None or lease.second < second]
            dropped = [(subject, self._by_subject.pop(subject)) for subject in old]
        return [(subject, lease.second, lease.granted - lease.used) for subject, lease in dropped
                if lease.granted > lease.used]

    def grant(self, grants: dict[str, int], second: int) -> None:
        """Leases just counted in the database, one statement of each already admitted."""
        with self._lock:
            self._own()
            for subject, granted in grants.items():
                self._by_subject[subject] = _Lease(second, granted, 1)

    def outstanding(self) -> bool:
        with self._lock:
            self._own()
            return any(lease.granted > lease.used for lease in self._by_subject.values())
