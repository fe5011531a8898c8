"""Who is calling: bearer tokens (HTTP).

The config stores only sha256(token); tokens are high-entropy random strings,
so a plain hash is enough and no salt or slow KDF is needed.
"""

from __future__ import annotations

import hashlib
import hmac

from gateway.config_model import GatewayConfig


def hash_token(token: str) -> str:
    """Hex sha256 of a bearer token, as stored in `users.<name>.token_sha256`."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def user_for_token(config: GatewayConfig, token: str) -> str | None:
    """The user whose token this is, or None.

    Every user's hash is compared, in constant time, even after a match: the
    response time must not tell which user (or how many) came before a match.
    """
    presented = hash_token(token).encode("ascii")
    found = None
    for user in config.users.values():
        expected = (user.token_sha256 or "").strip().lower().encode("ascii", "replace")
        matches = hmac.compare_digest(presented, expected)
        if matches and user.token_sha256 and found is None:
            found = user.name
    return found
