"""The clean room as the engine sees it, once a policy file has been validated.

Everything here is immutable: a reload builds a new CleanRoom and swaps it in
whole, so a query never sees half of an edit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping


class Role(str, enum.Enum):
    """What an analyst may do with a column."""

    JOIN_KEY = "join_key"  # equi-joins on declared keys, and COUNT(DISTINCT ...) only
    DIMENSION = "dimension"  # SELECT, GROUP BY, WHERE
    MEASURE = "measure"  # only inside allowed aggregates; needs bounds
    HIDDEN = "hidden"  # does not exist for analysts


class Aggregate(str, enum.Enum):
    COUNT = "count"
    COUNT_DISTINCT = "count_distinct"
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    MEDIAN = "median"  # median(x) and percentile_cont(q) WITHIN GROUP (ORDER BY x)


class Mechanism(str, enum.Enum):
    """How differentially private releases are noised (gateway/dp/mechanisms.py)."""

    # Discrete Laplace on counts, OpenDP's float-safe Laplace on sums, the
    # permute-and-flip over quantile scores for medians; pure epsilon-DP with basic composition
    # (private partition selection adds delta).
    LAPLACE = "laplace"


class Refresh(str, enum.Enum):
    """When a privacy budget starts again. Each refresh is new privacy loss."""

    NEVER = "never"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True)
class PrivacyBudget:
    """Total privacy loss one analyst may spend (per period, if it refreshes)."""

    epsilon: float
    delta: float = 0.0
    refresh: Refresh = Refresh.NEVER


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Differential privacy for released aggregates, per privacy unit.

    Guarantee: each query is (epsilon_per_query, delta_per_query)-DP for the
    privacy unit, given that no unit adds more than max_rows_per_unit rows to
    a group or touches more than max_groups_per_unit groups. The engine
    enforces both limits by rewriting the query, so the guarantee holds
    whatever the data are. delta is spent only when group keys are not public.
    """

    epsilon_per_query: float
    budget: PrivacyBudget
    delta_per_query: float = 1e-6
    max_rows_per_unit: int = 10
    max_groups_per_unit: int = 4
    mechanism: Mechanism = Mechanism.LAPLACE


@dataclass(frozen=True)
class PrivacyOverride:
    """Per analyst, rule or template settings that replace the clean room's.
    Unset fields (None) keep the clean room's value."""

    epsilon_per_query: float | None = None
    delta_per_query: float | None = None
    max_rows_per_unit: int | None = None
    max_groups_per_unit: int | None = None
    budget: PrivacyBudget | None = None  # analysts only


@dataclass(frozen=True)
class Bounds:
    """Declared range of a measure: values outside it are clamped before aggregation."""

    lower: float
    upper: float


@dataclass(frozen=True)
class Column:
    name: str
    role: Role
    description: str = ""
    values: tuple[str | int | float, ...] | None = None  # public list of values of a dimension
    bounds: Bounds | None = None  # measures only


@dataclass(frozen=True)
class Table:
    name: str  # the name analysts use
    owner: str  # collaborator id
    source: str  # source name in the gateway config
    relation: str | None  # table inside the source ("schema.table" or "table"); None for file sources
    columns: Mapping[str, Column]  # every declared column, hidden ones included
    privacy_unit: str | None = None  # column naming the protected entity; None only if public
    public: bool = False  # reference data: rows may be read as they are
    keys: tuple[str, ...] = ()  # public tables: columns other tables may join on
    min_group_size: int | None = None  # overrides the clean room's default when stricter
    description: str = ""
    max_epsilon_per_query: float | None = None  # the owner's cap on any query reading this table

    def visible(self) -> dict[str, Column]:
        """Columns that exist for analysts (hidden ones do not)."""
        return {n: c for n, c in self.columns.items() if c.role is not Role.HIDDEN}


