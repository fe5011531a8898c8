"""The clean room as the engine sees it, once a policy file has been validated.

Everything here is immutable: a reload builds a new CleanRoom and swaps it in
whole, so a query never sees half of an edit.
"""

from __future__ import annotations

import enum
import datetime
from dataclasses import dataclass, field
from typing import Mapping

from gateway.models.files import ModelFile
from gateway.policy.aggregates import NAMES as AGGREGATE_NAMES


class Role(str, enum.Enum):
    """What an analyst may do with a column."""

    JOIN_KEY = "join_key"  # equi-joins on declared keys, and COUNT(DISTINCT ...) only
    DIMENSION = "dimension"  # SELECT, GROUP BY, WHERE
    MEASURE = "measure"  # only inside allowed aggregates; needs bounds
    HIDDEN = "hidden"  # does not exist for analysts


# Aggregate.COUNT, Aggregate.SUM, ...: one member per entry of the registry (gateway.policy.aggregates).
Aggregate = enum.Enum("Aggregate", {name.upper(): name for name in AGGREGATE_NAMES}, type=str, module=__name__)


class Mechanism(str, enum.Enum):
    """How differentially private releases are noised (gateway/dp/mechanisms.py)."""

    # Discrete Laplace on counts, OpenDP's float-safe Laplace on sums, the
    # permute-and-flip over quantile scores for medians; pure epsilon-DP with basic composition
    # (private partition selection adds delta).
    LAPLACE = "laplace"


class Accounting(str, enum.Enum):
    """How the privacy loss of an analyst's queries adds up (gateway/dp/accounting.py)."""

    PURE = "pure"  # epsilon-DP, basic composition: costs add up as epsilon
    ZCDP = "zcdp"  # rho-zero-concentrated DP: rho adds up, converted to (epsilon, delta) for the budget


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
class MeasureProfile:
    """A measure's values under DP (the owner's `cleanroom contributions --epsilon E --profile`):
    counts[i] values in [edges[i], edges[i + 1]), the last bin at or above edges[-1]; edges run
    from the measure's declared lower bound to its declared upper bound."""

    column: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class TableProfile:
    """A private table's contributions under DP, published by its owner into the policy
    (`privacy.profile`): gateway/dp/bound_choice.py picks each query's bounds from it."""

    table: str
    units_by_rows: tuple[int, ...]  # [i]: units with i + 1 rows in the table; the last: that many or more
    epsilon: float | None = None  # what the owner spent computing it (recorded in the ledger)
    measures: tuple[MeasureProfile, ...] = ()


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Differential privacy for released aggregates, per privacy unit.

    Guarantee: each query is (epsilon_per_query, delta_per_query)-DP for the
    privacy unit, given that no unit adds more than max_rows_per_unit rows to
    a group, touches more than max_groups_per_unit groups or (when set) adds
    more than max_contributions_per_unit rows to the whole query. The engine
    enforces these limits by rewriting the query, so the guarantee holds
    whatever the data are. delta is spent only when group keys are not public.
    """

    epsilon_per_query: float
    budget: PrivacyBudget
    delta_per_query: float = 1e-6
    max_rows_per_unit: int = 10
    max_groups_per_unit: int = 4
    mechanism: Mechanism = Mechanism.LAPLACE
    accounting: Accounting = Accounting.PURE
    # share of each query's loss spent on a noisy count, per released group, of the units with
    # more than max_rows_per_unit rows in it (gateway/dp/families/clipping.py); None: not reported
    report_clipping: float | None = None
    # rows one unit adds to a whole query, over all its groups (gateway/dp/bounding.py keeps the
    # first ones in keyed-hash order of its groups); None: only rows x groups bound it
    max_contributions_per_unit: int | None = field(default=None, metadata={"canonical": "omit_when_unset"})
    # False: groups on public keys are all released, whatever their noisy unit count, and no
    # share of the query's loss goes to counting units for k (as Tumult and PipelineDP release
    # public partitions); None or True: k applies to a noisy unit count on public keys too
    min_group_size_on_public_keys: bool | None = field(default=None, metadata={"canonical": "omit_when_unset"})
    # the owners' DP contribution profiles of their tables: with them each query's
    # max_contributions_per_unit (and a profiled measure's upper bound) is chosen per query, at
    # most the declared ones (gateway/dp/bound_choice.py); None: the declared bounds apply as they are
    profiles: tuple[TableProfile, ...] | None = field(default=None, metadata={"canonical": "omit_when_unset"})


@dataclass(frozen=True)
class PrivacyOverride:
    """Per analyst, rule or template settings that replace the clean room's.
    Unset fields (None) keep the clean room's value."""

    epsilon_per_query: float | None = None
    delta_per_query: float | None = None
    max_rows_per_unit: int | None = None
    max_groups_per_unit: int | None = None
    budget: PrivacyBudget | None = None  # analysts only
    max_contributions_per_unit: int | None = field(default=None, metadata={"canonical": "omit_when_unset"})


@dataclass(frozen=True)
class Bounds:
    """Declared range of a measure: values outside it are clamped before aggregation."""

    lower: float
    upper: float


class BucketUnit(str, enum.Enum):
    """A period a date or timestamp dimension may be grouped by as a public key."""

    DAY = "day"
    WEEK = "week"  # ISO weeks, starting on Monday (DuckDB's date_trunc('week', ...))
    MONTH = "month"


MAX_BUCKETS = 10_000  # per declared unit: a grid of public keys larger than this is refused at load


