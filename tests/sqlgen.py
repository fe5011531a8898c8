"""Random SELECT statements over the demo clean room, each with the reference
that checks its released rows, and the checks themselves.

Used by tests/test_properties.py (a bounded, deterministic run in CI) and
bench/properties.py (thousands of examples, a summary by rule).

`statements()` mixes allowed fragments (declared dimensions, the allowed
aggregates, CASE and FILTER, WHERE and HAVING, ORDER BY and LIMIT, the declared
joins, inner and outer, aliases, quoted and case-varied names, CTEs and derived
tables around a source, one named like a policy table, one that renames the
unit or projects another column under the unit's name, a LIMIT on raw rows,
BI-style wrapping of the whole query, an outer query re-aggregating its groups,
scalar subqueries over a private table, subqueries over the public one,
arithmetic that overflows) with forbidden ones (the hidden column, join keys
outside COUNT(DISTINCT), measures in WHERE / GROUP BY, table functions and
file paths, CTEs used out of scope, window functions, functions that are not
allow-listed, LIKE patterns with many wildcards). Statements that carry a
forbidden fragment list it in `Statement.forbidden`; they must be refused.

Each statement comes with a reference: the same grouping written directly over
the attached relations (every CTE and derived table around a source flattened
into a derived table of the raw relation), without HAVING, ORDER BY or LIMIT,
and with COUNT(DISTINCT unit) of every private table read. Every row the
gateway releases must equal the values of some reference group (`outputs` maps
released columns to reference columns; None where the value is not compared,
e.g. an overflow that the gateway turns into NULL) whose unit counts pass k.
Relations in a reference are written @@table@@ and substituted at check time.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlglot
from hypothesis import strategies as st
from sqlglot import expressions as exp

K_MIN = 10  # the demo's min_group_size
UNIT = "household_id"

VALUES = {
    "region": ("north", "south", "east", "west", "central", "coast", "mountain", "islands"),
    "category": ("grocery", "dairy", "bakery", "produce", "meat", "frozen", "beverages", "snacks",
                 "household", "personal_care", "pets", "baby"),
    "campaign": ("spring_sale", "summer_fresh", "back_to_school", "autumn_treats", "holiday_gifts", "new_year"),
    "channel": ("ctv", "web", "mobile", "audio"),
    "country": ("DE", "IT", "PL", "FR", "AT", "PT", "CH", "GR"),
    "region_name": ("North", "South", "East", "West", "Central", "Coast", "Mountain", "Islands"),
}
COLUMNS = {
    "purchases": ("household_id", "region", "category", "amount", "purchased_on", "card_last4"),
    "impressions": ("household_id", "campaign", "channel", "shown_at"),
    "regions": ("region", "region_name", "country"),
}
DIMENSIONS = {
    "purchases": ("region", "category", "purchased_on"),
    "impressions": ("campaign", "channel", "shown_at"),
    "regions": ("region", "region_name", "country"),
}
PRIVATE = frozenset({"purchases", "impressions"})
STRING_DIMENSIONS = frozenset({"region", "category", "campaign", "channel", "country", "region_name"})

# Forbidden fragments: a statement carrying one must be refused.
FORBIDDEN_KINDS = ("hidden", "join_key", "measure", "table_function", "cte_scope", "window", "function", "like")
# Fragments that may be released: released rows are then checked against the reference.
# Subqueries are here, not above: uncorrelated ones over the public table mean something
# definite (the resolver refuses correlated ones, bind.correlated), and a scalar subquery
# over a private table is checked like a group of its own (its units: none or >= k).
OTHER_KINDS = ("subquery", "overflow", "private_subquery")

BIG = "9223372036854775807"  # BIGINT's maximum


@dataclass(frozen=True)
class Statement:
    sql: str
    reference: str | None  # None: no reference could be written (the statement must then be refused)
    outputs: tuple[int | None, ...] = ()  # released column -> reference column (None: value not compared)
    nullable: tuple[bool, ...] = ()  # per unit column of the reference (after the outputs' columns)
    width: int = 0  # the reference's value columns before its unit columns
    forbidden: tuple[str, ...] = ()  # forbidden fragments it carries (must be refused)
    fragments: tuple[str, ...] = ()  # other notable fragments (subquery, overflow, wrapping, ...)

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        extra = f"  -- forbidden: {', '.join(self.forbidden)}" if self.forbidden else ""
        return f"Statement({self.sql!r}){extra}"


# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


class _Src:
    """One relation of the outermost FROM (possibly wrapped in a CTE or a derived table)."""

    def __init__(self, index: int, table: str):
        self.index = index
        self.table = table
        self.ref = f"t{index}"
        self.alias: str | None = None  # the alias as declared
        self.qual = table  # the name columns are qualified with (unquoted, lower case)
        self.qual_quoted = False
        self.wrapping = "table"
        self.cte_names: tuple[str, ...] = ()
        self.filter: tuple[str, str] | None = None  # (gateway, reference) predicate inside the wrapping
        self.projection = "*"
        self.used: set[str] = set()
        self.nullable = False
        self.join = ""  # JOIN keyword before it
        self.on: tuple[str, str] | None = None
        self.base_text: str | None = None  # how the relation is named inside (replaced by table functions)
        self.hidden_projection = False
        self.limit: int | None = None  # derived_limit: LIMIT on the raw rows
        self.comma = False  # joined with a comma, its condition in WHERE
        self.renames: dict[str, str] = {}  # column -> the name its CTE or derived table gives it
        self.decoy: str | None = None  # a column the wrapping projects under the unit's name


class _Item:
    def __init__(self, gw: str, ref: str | None, *, key=None, name: str | None = None):
        self.gw = gw
        self.ref = ref  # None: value not compared
        self.key = key  # the _Key it shows, if any
        self.name = name  # the output name an outer query may use (alias, or column name)
        self.alias_decl: str | None = None


class _Key:
    def __init__(self, render, ref: str, column: str | None):
        self.render = render  # () -> gateway text (drawn anew each time: case may vary)
        self.ref = ref
        self.column = column  # plain column keys: its name


class _Builder:
    def __init__(self, draw, forbidden: str):
        self.draw = draw
        self.forbidden_mode = forbidden
        self.forbidden: list[str] = []
        self.fragments: list[str] = []
        self.no_reference = False
        self.with_items: list[str] = []
        self.where: list[tuple[str, str | None]] = []
        self.having: list[str] = []
        self.extra_from = ""
        self.order: list[str] = []
        self.qualify = ""
        self.cte_scope_variant: str | None = None
        self.case_traps = False  # whether quoted names of another case may appear (drawn in build)
        self.where_gw_only: list[str] = []  # conditions of comma joins (the reference joins with ON)
        self.extra_units: list[str] = []  # unit counts of private tables read by scalar subqueries (0 or >= k)
        self.reference_keys = None  # reaggregate wrapping: the outer grouping (None: the statement's keys)
        self.nondeterministic = False  # a LIMIT on raw rows: no value can be compared

    # -- drawing helpers -------------------------------------------------------
    def pick(self, options):
        return self.draw(st.sampled_from(list(options)))

    def chance(self, weight: int = 3) -> bool:
        """True about one time in `weight` (shrinks to False)."""
        return self.draw(st.integers(0, weight - 1)) == weight - 1

    def ident(self, name: str) -> str:
        traps = ("quoted_case",) if self.case_traps else ()
        style = self.pick(("plain", "plain", "plain", "upper", "title", "quoted") + traps)
        if style == "plain":
            return name
        if style == "upper":
            return name.upper()
        if style == "title":
            return name.title()
        if style == "quoted":
            return f'"{name}"'
        return f'"{name.capitalize()}"'  # a quoted name of another case: not this column in PostgreSQL

    def fn(self, name: str) -> str:
        return self.pick((name.upper(), name.lower(), name.title()))

    def kw(self, word: str) -> str:
        return self.pick((word, word.lower()))

    # -- columns -----------------------------------------------------------------
    def qualifier(self, src: _Src) -> str:
        if src.qual_quoted:
            return f'"{src.qual}"'
        return self.pick((src.qual, src.qual.upper(), src.qual.title()))

    def col(self, src: _Src, name: str) -> tuple[str, str]:
        src.used.add(name)
        unique = sum(name in COLUMNS[s.table] for s in self.sources) == 1
        text = self.ident(src.renames.get(name, name))
        if not unique or not self.chance(3):
            text = f"{self.qualifier(src)}.{text}"
        return text, f"{src.ref}.{name}"

    def dims(self, sources=None) -> list[tuple[_Src, str]]:
        return [(s, d) for s in (sources or self.sources) for d in DIMENSIONS[s.table]]

    # -- predicates over dimensions -----------------------------------------------
    def literal_for(self, dim: str) -> str:
        if dim in STRING_DIMENSIONS:
            values = VALUES[dim]
            if self.chance(8):
                return "'zzz'"
            return f"'{self.pick(values)}'"
        if dim == "purchased_on":
            return f"DATE '{self.day().isoformat()}'"
        return f"TIMESTAMP '{self.day().isoformat()} 00:00:00'"

    def day(self) -> dt.date:
        return dt.date(2026, 1, 1) + dt.timedelta(days=self.draw(st.integers(0, 364)))

    def predicate(self, colfn, options) -> tuple[str, str]:
        """A predicate on one dimension: colfn(src, name) -> (gateway, reference)."""
        src, dim = self.pick(options)
        c, r = colfn(src, dim)
        if dim in STRING_DIMENSIONS:
            form = self.pick(("eq", "in", "neq", "not_in", "like", "lower", "not_null", "or"))
            v = self.literal_for(dim)
            if form == "eq":
                return f"{c} = {v}", f"{r} = {v}"
            if form == "neq":
                return f"{c} <> {v}", f"{r} <> {v}"
            if form in ("in", "not_in"):
                vs = ", ".join(dict.fromkeys([v, self.literal_for(dim), self.literal_for(dim)]))
                op = "IN" if form == "in" else "NOT IN"
                return f"{c} {self.kw(op)} ({vs})", f"{r} {op} ({vs})"
            if form == "like":
                value = self.pick(VALUES[dim])
                prefix = value[: self.draw(st.integers(1, 3))]
                op = self.pick(("LIKE", "ILIKE"))
                pattern = prefix.upper() if op == "ILIKE" and self.chance(2) else prefix
                return f"{c} {self.kw(op)} '{pattern}%'", f"{r} {op} '{pattern}%'"
            if form == "lower":
                return f"{self.fn('lower')}({c}) = {v.lower()}", f"lower({r}) = {v.lower()}"
            if form == "not_null":
                return f"{c} {self.kw('IS NOT NULL')}", f"{r} IS NOT NULL"
            w = self.literal_for(dim)
            return f"({c} = {v} {self.kw('OR')} {c} = {w})", f"({r} = {v} OR {r} = {w})"
        if dim == "purchased_on":
            form = self.pick(("eq", "between", "gte", "month"))
            if form == "eq":
                v = self.literal_for(dim)
                return f"{c} = {v}", f"{r} = {v}"
            if form == "between":
                a, b = sorted([self.day(), self.day()])
                return (f"{c} {self.kw('BETWEEN')} DATE '{a}' {self.kw('AND')} DATE '{b}'",
                        f"{r} BETWEEN DATE '{a}' AND DATE '{b}'")
            if form == "gte":
                v = self.literal_for(dim)
                return f"{c} >= {v}", f"{r} >= {v}"
            m = self.draw(st.integers(1, 12))
            return f"{self.fn('extract')}(month {self.kw('FROM')} {c}) = {m}", f"extract(month FROM {r}) = {m}"
        # shown_at
        form = self.pick(("gte", "day"))
        if form == "gte":
            v = self.literal_for(dim)
            return f"{c} >= {v}", f"{r} >= {v}"
        d = self.day()
        return f"{self.fn('cast')}({c} AS DATE) = DATE '{d}'", f"CAST({r} AS DATE) = DATE '{d}'"

    def main_predicate(self) -> tuple[str, str]:
        return self.predicate(self.col, self.dims())

    # -- grouping keys --------------------------------------------------------------
    def key(self) -> _Key:
        fine = [(s, d) for s, d in self.dims() if d in ("purchased_on", "shown_at")]
        # days make groups of a few households: where the threshold matters
        src, dim = self.pick(fine) if fine and self.chance(2) else self.pick(self.dims())
        r = f"{src.ref}.{dim}"
        form = "plain"
        if dim == "purchased_on":
            form = self.pick(("plain", "month", "dow"))
        elif dim == "shown_at":
            form = self.pick(("day", "plain"))
        elif self.chance(6):
            form = self.pick(("lower", "case"))
        if form == "plain":
            return _Key(lambda: self.col(src, dim)[0], r, dim)
        if form == "month":
            return _Key(lambda: f"{self.fn('date_trunc')}('month', {self.col(src, dim)[0]})",
                        f"date_trunc('month', {r})", None)
        if form == "dow":
            return _Key(lambda: f"{self.fn('extract')}(dow {self.kw('FROM')} {self.col(src, dim)[0]})",
                        f"extract(dow FROM {r})", None)
        if form == "day":
            return _Key(lambda: f"{self.fn('cast')}({self.col(src, dim)[0]} AS DATE)", f"CAST({r} AS DATE)", None)
        if form == "lower":
            return _Key(lambda: f"{self.fn('lower')}({self.col(src, dim)[0]})", f"lower({r})", None)
        v = self.pick(VALUES[dim])
        return _Key(lambda: f"CASE WHEN {self.col(src, dim)[0]} = '{v}' THEN 'yes' ELSE 'no' END",
                    f"CASE WHEN {r} = '{v}' THEN 'yes' ELSE 'no' END", None)

    # -- aggregates -------------------------------------------------------------------
    def purchases(self) -> _Src | None:
        return next((s for s in self.sources if s.table == "purchases"), None)

    def aggregate(self) -> tuple[str, str]:
        p = self.purchases()
        kinds = ["count_star", "count_distinct_unit", "count_filter", "count_case", "count_distinct_dim"]
        if p is not None:
            kinds += ["sum", "avg", "min_max", "sum_case", "sum_filter", "avg_case", "round_sum", "ratio",
                      "count_col"]
        kind = self.pick(kinds)
        if kind == "count_star":
            return f"{self.fn('count')}(*)", "count(*)"
        if kind == "count_distinct_unit":
            src = self.pick([s for s in self.sources if s.table in PRIVATE])
            c, r = self.col(src, UNIT)
            return f"{self.fn('count')}({self.kw('DISTINCT')} {c})", f"count(DISTINCT {r})"
        if kind == "count_distinct_dim":
            src, dim = self.pick(self.dims())
            c, r = self.col(src, dim)
            return f"{self.fn('count')}({self.kw('DISTINCT')} {c})", f"count(DISTINCT {r})"
        if kind == "count_filter":
            pg, pr = self.main_predicate()
            return f"{self.fn('count')}(*) {self.kw('FILTER')} (WHERE {pg})", f"count(*) FILTER (WHERE {pr})"
        if kind == "count_case":
            pg, pr = self.main_predicate()
            return (f"{self.fn('sum')}(CASE WHEN {pg} THEN 1 ELSE 0 END)", f"sum(CASE WHEN {pr} THEN 1 ELSE 0 END)")
        a, ar = self.col(p, "amount")
        if kind == "min_max":
            kind = self.pick(("min", "max"))
        if kind in ("sum", "avg", "min", "max"):
            return f"{self.fn(kind)}({a})", f"{kind}({ar})"
        if kind == "count_col":
            return f"{self.fn('count')}({a})", f"count({ar})"
        if kind == "sum_case":
            pg, pr = self.main_predicate()
            return (f"{self.fn('sum')}({self.kw('CASE WHEN')} {pg} THEN {a} ELSE 0 END)",
                    f"sum(CASE WHEN {pr} THEN {ar} ELSE 0 END)")
        if kind == "avg_case":
            pg, pr = self.main_predicate()
            return (f"{self.fn('avg')}(CASE WHEN {pg} THEN 1.0 ELSE 0.0 END)",
                    f"avg(CASE WHEN {pr} THEN 1.0 ELSE 0.0 END)")
        if kind == "sum_filter":
            pg, pr = self.main_predicate()
            return f"{self.fn('sum')}({a}) {self.kw('FILTER')} (WHERE {pg})", f"sum({ar}) FILTER (WHERE {pr})"
        if kind == "round_sum":
            return f"{self.fn('round')}({self.fn('sum')}({a}), 1)", f"round(sum({ar}), 1)"
        return (f"{self.fn('sum')}({a}) / {self.fn('nullif')}({self.fn('count')}(*), 0)",
                f"sum({ar}) / nullif(count(*), 0)")

    def aggregate_predicate(self) -> str:
        g, _ = self.aggregate()
        op = self.pick((">", ">=", "<", "BETWEEN"))
        n = self.pick((0, 1, 5, 50, 1000))
        if op == "BETWEEN":
            return f"{g} BETWEEN {n} AND {n * 100 + 10}"
        return f"{g} {op} {n}"

    # -- the statement ---------------------------------------------------------------------
    def build(self) -> Statement:
        self.case_traps = self.chance(6)
        shape = self.pick(("purchases", "impressions", "join", "purchases_regions", "join_regions", "self_join"))
        tables = {"purchases": ["purchases"], "impressions": ["impressions"], "join": ["purchases", "impressions"],
                  "purchases_regions": ["purchases", "regions"],
                  "join_regions": ["purchases", "impressions", "regions"],
                  "self_join": ["purchases", "purchases"]}[shape]
        if shape == "join" and self.chance(3):
            tables.reverse()
        self.sources = [_Src(i, t) for i, t in enumerate(tables)]
        forbidden = list(self.applicable(FORBIDDEN_KINDS))
        other = list(self.applicable(OTHER_KINDS))
        if self.forbidden_mode == "required":
            chosen = [self.pick(forbidden)] + self.draw(st.lists(st.sampled_from(forbidden + other), max_size=1))
            chosen = list(dict.fromkeys(chosen))
        else:  # mixed: a forbidden fragment one time in three, so that most statements can be released
            chosen = [self.pick(forbidden)] if self.forbidden_mode == "mixed" and self.chance(3) else []
            chosen += self.draw(st.lists(st.sampled_from(other), max_size=2, unique=True))
        # Subqueries name policy tables: no CTE of the statement may then take a policy table's name.
        self.policy_names_free = not ({"subquery", "hidden", "join_key", "private_subquery"} & set(chosen))
        self.name_sources()
        if "cte_scope" in chosen:  # needs a CTE of its own to misuse
            self.sources[0].wrapping = self.pick(("cte_in_derived", "cte_chain"))
            self.name_wrapped(self.sources[0])

        self.joins()
        keys = [self.key() for _ in range(self.draw(st.integers(0, 3)))]
        self.keys = keys
        items: list[_Item] = []
        for k in keys:
            if not self.chance(5):  # a grouping key usually shows
                items.append(_Item(k.render(), k.ref, key=k, name=k.column))
        for _ in range(self.draw(st.integers(1, 3))):
            g, r = self.aggregate()
            items.append(_Item(g, r))
        self.items = items
        for _ in range(self.draw(st.integers(0, 2))):
            self.where.append(self.main_predicate())
        if self.chance(4):
            self.having.append(self.aggregate_predicate())

        for kind in chosen:
            label = getattr(self, f"frag_{kind}")()  # a label: the fragment turned out allowed
            if label is not None:
                self.fragments.append(label)
            else:
                (self.forbidden if kind in FORBIDDEN_KINDS else self.fragments).append(kind)

        order = self.draw(st.permutations(range(len(self.items))))
        self.items = [self.items[i] for i in order]
        self.aliases()
        return self.render()

    def applicable(self, kinds):
        has_p = self.purchases() is not None
        for kind in kinds:
            if kind in ("hidden", "measure") and not has_p:
                continue
            yield kind

    # -- FROM ---------------------------------------------------------------------------
    def name_sources(self) -> None:
        self.taken: set[str] = set()  # every CTE name and alias of the statement
        for src in self.sources:
            src.wrapping = self.pick(("table", "table", "table", "schema", "derived", "cte", "cte_same_name",
                                      "cte_same_name", "cte_in_derived", "cte_chain", "derived_limit"))
            if src.wrapping == "cte_same_name" and (len(self.sources) > 1 or not self.policy_names_free):
                src.wrapping = "cte"
            self.name_wrapped(src)

    def name_wrapped(self, src: _Src) -> None:
        others = {s.table for s in self.sources if s is not src}
        if not self.policy_names_free:
            others |= set(COLUMNS)
        names = [n for n in ("base", "q", "src_rows", "purchases", "impressions", "regions", "t", "w1", "w2",
                              "w3", "d", "e")
                 if n not in others and n not in self.taken]
        if src.wrapping in ("cte", "cte_in_derived", "cte_chain"):
            first = self.pick(names)
            second = self.pick([n for n in names if n != first])
            src.cte_names = (first, second) if src.wrapping == "cte_chain" else (first,)
            self.taken.update(src.cte_names)
            src.qual = first if src.wrapping == "cte" else second if src.wrapping == "cte_chain" else src.qual
        elif src.wrapping == "cte_same_name":
            src.cte_names = (src.table,)
            self.taken.add(src.table)
            src.qual = src.table
        else:
            src.qual = src.table
        needs_alias = src.wrapping in ("derived", "cte_in_derived", "derived_limit") or any(
            s.table == src.table for s in self.sources[: max(src.index, 0)])  # a self join
        if needs_alias or self.chance(2):
            alias = self.pick([n for n in ("p", "i", "r", "a", "b", "x", "purchases", "impressions", "base")
                               if n not in self.taken and n not in others] or [f"s{src.index}"])
            style = self.pick(("plain", "plain", "upper", "quoted", "quoted_upper"))
            src.qual = alias
            src.qual_quoted = style.startswith("quoted")
            if style == "upper":
                src.alias = alias.upper()
            elif style == "quoted":
                src.alias = f'"{alias}"'
            elif style == "quoted_upper":
                src.alias, src.qual = f'"{alias.upper()}"', alias.upper()
            else:
                src.alias = alias
        else:
            src.alias = None
        self.taken.add(src.qual.lower())
        if src.wrapping != "table" and src.wrapping != "schema" and self.chance(2):
            inner = _Src(-1, src.table)
            inner.qual = src.table

            def inner_col(_, name, inner=inner):
                text = self.ident(name)
                if self.chance(4):
                    text = f"{self.pick((inner.qual, inner.qual.upper()))}.{text}"
                src.used.add(name)
                return text, f"s.{name}"

            src.filter = self.predicate(inner_col, [(inner, d) for d in DIMENSIONS[src.table]])
        if src.wrapping != "table" and src.wrapping != "schema":
            src.projection = self.pick(("*", "*", "needed", "needed_without_unit"))
        if src.projection == "needed" and src.table in PRIVATE and self.chance(3):
            # the unit under another name; "swap": and another column under the unit's name
            src.renames[UNIT] = f"hh{src.index}"
            if self.chance(2):
                src.decoy = "purchased_on" if src.table == "purchases" else "shown_at"
        if src.wrapping == "derived_limit":
            src.limit = self.pick((1000000, 5))
            self.nondeterministic |= src.limit < 1000000

    def joins(self) -> None:
        for src in self.sources[1:]:
            if src.table == "regions":
                src.join = self.pick(("JOIN", "LEFT JOIN", "INNER JOIN"))
                p = self.purchases()
                a, ar = self.col(p, "region")
                b, br = self.col(src, "region")
                src.on = (f"{a} = {b}", f"{ar} = {br}")
            else:
                src.join = self.pick(("JOIN", "INNER JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "LEFT OUTER JOIN"))
                first = self.sources[0]
                a, ar = self.col(first, UNIT)
                b, br = self.col(src, UNIT)
                if self.chance(3):
                    a, b = b, a
                src.on = (f"{a} = {b}", f"{ar} = {br}")
        if len(self.sources) == 2 and self.sources[1].join in ("JOIN", "INNER JOIN") and self.chance(5):
            self.sources[1].comma = True
        entries = [(s, s.join.split()[0] if s.join else "") for s in self.sources]
        for i, (src, side) in enumerate(entries):
            later = {s for _, s in entries[i + 1:]}
            src.nullable = side in ("LEFT", "FULL") or bool(later & {"RIGHT", "FULL"})

    def base_text(self, src: _Src) -> str:
        if src.base_text is not None:
            return src.base_text
        name = self.ident(src.table) if not self.chance(4) else src.table
        if src.wrapping == "schema":
            return self.pick(("public.", "PUBLIC.", '"public".')) + name
        return name

    def projection(self, src: _Src) -> str:
        if src.projection == "*":
            cols = ["*"]
        else:
            needed = sorted(src.used | ({UNIT} if src.table in PRIVATE and src.projection == "needed" else set()))
            if src.projection == "needed_without_unit" and UNIT not in src.used:
                needed = [c for c in needed if c != UNIT] or [DIMENSIONS[src.table][0]]
            cols = [self.ident(c) + (f" AS {src.renames[c]}" if c in src.renames else "") for c in needed] or ["*"]
            if src.decoy is not None:
                cols.append(f"{self.ident(src.decoy)} AS {UNIT}")
        if src.hidden_projection:
            cols.append(f"{self.ident('card_last4')} AS c4")
        return ", ".join(cols)

    def inner_select(self, src: _Src) -> str:
        where = f" {self.kw('WHERE')} {src.filter[0]}" if src.filter else ""
        return f"{self.kw('SELECT')} {self.projection(src)} {self.kw('FROM')} {self.base_text(src)}{where}"

    def from_item(self, src: _Src) -> str:
        alias = f"{self.pick((' ' + self.kw('AS') + ' ', ' '))}{src.alias}" if src.alias else ""
        w = src.wrapping
        if w in ("table", "schema"):
            return self.base_text(src) + alias
        if w == "derived":
            return f"({self.inner_select(src)}){alias}"
        if w == "derived_limit":
            return f"({self.inner_select(src)} {self.kw('LIMIT')} {src.limit}){alias}"
        if w in ("cte", "cte_same_name"):
            self.with_items.append(f"{src.cte_names[0]} AS ({self.inner_select(src)})")
            return self.pick((src.cte_names[0], src.cte_names[0].upper())) + alias
        if w == "cte_in_derived":
            c = src.cte_names[0]
            return f"({self.kw('WITH')} {c} AS ({self.inner_select(src)}) SELECT * FROM {c}){alias}"
        # cte_chain: the first CTE reads the relation, the second reads the first
        first, second = src.cte_names
        chain = [f"{first} AS ({self.inner_select(src)})", f"{second} AS (SELECT * FROM {first})"]
        if "cte_scope" in self.forbidden and src is self.sources[0] and self.cte_scope_variant == "forward":
            chain.reverse()  # the second now reads a CTE defined after it
        self.with_items.extend(chain)
        return second + alias

    def ref_from_item(self, src: _Src) -> str:
        rel = f"@@{src.table}@@"
        if src.filter is None and src.limit is None:
            return f"{rel} AS {src.ref}"
        where = f" WHERE {src.filter[1]}" if src.filter else ""
        limit = f" LIMIT {src.limit}" if src.limit is not None else ""
        return f"(SELECT * FROM {rel} AS s{where}{limit}) AS {src.ref}"

    # -- output names --------------------------------------------------------------------------
    def aliases(self) -> None:
        names = ["n", "total", "value", "c1", "avg_amount", "households", "share", "x", "Total", "grp"]
        used: set[str] = set()
        for item in self.items:
            if item.key is not None and item.key.column and not self.chance(4):
                item.name = item.key.column
            elif self.chance(5) and item.key is None:
                item.name = None  # no alias: only SELECT * can read it from outside
            else:
                choice = self.pick([n for n in names if n.lower() not in used] or [f"col{len(used)}"])
                quoted = choice != choice.lower() or self.chance(4)
                item.alias_decl = f'"{choice}"' if quoted else self.pick((choice, choice.upper()))
                item.name = choice if quoted else choice.lower()
            if item.name is not None:
                if item.name.lower() in used:
                    item.name = None
                else:
                    used.add(item.name.lower())

    # -- rendering ------------------------------------------------------------------------
    def render(self) -> Statement:
        select = ", ".join(i.gw + (f" {self.kw('AS')} {i.alias_decl}" if i.alias_decl else "") for i in self.items)
        sql = ""
        conditions = [w[0] for w in self.where] + [s.on[0] for s in self.sources if s.comma]
        if conditions:
            sql += f" {self.kw('WHERE')} " + f" {self.kw('AND')} ".join(conditions)
        if self.keys:
            group = []
            for k in self.keys:
                shown = [n for n, i in enumerate(self.items, 1) if i.key is k]
                group.append(str(shown[0]) if shown and self.chance(3) else k.render())
            sql += f" {self.kw('GROUP BY')} " + ", ".join(group)
        if self.having:
            sql += f" {self.kw('HAVING')} " + f" {self.kw('AND')} ".join(self.having)
        if self.qualify:
            sql += f" QUALIFY {self.qualify}"
        order = list(self.order)
        if self.chance(3):
            for _ in range(self.draw(st.integers(1, 2))):
                n = self.draw(st.integers(1, len(self.items)))
                item = self.items[n - 1]
                target = self.pick(("ordinal", "name", "expression"))
                if target == "name" and item.alias_decl:
                    text = item.alias_decl
                elif target == "expression" and item.ref is not None and "OVER" not in item.gw:
                    text = item.gw
                else:
                    text = str(n)
                order.append(text + self.pick(("", " DESC", " ASC", " DESC NULLS LAST")))
        if order:
            sql += f" {self.kw('ORDER BY')} " + ", ".join(order)
        if self.chance(4):
            sql += f" {self.kw('LIMIT')} {self.pick((10, 0, 1, 3, 1000001))}"
        # FROM last: a CTE or derived table projects the columns every other clause used
        from_items = [self.from_item(s) for s in self.sources]
        parts = [from_items[0]]
        for src, text in zip(self.sources[1:], from_items[1:]):
            if src.comma:
                parts[-1] += f", {text}"
            else:
                parts.append(f"{self.kw(src.join)} {text} {self.kw('ON')} {src.on[0]}")
        from_sql = " ".join(parts) + self.extra_from
        sql = f"{self.kw('SELECT')} {select} {self.kw('FROM')} {from_sql}" + sql
        if self.with_items:
            sql = f"{self.kw('WITH')} " + ", ".join(self.with_items) + " " + sql
        outputs = list(range(len(self.items)))
        sql, outputs = self.wrap(sql, outputs)

        reference = None
        if not self.no_reference:
            ref_parts = [self.ref_from_item(self.sources[0])]
            for src in self.sources[1:]:
                kind = src.join.replace(" OUTER", "").replace("INNER ", "")
                ref_parts.append(f"{kind} {self.ref_from_item(src)} ON {src.on[1]}")
            keys = self.keys if self.reference_keys is None else self.reference_keys
            values = [i.ref if i.ref is not None and (i.key is None or i.key in keys) else "NULL" for i in self.items]
            private = [s for s in self.sources if s.table in PRIVATE]
            units = [f"count(DISTINCT {s.ref}.{UNIT})" for s in private] + self.extra_units
            reference = f"SELECT {', '.join(values + units)} FROM {' '.join(ref_parts)}"
            wheres = [w[1] for w in self.where]
            if wheres:
                reference += " WHERE " + " AND ".join(f"({w})" for w in wheres)
            if keys:
                reference += " GROUP BY " + ", ".join(k.ref for k in keys)
            # a scalar subquery's rows may be none (COUNT 0), like an outer join's optional side
            nullable = tuple(s.nullable for s in private) + (True,) * len(self.extra_units)
        else:
            nullable = ()
        return Statement(
            sql=sql,
            reference=reference,
            outputs=tuple(None if o is None or self.items[o].ref is None or self.nondeterministic else o
                          for o in outputs),
            nullable=nullable,
            width=len(self.items),
            forbidden=tuple(self.forbidden),
            fragments=tuple(self.fragments),
        )

    def wrap(self, sql: str, outputs: list[int]) -> tuple[str, list[int | None]]:
        """BI-style wrapping: the whole query as a derived table or CTE that an outer
        query projects, filters, orders and limits."""
        style = self.pick(("none", "none", "star", "project", "cte", "double", "reaggregate"))
        if style == "none":
            return sql, outputs
        self.fragments.append(f"wrap_{style}")
        named = [n for n, item in enumerate(self.items) if item.name is not None]
        alias = self.pick(("t", "t0", "_", "sub", "q"))
        if style == "reaggregate":
            return self.reaggregate(sql, named, alias)
        if style == "double":
            sql = f"SELECT * FROM ({sql}) AS {alias}_inner"
        if style == "project" and named:
            chosen = self.draw(st.lists(st.sampled_from(named), min_size=1, max_size=len(named), unique=True))
        else:
            chosen = None
        if chosen is None:
            select, new_outputs = "*", outputs
        else:
            cols = []
            for n in chosen:
                ref = self.out_ref(self.items[n], alias)
                cols.append(ref + (f" AS {self.items[n].name}_" if self.chance(4) else ""))
            select, new_outputs = ", ".join(cols), chosen
        source = f"({sql}) AS {alias}" if style != "cte" else alias
        outer = f"SELECT {select} FROM {source}"
        if named and self.chance(2):
            item = self.items[self.pick(named)]
            ref = self.out_ref(item, alias)
            if item.key is not None and item.key.column in STRING_DIMENSIONS:
                outer += f" WHERE {ref} <> {self.literal_for(item.key.column)}"
            elif item.key is None:
                outer += f" WHERE {ref} {self.pick(('>', '>=', 'IS NOT NULL AND 1 ='))} {self.pick((0, 1, 100))}"
        if named and self.chance(2):
            item = self.items[self.pick(named)]
            outer += f" ORDER BY {self.out_ref(item, alias)}{self.pick(('', ' DESC'))}"
        if self.chance(2):
            outer += f" LIMIT {self.pick((1000001, 1000, 5))}"
        if style == "cte":
            outer = f"WITH {alias} AS ({sql}) {outer}"
        return outer, new_outputs

    def reaggregate(self, sql: str, named: list[int], alias: str) -> tuple[str, list[int | None]]:
        """An outer query aggregating the groups of the inner one by some of its keys:
        the reference groups the rows by those keys alone (the units of an outer group
        are those of its inner groups, or fewer if the inner HAVING or LIMIT dropped some)."""
        keys = [n for n in named if self.items[n].key is not None]
        aggregates = [n for n in named if self.items[n].key is None]
        chosen = self.draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True)) if keys else []
        self.reference_keys = [self.items[n].key for n in chosen]
        columns, outputs = [], []
        for n in chosen:
            columns.append(self.out_ref(self.items[n], alias))
            outputs.append(n)
        for n in aggregates[:2]:
            columns.append(f"{self.pick(('SUM', 'MAX', 'AVG'))}({self.out_ref(self.items[n], alias)})")
            outputs.append(None)
        columns.append("COUNT(*)")
        outputs.append(None)
        group = f" GROUP BY {', '.join(self.out_ref(self.items[n], alias) for n in chosen)}" if chosen else ""
        return f"SELECT {', '.join(columns)} FROM ({sql}) AS {alias}{group}", outputs

    def out_ref(self, item: _Item, alias: str) -> str:
        name = item.name
        quoted = name != name.lower()
        text = f'"{name}"' if quoted else self.pick((name, name.upper(), f'"{name}"'))
        return f"{alias}.{text}" if self.chance(2) else text

    # -- fragments ----------------------------------------------------------------------------------
    def add_item(self, gw: str, ref: str | None) -> None:
        self.items.append(_Item(gw, ref))

    def add_key(self, gw_render, ref: str, column: str | None) -> None:
        key = _Key(gw_render, ref, column)
        self.keys.append(key)
        self.items.append(_Item(key.render(), ref, key=key, name=column))

    def frag_hidden(self) -> None:
        p = self.purchases()
        where = self.pick(("select_group", "where", "having", "aggregate", "order", "case", "filter", "join_on",
                           "derived", "subquery", "count_distinct"))
        h = lambda: self.col(p, "card_last4")  # noqa: E731
        if where == "select_group":
            self.add_key(lambda: h()[0], f"{p.ref}.card_last4", "card_last4")
        elif where == "where":
            c, r = h()
            v = f"'{self.draw(st.integers(0, 9999)):04d}'"
            self.where.append((f"{c} = {v}", f"{r} = {v}"))
        elif where == "having":
            self.having.append(f"{self.fn('max')}({h()[0]}) > '5000'")
        elif where == "aggregate":
            c, r = h()
            self.add_item(f"{self.fn('max')}({c})", f"max({r})")
        elif where == "count_distinct":
            c, r = h()
            self.add_item(f"{self.fn('count')}(DISTINCT {c})", f"count(DISTINCT {r})")
        elif where == "order":
            self.order.append(f"{self.fn('min')}({h()[0]})")
        elif where == "case":
            c, r = h()
            a, ar = self.col(p, "amount")
            self.add_item(f"{self.fn('sum')}(CASE WHEN {c} LIKE '1%' THEN {a} ELSE 0 END)",
                          f"sum(CASE WHEN {r} LIKE '1%' THEN {ar} ELSE 0 END)")
        elif where == "filter":
            c, r = h()
            self.add_item(f"{self.fn('count')}(*) FILTER (WHERE {c} < '5000')",
                          f"count(*) FILTER (WHERE {r} < '5000')")
        elif where == "join_on" and len(self.sources) > 1:
            src = self.sources[1]
            c, r = h()
            src.on = (f"{src.on[0]} AND {c} IS NOT NULL", f"{src.on[1]} AND {r} IS NOT NULL")
        elif where == "derived" and p.wrapping not in ("table", "schema"):
            p.hidden_projection = True
        else:  # in a subquery over purchases
            c = self.ident("card_last4")
            d, dr = self.col(p, "region")
            self.where.append((f"{d} IN (SELECT region FROM purchases WHERE {c} = '1234')",
                               f"{dr} IN (SELECT region FROM @@purchases@@ WHERE card_last4 = '1234')"))

    def frag_join_key(self) -> None:
        src = self.pick([s for s in self.sources if s.table in PRIVATE])
        where = self.pick(("select_group", "where", "aggregate", "min", "order", "case", "overflow", "like",
                           "subquery", "count_plain"))
        u = lambda: self.col(src, UNIT)  # noqa: E731
        if where == "select_group":
            self.add_key(lambda: u()[0], f"{src.ref}.{UNIT}", UNIT)
        elif where == "where":
            c, r = u()
            self.where.append((f"{c} = 'abc'", f"{r} = 'abc'"))
        elif where == "like":
            c, r = u()
            self.where.append((f"{c} LIKE 'a%'", f"{r} LIKE 'a%'"))
        elif where == "aggregate":
            c, r = u()
            self.add_item(f"{self.fn('max')}({c})", f"max({r})")
        elif where == "min":
            c, r = u()
            self.having.append(f"{self.fn('min')}({c}) > 'a'")
        elif where == "count_plain":
            c, r = u()
            self.add_item(f"{self.fn('count')}({c})", f"count({r})")
        elif where == "order":
            self.order.append(f"{self.fn('max')}({u()[0]})")
        elif where == "case":
            c, r = u()
            self.add_item(f"{self.fn('sum')}(CASE WHEN {c} LIKE 'a%' THEN 1 ELSE 0 END)",
                          f"sum(CASE WHEN {r} LIKE 'a%' THEN 1 ELSE 0 END)")
        elif where == "overflow":  # the brief's 9223372036854775807 + household_id inside CASE
            c, _ = u()
            pg, _ = self.main_predicate()
            self.add_item(f"{self.fn('sum')}(CASE WHEN {pg} THEN {BIG} + {c} ELSE 0 END)", None)
        else:  # a subquery picking the groups of one household
            d_src, dim = self.pick(self.dims([src]))
            d, dr = self.col(d_src, dim)
            self.where.append((f"{d} IN (SELECT {dim} FROM {src.table} WHERE {UNIT} = 'abc')",
                               f"{dr} IN (SELECT {dim} FROM @@{src.table}@@ WHERE {UNIT} = 'abc')"))

    def frag_measure(self) -> None:
        p = self.purchases()
        where = self.pick(("where", "group", "group_cast", "where_case", "between"))
        if where == "where":
            c, r = self.col(p, "amount")
            self.where.append((f"{c} > 400", f"{r} > 400"))
        elif where == "between":
            c, r = self.col(p, "amount")
            self.where.append((f"{c} BETWEEN 10 AND 11", f"{r} BETWEEN 10 AND 11"))
        elif where == "where_case":
            c, r = self.col(p, "amount")
            self.where.append((f"CASE WHEN {c} > 100 THEN TRUE ELSE FALSE END",
                               f"CASE WHEN {r} > 100 THEN TRUE ELSE FALSE END"))
        elif where == "group":
            self.add_key(lambda: self.col(p, "amount")[0], f"{p.ref}.amount", "amount")
        else:
            self.add_key(lambda: f"CAST({self.col(p, 'amount')[0]} AS INTEGER)", f"CAST({p.ref}.amount AS INTEGER)",
                         None)

    TABLE_FUNCTIONS = (
        "read_csv('/etc/passwd')", "read_parquet('/tmp/x.parquet')", "'/etc/passwd'", "'purchases.parquet'",
        "read_csv_auto('/etc/hosts')", "range(10)", "generate_series(1, 3)", "read_text('/etc/hostname')",
        "glob('/*')", "src_retail.main.purchases", "memory.src_publisher_impressions.publisher_impressions",
        "src_retail.purchases", "duckdb_tables()", "query_table('purchases')", "query('SELECT * FROM purchases')",
        "sniff_csv('/etc/passwd')", "read_json('/etc/passwd')", "parquet_scan('/tmp/x.parquet')", '"/etc/passwd"',
        "READ_CSV('/etc/passwd')", "information_schema.tables", "pg_catalog.pg_class",
    )

    def frag_table_function(self) -> None:
        text = self.pick(self.TABLE_FUNCTIONS)
        where = self.pick(("replace", "join", "subquery"))
        self.no_reference = True
        if where == "replace":
            src = self.pick(self.sources)
            src.base_text = text
            if src.wrapping == "schema":
                src.wrapping = "table"
            if src.wrapping == "table" and src.alias is None:
                src.alias, src.qual, src.qual_quoted = "f", "f", False
        elif where == "join":
            form = self.pick(("CROSS JOIN {} AS f", "JOIN {} AS f ON TRUE", ", {} AS f"))
            self.extra_from = " " + form.format(text)
        else:
            src, dim = self.pick(self.dims())
            c, _ = self.col(src, dim)
            self.where.append((f"{c} IN (SELECT * FROM {text})", None))

    def frag_cte_scope(self) -> str | None:
        src = self.sources[0]
        if src.wrapping == "cte_chain":  # the second CTE reads the first, declared after it
            self.cte_scope_variant = "forward"
            self.no_reference = True
            return None
        # cte_in_derived: its CTE's name read from outside the derived table it belongs to
        self.cte_scope_variant = "outside"
        c = src.cte_names[0]
        if src.table in PRIVATE and c in PRIVATE:
            column = UNIT
        elif "region" in COLUMNS[src.table] and c in COLUMNS and "region" in COLUMNS[c]:
            column = "region"
        else:
            column = UNIT if src.table in PRIVATE else "region"
        if c not in COLUMNS or column not in COLUMNS[c]:  # names nothing there: must be refused
            self.no_reference = True
            self.extra_from = f" JOIN {c} ON {self.qualifier(src)}.{column} = {c}.{column}"
            return None
        # Named like a policy table: outside the derived table the name is that table.
        real = _Src(len(self.sources), c)
        real.join = "JOIN"
        a, ar = self.col(src, column)
        real.on = (f"{a} = {c}.{column}", f"{ar} = {real.ref}.{column}")
        self.sources.append(real)
        return "cte_name_out_of_scope"

    def frag_window(self) -> None:
        where = self.pick(("item", "qualify", "order"))
        fns = [f"{self.fn('row_number')}() OVER ()", f"{self.fn('sum')}({self.fn('count')}(*)) OVER ()",
               f"{self.fn('rank')}() OVER (ORDER BY {self.fn('count')}(*) DESC)",
               f"{self.fn('count')}(*) OVER ()",
               f"{self.fn('ntile')}(2) OVER (ORDER BY {self.fn('count')}(*))"]
        if self.keys:
            fns.append(f"{self.fn('lag')}({self.fn('count')}(*)) OVER (ORDER BY {self.keys[0].render()})")
        text = self.pick(fns)
        if where == "item":
            self.add_item(text, None)
        elif where == "qualify":
            self.qualify = f"{text} <= 3"
        else:
            self.order.append(text)

    FUNCTIONS = ("random()", "error('boom')", "getenv('HOME')", "uuid()", "current_setting('threads')",
                 "gen_random_uuid()", "setseed(0.5)", "nextval('s')", "pg_backend_pid()")

    def frag_function(self) -> None:
        f = self.pick(self.FUNCTIONS)
        where = self.pick(("aggregate", "where", "error_oracle", "having", "order", "item"))
        if where == "aggregate":
            self.add_item(f"{self.fn('count')}({f})", None)
        elif where == "item":
            self.add_item(f, None)
        elif where == "where":
            self.where.append((f"{f} IS NOT NULL", None))
            self.no_reference = True
        elif where == "error_oracle":  # raises exactly when some row matches
            pg, _ = self.main_predicate()
            self.add_item(f"{self.fn('sum')}(CASE WHEN {pg} THEN CAST({f} AS INTEGER) ELSE 0 END)", None)
        elif where == "having":
            self.having.append(f"({self.fn('count')}(*) > 0 OR {f} IS NULL)")
        else:
            self.order.append(f)

    LIKE_PATTERNS = ("'%o%r%t%h%'", "'%%%%%'", "'_%_%'", "'n_r%h%'", "'%a%e%i%o%u%'", "'_%%'", "'%_%_%_'")

    def frag_like(self) -> None:
        string_dims = [(s, d) for s, d in self.dims() if d in STRING_DIMENSIONS]
        src, dim = self.pick(string_dims)
        c, r = self.col(src, dim)
        form = self.pick(("wildcards", "column_pattern", "computed_subject"))
        op = self.pick(("LIKE", "ILIKE", "NOT LIKE"))
        if form == "wildcards":
            pattern = self.pick(self.LIKE_PATTERNS)
            gw, ref = f"{c} {op} {pattern}", f"{r} {op} {pattern}"
        elif form == "column_pattern":
            gw, ref = f"{c} {op} {c}", f"{r} {op} {r}"
        else:
            s2, d2 = self.pick(string_dims)
            c2, r2 = self.col(s2, d2)
            gw, ref = f"{c} || {c2} {op} 'n%'", f"{r} || {r2} {op} 'n%'"
        where = self.pick(("where", "filter", "case"))
        if where == "where":
            self.where.append((gw, ref))
        elif where == "filter":
            self.add_item(f"{self.fn('count')}(*) FILTER (WHERE {gw})", f"count(*) FILTER (WHERE {ref})")
        else:
            self.add_item(f"{self.fn('sum')}(CASE WHEN {gw} THEN 1 ELSE 0 END)",
                          f"sum(CASE WHEN {ref} THEN 1 ELSE 0 END)")

    def frag_subquery(self) -> None:
        """Subqueries over the public regions table (and a CTE that shadows a policy
        table's name inside one): released or refused, the reference says what they mean."""
        p = self.purchases()
        options = ["scalar"]
        if p is not None:
            options += ["in_regions", "exists", "cte_shadow", "not_in"]
        form = self.pick(options)
        if form == "scalar":
            self.add_item("(SELECT COUNT(*) FROM regions)", "(SELECT count(*) FROM @@regions@@)")
            return
        c, r = self.col(p, "region")
        country = f"'{self.pick(VALUES['country'])}'"
        if form == "in_regions":
            self.where.append((f"{c} IN (SELECT region FROM regions WHERE country = {country})",
                               f"{r} IN (SELECT region FROM @@regions@@ WHERE country = {country})"))
        elif form == "not_in":
            self.where.append((f"{c} NOT IN (SELECT rg.region FROM regions rg WHERE rg.country <> {country})",
                               f"{r} NOT IN (SELECT rg.region FROM @@regions@@ rg WHERE rg.country <> {country})"))
        elif form == "exists":  # correlated
            self.where.append((f"EXISTS (SELECT 1 FROM regions rg WHERE rg.region = {c} AND rg.country = {country})",
                               f"EXISTS (SELECT 1 FROM @@regions@@ rg WHERE rg.region = {r} AND rg.country = {country})"))
        else:  # a CTE named like the policy table, visible only inside the subquery
            v = self.pick(VALUES["region"])
            self.where.append((f"{c} IN (WITH purchases AS (SELECT '{v}' AS region) SELECT region FROM purchases)",
                               f"{r} IN ('{v}')"))

    def frag_private_subquery(self) -> None:
        """An aggregate over a private table in a scalar subquery, whose rows a dimension
        filter may narrow to a few households: its units are a group of their own."""
        table = self.pick(sorted(PRIVATE))
        inner = _Src(-1, table)
        colfn = lambda _, name: (self.ident(name), f"s.{name}")  # noqa: E731
        predicates = [self.predicate(colfn, [(inner, d) for d in DIMENSIONS[table]])
                      for _ in range(self.draw(st.integers(1, 3)))]
        where_gw = " AND ".join(p[0] for p in predicates)
        where_ref = " AND ".join(f"({p[1]})" for p in predicates)
        value = self.pick(("count", "units") + (("sum",) if table == "purchases" else ()))
        gw_value, ref_value = {"count": ("COUNT(*)", "count(*)"),
                               "units": (f"COUNT(DISTINCT {UNIT})", f"count(DISTINCT s.{UNIT})"),
                               "sum": ("SUM(amount)", "sum(s.amount)")}[value]
        gw = f"(SELECT {gw_value} FROM {table} WHERE {where_gw})"
        ref = f"(SELECT {ref_value} FROM @@{table}@@ AS s WHERE {where_ref})"
        self.extra_units.append(f"(SELECT count(DISTINCT s.{UNIT}) FROM @@{table}@@ AS s WHERE {where_ref})")
        if self.chance(3):  # whether any row is released depends on it
            n = self.pick((0, 3, 20))
            self.where.append((f"{gw} > {n}", f"{ref} > {n}"))
        else:
            self.add_item(gw, ref)

    def frag_overflow(self) -> None:
        """Arithmetic that overflows: computed so that it cannot raise (NULL), so it may be released."""
        p = self.purchases()
        options = ["count_mul", "count_add", "having"]
        if p is not None:
            options += ["case_add", "sum_mul", "date_where", "date_filter", "decimal"]
        form = self.pick(options)
        if form == "count_mul":
            self.add_item(f"{self.fn('count')}(*) * {BIG}", None)
        elif form == "count_add":
            self.add_item(f"{self.fn('count')}(*) + {BIG}", None)
        elif form == "having":
            self.having.append(f"{self.fn('count')}(*) * {BIG} > 0")
        elif form == "case_add":
            pg, _ = self.main_predicate()
            a, _ = self.col(p, "amount")
            self.add_item(f"{self.fn('sum')}(CASE WHEN {pg} THEN {BIG} + CAST({a} AS BIGINT) ELSE 0 END)", None)
        elif form == "sum_mul":
            a, _ = self.col(p, "amount")
            self.add_item(f"{self.fn('sum')}(CAST({a} AS BIGINT) * {BIG})", None)
        elif form == "decimal":
            a, _ = self.col(p, "amount")
            self.add_item(f"{self.fn('sum')}({a} * 99999999999999999999999999999999999.0)", None)
        elif form == "date_filter":
            d, _ = self.col(p, "purchased_on")
            self.add_item(f"{self.fn('count')}(*) FILTER (WHERE {d} + 2147483647 > DATE '2026-01-01')", None)
        else:
            d, r = self.col(p, "purchased_on")
            self.where.append((f"{d} + 2147483647 > DATE '2026-01-01'",
                               f"try({r} + 2147483647) > DATE '2026-01-01'"))


@st.composite
def statements(draw, forbidden: str = "mixed") -> Statement:
    """A SELECT over the demo clean room, with its reference. forbidden: "mixed"
    (a forbidden fragment one time in three), "none" (only fragments that may be
    released) or "required" (at least one forbidden fragment)."""
    return _Builder(draw, forbidden).build()


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

# Violation tags (the text before the first ":" of each violation).
ENGINE_FAILURE = "engine.failure"  # ExecutionFailed: DuckDB raised on SQL the gateway compiled
NOT_GATEWAY_ERROR = "not_gateway_error"  # any other exception escaped the engine
NO_RULE = "no_rule"  # a GatewayError without a rule
COMPILE = "compile"  # compile raised for a statement run released
RELATION = "relation"  # (a) the generated SQL reads something else than sources and its CTEs
UNVERIFIABLE = "unverifiable"  # released rows of a statement whose groups cannot be recomputed
WIDTH = "width"  # released another number of columns than the statement selects
UNEXPLAINED = "unexplained_row"  # a released row equal to no group of the reference
BELOW_K = "k"  # (b) a released row from a group below k
REFERENCE_ERROR = "reference_error"  # the generator wrote a reference DuckDB cannot run (a bug here)


@dataclass
class Outcome:
    sql: str
    refused_rule: str | None = None  # refused by this rule
    released_rows: int | None = None
    violations: list[str] = field(default_factory=list)  # "tag: detail"; the property holds when empty
    categories: set[str] = field(default_factory=set)  # tag, with the error class where there is one
    forbidden_released: list[str] = field(default_factory=list)  # forbidden fragments that were not refused

    def fail(self, tag: str, detail: str, kind: str | None = None) -> None:
        self.violations.append(f"{tag}: {detail}")
        self.categories.add(f"{tag} ({kind})" if kind else tag)

    @property
    def kind(self) -> str:
        if self.violations:
            return "violation"
        return "refused" if self.refused_rule is not None else "released"


class _FailureLog(logging.Handler):
    """Keeps DuckDB's message of each engine failure (the engine logs it under the
    request id and tells the client only the id)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("engine failure for request") and record.args:
            error = record.exc_info[1] if record.exc_info else None
            text = str(error).strip().splitlines()[0] if error is not None else record.getMessage()
            self.messages[str(record.args[0])] = text[:300]
            if len(self.messages) > 1000:
                self.messages.pop(next(iter(self.messages)))


class Room:
    """What the checks need to know about the engine's database: the attached
    relations of the demo's tables and the catalogs attached."""

    def __init__(self, engine, cleanroom: str = "demo", user: str = "analyst"):
        from gateway import sources

        room = engine.cleanrooms[cleanroom]
        self.engine = engine
        self.cleanroom = cleanroom
        self.user = user
        self.relations = {name: _clamped(t, sources.relation_for(t).sql(dialect="duckdb"))
                          for name, t in room.tables.items()}
        self.allowed = {_parts(sources.relation_for(t)) for t in room.tables.values()}
        self.catalogs = {row[0].lower() for row in self.fetch("SELECT database_name FROM duckdb_databases()")}
        self.catalogs -= {"system", "temp"}  # DuckDB's own, never a source
        logger = engine.context.log
        self.failures = next((h for h in logger.handlers if isinstance(h, _FailureLog)), None)
        if self.failures is None:
            self.failures = _FailureLog()
            logger.addHandler(self.failures)

    def reference_sql(self, statement: Statement) -> str:
        return self.substitute(statement.reference)

    def substitute(self, sql: str) -> str:
        for name, relation in self.relations.items():
            sql = sql.replace(f"@@{name}@@", relation)
        return sql

    def fetch(self, sql: str) -> list[tuple]:
        cursor = self.engine.database.cursor()
        try:
            return cursor.execute(sql).fetchall()
        finally:
            cursor.close()


def _parts(table: exp.Table) -> tuple[str, str, str]:
    return (table.catalog.lower(), table.db.lower(), table.name.lower())


def check(room: Room, statement: Statement) -> Outcome:
    """Run the statement through the engine: it must be refused with a rule, or be
    released with (a) generated SQL that reads only attached source relations and
    its own CTEs and (b) every row from a reference group that passes k."""
    from gateway.engine import QueryRequest
    from gateway.errors import ExecutionFailed, GatewayError

    outcome = Outcome(statement.sql)
    request = QueryRequest(user=room.user, cleanroom=room.cleanroom, sql=statement.sql)
    try:
        release = room.engine.run(request)
    except ExecutionFailed as error:
        message = room.failures.messages.pop(error.request_id, "DuckDB's message was not logged")
        outcome.fail(ENGINE_FAILURE, f"DuckDB raised on the generated SQL: {message}", message.split(":")[0])
        return outcome
    except GatewayError as error:
        if error.rule == "engine.failure":
            outcome.fail(ENGINE_FAILURE, f"{type(error).__name__}: {error}", type(error).__name__)
        elif not error.rule:
            outcome.fail(NO_RULE, f"{type(error).__name__} without a rule: {error}", type(error).__name__)
        else:
            outcome.refused_rule = error.rule
        return outcome
    except Exception as error:  # noqa: BLE001 - any other exception is the finding
        where = traceback.extract_tb(error.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        outcome.fail(NOT_GATEWAY_ERROR, f"{type(error).__name__} at {place}: {str(error)[:300]}",
                     f"{type(error).__name__} at {place}")
        return outcome

    table = release.table
    outcome.released_rows = table.num_rows
    outcome.forbidden_released = list(statement.forbidden)
    try:
        generated = room.engine.compile(request).generated_sql
    except Exception as error:  # noqa: BLE001
        outcome.fail(COMPILE, f"compile raised after run released: {type(error).__name__}: {error}")
        return outcome
    if generated is not None:
        for problem in relation_violations(generated, room):
            outcome.fail(RELATION, problem)
    rows = table_rows(table)
    for tag, problem in k_violations(room, statement, rows):
        outcome.fail(tag, problem)
    return outcome


def _clamped(table, relation: str) -> str:
    """The relation as the gateway reads it: each bounded measure clamped to its
    declared bounds (values outside them count as the nearest bound)."""
    from gateway.policy.model import Role

    clamps = [f'least(greatest("{name}", {c.bounds.lower}), {c.bounds.upper}) AS "{name}"'
              for name, c in table.columns.items() if c.role is Role.MEASURE and c.bounds is not None]
    return f"(SELECT * REPLACE ({', '.join(clamps)}) FROM {relation})" if clamps else relation


def table_rows(table) -> list[tuple]:
    """A pyarrow table's rows as tuples, by position (to_pylist's dicts merge columns of one name)."""
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns)) if columns else [() for _ in range(table.num_rows)]


