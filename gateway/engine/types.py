"""What goes into the engine and what comes out: the contract every front end uses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pyarrow as pa

from gateway.policy.model import Bounds, Role, TimeBuckets


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class QueryRequest:
    """One statement from one user. Exactly one of `sql` and `template` is set.

    `params` binds `$1, $2, ...` (a sequence) or `:name` placeholders (a mapping)
    in `sql`, or the template's declared parameters (a mapping).
    """

    user: str
    cleanroom: str
    sql: str | None = None
    template: str | None = None
    params: Mapping[str, object] | Sequence[object] = ()
    front_end: str = "http"
    request_id: str = field(default_factory=new_request_id)
    intervals: bool = False  # each noisy column's 95% interval as <name>_low, <name>_high (gateway/engine/intervals.py)


@dataclass(frozen=True)
class Release:
    """A result that passed every check and may leave the gateway."""

    request_id: str
    table: pa.Table  # column names follow PostgreSQL's naming rules
    authorised_by: str  # "rule:<name>", "template:<name>" or "public"
    min_group_size: int | None  # k enforced on every row; None for public-only reads
    notices: tuple[str, ...] = ()  # human-readable notes on how the result was protected
    # Differential privacy: mechanism, epsilon and delta spent, contribution bounds, noise
    # scale and 95% interval per noisy column, groups suppressed (JSON-able); None without DP.
    protection: Mapping[str, object] | None = None


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # DuckDB type name, e.g. VARCHAR, DOUBLE, DATE
    role: Role
    description: str = ""
    values: tuple | None = None
    bounds: Bounds | None = None
    buckets: TimeBuckets | None = None  # public time range and the periods to group it by


@dataclass(frozen=True)
class TableInfo:
    """What an analyst may know about a table: schema only, never rows or counts."""

    name: str
    owner: str
    public: bool
    description: str
    columns: tuple[ColumnInfo, ...]
