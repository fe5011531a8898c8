"""Pass 3, authorise: an approved template, a read of public tables only, or an
ad-hoc query that one of the analyst's aggregation rules allows and every owner
of every table that rule covers approved. Anything else is refused with the
rule id that refused it and a hint."""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.collab.subjects import Kind
from gateway.engine.allowlist import AGGREGATES, ALLOWED, NAMED_REFUSALS, function_name
from gateway.engine.state import Authorisation, Authority, QueryState, TableUse
from gateway.errors import Refused
from gateway.models.files import TRAIN_FRONT_END
from gateway.plan.quantiles import spelled
from gateway.plan.scoring import check_rule_scores, is_score
from gateway.policy.model import AggregationRule, ColumnRef, Role, group_size


def authorise(state: QueryState) -> QueryState:
    room = state.cleanroom
    if state.template is not None:
        training = state.template.training is not None
        if training != (state.request.front_end == TRAIN_FRONT_END):  # its rows only ever reach a DP fit
            raise Refused(f"template {state.template.name} is {'' if training else 'not '}a training template",
                          rule="template.training", hint="cleanroom train / POST /v1/train runs training templates"
                          if training else "run it as a template")
        # a row-level output (its one receiver's units, every owner's consent) or a training run (rows
        # never released) has no k: it is one row per unit
        k = None if state.template.row_level_output or training else group_size(room, state.tables_read,
                                                                                state.template.min_group_size)
        # Every owner of every table it reads must have approved this exact version.
        subject, approvals = state.context.collab.require_approved(room, Kind.TEMPLATE, state.template.name,
                                                                   state.tables_read)
        return state.evolve(authorisation=Authorisation(
            Authority.TEMPLATE, state.template.name, k, template_sha256=subject.sha256,
            approvals=tuple(a.approval_sha256 for a in approvals),
        ))
    check_allowed_nodes(state.tree)
    private = {name for name in state.tables_read if not room.tables[name].public}
    if not private:
        return state.evolve(authorisation=Authorisation(Authority.PUBLIC, None, None))
    rules = [room.rules[r] for r in state.analyst.rules if state.tables_read <= set(room.rules[r].tables)]
    if not rules:
        raise Refused(
            f"no aggregation rule of yours covers {', '.join(sorted(state.tables_read))} together",
            rule="rule.no_rule_for_tables",
            hint=_rules_hint(state),
        )
    first_refusal = None
    unapproved = None
    for rule in rules:  # the first approved rule that allows the query authorises it
        try:
            AggregateQueryCheck(state, rule).run()
        except Refused as refusal:
            first_refusal = first_refusal or refusal
            continue
        try:
            approvals = rule_approvals(state, rule)
        except Refused as refusal:  # allowed, but not (or no longer) approved by every owner
            unapproved = unapproved or refusal
            continue
        k = group_size(room, state.tables_read, rule.min_group_size)
        return state.evolve(authorisation=Authorisation(Authority.RULE, rule.name, k, approvals=approvals))
    raise unapproved or first_refusal


def rule_approvals(state: QueryState, rule: AggregationRule) -> tuple[str, ...]:
    """The hashes of the approvals under which `rule` authorises a query now: every
    owner of every table the rule covers approved its current canonical hash (or a
    looser version it only tightens). Refused (rule.not_approved) otherwise.

    Called by authorise, and by recall on every repeat of a remembered analysis, so
    a revoked approval takes effect on the very next statement."""
    approvals = state.context.collab.require_approved(state.cleanroom, Kind.RULE, rule.name)[1]
    return tuple(sorted(a.approval_sha256 for a in approvals))