@dataclass(frozen=True)
class ColumnRef:
    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class JoinPath:
    """An allowed equi-join between two declared columns (order does not matter)."""

    left: ColumnRef
    right: ColumnRef

    def connects(self, a: ColumnRef, b: ColumnRef) -> bool:
        return {a, b} == {self.left, self.right}


@dataclass(frozen=True)
class AggregationRule:
    """Ad-hoc aggregate queries allowed over `tables`."""

    name: str
    tables: tuple[str, ...]
    aggregates: frozenset[Aggregate]
    joins: tuple[JoinPath, ...] = ()
    min_group_size: int | None = None
    description: str = ""
    privacy: PrivacyOverride | None = None


class ParamType(str, enum.Enum):
    ENUM = "enum"
    INTEGER = "integer"
    NUMBER = "number"
    DATE = "date"
    STRING = "string"  # must match `pattern`


@dataclass(frozen=True)
class Parameter:
    name: str
    type: ParamType
    description: str = ""
    values: tuple[str | int | float, ...] | None = None  # enum
    minimum: float | str | None = None  # integer/number bound, or ISO date for dates
    maximum: float | str | None = None
    pattern: str | None = None  # string: full-match regular expression
    default: object | None = None


@dataclass(frozen=True)
class Output:
    """Where a template's result goes instead of back to the caller: a named
    output only the receiving collaborators may read, until retention ends."""

    name: str
    receivers: tuple[str, ...]  # collaborator ids


@dataclass(frozen=True)
class Template:
    """Approved, parameterised SQL. Placeholders are written `:name`."""

    name: str
    sql: str
    parameters: tuple[Parameter, ...] = ()
    description: str = ""
    min_group_size: int | None = None
    output: Output | None = None
    privacy: PrivacyOverride | None = None
    # Differential privacy: bounds of columns the template derives (e.g. a
    # per-household count), by output name, so they can be clamped and noised.
    bounds: Mapping[str, Bounds] = field(default_factory=dict)


@dataclass(frozen=True)
class Collaborator:
    name: str
    display_name: str = ""
    description: str = ""


@dataclass(frozen=True)
class Analyst:
    """What one user may do in this clean room. Credentials live in the gateway config."""

    name: str
    collaborator: str
    rules: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    privacy: PrivacyOverride | None = None


class MemberRole(str, enum.Enum):
    """What a user may do for its collaborator besides querying (analysts: `analysts:`)."""

    APPROVER = "approver"  # approves templates touching its collaborator's tables
    AUTHOR = "author"  # proposes templates for approval
    AUDITOR = "auditor"  # reads the audit log of this clean room


@dataclass(frozen=True)
class Member:
    """A user's collaboration roles. Credentials live in the gateway config."""

    name: str
    collaborator: str
    roles: frozenset[MemberRole] = frozenset()


@dataclass(frozen=True)
class CleanRoom:
    name: str  # also the database name over the wire
    collaborators: Mapping[str, Collaborator]
    tables: Mapping[str, Table]
    rules: Mapping[str, AggregationRule] = field(default_factory=dict)
    templates: Mapping[str, Template] = field(default_factory=dict)
    analysts: Mapping[str, Analyst] = field(default_factory=dict)
    members: Mapping[str, Member] = field(default_factory=dict)
    min_group_size: int = 10  # default k, raised by stricter table, rule or template settings
    description: str = ""
    privacy: DifferentialPrivacy | None = None  # None: k-thresholds only, no noise
    source_file: str = ""
    version: str = ""  # sha256 of the policy file's bytes: cache keys and audit records use it

    def analyst(self, user: str) -> Analyst | None:
        return self.analysts.get(user)

    def has_role(self, user: str, role: MemberRole) -> bool:
        member = self.members.get(user)
        return member is not None and role in member.roles

    def collaborator_of(self, user: str) -> str | None:
        """The collaborator a user works for here (analyst or member), or None."""
        member = self.members.get(user)
        if member is not None:
            return member.collaborator
        analyst = self.analysts.get(user)
        return analyst.collaborator if analyst else None