# -- (a) what the generated SQL reads ------------------------------------------------------

TABLE_FUNCTION_NODES = (exp.Unnest, exp.ReadCSV, exp.GenerateSeries, exp.ExplodingGenerateSeries, exp.Explode)


def relation_violations(sql: str, room: Room) -> list[str]:
    """Every relation of the generated SQL is an attached source relation, fully
    qualified, or a CTE of that statement in scope where it is read; no table functions."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as error:
        return [f"the generated SQL does not parse as DuckDB SQL: {str(error)[:200]}"]
    problems = []
    for table in tree.find_all(exp.Table):
        text = table.sql(dialect="duckdb")[:160]
        if not isinstance(table.this, exp.Identifier):
            problems.append(f"the generated SQL reads a table function: {text}")
            continue
        catalog, db, name = _parts(table)
        if catalog or db:
            if not (catalog and db):
                problems.append(f"the generated SQL reads a partly qualified relation {text}")
            elif catalog not in room.catalogs or (catalog, db, name) not in room.allowed:
                problems.append(f"the generated SQL reads {text}, not an attached source relation")
        elif name not in visible_ctes(table):
            problems.append(f"the generated SQL reads {text}, neither a source relation nor a CTE in scope")
    for node in tree.walk():
        if isinstance(node, TABLE_FUNCTION_NODES):
            problems.append(f"the generated SQL calls {type(node).__name__}")
    return problems


def visible_ctes(node: exp.Expression) -> set[str]:
    """Names of the CTEs a table reference at `node` may read, by SQL scope: those of
    every enclosing WITH, but within a WITH only the CTEs before the one the reference
    is in (and that one too if the WITH is RECURSIVE)."""
    names: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            position = next((n for n, c in enumerate(ctes) if c is child), len(ctes))
            visible = ctes[: position + 1] if parent.args.get("recursive") else ctes[:position]
            names.update(c.alias_or_name.lower() for c in visible)
        else:
            w = parent.args.get("with_") if isinstance(parent, exp.Query) else None
            if w is not None and child is not w:
                names.update(c.alias_or_name.lower() for c in w.expressions)
        child, parent = parent, parent.parent
    return names


# -- (b) every released row passes k ------------------------------------------------------------

def normalise(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, Decimal)):
        f = float(value)
        if math.isnan(f) or math.isinf(f):
            return f
        return float(f"{f:.6g}")
    if isinstance(value, dt.datetime):
        value = value.replace(tzinfo=None)
        return value.date() if value.time() == dt.time() else value  # date_trunc may give either type
    return value


def close(a, b) -> bool:
    """Equal, numbers within a relative 1e-6."""
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float, Decimal)) and isinstance(b, (int, float, Decimal)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return normalise(a) == normalise(b)


def passes_k(units, nullable, k: int = K_MIN) -> bool:
    """Each private table: at least k distinct units; an outer join's optional side: none or at least k."""
    return all(u >= k or (optional and u == 0) for u, optional in zip(units, nullable))