def check_allowed_nodes(tree: exp.Expression) -> None:
    for node in tree.walk():
        kind = type(node)
        if kind is exp.With and node.args.get("recursive"):  # unbounded work, whatever it reads
            raise Refused("recursive CTEs are not allowed", rule="query.recursive_cte")
        if kind in NAMED_REFUSALS:
            rule, message = NAMED_REFUSALS[kind]
            raise Refused(message, rule=rule)
        if kind in ALLOWED or is_score(node):  # which scores a rule allows: scoring.check_rule_scores
            continue
        if isinstance(node, exp.Func):
            raise Refused(
                f"function {function_name(node)}() is not allowed",
                rule="function.not_allowed",
                hint="only allow-listed functions may be used (see docs/analysts.md)",
            )
        raise Refused(f"{node.key.upper()} is not allowed in queries", rule="query.construct_not_allowed")


class AggregateQueryCheck:
    """The aggregation rule: dimensions and allowed aggregates over declared joins."""

    def __init__(self, state: QueryState, rule: AggregationRule):
        self.state, self.rule, self.tree = state, rule, state.tree
        self.by_alias: dict[str, TableUse] = {use.alias: use for use in state.uses}

    def run(self) -> None:
        self.check_shape()
        check_rule_scores(self.tree, self.state.cleanroom, self.rule)
        select: exp.Select = self.tree
        self.check_joins(select)
        aggregates = self.check_aggregates(select)
        group = select.args.get("group")
        grouped = list(group.expressions) if group else []
        if not aggregates and not grouped:
            raise Refused(
                "queries over private tables must aggregate: raw rows are never released",
                rule="query.not_aggregated",
                hint="add GROUP BY and an aggregate such as COUNT(*)",
            )
        where = select.args.get("where")
        if where is not None:
            if where.find(*AGGREGATES):
                raise Refused("aggregates are not allowed in WHERE: use HAVING", rule="where.aggregate")
            self.check_dimensions_only(where.this, clause="WHERE")
        for expression in grouped:
            self.check_dimensions_only(expression, clause="GROUP BY")
        outputs = {p.alias_or_name for p in select.expressions}
        for projection in select.expressions:
            self.check_grouped(projection.unalias(), grouped, outputs=set(), clause="SELECT")
        if select.args.get("having") is not None:
            self.check_grouped(select.args["having"].this, grouped, outputs, clause="HAVING")
        for ordered in (select.args.get("order").expressions if select.args.get("order") else []):
            self.check_grouped(ordered.this, grouped, outputs, clause="ORDER BY")
        self.check_limits(select)

    def check_shape(self) -> None:
        tree = self.tree  # recursive CTEs never get here: the resolver refuses them
        if not isinstance(tree, exp.Select):
            raise Refused(
                f"set operations ({tree.key.upper()}) over private tables are not allowed",
                rule="query.set_operation",
                hint="run each SELECT on its own",
            )
        nested = [n for n in tree.find_all(exp.Select, exp.Subquery, exp.CTE) if n is not tree]
        if nested:
            raise Refused(
                "subqueries and CTEs over private tables are not allowed in ad-hoc queries",
                rule="query.subquery",
                hint="ask the policy authors for an approved template",
            )
        distinct = tree.args.get("distinct")
        if distinct is not None and distinct.args.get("on"):
            raise Refused("DISTINCT ON is not allowed", rule="query.distinct_on")
        group = tree.args.get("group")
        if group is not None and group.args.get("all"):
            raise Refused("GROUP BY ALL is not allowed: name the dimensions", rule="query.group_by_all")

    # -- joins -------------------------------------------------------------
    def check_joins(self, select: exp.Select) -> None:
        for join in select.args.get("joins") or []:
            kind = (join.kind or "").upper()
            method = (join.method or "").upper()
            if kind == "CROSS" or not join.args.get("on"):
                raise Refused(
                    "cross joins are not allowed: join on a declared key",
                    rule="join.cross",
                    hint=self._joins_hint(),
                )
            if method or kind not in ("", "INNER", "OUTER"):
                raise Refused(f"{method or kind} joins are not allowed", rule="join.kind", hint=self._joins_hint())
            joined = join.this.alias_or_name
            links = list(join.args["on"].flatten()) if isinstance(join.args["on"], exp.And) else [join.args["on"]]
            touches_new = False
            for condition in links:
                pair = self._declared_pair(condition)
                if pair is None:
                    raise Refused(
                        f"join condition {condition.sql(dialect='postgres')} is not a declared join",
                        rule="join.undeclared",
                        hint=self._joins_hint(),
                    )
                touches_new = touches_new or joined in pair
            if not touches_new:
                raise Refused(f"{joined} is joined on nothing of its own", rule="join.cross", hint=self._joins_hint())

    def _declared_pair(self, condition: exp.Expression) -> tuple[str, str] | None:
        if not isinstance(condition, exp.EQ):
            return None
        left, right = condition.this, condition.expression
        if not (isinstance(left, exp.Column) and isinstance(right, exp.Column)) or left.table == right.table:
            return None
        refs = [self._ref(left), self._ref(right)]
        if None in refs or not any(j.connects(*refs) for j in self.rule.joins):
            return None
        return (left.table, right.table)

    def _ref(self, column: exp.Column) -> ColumnRef | None:
        use = self.by_alias.get(column.table)
        return ColumnRef(use.table.name, column.name) if use else None

    def _joins_hint(self) -> str:
        joins = ", ".join(f"{j.left} = {j.right}" for j in self.rule.joins)
        return f"rule {self.rule.name} declares joins: {joins or 'none'}"

    # -- aggregates and columns -----------------------------------------------
    def role(self, column: exp.Column) -> Role:
        use = self.by_alias.get(column.table)
        if use is not None:
            return use.table.columns[column.name].role
        if not column.table:  # an output name (ORDER BY revenue): its projection is checked itself
            return Role.DIMENSION
        # The resolver qualifies every column; one of a relation that is not a policy table
        # of the outer FROM (a derived table flatten could not merge) has no role to check.
        raise Refused(f"{_name(column)} is not a column of a table in FROM", rule="query.subquery",
                      hint="ask the policy authors for an approved template")

    def check_aggregates(self, select: exp.Select) -> list[exp.Expression]:
        found = list(select.find_all(*AGGREGATES))
        for aggregate in found:
            if aggregate.find_ancestor(*AGGREGATES):
                raise Refused("aggregates cannot be nested", rule="aggregate.nested")
            distinct = isinstance(aggregate.this, exp.Distinct)
            name = "count_distinct" if distinct and isinstance(aggregate, exp.Count) else AGGREGATES[type(aggregate)]
            if distinct and not isinstance(aggregate, exp.Count):
                raise Refused(f"{name.upper()}(DISTINCT ...) is not allowed", rule="aggregate.not_allowed")
            if name not in {a.value for a in self.rule.aggregates}:
                allowed = ", ".join(sorted(a.value for a in self.rule.aggregates))
                # percentile_cont and its kin by the name the analyst wrote, and the permission they need
                written = f"{spelled(aggregate)} (the {name} permission)" if isinstance(aggregate, exp.Quantile) \
                    else name.upper()
                raise Refused(
                    f"{written} is not allowed by rule {self.rule.name}",
                    rule="aggregate.not_allowed",
                    hint=f"allowed aggregates: {allowed}",
                )
            if isinstance(aggregate, exp.Quantile):
                self.check_quantile(aggregate)
            arguments = aggregate.this.expressions if distinct else [aggregate.this]
            if distinct and len(arguments) != 1:
                raise Refused("COUNT(DISTINCT ...) takes one expression", rule="aggregate.not_allowed")
            for argument in arguments:
                if distinct and isinstance(argument, exp.Column):
                    continue  # COUNT(DISTINCT join_key) is what join keys are for
                for column in argument.find_all(exp.Column):
                    if self.role(column) is Role.JOIN_KEY:
                        raise Refused(
                            f"join key {_name(column)} may only be counted with COUNT(DISTINCT ...)",
                            rule="column.join_key_in_aggregate",
                        )
            parent = aggregate.parent
            if isinstance(parent, exp.Filter):
                self.check_dimensions_only(parent.expression.this, clause="FILTER")
        return found

    def check_quantile(self, node: exp.Quantile) -> None:
        """Without noise, a quantile near 0 or 1 is a group's smallest or largest value:
        percentile_disc(0) is MIN, and over a group of exactly k rows percentile_disc(1/k)
        is too. A fraction q with min(q, 1 - q) >= 2/k lands at the second value or
        further in from either end of every released group (at least k rows), so only
        those pass under the median permission; the ends need MIN or MAX. Under
        differential privacy every quantile is noised (gateway/dp/families/quantiles.py)."""
        room = self.state.cleanroom
        if room.privacy is not None:
            return
        q = float(node.args["quantile"].this)
        k = group_size(room, self.state.tables_read, self.rule.min_group_size)
        inner = min(0.5, 2 / k)
        allowed = {a.value for a in self.rule.aggregates}
        needs = "min" if q < inner else "max" if q > 1 - inner else None
        if needs is not None and needs not in allowed:
            raise Refused(
                f"a quantile at {q:g} is too close to the group's {'smallest' if needs == 'min' else 'largest'} "
                f"value for rule {self.rule.name} (k = {k})",
                rule="aggregate.quantile_extreme",
                hint=f"use a fraction between {inner:.4g} and {1 - inner:.4g}, or ask for {needs.upper()} permission",
            )

    def check_dimensions_only(self, expression: exp.Expression, clause: str) -> None:
        for column in expression.find_all(exp.Column):
            role = self.role(column)
            if role is Role.MEASURE:
                raise Refused(
                    f"measure {_name(column)} cannot be used in {clause}: measures only go inside aggregates",
                    rule=f"{_slug(clause)}.measure",
                )
            if role is Role.JOIN_KEY:
                raise Refused(
                    f"join key {_name(column)} cannot be used in {clause}",
                    rule=f"column.join_key_in_{_slug(clause)}",
                    hint="join keys may only join tables or be counted with COUNT(DISTINCT ...)",
                )

    def check_grouped(self, expression, grouped, outputs: set[str], clause: str) -> None:
        """Outside aggregates only GROUP BY expressions (or output names) may appear."""
        stripped = expression.copy()
        for g in grouped:
            stripped = stripped.transform(lambda n, g=g: exp.null() if n == g else n)
        for column in stripped.find_all(exp.Column):
            if column.find_ancestor(*AGGREGATES, exp.Filter) or (not column.table and column.name in outputs):
                continue
            role = self.role(column)
            if role is Role.MEASURE:
                raise Refused(
                    f"measure {_name(column)} may only appear inside an aggregate",
                    rule="column.raw_measure",
                    hint="use SUM, AVG or another allowed aggregate",
                )
            if role is Role.JOIN_KEY:
                raise Refused(
                    f"join key {_name(column)} is never released as it is",
                    rule="column.raw_join_key",
                    hint="count it with COUNT(DISTINCT ...)",
                )
            raise Refused(
                f"column {_name(column)} in {clause} must appear in GROUP BY or inside an aggregate",
                rule="query.ungrouped_column",
            )

    def check_limits(self, select: exp.Select) -> None:
        for key in ("limit", "offset"):
            clause = select.args.get(key)
            if clause is None:
                continue
            value = clause.expression if isinstance(clause, exp.Limit) else clause.expression or clause.this
            if not (isinstance(value, exp.Literal) and value.is_int):
                raise Refused(f"{key.upper()} takes a whole number", rule="query.limit")


def _name(column: exp.Column) -> str:
    return f"{column.table}.{column.name}" if column.table else column.name


def _slug(clause: str) -> str:
    return clause.lower().replace(" ", "_")


def _rules_hint(state: QueryState) -> str:
    rules = [state.cleanroom.rules[r] for r in state.analyst.rules]
    if not rules:
        return "you have no aggregation rules; run an approved template instead"
    return "; ".join(f"rule {r.name} covers {', '.join(r.tables)}" for r in rules)
