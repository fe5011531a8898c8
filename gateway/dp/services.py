"""What the differential-privacy passes share for the life of an engine: the
budget ledger, the release cache and the key of the bounding hash."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.dp.ledger import Ledger, database_for
from gateway.dp.release_cache import ReleaseCache

KEY_FILE = "dp_hash.key"


@dataclass(frozen=True)
class PrivacyServices:
    ledger: Ledger
    releases: ReleaseCache
    hash_key: str  # secret: which rows and groups a unit keeps must not be predictable by the analyst

    @classmethod
    def from_config(cls, config) -> "PrivacyServices":
        database = database_for(config)
        return cls(Ledger(database), ReleaseCache(database), hash_key(Path(config.state_dir)))


def hash_key(state_dir: Path) -> str:
    """The gateway's bounding key, made once (128 random bits) and kept beside
    its state. Processes racing to make it agree: the first link wins."""
    path = state_dir / KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=state_dir, prefix=".dp_hash.")
        try:
            os.write(fd, secrets.token_hex(16).encode())
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(temporary, path)  # atomic, and refuses to replace a key another process made
            except FileExistsError:
                pass
        finally:
            os.unlink(temporary)
    key = path.read_text().strip()
    if len(key) != 32:
        raise RuntimeError(f"{path} is not a bounding key (32 hex digits); remove it to make a new one")
    return key