@dataclass(frozen=True)
class TimeBuckets:
    """A public range of a date or timestamp dimension and the periods analysts may
    group it by. Every period of the range is a public group key: known from the
    policy alone, released whether or not rows fall in it."""

    start: datetime.date  # first day of the range
    end: datetime.date  # last day of the range, included whole
    units: tuple[BucketUnit, ...]

    def starts(self, unit: BucketUnit, low: datetime.date | None = None,
               high: datetime.date | None = None) -> tuple[datetime.date, ...]:
        """The first day of every `unit` period that holds a day of the range
        (narrowed to [low, high] when given), in order."""
        first = max(self.start, low) if low is not None else self.start
        last = min(self.end, high) if high is not None else self.end
        if first > last:
            return ()
        day, found = truncate(first, unit), []
        while day <= last:
            found.append(day)
            day = following(day, unit)
        return tuple(found)


def truncate(day: datetime.date, unit: BucketUnit) -> datetime.date:
    """The first day of the period `day` falls in (date_trunc)."""
    if unit is BucketUnit.WEEK:
        return day - datetime.timedelta(days=day.weekday())
    if unit is BucketUnit.MONTH:
        return day.replace(day=1)
    return day


def following(start: datetime.date, unit: BucketUnit) -> datetime.date:
    """The first day of the period after the one starting on `start`."""
    if unit is BucketUnit.WEEK:
        return start + datetime.timedelta(days=7)
    if unit is BucketUnit.MONTH:
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + datetime.timedelta(days=1)


@dataclass(frozen=True)
class Column:
    name: str
    role: Role
    description: str = ""
    values: tuple[str | int | float, ...] | None = None  # public list of values of a dimension
    bounds: Bounds | None = None  # measures only
    # dimensions of type DATE or TIMESTAMP: public periods to group by. Left out of
    # approvals' canonical forms when unset, so declaring none keeps existing approvals.
    buckets: TimeBuckets | None = field(default=None, metadata={"canonical": "omit_when_unset"})


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
    # models score() may name under this rule; left out of canonical forms when none
    models: tuple[str, ...] | None = field(default=None, metadata={"canonical": "omit_when_unset"})


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
    key: str | None = None  # row-level outputs: the column of the receiver's own unit ids


@dataclass(frozen=True)
class Training:
    """What `cleanroom train` fits on a training template's rows."""

    kind: str  # "logistic" or "linear" (gateway.models.training.KINDS)
    label: str  # the output column it predicts; the others but the first (the unit) are its features


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
    # one row per unit to the output's one receiver, without k or noise: only with every owner's
    # approval of this exact template (docs/models.md#row-level-outputs; gateway/policy/row_level.py)
    row_level_output: bool = False
    # a training template (docs/models.md#training): its rows are never released, a DP regression is fitted on them
    training: Training | None = None


@dataclass(frozen=True)
class Model:
    """A model asset (docs/models.md): an ONNX file one collaborator brings, scored by
    score('name', ...) in approved templates and in rules that name it. Other parties
    see its name, owner, inputs, output and hash; its file is read by executors only."""

    name: str
    owner: str  # collaborator id: approves every template and rule that scores it
    file: ModelFile  # path (resolved against the policy's folder), sha256, inputs, output, bounds
    description: str = ""

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.file.lower, self.file.upper)


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


class TimingPad(str, enum.Enum):
    DP = "dp"  # rooms with differential privacy
    ALWAYS = "always"
    OFF = "off"


@dataclass(frozen=True)
class Timing:
    """When answers over private tables leave: at the first step of the ladder
    step_seconds * 2**i that the statement has not outrun (gateway/engine/timing.py)."""

    pad: TimingPad = TimingPad.DP
    step_seconds: float = 0.25


@dataclass(frozen=True)
class QuotaLimits:
    """What one analyst, or all of one collaborator's analysts together, may take
    of the gateway host (gateway/quotas/). None: not set at this level, the next
    one decides (the room's default, then the operator's config)."""

    concurrent_statements: int | None = None  # admitted and not yet finished
    statements_per_minute: int | None = None  # admitted in the last 60 seconds
    engine_seconds_per_hour: float | None = None  # spent running in the last hour


@dataclass(frozen=True)
class Quotas:
    """The policy's `quotas:` section: room-wide defaults and overrides by name.
    The operator's config caps every value (gateway.quotas.limits)."""

    per_analyst: QuotaLimits = QuotaLimits()
    per_collaborator: QuotaLimits = QuotaLimits()
    analysts: Mapping[str, QuotaLimits] = field(default_factory=dict)
    collaborators: Mapping[str, QuotaLimits] = field(default_factory=dict)


@dataclass(frozen=True)
class CleanRoom:
    name: str  # also the database name over the wire
    collaborators: Mapping[str, Collaborator]
    tables: Mapping[str, Table]
    models: Mapping[str, Model] = field(default_factory=dict)
    rules: Mapping[str, AggregationRule] = field(default_factory=dict)
    templates: Mapping[str, Template] = field(default_factory=dict)
    analysts: Mapping[str, Analyst] = field(default_factory=dict)
    members: Mapping[str, Member] = field(default_factory=dict)
    min_group_size: int = 10  # default k, raised by stricter table, rule or template settings
    description: str = ""
    privacy: DifferentialPrivacy | None = None  # None: k-thresholds only, no noise
    timing: Timing = Timing()
    quotas: Quotas = Quotas()  # empty: the operator's limits (gateway config) apply as they are
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


def group_size(room: CleanRoom, tables: frozenset[str], extra: int | None) -> int:
    """k: the strictest of the clean room's, the tables' and the rule's or template's."""
    sizes = [room.min_group_size, extra or 0]
    sizes += [room.tables[t].min_group_size or 0 for t in tables]
    return max(sizes)
