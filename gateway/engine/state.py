"""The state that flows through the pipeline. Each pass returns a new one.

Fields fill in pass by pass; a pass reads only what earlier passes wrote.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import pyarrow as pa
from sqlglot import expressions as exp

from gateway.engine.types import QueryRequest, Release
from gateway.plan.units import TableUse
from gateway.policy.model import Analyst, CleanRoom, Template

if TYPE_CHECKING:
    from gateway.dp.noising import Measurement
    from gateway.dp.plan import NoisePlan
    from gateway.engine.admit import Admission
    from gateway.engine.context import EngineContext
    from gateway.engine.timing import StatementClock


class Authority(str, enum.Enum):
    """What authorised a query: an approval subject of the policy, or none needed."""

    RULE = "rule"  # an aggregation rule every owner approved
    TEMPLATE = "template"  # an approved template
    PUBLIC = "public"  # public tables only


@dataclass(frozen=True)
class Authorisation:
    authority: Authority
    name: str | None  # the rule's or template's name; None for PUBLIC
    min_group_size: int | None  # None when no private table is read
    template_sha256: str | None = None  # templates: the canonical hash every owner approved
    approvals: tuple[str, ...] = ()  # the approvals' hashes (gateway.collab.approvals)

    @property
    def authorised_by(self) -> str:
        """As audit records, the API and EXPLAIN show it: "rule:<name>", "template:<name>" or "public"."""
        return self.authority.value if self.name is None else f"{self.authority.value}:{self.name}"


@dataclass(frozen=True)
class QueryState:
    request: QueryRequest
    cleanroom: CleanRoom
    analyst: Analyst
    context: "EngineContext" = field(repr=False, compare=False)

    recalled: bool = False  # recall: the analysis below came from the cache
    describing: bool = False  # Engine.describe: parameters are stand-ins, nothing runs or is charged
    template: Template | None = None  # set by parse for template runs
    tree: exp.Expression | None = None  # parse: the statement with parameters bound as literals
    canonical_sql: str | None = None  # resolve: normalised text, the statement's identity
    uses: tuple[TableUse, ...] = ()  # resolve: policy tables read by the outermost SELECT, by alias
    tables_read: frozenset[str] = frozenset()  # resolve: every policy table read anywhere
    outer: exp.Select | None = None  # peel: a query over the released rows of `tree` (over_released.py)
    authorisation: Authorisation | None = None  # authorise
    noise_plan: "NoisePlan | None" = None  # plan_noise: differential privacy (None: k-thresholds only)
    measurement_key: str | None = None  # plan_noise: identity of the noisy measurement (release cache key)
    generated_sql: str | None = None  # rewrite: the only SQL DuckDB ever receives
    counts_suppressed: bool = False  # rewrite: the result ends with the k test's bookkeeping columns
    constant: bool = False  # rewrite: reads no data and calls no function, so its result follows from its text
    admission: "Admission | None" = None  # admit: the analyst's quota slot, closed by the pipeline driver
    charged: tuple[float, ...] | None = None  # charge: (epsilon, delta[, rho under zcdp]) debited; (0, 0) when reused
    measurement: "Measurement | None" = None  # charge (reused) or release (fresh): the noisy quantities
    result: pa.Table | None = None  # execute
    clock: "StatementClock | None" = None  # execute: when it started and the padded time its answer leaves
    release: Release | None = None  # release
    rows_suppressed: int | None = None  # release: groups below k (None: not counted)
    replayed: bool = False  # replay: the release is one given before, as it was given
    audited: "Future | None" = None  # audit: completes once the statement's record is durable

    def evolve(self, **changes) -> "QueryState":
        """A copy with changes. Every pass calls this, so it copies the fields as they
        are (dataclasses.replace would rerun __init__, frozen field by field)."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"QueryState has no field {', '.join(sorted(unknown))}")
        evolved = object.__new__(QueryState)
        evolved.__dict__.update(self.__dict__)
        evolved.__dict__.update(changes)
        return evolved


_FIELDS = frozenset(f.name for f in fields(QueryState))
