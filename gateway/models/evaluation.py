"""Evaluating a model from what the gateway releases: aggregates only.

Lift and calibration come straight out of a template that groups by score bucket
(docs/models.md#evaluation). The AUC is post-processing of a released histogram
of scores by label: per bucket, the (noisy) number of units and of positives.
Computing on released values costs no privacy, so it runs wherever the analyst
likes; this is the same arithmetic the docs show.
"""

from __future__ import annotations

from typing import Iterable


def auc_from_histogram(rows: Iterable[tuple[float, float, float]]) -> float:
    """The area under the ROC curve of a score whose histogram is `rows`: (bucket,
    units, positives), buckets ordered by score. Ties inside a bucket count half, as
    for a score known only to the bucket's precision. Noisy counts are first made
    consistent: no negative count, no more positives than units. NaN without both
    positives and negatives."""
    ordered = sorted((float(b), max(float(n or 0), 0.0), max(float(p or 0), 0.0)) for b, n, p in rows)
    positives_seen = negatives_seen = area = 0.0
    for _, units, positives in ordered:
        positives = min(positives, units)
        negatives = units - positives
        area += positives * (negatives_seen + negatives / 2)
        positives_seen += positives
        negatives_seen += negatives
    if positives_seen == 0 or negatives_seen == 0:
        return float("nan")
    # each positive outranks the negatives of the buckets below its own, and half of its own bucket's
    return area / (positives_seen * negatives_seen)
