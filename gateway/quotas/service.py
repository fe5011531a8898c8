"""Admission: take the analyst's and the collaborator's concurrency slots, count
the statement in their windows, or refuse with QuotaExceeded.

Who is counted:
- an analyst is a gateway user, counted across every clean room of the gateway
  (and of every gateway sharing the store's database): joining more rooms must
  not multiply what one person may take. The room a statement runs in decides
  the limits that apply to that count.
- a collaborator is counted per clean room: collaborator ids are the room's own
  names, and two rooms' "retailer" need not be the same organisation.

The key is the authenticated user name as the config spells it: both front ends
authenticate against the config's users (exact names), so another letter case
or another front end reaches the same count.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gateway.errors import QuotaExceeded
from gateway.policy.model import CleanRoom
from gateway.quotas.limits import HostQuotas, Limits, analyst_limits, collaborator_limits
from gateway.quotas.slots import Slot, SlotDirectory
from gateway.quotas.usage import ENGINE_SECONDS, Check, UsageStore

log = logging.getLogger("gateway.quotas")

CONCURRENT_RETRY_SECONDS = 1  # when a running statement ends cannot be known; a short wait, then ask again
RULES = ("quota.concurrent", "quota.rate", "quota.engine_seconds")


def analyst_subject(user: str) -> str:
    return f"analyst:{user}"


def collaborator_subject(cleanroom: str, collaborator: str) -> str:
    return f"collaborator:{cleanroom}:{collaborator}"


@dataclass(frozen=True)
class _Party:
    subject: str
    limits: Limits
    described: str  # "analyst ana", "collaborator retailer's analysts"

    @property
    def check(self) -> Check:
        return Check(self.subject, self.limits.statements_per_minute, self.limits.engine_seconds_per_hour)

    @property
    def is_collaborator(self) -> bool:
        return self.subject.startswith("collaborator:")


class Admission:
    """A statement's place in its analyst's and collaborator's quotas.

    `used(seconds)` counts engine seconds (the executor calls it once the
    statement ran or was stopped); `close()` gives the concurrency slots back
    (the pipeline driver calls it in a finally; idempotent). Should a caller
    forget close, the slots go back when the object is garbage collected."""

    __slots__ = ("principal", "collaborator", "cleanroom", "_service", "_subjects", "_slots", "_ladder")

    def __init__(self, service: "QuotaService", principal: str, collaborator: str | None, cleanroom: str,
                 subjects: tuple[str, ...], slots: tuple[Slot, ...]):
        self.principal = principal
        self.collaborator = collaborator
        self.cleanroom = cleanroom
        self._service = service
        self._subjects = subjects
        self._slots = slots
        self._ladder: tuple[float, float] | None = None

    def count_on_ladder(self, step: float, cap: float) -> None:
        """Count the statement's engine seconds as the padded time they reach: the
        first of step, 2 step, 4 step, ... (at most cap) not below them. For answers
        whose time is padded (gateway/engine/timing.py): the hour's count, and so
        when a refusal comes, then tells no more than the padded answer did."""
        self._ladder = (step, cap)

    def used(self, engine_seconds: float) -> None:
        if not (isinstance(engine_seconds, (int, float)) and math.isfinite(engine_seconds) and engine_seconds >= 0):
            log.error("admission of %s: ignored engine seconds %r", self.principal, engine_seconds)
            return
        if self._ladder is not None:
            step, cap = self._ladder
            span = step
            while span < engine_seconds and span < cap:
                span *= 2
            engine_seconds = min(span, cap)
        if engine_seconds == 0:
            return
        try:
            self._service.usage.add_engine_seconds(self._subjects, float(engine_seconds), self._service.clock())
        except Exception:  # the answer is computed: losing a count must not lose it
            log.exception("admission of %s: engine seconds not counted", self.principal)

    def close(self) -> None:
        slots, self._slots = self._slots, ()
        for slot in slots:
            slot.release()

    @property
    def closed(self) -> bool:
        return not self._slots

    def __del__(self):
        self.close()


class QuotaService:
    def __init__(self, host: HostQuotas, usage: UsageStore, slots: SlotDirectory,
                 clock: Callable[[], float] = time.time):
        self.host = host
        self.usage = usage
        self.slots = slots
        self.clock = clock
        self._limits: dict = {}  # (id of the room's quotas, user, collaborator) -> (quotas, parties)

    @classmethod
    def from_config(cls, config, clock: Callable[[], float] = time.time) -> "QuotaService":
        slots = SlotDirectory(Path(config.state_dir) / "quotas" / "slots")
        return cls(config.quotas, UsageStore.from_config(config, clock), slots, clock)

    def parties(self, room: CleanRoom, user: str, collaborator: str) -> tuple[tuple[_Party, _Party], tuple, tuple]:
        """The analyst's and the collaborator's limits, subjects and checks (cached per policy version)."""
        key = (id(room.quotas), room.name, user, collaborator)
        cached = self._limits.get(key)
        if cached is not None and cached[0] is room.quotas:
            return cached[1]
        parties = (
            _Party(analyst_subject(user), analyst_limits(self.host, room, user), f"analyst {user}"),
            _Party(collaborator_subject(room.name, collaborator), collaborator_limits(self.host, room, collaborator),
                   f"collaborator {collaborator}'s analysts"),
        )
        found = (parties, tuple(p.subject for p in parties), tuple(p.check for p in parties))
        if len(self._limits) > 4096:  # policies reloaded many times: start again
            self._limits.clear()
        self._limits[key] = (room.quotas, found)
        return found

    def admit(self, room: CleanRoom, user: str, collaborator: str, *, runs_on_engine: bool = True) -> Admission:
        """An Admission, or QuotaExceeded (nothing counted but the refusal). A statement
        that will not run on the engine (a kept replay: microseconds, no executor) is
        counted in the per-minute windows only, not among the statements running at once."""
        parties, subjects, checks = self.parties(room, user, collaborator)
        analyst, organisation = parties
        if not runs_on_engine:
            over = self.usage.admit(checks, self.clock())
            if over is not None:
                raise self._refuse(subjects, _over(parties[over.index], over.measure, over.retry_after))
            return Admission(self, user, collaborator, room.name, subjects, ())
        first = self.slots.take(analyst.subject, analyst.limits.concurrent_statements)
        if first is None:
            raise self._refuse(subjects, _concurrent(analyst))
        second = self.slots.take(organisation.subject, organisation.limits.concurrent_statements)
        if second is None:
            first.release()
            raise self._refuse(subjects, _concurrent(organisation))
        try:
            over = self.usage.admit(checks, self.clock())
        except BaseException:
            first.release()
            second.release()
            raise
        if over is not None:
            first.release()
            second.release()
            raise self._refuse(subjects, _over(parties[over.index], over.measure, over.retry_after))
        return Admission(self, user, collaborator, room.name, subjects, (first, second))

    def _refuse(self, subjects: tuple[str, ...], error: QuotaExceeded) -> QuotaExceeded:
        try:
            self.usage.count_refusal(subjects, error.rule)
        except Exception:  # the refusal stands; only its count for the metrics is lost
            log.exception("quota refusal not counted (%s)", error.rule)
        return error


def _concurrent(party: _Party) -> QuotaExceeded:
    limit = party.limits.concurrent_statements
    plural = party.is_collaborator
    return QuotaExceeded(
        f"{party.described} already {'have' if plural else 'has'} {limit} statement{'s' if limit != 1 else ''} "
        f"running{' in this clean room' if plural else ''}, the most allowed at once",
        rule="quota.concurrent",
        retry_after=CONCURRENT_RETRY_SECONDS,
        hint=f"retry in {CONCURRENT_RETRY_SECONDS} s, or once a running statement has finished",
    )


def _over(party: _Party, measure: int, retry_after: int) -> QuotaExceeded:
    plural = party.is_collaborator
    if measure == ENGINE_SECONDS:
        limit = party.limits.engine_seconds_per_hour
        # The amount used is not stated: engine time depends on the data, and padded
        # response times (gateway/engine/timing.py) must not be undone here.
        return QuotaExceeded(f"{party.described} {'have' if plural else 'has'} used the {limit:g} engine seconds "
                             f"allowed per hour", rule="quota.engine_seconds", retry_after=retry_after)
    limit = party.limits.statements_per_minute
    return QuotaExceeded(f"{party.described} {'have' if plural else 'has'} run the {limit} statement"
                         f"{'s' if limit != 1 else ''} allowed per minute", rule="quota.rate", retry_after=retry_after)
