"""Reloading policies while the gateway serves: on file change and on SIGHUP.
The engine's reload keeps the old policies when the new ones do not validate,
so a bad edit never takes a clean room down.

File changes are noticed without a thread or inotify: requests poll the files'
fingerprints at most once per interval, and the request that notices a change
reloads. No background thread means nothing to go wrong when a front end forks
(gunicorn workers, test helpers); an idle gateway reloads on its next request,
and GET /v1/health is a request.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from gateway.errors import PolicyInvalid
from gateway.policy.loader import load_policy

log = logging.getLogger("gateway.reload")


def _fingerprint(paths: Sequence[Path]) -> tuple:
    """What changes when a policy file is edited, replaced or removed."""
    found = []
    for path in paths:
        try:
            stat = Path(path).stat()
            found.append((str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError:
            found.append((str(path), None))
    return tuple(found)


class PolicyWatcher:
    """Calls `reload` when the files' fingerprint changed, looking at most once per interval."""

    def __init__(self, paths: Sequence[Path], reload: Callable[[], object], interval: float = 1.0):
        self.paths, self.reload, self.interval = tuple(paths), reload, interval
        self._seen = _fingerprint(self.paths)
        self._next_look = time.monotonic() + interval
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether the next poll would look at the files."""
        return time.monotonic() >= self._next_look

    def poll(self) -> bool:
        """Cheap enough for every request: a clock read, and a stat per file once per interval.
        Concurrent callers do not wait: one looks, the others go on with the policies in place."""
        if time.monotonic() < self._next_look or not self._lock.acquire(blocking=False):
            return False
        try:
            self._next_look = time.monotonic() + self.interval
            return self.check()
        finally:
            self._lock.release()

    def check(self) -> bool:
        """Reload if a file changed since the last look; whether it did."""
        now = _fingerprint(self.paths)
        if now == self._seen:
            return False
        self._seen = now
        try:
            self.reload()
        except Exception:  # a failed reload must not fail the request that noticed it
            log.exception("policy reload failed")
        return True


def install_sighup(reload: Callable[[], object]) -> bool:
    """Reload on SIGHUP, for single-process front ends (the Postgres wire server).
    The reload runs in a thread of its own: the handler interrupts the main
    thread anywhere, perhaps while it holds a lock the reload needs.
    Only the main thread may install handlers; under gunicorn the master owns
    SIGHUP (it restarts the workers, which load the policies afresh and fall
    back to the last good ones), so this returns False there."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def handle(signum, frame) -> None:
        threading.Thread(target=reload, name="policy-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, handle)
    return True


# -- the last policy that validated, kept so a restart after a bad edit still serves --


def _last_good_path(state_dir: Path, policy: Path) -> Path:
    import hashlib

    key = hashlib.sha256(str(Path(policy).resolve()).encode()).hexdigest()[:16]
    return Path(state_dir) / "last-good-policies" / f"{Path(policy).stem}-{key}.yaml"


def remember_good(state_dir: Path, policies: Sequence[Path]) -> None:
    """Keep a copy of policy files that just validated (written atomically)."""
    for policy in policies:
        target = _last_good_path(state_dir, policy)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")  # gunicorn workers write at once
        temporary.write_bytes(Path(policy).read_bytes())
        temporary.replace(target)


def load_with_fallback(config) -> tuple[dict, list[str]]:
    """Every policy of the config as {name: CleanRoom}, and the problems found.
    A policy that does not validate is replaced by its last good copy, if there
    is one (its problems are returned, for the log and /v1/health); without a
    copy the error propagates: a gateway never starts on an invalid policy."""
    rooms, problems, good = {}, [], []
    for path in config.policies:
        try:
            room = load_policy(path)
            good.append(path)
        except PolicyInvalid as error:
            copy = _last_good_path(config.state_dir, path)
            if not copy.is_file():
                raise
            log.error("policy %s does not validate; serving its last good version:\n%s", path, error)
            problems += error.problems
            # its model files are where the policy's are, not beside the copy
            room = dataclasses.replace(load_policy(copy, relative_to=path), source_file=str(path))
        rooms[room.name] = room
    remember_good(config.state_dir, good)
    return rooms, problems
