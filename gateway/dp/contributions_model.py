"""What the owner's contribution report (gateway/dp/contributions.py, exact; and
gateway/dp/contributions_dp.py, under DP) measures: a table's dimensions and
measures, and the bounds its policy sets now."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from gateway.policy.model import CleanRoom, Role, Table

# -- the dimensions and measures of a table -----------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One way of grouping: a dimension column, or one declared time bucket of it."""

    name: str  # "category", "purchased_on by week"
    expression: str  # SQL over the table's columns
    in_keys: str  # SQL condition: the row's group is one the gateway would release (TRUE: any)
    public: bool  # its keys are public (declared values or buckets)


@dataclass(frozen=True)
class Measure:
    name: str
    column: str
    lower: float
    upper: float


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def dimensions(table: Table) -> list[Dimension]:
    found = []
    for column in table.columns.values():
        if column.role is not Role.DIMENSION:
            continue
        quoted = quote(column.name)
        buckets = getattr(column, "buckets", None)
        if buckets is not None:
            end = buckets.end + dt.timedelta(days=1)
            in_range = (f"{quoted} >= DATE '{buckets.start.isoformat()}' AND {quoted} < DATE '{end.isoformat()}'")
            for unit in buckets.units:
                found.append(Dimension(f"{column.name} by {unit.value}",
                                       f"date_trunc('{unit.value}', {quoted})", in_range, True))
        elif column.values is not None:
            values = ", ".join(literal(v) for v in column.values)
            found.append(Dimension(column.name, quoted, f"{quoted} IN ({values})", True))
        else:
            found.append(Dimension(column.name, quoted, "TRUE", False))
    return found


def measures(table: Table) -> list[Measure]:
    return [Measure(c.name, quote(c.name), float(c.bounds.lower), float(c.bounds.upper))
            for c in table.columns.values() if c.role is Role.MEASURE and c.bounds is not None]


# -- candidate bounds ----------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The bounds the policy sets now (defaults of DifferentialPrivacy when it has no privacy section)."""

    max_rows_per_unit: int
    max_groups_per_unit: int
    epsilon: float | None  # per query; None: no differential privacy
    accounting: str
    max_contributions_per_unit: int | None = None

    @classmethod
    def of(cls, room: CleanRoom) -> "Policy":
        privacy = room.privacy
        if privacy is None:
            return cls(10, 4, None, "pure")
        return cls(privacy.max_rows_per_unit, privacy.max_groups_per_unit, privacy.epsilon_per_query,
                   privacy.accounting.value, privacy.max_contributions_per_unit)


def fresh_salt() -> str:
    """A key for the DP report's hash picks (which groups and values of a unit are
    kept), new every run and never shown."""
    return secrets.token_hex(16)
