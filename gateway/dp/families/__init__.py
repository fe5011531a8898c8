"""Aggregate families, one module each: unit count (units), row count (rows),
sum (sums), centred sum and average (averages), quantile (quantiles), and the
optional count of clipped units (clipping). gateway.dp.families.base says what a
family declares.

Each module registers itself: its `FAMILY` (one kind of noisy quantity) and its
`RELEASES` (the aggregates it releases, by the names of gateway.policy.aggregates)
are collected here from every module of the package, so a new aggregate is its
registry entry and its module (docs/contributing.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from gateway.dp.families.base import Contribution, Family, Interval


def _modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name != "base":
            yield importlib.import_module(f"{__name__}.{info.name}")


_MODULES = tuple(_modules())

# Noisy quantities by kind: sensitivity, bounding SQL, measurement.
QUANTITIES: dict = {module.FAMILY.kind: module.FAMILY for module in _MODULES}

# Released aggregates by Output.aggregate: post-processing and error of the released value.
AGGREGATES: dict = {name: release for module in _MODULES for name, release in module.RELEASES.items()}

__all__ = ["AGGREGATES", "QUANTITIES", "Contribution", "Family", "Interval"]
