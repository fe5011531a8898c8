"""What the resolver knows of every expression: its kind of value, the interval
its numbers lie in (from declared bounds and literals, never from the data) and
how many copies of unbounded row text it can hold.

Kinds are coarse on purpose: they decide which operators are allowed and which
can raise on a value, not DuckDB's exact result type.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Kind(str, enum.Enum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    STRING = "string"
    DATE = "date"
    TIMESTAMP = "timestamp"
    INTERVAL = "interval"
    BOOLEAN = "boolean"
    NULL = "null"  # a NULL literal: fits wherever a value does
    OTHER = "other"  # a source type the gateway has no operators for (lists, blobs, ...)

    @property
    def numeric(self) -> bool:
        return self in (Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT)

    @property
    def temporal(self) -> bool:
        return self in (Kind.DATE, Kind.TIMESTAMP)


_PREFIXES = (
    (("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
      "UBIGINT", "UHUGEINT"), Kind.INTEGER),
    (("DECIMAL", "NUMERIC"), Kind.DECIMAL),
    (("DOUBLE", "FLOAT", "REAL"), Kind.FLOAT),
    (("VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "UUID", "ENUM"), Kind.STRING),
    (("TIMESTAMP", "DATETIME"), Kind.TIMESTAMP),
    (("DATE",), Kind.DATE),
    (("INTERVAL",), Kind.INTERVAL),
    (("BOOLEAN", "BOOL"), Kind.BOOLEAN),
)


def kind_of(engine_type: str) -> Kind:
    """The kind of a source column from the type DuckDB reports for it."""
    name = engine_type.upper().strip()
    if name.endswith("]") or name.startswith(("STRUCT", "MAP", "UNION", "LIST")):
        return Kind.OTHER
    for prefixes, kind in _PREFIXES:
        if name.split("(")[0].split(" ")[0] in prefixes:
            return kind
    return Kind.OTHER


def engine_range(engine_type: str) -> "Range | None":
    """The values a numeric engine type can hold: integers by width, DECIMAL(p, s) by
    its digits before the point. None for floating point and non-numbers."""
    name = engine_type.upper().strip()
    base = name.split("(")[0].strip()
    if base in _INTEGER_BITS:
        bits, signed = _INTEGER_BITS[base]
        return Range(-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else Range(0.0, 2.0 ** bits - 1)
    if base in ("DECIMAL", "NUMERIC"):
        precision, scale = 18, 3  # DuckDB's DECIMAL without arguments
        if "(" in name:
            parts = [int(p) for p in name[name.index("(") + 1 : name.index(")")].split(",")]
            precision, scale = parts[0], parts[1] if len(parts) > 1 else 0
        limit = 10.0 ** (precision - scale)
        return Range(-limit, limit)
    return None


_INTEGER_BITS = {"TINYINT": (8, True), "SMALLINT": (16, True), "INTEGER": (32, True), "INT": (32, True),
                 "BIGINT": (64, True), "HUGEINT": (128, True), "UTINYINT": (8, False), "USMALLINT": (16, False),
                 "UINTEGER": (32, False), "UBIGINT": (64, False), "UHUGEINT": (128, False)}


@dataclass(frozen=True)
class Range:
    """A closed interval of numbers a value can take (declared, not observed)."""

    low: float
    high: float

    def __post_init__(self):
        if math.isnan(self.low) or math.isnan(self.high) or self.low > self.high:
            raise ValueError(f"not an interval: [{self.low}, {self.high}]")

    def hull(self, other: "Range") -> "Range":
        return Range(min(self.low, other.low), max(self.high, other.high))

    def __add__(self, other: "Range") -> "Range":
        return Range(self.low + other.low, self.high + other.high)

    def __sub__(self, other: "Range") -> "Range":
        return Range(self.low - other.high, self.high - other.low)

    def __mul__(self, other: "Range") -> "Range":
        products = [a * b for a in (self.low, self.high) for b in (other.low, other.high)]
        products = [0.0 if math.isnan(p) else p for p in products]  # 0 * inf: the zero bound wins
        return Range(min(products), max(products))

    def intersect(self, other: "Range") -> "Range":
        low, high = max(self.low, other.low), min(self.high, other.high)
        return Range(low, high) if low <= high else self

    def __neg__(self) -> "Range":
        return Range(-self.high, -self.low)

    def abs(self) -> "Range":
        if self.low >= 0:
            return self
        if self.high <= 0:
            return -self
        return Range(0.0, max(-self.low, self.high))

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


UNBOUNDED = Range(-math.inf, math.inf)


@dataclass(frozen=True)
class Typed:
    """The resolver's annotation of one expression (kept in node.meta["typed"])."""

    kind: Kind
    range: Range | None = None  # numbers: the declared interval; None: not known
    copies: int = 0  # strings: how many copies of row text (of unbounded length) it can hold
    width: Range | None = None  # integers: the values its engine type holds (None: a literal, which adapts)
    aggregate: bool = False  # contains an aggregate of its own scope

    def with_(self, **changes) -> "Typed":
        return Typed(**{**self.__dict__, **changes})

    def __deepcopy__(self, memo) -> "Typed":
        return self  # immutable; sqlglot deep-copies node meta on every tree copy


BOOLEAN = Typed(Kind.BOOLEAN)
NULL = Typed(Kind.NULL)