def k_violations(room: Room, statement: Statement, rows: list[tuple]) -> list[tuple[str, str]]:
    """(tag, detail) for each released row that does not come from a reference group passing k."""
    if not rows:
        return []
    if statement.reference is None:
        return [(UNVERIFIABLE, f"released {len(rows)} rows of a statement whose groups cannot be recomputed "
                               f"(forbidden: {', '.join(statement.forbidden) or '-'})")]
    if len(rows[0]) != len(statement.outputs):
        return [(WIDTH, f"released {len(rows[0])} columns, the statement selects {len(statement.outputs)}")]
    try:
        reference = room.fetch(room.reference_sql(statement))
    except Exception as error:  # noqa: BLE001 - a bug of the generator, not of the gateway
        return [(REFERENCE_ERROR, f"the reference does not run ({type(error).__name__}: {str(error)[:200]}): "
                                  f"{statement.reference}")]
    compared = [(j, o) for j, o in enumerate(statement.outputs) if o is not None]
    index: dict[tuple, list[tuple]] = defaultdict(list)
    for ref in reference:
        index[tuple(normalise(ref[o]) for _, o in compared)].append(ref)
    problems = []
    for row in rows:
        candidates = index.get(tuple(normalise(row[j]) for j, _ in compared))
        if candidates is None:  # rounding at the edge: compare with a tolerance
            candidates = [ref for ref in reference if all(close(row[j], ref[o]) for j, o in compared)]
        if not candidates:
            problems.append((UNEXPLAINED, f"released row {row!r} equals no group of the reference"))
        elif not any(passes_k(ref[statement.width:], statement.nullable) for ref in candidates):
            units = sorted({tuple(ref[statement.width:]) for ref in candidates})[:3]
            problems.append((BELOW_K, f"released row {row!r} comes from a group with {units} distinct units "
                                      f"(k = {K_MIN})"))
        if len(problems) >= 3:
            break
    return problems
