"""The differential-privacy settings that apply to one query and one analyst.

The clean room sets defaults; an analyst's entry may change its per-query
epsilon and budget; a rule or template may change the per-query settings (its
owners approved them with it); every table owner may cap the epsilon of any
query reading its table, and the strictest cap wins.

Accounting (`privacy.accounting`, clean room wide): under `pure` a query costs
its epsilon; under `zcdp` it costs rho = epsilon^2 / 2 (gateway/dp/accounting.py),
with the same epsilon after overrides and caps, and its measurements are
calibrated to that rho.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dp.accounting import PURE, ZCDP, query_rho
from gateway.dp.ledger import Budget, Spend
from gateway.policy.model import CleanRoom, DifferentialPrivacy, Mechanism, PrivacyOverride


@dataclass(frozen=True)
class QueryPrivacy:
    """What one query may spend, and the contribution bounds its guarantee rests on."""

    mechanism: Mechanism
    epsilon: float  # the whole query's privacy loss, split over its noisy columns
    delta: float  # spent only if group keys must be selected privately
    max_rows_per_unit: int  # rows one unit adds to one group
    max_groups_per_unit: int  # groups one unit appears in
    accounting: str = PURE  # "pure" (the query spends epsilon) or "zcdp" (it spends rho)
    rho: float = 0.0  # zcdp: the query's rho, epsilon^2 / 2; 0 under pure
    max_contributions_per_unit: int | None = None  # rows one unit adds to the whole query; None: rows x groups
    min_group_size_on_public_keys: bool = True  # False: public keys are released whatever their noisy unit count


def query_privacy(room: CleanRoom, analyst: str, authority: PrivacyOverride | None,
                  tables_read: frozenset[str]) -> QueryPrivacy | None:
    """None when the clean room has no differential privacy (k-thresholds only)."""
    base = room.privacy
    if base is None:
        return None
    layers = [_analyst_override(room, analyst), authority]
    settings = {
        "epsilon": base.epsilon_per_query,
        "delta": base.delta_per_query,
        "max_rows_per_unit": base.max_rows_per_unit,
        "max_groups_per_unit": base.max_groups_per_unit,
        "max_contributions_per_unit": base.max_contributions_per_unit,
    }
    for layer in layers:
        if layer is None:
            continue
        for field, value in (("epsilon", layer.epsilon_per_query), ("delta", layer.delta_per_query),
                             ("max_rows_per_unit", layer.max_rows_per_unit),
                             ("max_groups_per_unit", layer.max_groups_per_unit),
                             ("max_contributions_per_unit", layer.max_contributions_per_unit)):
            if value is not None:
                settings[field] = value
    caps = [room.tables[t].max_epsilon_per_query for t in tables_read if room.tables[t].max_epsilon_per_query]
    settings["epsilon"] = min([settings["epsilon"], *caps])
    accounting = base.accounting.value
    rho = query_rho(settings["epsilon"]) if accounting == ZCDP else 0.0
    on_public = base.min_group_size_on_public_keys is not False
    return QueryPrivacy(mechanism=base.mechanism, accounting=accounting, rho=rho,
                        min_group_size_on_public_keys=on_public, **settings)


def _analyst_override(room: CleanRoom, analyst: str) -> PrivacyOverride | None:
    entry = room.analysts.get(analyst)
    return entry.privacy if entry is not None else None


def budget_for(room: CleanRoom, analyst: str):
    """The ledger's Budget for this analyst, or None without differential privacy."""
    if room.privacy is None:
        return None
    override = _analyst_override(room, analyst)
    budget = override.budget if override is not None and override.budget is not None else room.privacy.budget
    return Budget(epsilon=budget.epsilon, delta=budget.delta, refresh=budget.refresh.value,
                  accounting=room.privacy.accounting.value)


def budgets_for(room: CleanRoom) -> dict:
    """Every analyst's budget in this clean room (empty without differential privacy)."""
    if room.privacy is None:
        return {}
    return {name: budget_for(room, name) for name in sorted(room.analysts)}


def spent_json(charged: tuple) -> dict:
    """A query's charge as the protection JSON and the audit record show it:
    {"epsilon", "delta"}, and "rho" when it was accounted as zCDP."""
    shown = {"epsilon": charged[0], "delta": charged[1]}
    return {**shown, "rho": charged[2]} if len(charged) > 2 else shown


def plan_cost(plan):
    """What the ledger debits for a NoisePlan: Spend(epsilon, delta) under pure
    accounting, Spend(0, delta, rho, "zcdp") under zcdp, rho being the sum of the
    plan's measurements' rho (delta: private key selection only)."""
    if plan.privacy.accounting != ZCDP:
        return Spend(plan.epsilon, plan.delta)
    return Spend(0.0, plan.delta, plan.rho, ZCDP)


def describe(settings: DifferentialPrivacy) -> str:
    if settings.accounting.value == ZCDP:
        per_query = (f"epsilon {settings.epsilon_per_query} per query as zCDP "
                     f"(rho {query_rho(settings.epsilon_per_query):g})")
    else:
        per_query = f"epsilon {settings.epsilon_per_query} per query"
    return (f"{settings.mechanism.value}, {per_query}, "
            f"budget {settings.budget.epsilon} ({settings.budget.refresh.value})")
