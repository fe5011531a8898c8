"""Whether a light analyst's statement is running anywhere on this host.

A lower CPU priority is not enough to keep a heavy analyst out of a light one's
way: on a small host the heavy statements' memory traffic alone slowed a light
statement threefold at nice 19 (bench/soak.py). So while any statement of an
analyst who is not heavy runs, in any front-end process of the host, executors
running heavy analysts' statements are paused (SIGSTOP) and resumed (SIGCONT)
when none runs, with a duty cycle so a steady stream of light statements cannot
starve them (executors.py).

The signal is a lock file under state_dir: a light statement holds a shared
flock on it while it runs; a pool with heavy statements probes it with a
non-blocking exclusive lock. The kernel drops a dead holder's lock.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class Foreground:
    def __init__(self, state_dir: Path):
        folder = Path(state_dir) / "executors"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "foreground.lock"
        self._probe: int | None = None
        self._probe_pid = 0

    @contextmanager
    def running(self):
        """Held by a light statement while it runs (each holder on a descriptor of its own:
        flock belongs to the open file, and two of one process must not share one)."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def active(self) -> bool:
        """Whether a light statement runs anywhere on the host now."""
        if self._probe is None or self._probe_pid != os.getpid():  # after a fork: a descriptor of our own
            self._probe = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._probe_pid = os.getpid()
        try:
            fcntl.flock(self._probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._probe, fcntl.LOCK_UN)
        return False

    def close(self) -> None:
        if self._probe is not None and self._probe_pid == os.getpid():
            os.close(self._probe)
        self._probe = None
