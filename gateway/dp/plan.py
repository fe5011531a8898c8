"""What a differentially private query releases, and what it costs, from its
text and the policy alone (never from the data).

The outer SELECT is split in three:
- rows: one row per joined input row, carrying its privacy unit, its group key
  and the (clamped) values the aggregates read;
- quantities: the noisy numbers per group (units, row counts, bounded sums,
  quantiles), each with its share of the query's epsilon;
- post: the analyst's projections, HAVING, ORDER BY and LIMIT, evaluated on the
  noisy quantities only, after noise, so no exact value steers what is shown.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from sqlglot import expressions as exp
from sqlglot.optimizer.scope import build_scope

from gateway.dp.accounting import PURE
from gateway.dp.composition import Composition, PrivacyLoss
from gateway.dp.policy import QueryPrivacy
from gateway.dp.stability import check_stable
from gateway.dp.time_buckets import PublicKeys, public_buckets
from gateway.plan.allowed import AGGREGATES
from gateway.policy.aggregates import BY_NODE
from gateway.plan.quantiles import spelled
from gateway.plan.scoring import is_score, model_of, score_buckets, scored_column
from gateway.plan.units import clamp, unit_columns
from gateway.errors import Refused
from gateway.policy.model import Bounds, CleanRoom, Role, Template

MAX_PUBLIC_GROUPS = 10_000  # every combination of public keys is released, empty or not
RELEASED = "__released"  # the table name the post query reads


class Kind(str, enum.Enum):
    """What one noisy quantity counts; gateway.dp.families has one module per kind
    (its sensitivity, bounding SQL, OpenDP measurement, post-processing and error)."""

    UNITS = "units"  # distinct privacy units per group: COUNT(DISTINCT unit), thresholds
    ROWS = "rows"  # COUNT(*) / COUNT(x), at most max_rows_per_unit per unit and group
    SUM = "sum"  # SUM(x) of a bounded x, scaled down for units over max_rows_per_unit
    CENTERED_SUM = "centered_sum"  # SUM(x - midpoint) for AVG: half the sensitivity of SUM(x) on [0, upper]
    QUANTILE = "quantile"  # a quantile of a bounded x, up to max_rows_per_unit values per unit
    CLIPPED_UNITS = "clipped_units"  # units with more than max_rows_per_unit rows in the group (policy: report_clipping)


@dataclass(frozen=True)
class Quantity:
    """One noisy number per group; its sensitivity follows from the contribution
    bounds (and the value's bounds), never from the data (gateway.dp.families)."""

    column: str  # its column in the bounded result
    kind: Kind
    value: str | None  # rows-stage column it reads (None: COUNT(*) and units)
    bounds: Bounds | None  # SUM and QUANTILE
    alpha: float | None  # QUANTILE
    share: float  # its part of the query's loss: epsilon (pure accounting) or rho (zcdp)

    @property
    def midpoint(self) -> float:
        return (self.bounds.lower + self.bounds.upper) / 2


# Quantities that count (rows or units) carry no value bounds.
_COUNTS = frozenset({Kind.UNITS, Kind.ROWS, Kind.CLIPPED_UNITS})


def _kind(name: str) -> "Kind | str":
    """A registry's kind name as the Kind member, or as itself for a family that
    declares its own kind (gateway.dp.families: a str-valued kind compares and hashes
    as its value, so a new family needs no member here)."""
    return Kind(name) if name in Kind._value2member_map_ else name


# What an analyst's quantile is called, by how it was written (the resolver notes it on the node).
QUANTILE_NAMES = ("median", "percentile_cont", "percentile_disc", "quantile_cont", "quantile_disc")


@dataclass(frozen=True)
class Output:
    """One aggregate the analyst wrote, released as column `column` of the noisy table."""

    column: str
    aggregate: str  # count, count_distinct, sum, avg, or one of QUANTILE_NAMES
    quantities: tuple[str, ...]  # avg: (centred sum, count)
    bounds: Bounds | None = None


@dataclass(frozen=True)
class GroupKey:
    column: str  # "__g0" in the bounded and noisy tables
    values: tuple | None  # declared public values; None: the keys must be selected privately


@dataclass(frozen=True)
class NoisePlan:
    privacy: QueryPrivacy
    min_group_size: int  # applied to the noisy unit count
    groups: tuple[GroupKey, ...]
    quantities: tuple[Quantity, ...]
    outputs: tuple[Output, ...]
    rows: exp.Select  # the rows stage (CTEs kept), before pointing at sources
    post_sql: str  # runs over the noisy table named RELEASED
    released_from: tuple[tuple[str, str | None], ...]  # per released column: (its name, the output it shows as is)
    key_filter: str | None = None  # WHERE conjuncts over public keys only, applied to the grid of declared values
    composition: Composition | None = None  # how the query's loss is split over its quantities
    labels: tuple[str, ...] = ()  # per output: the aggregate as the analyst wrote it (what notices call it)
    # the unit count is noised and released (k, private selection, COUNT(DISTINCT unit)); False only on
    # public keys under `min_group_size_on_public_keys: false`, where it is neither noised nor paid for
    unit_count: bool = True
    # the bounds chosen for this query from the owner's profile (gateway.dp.bound_choice.Choice);
    # None: the declared ones apply. Chosen ones are in `privacy` and the quantities' bounds already
    bound_choice: object | None = None

    @property
    def applied_min_group_size(self) -> int | None:
        """The k every released group cleared (on its noisy unit count); None when no
        unit count is released (public keys under `min_group_size_on_public_keys: false`)."""
        return self.min_group_size if self.unit_count else None

    @property
    def public_keys(self) -> bool:
        return all(g.values is not None for g in self.groups)

    @property
    def groups_per_unit(self) -> int:
        """Groups one unit may touch: one when the query has no GROUP BY, and on public
        keys no more than there are combinations of them (the rows stage drops rows of
        any other key, so a unit cannot be in more, whatever max_groups_per_unit says)."""
        if not self.groups:
            return 1
        if self.public_keys:
            combinations = 1
            for key in self.groups:
                combinations *= len(key.values)
            return max(1, min(self.privacy.max_groups_per_unit, combinations))
        return self.privacy.max_groups_per_unit

    @property
    def delta(self) -> float:
        """Only private partition selection spends delta."""
        return 0.0 if self.public_keys else self.privacy.delta

    @property
    def epsilon(self) -> float:
        """What the query is charged under pure accounting (the policy's epsilon per query)."""
        return self.privacy.epsilon

    @property
    def accounting(self) -> str:
        return self.composition.accounting

    @property
    def rho(self) -> float:
        """What the query is charged under zcdp accounting: its measurements' rho; 0 under pure."""
        return 0.0 if self.composition.total.pure else self.composition.total.amount

    def label(self, output: str) -> str:
        """What the analyst wrote for an output column (never the internal name)."""
        for o, text in zip(self.outputs, self.labels):
            if o.column == output:
                return text
        return next(o.aggregate for o in self.outputs if o.column == output)


def plan(tree: exp.Select, room: CleanRoom, tables_read: frozenset[str], privacy: QueryPrivacy,
         min_group_size: int, template: Template | None) -> NoisePlan:
    check_stable(tree, room)
    found = unit_columns(tree, room, tables_read)
    units = [column for column, _ in found]
    unit = _unit(found)
    group_exprs = list(tree.args["group"].expressions) if tree.args.get("group") else []
    publics = [_public_keys(tree, g, room) for g in group_exprs]
    groups = tuple(GroupKey(f"__g{i}", p.values if p else None) for i, p in enumerate(publics))
    if groups and all(g.values is not None for g in groups):
        combinations = 1
        for g in groups:
            combinations *= len(g.values)
        if combinations > MAX_PUBLIC_GROUPS:
            raise Refused(f"{combinations} combinations of public group keys is more than {MAX_PUBLIC_GROUPS}",
                          rule="dp.too_many_groups", hint="group by fewer dimensions")
    aggregates = _aggregate_nodes(tree)
    builder, outputs, labels = _build(tree, room, template, units, aggregates)
    clipping = room.privacy.report_clipping if builder.quantities else None  # only bounded rows can be clipped
    public_keys = all(g.values is not None for g in groups)
    unit_count = (not public_keys or privacy.min_group_size_on_public_keys or not builder.quantities
                  or any(o.aggregate == "count_distinct" for o in outputs.values()))
    composition = _composition(privacy, builder.quantities, clipping, public_keys, unit_count)
    choice = None
    if public_keys and template is None:  # bounds chosen per query from the owner's profile (never from the data)
        from gateway.dp.bound_choice import choose_for  # (it imports the families, which import this module)

        choice = choose_for(room, privacy, tables_read, groups, builder, outputs, composition)
    if choice is not None:
        privacy = dataclasses.replace(privacy, max_contributions_per_unit=choice.total)
        if choice.uppers:  # the rows stage clamps to the chosen upper bounds: build again with them
            overrides = {(choice.table, m): Bounds(room.tables[choice.table].columns[m].bounds.lower, u)
                         for m, (u, _) in choice.uppers.items()}
            builder, outputs, labels = _build(tree, room, template, units, aggregates, overrides)
            composition = _composition(privacy, builder.quantities, clipping, public_keys, unit_count)
    quantities = tuple(Quantity(q.column, q.kind, q.value, q.bounds, q.alpha,
                                composition.part(q.column).loss.amount if unit_count or q.column != "__units" else 0.0)
                       for q in [Quantity("__units", Kind.UNITS, None, None, None, 0.0), *builder.quantities])
    rows = _rows_stage(tree, unit, group_exprs, builder.values, publics)
    post, released_from = _post_query(tree, group_exprs, aggregates, outputs)
    return NoisePlan(privacy, min_group_size, groups, quantities, tuple(outputs.values()), rows, post, released_from,
                     _key_filter(tree, group_exprs, groups), composition, tuple(labels.values()), unit_count, choice)


def _build(tree: exp.Select, room: CleanRoom, template: Template | None, units: list[exp.Column], aggregates,
           overrides: dict | None = None) -> tuple["_Quantities", dict, dict]:
    """The analyst's aggregates as quantities; `overrides` ((table, column) -> Bounds) replaces
    declared measure bounds with the ones chosen for this query."""
    builder = _Quantities(tree, room, template, units, overrides)
    outputs, labels = {}, {}
    for node in aggregates:
        key = _output_key(node)
        if key not in outputs:
            outputs[key] = builder.output(node, f"__a{len(outputs)}")
            labels[key] = _label(node)
    if room.privacy.report_clipping and builder.quantities:  # only bounded rows can be clipped
        builder.quantities.append(Quantity("__clipped", Kind.CLIPPED_UNITS, None, None, None, 0.0))
    return builder, outputs, labels


def _composition(privacy: QueryPrivacy, quantities: list[Quantity], clipping: float | None,
                 public_keys: bool, unit_count: bool = True) -> Composition:
    """The query's loss, split evenly over the unit count (when it is released) and each
    other quantity, after the policy's share for the clipped-unit count; delta (private
    key selection only) goes to the unit count, which selects the groups."""
    accounting = getattr(privacy, "accounting", PURE)
    amount = privacy.epsilon if accounting == PURE else privacy.rho
    total = PrivacyLoss(accounting, amount, 0.0 if public_keys else privacy.delta)
    parts = [("__units", Kind.UNITS.value)] if unit_count else []
    parts += [(q.column, str(getattr(q.kind, "value", q.kind))) for q in quantities]
    reserved = {"__clipped": clipping} if clipping else {}
    return Composition.split(total, parts, reserved, delta_to=None if public_keys else "__units")


def _output_key(node: exp.Expression) -> tuple[str, str | None]:
    """Equal aggregates are released once; percentile_disc and percentile_cont of the same
    value are different questions although the tree writes both as QUANTILE."""
    inner = node.this if isinstance(node, exp.Filter) else node
    return node.sql(), inner.meta.get("quantile")


def _label(node: exp.Expression) -> str:
    """The aggregate as the analyst wrote it, in PostgreSQL's spelling, for notices:
    lower-case function names, columns without their relation (`sum(amount)`)."""
    inner = node.this if isinstance(node, exp.Filter) else node

    def plain(expression: exp.Expression) -> str:
        bare = expression.copy().transform(
            lambda n: exp.column(n.name) if isinstance(n, exp.Column) and n.name else n)
        return bare.sql(dialect="postgres", normalize_functions="lower").replace("try_cast(", "cast(")

    if isinstance(inner, exp.Quantile):
        name = spelled(inner)
        fraction, value = inner.args["quantile"].sql(dialect="postgres"), plain(inner.this)
        text = f"{name}({value}, {fraction})" if name.startswith("quantile_") else \
            f"{name}({fraction}) WITHIN GROUP (ORDER BY {value})"
    elif isinstance(inner, exp.Median):
        text = f"median({plain(inner.this)})"
    else:
        text = plain(inner)
    if isinstance(node, exp.Filter):
        text += " " + plain(node.expression).replace("WHERE", "FILTER (WHERE", 1) + ")"
    return text


def _unit(units: list[tuple[exp.Column, bool]]) -> exp.Expression:
    """The unit of each joined row: a non-optional side's unit column, else the
    first unit any side carries (the stability check made them all equal)."""
    required = [column for column, nullable in units if not nullable]
    if required:
        return required[0]
    return exp.func("COALESCE", *[column for column, _ in units])


def _aggregate_nodes(tree: exp.Select) -> list[exp.Expression]:
    """Aggregates of the outer query (with their FILTER clause, if any)."""
    found = []
    for node in tree.find_all(*AGGREGATES):
        if node.find_ancestor(exp.Select) is not tree:
            continue
        found.append(node.parent if isinstance(node.parent, exp.Filter) else node)
    return found


class _Quantities:
    """Turns the analyst's aggregates into quantities over rows-stage values."""

    def __init__(self, tree: exp.Select, room: CleanRoom, template: Template | None, units: list[exp.Column],
                 overrides: dict | None = None):
        self.tree, self.room, self.template, self.units = tree, room, template, units
        self.overrides = overrides or {}  # (table, column) -> Bounds chosen for this query
        self.values: list[exp.Expression] = []  # rows-stage value expressions, "__v{i}"
        self.quantities: list[Quantity] = []
        self.measures: dict[str, tuple[str, str]] = {}  # output column -> (table, measure) it aggregates as is
        self.scope = build_scope(tree)

    def output(self, node: exp.Expression, column: str) -> Output:
        condition = None
        if isinstance(node, exp.Filter):
            condition, node = node.expression.this, node.this
        kind = type(node)
        distinct = isinstance(node.this, exp.Distinct)
        if kind is exp.Count and distinct:
            if condition is not None or not self._is_unit(node.this.expressions[0]):
                raise Refused("COUNT(DISTINCT ...) is differentially private only on the privacy unit",
                              rule="dp.count_distinct", hint="count the privacy unit, or COUNT(*)")
            return Output(column, "count_distinct", ("__units",))
        if kind is exp.Count:
            argument = None if isinstance(node.this, exp.Star) else node.this
            if argument is None and condition is None:
                return Output(column, "count", (self._quantity(Kind.ROWS, None),))
            value = self._value(exp.Literal.number(1) if argument is None else argument, condition)
            return Output(column, "count", (self._quantity(Kind.ROWS, value),))
        spec = BY_NODE[kind]  # the aggregate registry (gateway.policy.aggregates)
        if not spec.noised_as:
            raise Refused(f"{spec.name.upper()} cannot be released with differential privacy",
                          rule="dp.aggregate",
                          hint="use COUNT, SUM, AVG, median(), percentile_cont(), percentile_disc() or quantile_cont()")
        bounds = self._bounds(node.this)
        value = self._value(clamp(node.this.copy(), bounds.lower, bounds.upper), condition)
        traced = _base_column(self.scope, node.this, self.room) if isinstance(node.this, exp.Column) else None
        if traced is not None and condition is None:
            self.measures[column] = traced
        if kind in (exp.Median, exp.Quantile):
            alpha = 0.5 if kind is exp.Median else float(node.args["quantile"].this)
            name = "median" if kind is exp.Median else spelled(node)
            return Output(column, name, (self._quantity(Kind.QUANTILE, value, bounds, alpha),), bounds)
        # the rest are formed from the kinds the registry names (AVG: a centred sum and a row count)
        quantities = tuple(self._quantity(_kind(noised), value, None if _kind(noised) in _COUNTS else bounds)
                           for noised in spec.noised_as)
        return Output(column, spec.name, quantities, bounds)

    def _value(self, expression: exp.Expression, condition: exp.Expression | None) -> str:
        if condition is not None:
            expression = exp.Case(ifs=[exp.If(this=condition.copy(), true=expression.copy())])
        for i, existing in enumerate(self.values):
            if existing == expression:
                return f"__v{i}"
        self.values.append(expression.copy())
        return f"__v{len(self.values) - 1}"

    def _quantity(self, kind: Kind, value: str | None, bounds: Bounds | None = None, alpha: float | None = None) -> str:
        for q in self.quantities:
            if (q.kind, q.value, q.alpha) == (kind, value, alpha):
                return q.column
        column = f"__q{len(self.quantities)}"
        self.quantities.append(Quantity(column, kind, value, bounds, alpha, 0.0))
        return column

    def _bounds(self, argument: exp.Expression) -> Bounds:
        """Declared bounds of what is aggregated: a measure column, a column a
        template derives, or CASE WHEN ... THEN <those> ELSE <number> END (the hull)."""
        found = self._range(argument) or _declared_range(argument)
        if found is not None:
            return Bounds(*found)
        raise Refused(
            f"{argument.sql(dialect='postgres')} has no declared bounds, so its aggregate cannot be noised",
            rule="dp.unbounded_measure",
            hint="aggregate a measure column with bounds, or CASE WHEN ... THEN measure ELSE constant END "
                 "(templates: declare bounds for derived columns)",
        )

    def _range(self, node: exp.Expression) -> tuple[float, float] | None:
        if isinstance(node, exp.Paren) or (isinstance(node, exp.Cast) and node.to.is_type(*exp.DataType.REAL_TYPES)):
            return self._range(node.this)  # the resolver computes some numbers in DOUBLE: same values
        if isinstance(node, exp.Literal) and not node.is_string:
            return float(node.this), float(node.this)
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            return -float(node.this.this), -float(node.this.this)
        if isinstance(node, exp.Case) and node.args.get("this") is None:
            branches = [i.args["true"] for i in node.args["ifs"]]
            default = node.args.get("default")
            if default is not None and not isinstance(default, exp.Null):
                branches.append(default)
            ranges = [self._range(b) for b in branches if not isinstance(b, exp.Null)]
            if not ranges or None in ranges:
                return None
            return min(r[0] for r in ranges), max(r[1] for r in ranges)
        if is_score(node) or isinstance(node, exp.Column):  # scores: clamped to their model's bounds
            model = model_of(self.room, node) if is_score(node) else scored_column(self.scope, node, self.room)
            if model is not None:
                return model.file.lower, model.file.upper
        if isinstance(node, exp.Column):
            traced = _base_column(self.scope, node, self.room)
            if traced is not None and traced in self.overrides:
                return self.overrides[traced].lower, self.overrides[traced].upper
            if traced is not None:
                spec = self.room.tables[traced[0]].columns[traced[1]]
                if spec.role is Role.MEASURE and spec.bounds is not None:
                    return spec.bounds.lower, spec.bounds.upper
            if self.template is not None and node.name in self.template.bounds:
                bounds = self.template.bounds[node.name]
                return bounds.lower, bounds.upper
        return None

    def _is_unit(self, argument: exp.Expression) -> bool:
        return isinstance(argument, exp.Column) and any(
            (u.table, u.name) == (argument.table, argument.name) for u in self.units)


def _declared_range(argument: exp.Expression) -> tuple[float, float] | None:
    """The interval the resolver derived for a computed value (amount * 2, amount - 10),
    when every column it reads is a measure with declared bounds: the value is clamped
    to it before it is aggregated, so the interval holds whatever the data, and it
    bounds the aggregate's sensitivity."""
    annotation = argument.meta.get("typed")
    columns = list(argument.find_all(exp.Column))
    if annotation is None or annotation.range is None or not annotation.range.finite or not columns:
        return None
    for column in columns:
        declared = column.meta.get("declared")
        spec = declared.spec if declared is not None else None
        if spec is None or spec.role is not Role.MEASURE or spec.bounds is None:
            return None
    return annotation.range.low, annotation.range.high


def _base_column(scope, column: exp.Column, room: CleanRoom) -> tuple[str, str] | None:
    """(table, column) a column of this scope is, followed through CTEs and
    derived tables that pass it on unchanged; None if it is computed."""
    entry = scope.selected_sources.get(column.table)
    if entry is None:
        return None
    source = entry[1]
    if isinstance(source, exp.Table):
        return (source.name, column.name) if source.name in room.tables else None
    select = source.expression
    if not isinstance(select, exp.Select):
        return None
    for projection in select.expressions:
        if projection.alias_or_name == column.name and isinstance(projection.unalias(), exp.Column):
            return _base_column(source, projection.unalias(), room)
    return None


def _public_keys(tree: exp.Select, expression: exp.Expression, room: CleanRoom) -> PublicKeys | None:
    """A group key known from the policy alone: a dimension's declared values, buckets of a
    model's declared score range (gateway.plan.scoring.score_buckets), or the declared
    periods of a time bucket (gateway.dp.time_buckets); None: selected privately."""
    values = _public_values(tree, expression, room) or score_buckets(build_scope(tree), expression, room)
    if values is not None:
        return PublicKeys(values, exp.In(this=expression.copy(), expressions=[_literal(v) for v in values]))
    return public_buckets(tree, expression)


def _public_values(tree: exp.Select, expression: exp.Expression, room: CleanRoom) -> tuple | None:
    if not isinstance(expression, exp.Column):
        return None
    traced = _base_column(build_scope(tree), expression, room)
    if traced is None:
        return None
    table = room.tables[traced[0]]
    spec = table.columns[traced[1]]
    return spec.values if spec.role is Role.DIMENSION else None


def _rows_stage(tree: exp.Select, unit: exp.Expression, group_exprs, values, publics) -> exp.Select:
    rows = tree.copy()
    for key in ("group", "having", "order", "limit", "offset", "distinct"):
        rows.set(key, None)
    projections = [exp.alias_(unit.copy(), "__unit", quoted=True)]
    projections += [exp.alias_(g.copy(), f"__g{i}", quoted=True) for i, g in enumerate(group_exprs)]
    projections += [exp.alias_(v.copy(), f"__v{i}", quoted=True) for i, v in enumerate(values)]
    rows.set("expressions", projections)
    for key in publics:  # rows whose key is not one of the public ones never leave
        if key is not None:
            rows.where(key.condition.copy(), copy=False)
    return rows


def _key_filter(tree: exp.Select, group_exprs, groups) -> str | None:
    """The WHERE conjuncts that read public group keys and nothing else, over the
    key grid's columns: `WHERE region = 'north' GROUP BY region` releases north,
    not every declared region. The grid is public, so filtering it reveals nothing."""
    where = tree.args.get("where")
    if where is None or not groups or any(g.values is None for g in groups):
        return None
    names = {expression: f"__g{i}" for i, expression in enumerate(group_exprs)}
    conjuncts = list(where.this.flatten()) if isinstance(where.this, exp.And) else [where.this]
    kept = []
    for conjunct in conjuncts:
        columns = list(conjunct.find_all(exp.Column))
        if not columns or conjunct.find(exp.Select) or any(c not in names for c in columns):
            continue
        kept.append(conjunct.transform(
            lambda n: exp.column(names[n], quoted=True) if isinstance(n, exp.Column) else n))
    return exp.and_(*kept).sql(dialect="duckdb") if kept else None


def _literal(value) -> exp.Expression:
    return exp.Literal.string(value) if isinstance(value, str) else exp.Literal.number(value)


def _post_query(tree: exp.Select, group_exprs, aggregates, outputs: dict[str, Output]) -> tuple[str, tuple]:
    post = tree.copy()
    # Replace in the copy by position: aggregates first (they may contain group expressions).
    copies = _aggregate_nodes(post)
    for node, original in zip(copies, aggregates):
        node.replace(exp.column(outputs[_output_key(original)].column, quoted=True))
    for i, expression in enumerate(group_exprs):
        replacement = exp.column(f"__g{i}", quoted=True)
        post = post.transform(lambda n, e=expression, r=replacement: r.copy() if n == e else n, copy=False)
    having = post.args.get("having")
    for key in ("with_", "with", "joins", "where", "group", "having"):
        post.set(key, None)
    post.set("from_", exp.From(this=exp.to_table(RELEASED)))
    if having is not None:
        post.where(having.this, copy=False)
    leftover = [c for c in post.find_all(exp.Column) if c.table]
    if leftover:
        raise Refused(f"{leftover[0].sql(dialect='postgres')} is neither grouped nor aggregated",
                      rule="query.ungrouped_column")
    shown = tuple((p.alias_or_name, p.unalias().name if isinstance(p.unalias(), exp.Column) else None)
                  for p in post.expressions)
    return post.sql(dialect="duckdb"), shown

