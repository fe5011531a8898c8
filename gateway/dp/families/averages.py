"""Average: AVG(x) = midpoint + noisy SUM(x - midpoint) / noisy COUNT(x), x a
measure with declared bounds [lower, upper] and midpoint m = (lower + upper) / 2.

The centred sum is this module's quantity. Sensitivity: centring halves the
largest magnitude a value can have, (upper - lower) / 2 per row, times the rows a
unit may add (as the row count's: l1 = min(C, r g), l2 = r sqrt(g) without
max_contributions_per_unit C). Bounding: as a sum (scaled for units over their
allowance), of x - m; its count is the same rows' (the same allowance).
Measurement: Laplace or Gaussian on the vector of centred sums; the count is the
row-count family's (gateway.dp.families.rows).

Post-processing: the ratio, forced into [lower, upper]; NULL where the noisy
count is not positive. Error: the ratio's own interval, conservative. With
probability >= 95% both noises are within their 97.5% half-widths h_s and h_n
(a union bound), and then the noise-free average is
m + (S - e_s) / (N - e_n) for some |e_s| <= h_s, |e_n| <= h_n, with a true count
N - e_n >= 1; that ratio is monotone in each error, so its range is spanned by
the four corners, then clamped to the bounds. Near a count of h_n or below the
interval is the whole [lower, upper]: such an average says little.
"""

from __future__ import annotations

import math

from gateway.dp.families.base import TAIL, Contribution, Interval, Sensitivity, within
from gateway.dp.families.sums import Sum
from gateway.dp.plan import Kind, Output, Quantity

EXAMPLE_COUNTS = (100, 1_000, 10_000, 100_000)


class CenteredSum(Sum):
    kind = Kind.CENTERED_SUM

    def magnitude(self, quantity: Quantity) -> float:
        return (quantity.bounds.upper - quantity.bounds.lower) / 2

    def sensitivity(self, quantity: Quantity, contribution: Contribution) -> Sensitivity:
        return Sensitivity.of_rows(contribution, self.magnitude(quantity))

    def summed(self, quantity: Quantity) -> str:
        return f'("{quantity.value}" - {quantity.midpoint!r})'


def ratio_interval(centred: float, count: float, h_sum: float, h_count: float, lower: float,
                   upper: float) -> Interval:
    midpoint = (lower + upper) / 2
    if count <= 0:
        return Interval(None, None, None)
    value = within(midpoint + centred / count, lower, upper)
    low_count = max(count - h_count, 1.0)
    if count + h_count < 1:  # pragma: no cover - count > 0 and h >= 0 make this impossible
        return Interval(value, lower, upper)
    corners = [midpoint + s / n for s in (centred - h_sum, centred + h_sum) for n in (low_count, count + h_count)]
    return Interval(value, within(min(corners), lower, upper), within(max(corners), lower, upper))


class Averages:
    integer = False
    capped = "an average weighs it as that many rows"  # what max_rows_per_unit does (gateway.dp.notices)

    def half_widths(self, output: Output, measurements: dict) -> tuple[float, float]:
        centred, count = output.quantities
        return measurements[centred].ci(TAIL / 2), measurements[count].ci(TAIL / 2)

    def release(self, output: Output, noisy: dict, measurements: dict) -> list[Interval]:
        h_sum, h_count = self.half_widths(output, measurements)
        centred, count = output.quantities
        bounds = output.bounds
        return [ratio_interval(s, n, h_sum, h_count, bounds.lower, bounds.upper)
                for s, n in zip(noisy[centred], noisy[count])]

    def interval(self, output: Output, measurements: dict) -> dict:
        """Before it runs, the half-width at a few released counts n, for an average at
        a bound (the widest): (h_s + (upper - lower) / 2 * h_n) / (n - h_n)."""
        h_sum, h_count = self.half_widths(output, measurements)
        half_range = (output.bounds.upper - output.bounds.lower) / 2
        examples = {}
        for n in EXAMPLE_COUNTS:
            width = math.inf if n <= h_count else (h_sum + half_range * h_count) / (n - h_count)
            examples[n] = min(width, half_range * 2)
        shown = "; ".join(f"±{w:.3g} at n = {n:,}" for n, w in examples.items())
        return {"kind": "ratio", "level": 1 - TAIL, "sum_half_width": h_sum, "count_half_width": h_count,
                "per_row": True, "at_count": {str(n): w for n, w in examples.items()},
                "text": f"per row, from the noisy sum and count (at most {shown})",
                "clamped_to": [output.bounds.lower, output.bounds.upper]}


FAMILY = CenteredSum()
AVG = Averages()
RELEASES = {"avg": AVG}
