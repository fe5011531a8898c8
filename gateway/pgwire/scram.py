"""SCRAM-SHA-256 (RFC 5802, RFC 7677) for the server side, as PostgreSQL does it.

The config stores verifiers in PostgreSQL's format, never passwords:
    SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
`make_verifier` builds one; `cleanroom pg --scram-verifier` prints one.

An unknown user gets a mock exchange built from a per-process secret, so a bad
user name and a bad password fail at the same step, in the same way.

Passwords are prepared with SASLprep as PostgreSQL and its clients do (scramp's,
the library pg8000 uses). The exchange itself stays written here: scramp's
ScramServer (1.5.0) refuses the client-first message of every libpq client
(psql, psycopg, psqlodbc), `n,,n=,r=...`, because the user name is empty there
(PostgreSQL takes it from the startup packet); run with it, 3 of the 8 client
tests of tests/test_pgwire_clients.py that log in failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

from scramp import ScramException
from scramp.utils import saslprep

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096
_MOCK_SECRET = secrets.token_bytes(32)


class ScramError(Exception):
    pass


@dataclass(frozen=True)
class Verifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """StoredKey and ServerKey of a password, derived as PostgreSQL does (pg_saslprep):
    from the password prepared with SASLprep, or as it is where SASLprep refuses it."""
    try:
        password = saslprep(password)
    except ScramException:  # prohibited characters: PostgreSQL and libpq use the password unchanged
        pass
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hashlib.sha256(_hmac(salted, b"Client Key")).digest(), _hmac(salted, b"Server Key")


def make_verifier(password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    stored, server = _keys(password, salt, iterations)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"{MECHANISM}${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def parse_verifier(text: str) -> Verifier:
    try:
        mechanism, rest = text.strip().split("$", 1)
        params, keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        stored, server = keys.split(":", 1)
        if mechanism != MECHANISM:
            raise ValueError(mechanism)
        return Verifier(int(iterations), base64.b64decode(salt, validate=True),
                        base64.b64decode(stored, validate=True), base64.b64decode(server, validate=True))
    except ValueError:
        raise ScramError("malformed SCRAM verifier") from None


def mock_verifier(user: str) -> Verifier:
    """A stable, fake verifier for a user that does not exist: same salt every time."""
    salt = _hmac(_MOCK_SECRET, b"salt:" + user.encode("utf-8"))[:16]
    return Verifier(DEFAULT_ITERATIONS, salt, _hmac(_MOCK_SECRET, b"stored:" + user.encode()),
                    _hmac(_MOCK_SECRET, b"server:" + user.encode()))


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM message")
        out[part[0]] = part[2:]
    return out


class ScramExchange:
    """One server-side exchange: client-first -> server-first, client-final -> server-final."""

    def __init__(self, verifier: Verifier, real: bool):
        self.verifier, self.real = verifier, real
        self.server_nonce = base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self.client_first_bare = self.server_first = self.nonce = ""
        self.gs2_header = ""

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM message") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("malformed SCRAM message")
        flag, authzid, bare = parts
        if flag.startswith("p"):
            raise ScramError("channel binding is not supported")
        if flag not in ("n", "y") or authzid:
            raise ScramError("malformed SCRAM message")
        attributes = _attributes(bare)
        client_nonce = attributes.get("r")
        if not client_nonce:
            raise ScramError("malformed SCRAM message")
        self.gs2_header = f"{flag},{authzid},"
        self.client_first_bare = bare
        self.nonce = client_nonce + self.server_nonce
        salt = base64.b64encode(self.verifier.salt).decode("ascii")
        self.server_first = f"r={self.nonce},s={salt},i={self.verifier.iterations}"
        return self.server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """The server-final message, or ScramError if the proof is wrong."""
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("malformed SCRAM message") from None
        without_proof, _, proof_part = text.rpartition(",p=")
        attributes = _attributes(without_proof)
        expected_binding = base64.b64encode(self.gs2_header.encode()).decode("ascii")
        if attributes.get("c") != expected_binding or attributes.get("r") != self.nonce:
            raise ScramError("SCRAM channel binding or nonce mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("malformed SCRAM proof") from None
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode("utf-8")
        signature = _hmac(self.verifier.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("authentication failed")
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        ok = hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key)
        if not (ok and self.real):
            raise ScramError("authentication failed")
        server_signature = _hmac(self.verifier.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)


def check_cleartext(verifier: Verifier, password: str) -> bool:
    stored, _ = _keys(password, verifier.salt, verifier.iterations)
    return hmac.compare_digest(stored, verifier.stored_key)
