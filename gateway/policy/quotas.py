"""The policy's `quotas:` section: the checks a schema cannot make, and the model.

    quotas:
      per_analyst: {concurrent_statements: 2, statements_per_minute: 60, engine_seconds_per_hour: 600}
      per_collaborator: {concurrent_statements: 4}
      analysts:
        dashboard_bot: {statements_per_minute: 240}
      collaborators:
        retailer: {engine_seconds_per_hour: 1800}

What the values mean and how they combine with the operator's config:
gateway/quotas/limits.py and docs/policy-reference.md.
"""

from __future__ import annotations

from typing import Any

from gateway.policy.model import QuotaLimits, Quotas


def quota_problems(data: dict) -> list[tuple[tuple, str]]:
    """Overrides must name declared analysts and collaborators: a misspelt name
    would otherwise leave the person it meant on the defaults, silently."""
    quotas = data.get("quotas")
    if not isinstance(quotas, dict):
        return []
    found = []
    for section, declared_in in (("analysts", "analysts"), ("collaborators", "collaborators")):
        named = quotas.get(section)
        declared = data.get(declared_in)
        declared = declared if isinstance(declared, dict) else {}
        for name in named if isinstance(named, dict) else {}:
            if name not in declared:
                listed = ", ".join(sorted(map(str, declared))) or "none"
                found.append((("quotas", section, name), f"unknown {section[:-1]} {name!r} (declared: {listed})"))
    return found


def quotas_from(spec: dict | None) -> Quotas:
    """The model of a valid `quotas:` section (absent: an empty one)."""
    if not spec:
        return Quotas()
    return Quotas(
        per_analyst=_limits(spec.get("per_analyst")),
        per_collaborator=_limits(spec.get("per_collaborator")),
        analysts={name: _limits(limits) for name, limits in spec.get("analysts", {}).items()},
        collaborators={name: _limits(limits) for name, limits in spec.get("collaborators", {}).items()},
    )


def _limits(spec: Any) -> QuotaLimits:
    spec = spec or {}
    seconds = spec.get("engine_seconds_per_hour")
    return QuotaLimits(
        concurrent_statements=spec.get("concurrent_statements"),
        statements_per_minute=spec.get("statements_per_minute"),
        engine_seconds_per_hour=float(seconds) if seconds is not None else None,
    )
