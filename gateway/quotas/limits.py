"""The limits that hold for one analyst and for its collaborator in one clean room.

Three levels, most specific first, each filling what the one before left unset:

1. the policy's `quotas.analysts.<user>` (or `quotas.collaborators.<id>`),
2. the policy's `quotas.per_analyst` (or `quotas.per_collaborator`),
3. the operator's `quotas.per_analyst` / `quotas.per_collaborator` in the gateway
   config, or the built-in defaults below where the config sets nothing.

Level 3 is also a ceiling: the host belongs to the operator, so a policy may
lower a limit but never raise it above the operator's.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.model import CleanRoom, QuotaLimits

FIELDS = ("concurrent_statements", "statements_per_minute", "engine_seconds_per_hour")

# Built in: generous for people and BI tools (a dashboard refresh, a connection pool),
# yet one analyst cannot keep more than 8 statements in the engine or use more than
# one core-hour of engine time per hour.
DEFAULT_PER_ANALYST = QuotaLimits(concurrent_statements=8, statements_per_minute=3000, engine_seconds_per_hour=3600.0)
DEFAULT_PER_COLLABORATOR = QuotaLimits(concurrent_statements=16, statements_per_minute=6000,
                                       engine_seconds_per_hour=7200.0)


@dataclass(frozen=True)
class Limits:
    """Every value set."""

    concurrent_statements: int
    statements_per_minute: int
    engine_seconds_per_hour: float


@dataclass(frozen=True)
class HostQuotas:
    """The gateway config's `quotas:` section: defaults and ceilings for every policy."""

    per_analyst: Limits = Limits(**{f: getattr(DEFAULT_PER_ANALYST, f) for f in FIELDS})
    per_collaborator: Limits = Limits(**{f: getattr(DEFAULT_PER_COLLABORATOR, f) for f in FIELDS})


def host_quotas_from(spec: dict | None) -> HostQuotas:
    """The model of a valid config `quotas:` section; unset values keep the built-in defaults."""
    spec = spec or {}
    base = HostQuotas()

    def merged(level: Limits, given: dict | None) -> Limits:
        given = given or {}
        values = {f: given.get(f, getattr(level, f)) for f in FIELDS}
        values["engine_seconds_per_hour"] = float(values["engine_seconds_per_hour"])
        return Limits(**values)

    return HostQuotas(merged(base.per_analyst, spec.get("per_analyst")),
                      merged(base.per_collaborator, spec.get("per_collaborator")))


def analyst_limits(host: HostQuotas, room: CleanRoom, user: str) -> Limits:
    quotas = room.quotas
    return _combine(quotas.analysts.get(user), quotas.per_analyst, host.per_analyst)


def collaborator_limits(host: HostQuotas, room: CleanRoom, collaborator: str) -> Limits:
    quotas = room.quotas
    return _combine(quotas.collaborators.get(collaborator), quotas.per_collaborator, host.per_collaborator)


def _combine(named: QuotaLimits | None, room_default: QuotaLimits, host: Limits) -> Limits:
    values = {}
    for name in FIELDS:
        ceiling = getattr(host, name)
        value = getattr(named, name) if named is not None else None
        if value is None:
            value = getattr(room_default, name)
        values[name] = ceiling if value is None else min(value, ceiling)
    return Limits(**values)
