"""Concurrency slots: one lock file per (subject, slot number), held with a
non-blocking exclusive flock for as long as a statement runs.

A subject with a limit of n statements at once has slot files 0 .. n-1; taking a
slot is finding one of them unlocked. Every process on the host (gunicorn
workers, wire workers, a second gateway on the same state_dir) sees the same
locks, and the kernel drops the locks of a process that dies, however it dies:
a crashed holder never leaves a slot taken.

flock belongs to an open file description. Each process opens a slot file once
and keeps the descriptor (opening costs more than locking), so within a process
the directory itself tracks which slots are busy: threads sharing a descriptor
would not exclude each other through it. A descriptor inherited through fork is
the same description, so a child would keep its parent's slot locked after the
parent died: a forked child closes every inherited slot descriptor at once
(os.register_at_fork), and a slot is given back with LOCK_UN, which frees it
whoever else may still have the description open.

File names are a hash of the subject: user names may hold any character, and
"Ana" and "ana" must not meet on a case-insensitive file system.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import weakref
from pathlib import Path

MAX_OPEN_FILES = 256  # idle descriptors beyond this are closed (many analysts, one process)


def subject_digest(subject: str) -> str:
    return hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Slot:
    """A slot held by this process. release() is idempotent, and does nothing in
    a forked child (the copy of a parent's slot is not the child's to give back)."""

    __slots__ = ("_directory", "_key", "_fd", "_generation")

    def __init__(self, directory: "SlotDirectory", key: tuple[str, int], fd: int, generation: int):
        self._directory, self._key, self._fd, self._generation = directory, key, fd, generation

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._directory._give_back(self._key, fd, self._generation)


class SlotDirectory:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prefixes: dict[str, str] = {}
        self._reset()
        _directories.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._generation = getattr(self, "_generation", 0) + 1  # slots of an earlier process do not come back
        self._open: dict[tuple[str, int], int] = {}  # (subject, number) -> descriptor
        self._busy: set[tuple[str, int]] = set()  # locked by a statement of this process

    def _forget_in_child(self) -> None:
        for fd in self._open.values():
            try:
                os.close(fd)  # the child's copy only; the parent's lock, if any, stands
            except OSError:
                pass
        self._reset()

    def take(self, subject: str, limit: int) -> Slot | None:
        """One of the subject's `limit` slots, or None when all are held."""
        with self._lock:
            for number in range(limit):
                key = (subject, number)
                if key in self._busy:
                    continue
                fd = self._open.get(key)
                if fd is None:
                    fd = self._open[key] = os.open(self._path(subject, number),
                                                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process holds it
                self._busy.add(key)
                return Slot(self, key, fd, self._generation)
            return None

    def _give_back(self, key: tuple[str, int], fd: int, generation: int) -> None:
        with self._lock:
            if generation != self._generation or key not in self._busy:
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            self._busy.discard(key)
            if len(self._open) > MAX_OPEN_FILES:
                for idle in [k for k in self._open if k not in self._busy]:
                    os.close(self._open.pop(idle))

    def _path(self, subject: str, number: int) -> str:
        prefix = self._prefixes.get(subject)
        if prefix is None:
            prefix = self._prefixes[subject] = os.path.join(self.folder, subject_digest(subject))
        return f"{prefix}.{number}.lock"

    def running(self, subject: str, held: set[int] | None = None) -> int | None:
        """How many of the subject's slots some process holds now, from the
        kernel's table of locks (/proc/locks, or `held` read from it), so that
        counting never takes a slot a statement may want. None where there is
        no such table."""
        held = held_inodes() if held is None else held
        if held is None:
            return None
        prefix = subject_digest(subject) + "."
        count = 0
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".lock") and entry.inode() in held:
                    count += 1
        return count


_directories: "weakref.WeakSet[SlotDirectory]" = weakref.WeakSet()


def _forget_all_in_child() -> None:
    for directory in list(_directories):
        directory._forget_in_child()


os.register_at_fork(after_in_child=_forget_all_in_child)


def held_inodes(path: str = "/proc/locks") -> set[int] | None:
    """The inode numbers of files with a granted FLOCK lock. Devices are not
    compared: /proc/locks names the superblock's device, which stat does not
    report on some file systems (btrfs subvolumes, overlays); a lock on a file
    elsewhere with the same inode number could only inflate a metric."""
    try:
        with open(path) as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    held = set()
    for line in lines:
        fields = line.split()
        if "->" in fields or "FLOCK" not in fields:
            continue  # a waiter (never ours: slots do not wait), or a POSIX record lock
        for field in fields:
            parts = field.split(":")
            if len(parts) == 3:
                try:
                    held.add(int(parts[2]))
                except ValueError:
                    continue
                break
    return held
