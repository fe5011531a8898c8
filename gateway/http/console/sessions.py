"""The console's logins, sessions and query history, in SQLite under state_dir.

A session is a random id in an HttpOnly, SameSite=Strict cookie; the store
keeps only its sha256, the user, a CSRF token and when it expires, so logging
out (or expiry) ends it on the server, in every gunicorn worker at once.
Logging in checks the same credentials the API and the wire protocol do: the
bearer token (gateway.auth) or the user's password against its SCRAM verifier
(checked here, not with gateway.pgwire.scram: the http and pgwire layers do not
import each other).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.auth import user_for_token

IDLE_SECONDS = 2 * 3600  # a session unused this long ends
LIFETIME_SECONDS = 12 * 3600  # and none lasts longer than this
HISTORY_KEPT = 50  # statements remembered per user and clean room

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS console_sessions (
        id_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL, cleanroom TEXT,
        created_at REAL NOT NULL, seen_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS console_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, cleanroom TEXT NOT NULL, at REAL NOT NULL,
        kind TEXT NOT NULL, text TEXT NOT NULL, params TEXT NOT NULL, outcome TEXT NOT NULL, request_id TEXT)""",
]


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    cleanroom: str | None


def check_login(config, user: str, secret: str) -> str | None:
    """The user these credentials belong to, or None. With a user name, the
    secret may be that user's password or token; without one, a token."""
    by_token = user_for_token(config, secret) if secret else None
    if not user:
        return by_token
    account = config.users.get(user)
    # The password is checked even when the token matched or the user is unknown, so all take the same time.
    password_ok = _password_matches(account.scram_sha256 if account is not None else None, secret)
    return user if password_ok or by_token == user else None


MOCK_VERIFIER = "SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAA==$AAAA:AAAA"  # never matches: no stored key is empty


def _password_matches(verifier: str | None, password: str) -> bool:
    """Whether password matches a SCRAM-SHA-256 verifier as the config stores it
    (PostgreSQL's format, made by `cleanroom user add`): StoredKey = H(HMAC(salted, "Client Key"))."""
    try:
        _, rest = (verifier or MOCK_VERIFIER).strip().split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored = base64.b64decode(keys.split(":", 1)[0], validate=True)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored) and verifier is not None


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class ConsoleStore:
    """Sessions and history in one SQLite file shared by the gateway's workers."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            for statement in SCHEMA:
                con.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        con.row_factory = sqlite3.Row
        return con

    # -- sessions ------------------------------------------------------------
    def open(self, user: str) -> str:
        """A new session for user; returns the id for its cookie."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        with self._connect() as con:
            con.execute("DELETE FROM console_sessions WHERE seen_at < ? OR created_at < ?",
                        (now - IDLE_SECONDS, now - LIFETIME_SECONDS))
            con.execute("INSERT INTO console_sessions VALUES (?, ?, ?, NULL, ?, ?)",
                        (_digest(session_id), user, secrets.token_urlsafe(32), now, now))
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        now = time.time()
        with self._connect() as con:
            row = con.execute("SELECT * FROM console_sessions WHERE id_sha256 = ?", (_digest(session_id),)).fetchone()
            if row is None:
                return None
            if row["seen_at"] < now - IDLE_SECONDS or row["created_at"] < now - LIFETIME_SECONDS:
                con.execute("DELETE FROM console_sessions WHERE id_sha256 = ?", (row["id_sha256"],))
                return None
            con.execute("UPDATE console_sessions SET seen_at = ? WHERE id_sha256 = ?", (now, row["id_sha256"]))
        return Session(row["user"], row["csrf"], row["cleanroom"])

    def choose_cleanroom(self, session_id: str, cleanroom: str) -> None:
        with self._connect() as con:
            con.execute("UPDATE console_sessions SET cleanroom = ? WHERE id_sha256 = ?", (cleanroom, _digest(session_id)))

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self._connect() as con:
                con.execute("DELETE FROM console_sessions WHERE id_sha256 = ?", (_digest(session_id),))

    # -- history ---------------------------------------------------------------
    def remember(self, user: str, cleanroom: str, kind: str, text: str, params, outcome: str,
                 request_id: str | None) -> None:
        with self._connect() as con:
            con.execute("INSERT INTO console_history (user, cleanroom, at, kind, text, params, outcome, request_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (user, cleanroom, time.time(), kind, text, json.dumps(params), outcome, request_id))
            con.execute("DELETE FROM console_history WHERE user = ? AND cleanroom = ? AND id NOT IN "
                        "(SELECT id FROM console_history WHERE user = ? AND cleanroom = ? ORDER BY id DESC LIMIT ?)",
                        (user, cleanroom, user, cleanroom, HISTORY_KEPT))

    def history(self, user: str, cleanroom: str) -> list[dict]:
        with self._connect() as con:
            rows = con.execute("SELECT * FROM console_history WHERE user = ? AND cleanroom = ? ORDER BY id DESC",
                               (user, cleanroom)).fetchall()
        return [{"at": row["at"], "kind": row["kind"], "text": row["text"], "params": json.loads(row["params"]),
                 "outcome": row["outcome"], "request_id": row["request_id"]} for row in rows]
