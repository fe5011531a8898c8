"""Startup: who the client is, which clean room (database) it wants, and proof of
the password (SCRAM-SHA-256; cleartext only inside TLS, only if configured).

A bad user and a bad password get the same answer after the same delay.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from gateway.errors import UnknownCleanRoom
from gateway.pgwire import messages as m
from gateway.pgwire import scram
from gateway.pgwire.settings import (INTERVALS, REPORTED, STARTUP_SETTABLE, BadSetting, boolean, canonical,
                                     startup_options)

log = logging.getLogger("gateway.pgwire")

AUTH_FAILURE_DELAY = 0.5  # seconds: slows password guessing without holding a thread
MAX_WORKERS = 64  # a session's pid modulo this names its worker process (cancel routing)


class StartupPhase:
    """Session methods from the StartupMessage to the first ReadyForQuery."""

    async def start(self, startup: m.Startup) -> bool:
        """Authenticate and greet; False if the connection must close."""
        params = startup.params
        self.user = params.get("user", "")
        self.database = params.get("database") or self.user
        if not self.user:
            self.send(m.error_response("28000", "no PostgreSQL user name specified in startup packet", severity="FATAL"))
            await self.flush()
            return False
        if not await self._authenticate():
            return False
        if self.database not in self.engine.cleanrooms_for(self.user):
            error = UnknownCleanRoom(f'database "{self.database}" does not exist', rule="cleanroom.unknown",
                                     hint="each clean room is a database; \\l lists yours")
            self.send(m.error_response(error.sqlstate, error.message, error.hint, severity="FATAL"))
            await self.flush()
            return False
        settings = {canonical(key): value for key, value in params.items()}
        settings.update(startup_options(params.get("options", "")))  # -c name=value, as PostgreSQL reads them
        for name, value in settings.items():
            if name == INTERVALS:
                try:
                    value = boolean(name, value)
                except BadSetting:
                    continue  # the session keeps the default
            if name in STARTUP_SETTABLE:
                self.params[name] = value
        self.params["session_authorization"] = self.user
        self.send(m.AUTH_OK)
        for name in REPORTED:
            self.send(m.parameter_status(name, self.params[name]))
        self._register_for_cancel()
        self.send(m.backend_key_data(self.pid, self.secret))
        self.send(m.ready_for_query(self.status))
        await self.flush()
        return True

    def _register_for_cancel(self) -> None:
        while True:
            # The low bits name the worker process, so any worker can route a CancelRequest.
            self.pid = (secrets.randbelow(2**24 - 1) + 1) * MAX_WORKERS + self.server.worker
            if self.pid not in self.server.sessions:
                break
        self.secret = secrets.randbits(31)
        self.server.sessions[self.pid] = self

    async def _authenticate(self) -> bool:
        config = self.server.config
        user = config.users.get(self.user)
        verifier = None
        if user is not None and user.scram_sha256:
            try:
                verifier = scram.parse_verifier(user.scram_sha256)
            except scram.ScramError:
                log.error("user %s has a malformed scram_sha256 verifier", self.user)
        real = verifier is not None
        verifier = verifier or scram.mock_verifier(self.user)  # unknown users go through the same exchange
        try:
            if self.io.tls and config.pg.allow_cleartext_over_tls:
                self.send(m.AUTH_CLEARTEXT)
                await self.flush()
                password = await self._password()
                ok = real and scram.check_cleartext(verifier, password.rstrip(b"\x00").decode("utf-8", "replace"))
            else:
                ok = await self._scram(verifier, real)
        except (scram.ScramError, m.ProtocolViolation):
            ok = False
        if ok:
            return True
        log.warning("pgwire: failed login for user %r from %s", self.user, self.peer)
        await asyncio.sleep(AUTH_FAILURE_DELAY)
        self.send(m.error_response("28P01", f'password authentication failed for user "{self.user}"', severity="FATAL"))
        await self.flush()
        return False

    async def _password(self) -> bytes:
        kind, body = await self.io.read_message()
        if kind != b"p":
            raise m.ProtocolViolation("expected a password message")
        return body

    async def _scram(self, verifier: scram.Verifier, real: bool) -> bool:
        self.send(m.auth_sasl([scram.MECHANISM]))
        await self.flush()
        body = await self._password()
        reader = m._Reader(body)
        mechanism = reader.cstr()
        length = reader.int32()
        if mechanism != scram.MECHANISM:
            raise scram.ScramError("unsupported SASL mechanism")
        exchange = scram.ScramExchange(verifier, real)
        self.send(m.auth_sasl_continue(exchange.first(reader.raw(length) if length >= 0 else b"")))
        await self.flush()
        final = exchange.final(await self._password())
        self.send(m.auth_sasl_final(final))
        return True
