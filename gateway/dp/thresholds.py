"""What a group must clear to be released when its keys are selected privately,
in privacy units, so an analyst sees it before paying (EXPLAIN).

Private partition selection releases a group only when its noisy unit count
reaches the selection threshold (and the minimum group size, applied to the
same noisy count). The threshold follows from the query's epsilon share, delta
and max_groups_per_unit alone, never from the data. With discrete Laplace
noise of scale s, P(noise = x) = (1 - a) / (1 + a) * a^|x| with a = exp(-1/s):
- a group of exactly `cut` units is released with probability 1 / (1 + a), a
  little over one half, and one unit fewer with a / (1 + a), under one half;
- it is released with probability at least 95% from cut + m units, m the least
  integer >= 0 with P(noise <= -(m + 1)) = a^(m + 1) / (1 + a) <= 5%.
Units are counted after contribution bounding: a unit counts in at most
max_groups_per_unit groups of one query.
"""

from __future__ import annotations

import math

_LIKELY = 0.95


def units_needed(threshold: int, scale: float, min_group_size: int) -> dict:
    """The noisy unit count a group must reach, and how many units give it even
    odds and a 95% chance of being released."""
    cut = max(int(threshold), int(min_group_size))
    return {
        "noisy_units_at_least": cut,
        "units_for_even_odds": cut,
        "units_for_95_percent": cut + _margin(scale),
    }


def _margin(scale: float) -> int:
    """The least m >= 0 with P(noise <= -(m + 1)) <= 5% for discrete Laplace(scale)."""
    if scale <= 0:
        return 0
    a = math.exp(-1 / scale)
    # a^(m+1) / (1+a) <= 1 - _LIKELY  <=>  m + 1 >= ln((1 - _LIKELY) (1 + a)) / ln(a)
    m = max(0, math.ceil(math.log((1 - _LIKELY) * (1 + a)) / math.log(a)) - 1)
    while m > 0 and a ** m / (1 + a) <= 1 - _LIKELY:
        m -= 1  # guard against rounding up past the least m
    while a ** (m + 1) / (1 + a) > 1 - _LIKELY:
        m += 1
    return m


def sentence(needed: dict, privacy_unit: str) -> str:
    """The same, for people: what a group needs to be released."""
    return (f"a group is released only if its noisy count of distinct {privacy_unit} reaches "
            f"{needed['noisy_units_at_least']:,}: a group of {needed['units_for_even_odds']:,} distinct "
            f"{privacy_unit} values has even odds of release, one of {needed['units_for_95_percent']:,} a 95% chance")
