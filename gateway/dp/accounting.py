"""Zero-concentrated DP (rho-zCDP) beside pure epsilon-DP: what a query costs
and what a running total is worth as (epsilon, delta).

Under `privacy.accounting: zcdp` a query whose effective epsilon_per_query is
epsilon costs rho = epsilon^2 / 2: an epsilon-DP mechanism is (epsilon^2 / 2)-zCDP
(Bun and Steinke 2016, Proposition 1.4), so switching accounting keeps each
query's nominal strength, and the noise is Gaussian (calibrated by the L2
sensitivity, which is sqrt(groups per unit) times smaller than the L1
sensitivity Laplace noise needs). zCDP composes by adding rho, and rho-zCDP
implies (epsilon, delta)-DP for every delta > 0 with

    epsilon = rho + 2 * sqrt(rho * ln(1 / delta))        (Bun and Steinke, Proposition 1.3)

which is what the ledger uses to hold the running total against the budget
(OpenDP's make_zCDP_to_approxDP uses a tighter bound of Canonne, Kamath and
Steinke 2020; the standard one is never below it, so using it spends more
than necessary and never less). Because epsilon grows with sqrt(rho) while rho
adds up linearly, n queries cost about 2 * sqrt(n * rho * ln(1/delta)) instead
of n * epsilon: the same budget buys several times more queries.

The ledger's arithmetic is exact: amounts are integer units (epsilon and rho
in 1e-12, delta in 1e-18, as in gateway/dp/ledger.py), the conversion runs in
60-digit decimals, the epsilon a total is worth is rounded up and the rho that
still fits is rounded down.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext

PURE = "pure"
ZCDP = "zcdp"
ACCOUNTINGS = (PURE, ZCDP)

_DIGITS = 60


def query_rho(epsilon: float) -> float:
    """The rho a query of this epsilon costs under zcdp accounting: epsilon^2 / 2,
    computed on the epsilon as written (0.1 gives 0.005, not 0.005000000000000001)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number >= 0, not {epsilon!r}")
    return float(Decimal(repr(float(epsilon))) ** 2 / 2)


def rho_to_epsilon(rho: float, delta: float) -> float:
    """The epsilon of rho-zCDP at this delta: rho + 2 sqrt(rho ln(1/delta)) (inf when delta is 0 and rho > 0)."""
    _check(rho, delta)
    if rho == 0:
        return 0.0
    if delta == 0:
        return math.inf
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def max_rho(epsilon: float, delta: float) -> float:
    """The largest rho whose conversion at delta is within epsilon:
    (sqrt(ln(1/delta) + epsilon) - sqrt(ln(1/delta)))^2."""
    _check(epsilon, delta)
    if delta == 0:
        return 0.0
    log = math.log(1 / delta)
    return (math.sqrt(log + epsilon) - math.sqrt(log)) ** 2


def _check(amount: float, delta: float) -> None:
    for name, value in (("amount", amount), ("delta", delta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    if delta > 1:
        raise ValueError(f"delta must be at most 1, not {delta!r}")


# -- exact, in ledger units --------------------------------------------------------


def epsilon_units_of_rho(rho_units: int, delta_units: int, epsilon_scale: int, rho_scale: int,
                         delta_scale: int) -> int | None:
    """Epsilon units (rounded up) that rho_units of rho are worth at delta_units of
    delta; None when there is rho to convert but no delta to convert it with."""
    if rho_units == 0:
        return 0
    if delta_units <= 0:
        return None
    with localcontext() as context:
        context.prec = _DIGITS
        rho = Decimal(rho_units) / rho_scale
        delta = min(Decimal(delta_units) / delta_scale, Decimal(1))
        epsilon = rho + 2 * (rho * (1 / delta).ln()).sqrt()
        return int((epsilon * epsilon_scale).to_integral_value(rounding=ROUND_CEILING))


def max_rho_units(epsilon_units: int, delta_units: int, epsilon_scale: int, rho_scale: int,
                  delta_scale: int) -> int:
    """Rho units (rounded down) whose conversion at delta_units fits in epsilon_units."""
    if epsilon_units <= 0 or delta_units <= 0:
        return 0
    with localcontext() as context:
        context.prec = _DIGITS
        epsilon = Decimal(epsilon_units) / epsilon_scale
        log = (1 / min(Decimal(delta_units) / delta_scale, Decimal(1))).ln()
        rho = ((log + epsilon).sqrt() - log.sqrt()) ** 2
        units = int((rho * rho_scale).to_integral_value(rounding=ROUND_FLOOR))
    # the closed form and the rounded-up conversion must agree: step down past any tie
    while units > 0 and epsilon_units_of_rho(units, delta_units, epsilon_scale, rho_scale, delta_scale) > epsilon_units:
        units -= 1
    return units


def opendp_epsilon(rho: float, delta: float) -> float:
    """OpenDP's own conversion (make_zCDP_to_approxDP's map): the tighter bound,
    for comparison; the ledger does not use it."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    # A Gaussian whose map is rho at d_in 1: rho = 1 / (2 scale^2).
    gaussian = dp.m.make_gaussian(*space, scale=math.sqrt(1 / (2 * rho)))
    return float(dp.c.make_zCDP_to_approxDP(gaussian).map(1.0).epsilon(delta))
