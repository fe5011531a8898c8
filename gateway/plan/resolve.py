"""Resolve a statement once, by scope, and generate its SQL from the resolution.

The analyst's tree is read, never edited or passed on: every query, relation
and expression of the statement that runs is built here, from the parts the
resolver understood, with

- every relation a CTE of the generated statement (renamed so it never shadows
  a table) or a declared table the analyst may read, under a unique alias;
- every column reference qualified with that alias and spelt as declared, in
  every clause and at every depth, following SQL's scoping rules (a CTE is seen
  by the later CTEs and the body of its WITH; a derived table sees no sibling;
  an unqualified name in GROUP BY or HAVING is an input column before an output
  name, in ORDER BY an output name first, generated as its position);
- every value typed (gateway.plan.types) and made unable to raise on a row.

What the resolver does not understand is refused with a rule id and a hint.
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import expressions as exp

from gateway.errors import Refused, SyntaxProblem, UnknownColumn, UnknownTable
from gateway.plan.allowed import NAMED_REFUSALS
from gateway.plan.coercion import common
from gateway.plan.checks import only as _only
from gateway.plan.checks import refuse_unknown as _refuse_unknown
from gateway.plan.expressions import Clause, Expressions, typed
from gateway.plan.naming import ANALYST_SCHEMAS, SET_OPERATIONS, identifier, output_name, refuse_relation, renamed, \
    table_function
from gateway.plan.scope import Column, CteDef, CteEnv, Declared, Relation, Scope, fold, reference
from gateway.plan.types import Kind, Range, Typed, engine_range, kind_of
from gateway.policy.model import CleanRoom, Role, Table

MAX_LIMIT = 2 ** 63 - 1


def resolve_statement(tree: exp.Expression, room: CleanRoom, reachable: dict[str, Table],
                      column_types: dict[str, dict[str, str]],
                      windows: bool = False) -> tuple[exp.Expression, frozenset[str]]:
    """The statement as generated from its resolution, and the policy tables it reads.
    Window functions are understood only where `windows` (approved templates)."""
    resolver = Resolver(room, reachable, column_types, windows)
    generated, _ = resolver.query(tree, CteEnv(), outer=None)
    return generated, frozenset(resolver.tables_read)


class Resolver:
    def __init__(self, room: CleanRoom, reachable: dict[str, Table], column_types: dict[str, dict[str, str]],
                 windows: bool = False):
        self.room = room
        self.windows = windows
        self.tables = {fold(name): table for name, table in reachable.items()}
        self.column_types = column_types
        self.tables_read: set[str] = set()
        self._taken = {fold(name) for name in room.tables}  # generated CTE names never shadow a table
        self._subqueries = 0

    # -- queries ------------------------------------------------------------------
    def query(self, node: exp.Expression, env: CteEnv, outer: Scope | None) -> tuple[exp.Expression, list[Column]]:
        while isinstance(node, exp.Subquery) and not node.args.get("alias"):
            _only(node, "this")
            node = node.this  # (SELECT ...) is a SELECT
        if isinstance(node, exp.Select):
            return self.select(node, env, outer)
        if isinstance(node, SET_OPERATIONS):
            return self.set_operation(node, env, outer)
        _refuse_unknown(node)

    def subquery(self, node: exp.Expression, scope: Scope) -> tuple[exp.Expression, list[Column]]:
        """A subquery inside an expression: it sees the CTEs in reach, and no column
        of the enclosing query (a correlated reference is refused)."""
        return self.query(node, scope.env, outer=scope)

    def select(self, node: exp.Select, env: CteEnv, outer: Scope | None) -> tuple[exp.Select, list[Column]]:
        if node.args.get("laterals"):
            raise Refused("LATERAL is not allowed", rule="query.lateral")
        _only(node, "with_", "expressions", "distinct", "from_", "joins", "where", "group", "having", "qualify",
              "order", "limit", "offset", "kind")
        if node.args.get("kind"):  # SELECT AS STRUCT / AS VALUE
            raise Refused(f"SELECT AS {node.args['kind']} is not supported", rule="bind.unsupported")
        env, with_ = self.with_clause(node, env, outer)
        scope = Scope(outer=outer, env=env)
        source, joins = self.from_clause(node, env, scope)
        expressions = Expressions(self, scope)
        select = exp.Select()
        for key, value in (("with_", with_), ("from_", source), ("joins", joins)):
            if value:
                select.set(key, value)
        where = node.args.get("where")
        if where is not None:
            _only(where, "this")
            select.set("where", exp.Where(this=_condition(expressions(where.this, Clause("WHERE")))))
        projections, columns = self.projections(node, scope, expressions)
        select.set("expressions", projections)
        outputs = {fold(c.name): p.this for c, p in zip(columns, projections)}
        group = node.args.get("group")
        if group is not None:
            select.set("group", self.group_by(group, projections, expressions, outputs))
        having = node.args.get("having")
        if having is not None:
            _only(having, "this")
            clause = Clause("HAVING", aggregates=True, outputs=outputs)
            select.set("having", exp.Having(this=_condition(expressions(having.this, clause))))
        qualify = node.args.get("qualify")
        if qualify is not None:
            _only(qualify, "this")
            clause = Clause("QUALIFY", aggregates=True, windows=True, outputs=outputs)
            select.set("qualify", exp.Qualify(this=_condition(expressions(qualify.this, clause))))
        distinct = node.args.get("distinct")
        if distinct is not None:
            if distinct.args.get("on"):
                raise Refused("DISTINCT ON is not allowed", rule="query.distinct_on")
            _only(distinct)
            select.set("distinct", exp.Distinct())
        order_clause = Clause("ORDER BY", aggregates=True, windows=True, outputs=outputs)
        select.set("order", self.order_keys(node.args.get("order"), expressions, order_clause, columns))
        self.limits(node, select)
        return select, columns

    def set_operation(self, node: exp.Expression, env: CteEnv, outer: Scope | None):
        _only(node, "this", "expression", "distinct", "with_", "order", "limit", "offset")
        env, with_ = self.with_clause(node, env, outer)
        left, left_columns = self.query(node.this, env, outer)
        right, right_columns = self.query(node.expression, env, outer)
        if len(left_columns) != len(right_columns):
            raise Refused(f"each side of {node.key.upper()} must have the same number of columns",
                          rule="query.set_operation_columns")
        columns = [Column(a.name, common(node, [_typed_null(a.typed), _typed_null(b.typed)]))
                   for a, b in zip(left_columns, right_columns)]
        built = type(node)(this=left, expression=right, distinct=bool(node.args.get("distinct")), with_=with_)
        scope = Scope(outer=outer, env=env)
        order = self.order_keys(node.args.get("order"), Expressions(self, scope), Clause("ORDER BY"), columns,
                                outputs_only=True)
        built.set("order", order)
        self.limits(node, built)
        return built, columns

    def with_clause(self, node: exp.Expression, env: CteEnv, outer: Scope | None) -> tuple[CteEnv, exp.With | None]:
        with_ = node.args.get("with_")
        if with_ is None:
            return env, None
        if with_.args.get("recursive"):
            raise Refused("recursive CTEs are not allowed", rule="query.recursive_cte")
        _only(with_, "expressions")
        env = env.child()
        ctes = []
        for cte in with_.expressions:
            _only(cte, "this", "alias", "materialized")
            alias = cte.args["alias"]
            _only(alias, "this", "columns")
            name = identifier(alias.this)
            if fold(name) in env.names:
                raise Refused(f'WITH query name "{name}" specified more than once', rule="bind.duplicate_alias")
            resolved, columns = self.query(cte.this, env, outer)  # its own name is not in reach yet
            columns = renamed(resolved, columns, alias.columns)
            generated = self._unique(name)
            env.names[fold(name)] = CteDef(generated, tuple(columns))
            ctes.append(exp.CTE(this=resolved, alias=exp.TableAlias(this=exp.to_identifier(generated, quoted=True))))
        return env, exp.With(expressions=ctes)

    # -- FROM ------------------------------------------------------------------------------
    def from_clause(self, node: exp.Select, env: CteEnv, scope: Scope):
        source = node.args.get("from_")
        if source is None:
            if node.args.get("joins"):
                raise Refused("JOIN needs a FROM clause", rule="bind.unsupported")
            return None, []
        _only(source, "this")
        generated = exp.From(this=self.relation(source.this, env, scope))
        expressions = Expressions(self, scope)
        joins = []
        for join in node.args.get("joins") or []:
            _only(join, "this", "on", "side", "kind", "method", "using")
            kind, side, method = (str(join.args.get(k) or "").upper() for k in ("kind", "side", "method"))
            if method not in ("", "NATURAL") or kind not in ("", "INNER", "OUTER", "CROSS"):
                raise Refused(f"{method or kind} joins are not allowed", rule="join.kind",
                              hint="join with [LEFT | RIGHT | FULL] JOIN ... ON a declared key")
            earlier = list(scope.relations.values())
            relation_node = self.relation(join.this, env, scope)
            joined = scope.relations[fold(relation_node.alias_or_name)]
            if method == "NATURAL":  # the columns both sides show the analyst, never hidden ones
                shared = [c.name for c in joined.columns if any(r.find(c.name) for r in earlier)]
                if not shared:
                    raise Refused("NATURAL JOIN of relations with no column in common", rule="join.cross")
                on = self._using(shared, earlier, joined, scope, side)
            elif join.args.get("using"):
                names = [identifier(n if isinstance(n, exp.Identifier) else n.this) for n in join.args["using"]]
                on = self._using(names, earlier, joined, scope, side)
            elif join.args.get("on") is not None:
                on = _condition(expressions(join.args["on"], Clause("ON")))
            else:  # CROSS JOIN or a comma (sqlglot gives both the same form): authorise decides
                on = None
            joins.append(exp.Join(this=relation_node, on=on, side=side or None,
                                  kind=kind if kind in ("CROSS", "INNER", "OUTER") else None))
        return generated, joins

    def _using(self, names: list[str], earlier: list[Relation], joined: Relation, scope: Scope, side: str):
        if side in ("FULL", "RIGHT"):
            raise Refused(f"{side} JOIN ... USING is not supported", rule="join.using",
                          hint="write ON a.key = b.key and qualify the key")
        conditions = []
        for name in names:
            left = [(r, c) for r in earlier for c in r.find(name)]
            right = joined.find(name)
            if not left or not right:
                raise (scope.missing(name) if not (left or right) else
                       UnknownColumn(f'column "{name}" named in USING does not exist on both sides',
                                     rule="bind.unknown_column"))
            if len(left) != 1 or len(right) != 1:
                raise Refused(f'USING column "{name}" must appear once on each side', rule="join.using",
                              hint="write ON a.key = b.key")
            relation, column = left[0]
            scope.merged[fold(name)] = (relation, column)  # an unqualified reference means the left one
            conditions.append(exp.EQ(this=reference(relation, column), expression=reference(joined, right[0])))
        return exp.and_(*conditions) if len(conditions) > 1 else conditions[0]

    def relation(self, node: exp.Expression, env: CteEnv, scope: Scope) -> exp.Expression:
        """One FROM item, added to `scope`; returns its generated form."""
        if isinstance(node, exp.Table):
            generated, relation = self._table(node, env)
        elif isinstance(node, exp.Subquery):
            _only(node, "this", "alias")
            resolved, columns = self.query(node.this, env, scope.outer)  # siblings are out of reach
            alias = node.args.get("alias")
            name = identifier(alias.this) if alias is not None and alias.this else self._derived_name()
            columns = renamed(resolved, columns, alias.columns if alias is not None else [])
            relation = Relation(name, columns)
            generated = exp.Subquery(this=resolved, alias=exp.TableAlias(this=exp.to_identifier(name, quoted=True)))
        elif type(node) in NAMED_REFUSALS:
            _refuse_unknown(node)
        elif isinstance(node, (exp.Func, exp.Anonymous, exp.Literal)):
            raise table_function(node)
        else:
            raise Refused(f"{node.key.upper()} is not supported in FROM", rule="bind.unsupported")
        scope.add(relation)
        return generated

    def _table(self, node: exp.Table, env: CteEnv) -> tuple[exp.Table, Relation]:
        if not isinstance(node.this, exp.Identifier):
            raise table_function(node.this)
        _only(node, "this", "db", "catalog", "alias")
        name, schema, catalog = identifier(node.this), node.db, node.catalog
        cte = env.lookup(name) if not schema and not catalog else None
        if cte is None:
            table = self.tables.get(fold(name)) if not catalog and fold(schema) in ANALYST_SCHEMAS else None
            if table is None:
                refuse_relation(name, schema, catalog, visible=self.tables.keys())
        alias_node = node.args.get("alias")
        alias_names = []
        if alias_node is not None:
            _only(alias_node, "this", "columns")
            alias_names = alias_node.columns
        alias = identifier(alias_node.this) if alias_node is not None and alias_node.this else name
        if cte is not None:
            columns = renamed(None, list(cte.columns), alias_names)
            relation = Relation(alias, columns)
            generated_name = cte.name
        else:
            self.tables_read.add(table.name)
            columns = renamed(None, self._declared_columns(table), alias_names)
            relation = Relation(alias, columns, table=table.name)
            generated_name = table.name
        generated = exp.Table(this=exp.to_identifier(generated_name, quoted=True),
                              alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
        return generated, relation

    def _declared_columns(self, table: Table) -> list[Column]:
        types = self.column_types.get(table.name, {})
        columns = []
        for name in table.visible():
            spec = table.columns[name]
            engine_type = types.get(name, "VARCHAR")
            kind, width = kind_of(engine_type), engine_range(engine_type)
            value_range = width
            if spec.role is Role.MEASURE and spec.bounds is not None:
                value_range = Range(float(spec.bounds.lower), float(spec.bounds.upper))
            elif kind.numeric and spec.values and all(isinstance(v, (int, float)) for v in spec.values):
                value_range = Range(float(min(spec.values)), float(max(spec.values)))
            if value_range is not None and width is not None:  # stored values never leave the type
                value_range = value_range.intersect(width)
            annotation = Typed(kind, value_range, copies=1 if kind is Kind.STRING else 0,
                               width=width if kind is Kind.INTEGER else None)
            columns.append(Column(name, annotation, Declared(table.name, name, spec)))
        return columns

    # -- clauses ----------------------------------------------------------------------------
    def projections(self, node: exp.Select, scope: Scope, expressions: Expressions):
        projections, columns = [], []
        clause = Clause("SELECT", aggregates=True, windows=True)
        for projection in node.expressions:
            if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column)
                                                    and isinstance(projection.this, exp.Star)):
                for relation, column in self._star(projection, scope):
                    projections.append(exp.alias_(reference(relation, column), column.name, quoted=True))
                    columns.append(replace(column, sql_name=None))
                continue
            if isinstance(projection, exp.Alias):
                _only(projection, "this", "alias")
                value, name = projection.this, identifier(projection.args["alias"])
            else:
                value, name = projection, output_name(projection)
            resolved = expressions(value, clause)
            projections.append(exp.alias_(resolved, name, quoted=True))
            declared = resolved.meta.get("declared") if isinstance(resolved, exp.Column) else None
            columns.append(Column(name, typed(resolved).with_(aggregate=False), declared))  # a value to readers
        if not projections:
            raise Refused("SELECT needs at least one output column", rule="bind.unsupported")
        return projections, columns

    def _star(self, node: exp.Expression, scope: Scope):
        star = node if isinstance(node, exp.Star) else node.this
        _only(star)
        if isinstance(node, exp.Column):
            _only(node, "this", "table")
            relation = scope.relations.get(fold(node.table))
            if relation is None:
                raise UnknownTable(f'missing FROM-clause entry for table "{node.table}"', rule="bind.unknown_table")
            return [(relation, c) for c in relation.columns]
        if not scope.relations:
            raise Refused("SELECT * needs a FROM clause", rule="bind.unsupported")
        return [(r, c) for r in scope.relations.values() for c in r.columns]

    def group_by(self, group: exp.Group, projections, expressions: Expressions, outputs) -> exp.Group:
        if group.args.get("all"):
            raise Refused("GROUP BY ALL is not allowed: name the dimensions", rule="query.group_by_all")
        for key, rule in (("grouping_sets", "query.grouping_sets"), ("cube", "query.grouping_sets"),
                          ("rollup", "query.grouping_sets")):
            if group.args.get(key):
                raise Refused(f"{key.replace('_', ' ').upper()} is not allowed", rule=rule)
        _only(group, "expressions")
        if not group.expressions:
            raise SyntaxProblem("syntax error: GROUP BY needs at least one expression", rule="statement.syntax")
        keys = []
        for key in group.expressions:
            if isinstance(key, exp.Literal) and key.is_int:
                resolved = _ordinal(key, projections).copy()
            else:
                resolved = expressions(key, Clause("GROUP BY", outputs=outputs))
            if typed(resolved).aggregate:
                raise Refused("aggregates are not allowed in GROUP BY", rule="aggregate.position")
            keys.append(resolved)
        return exp.Group(expressions=keys)

    def order_keys(self, order: exp.Order | None, expressions: Expressions, clause: Clause,
                   columns: list[Column] | None = None, outputs_only: bool = False) -> exp.Order | None:
        if order is None:
            return None
        _only(order, "expressions")
        positions: dict[str, list[int]] = {}
        for position, column in enumerate(columns or [], start=1):
            positions.setdefault(fold(column.name), []).append(position)
        keys = []
        for ordered in order.expressions:
            _only(ordered, "this", "desc", "nulls_first")
            key = ordered.this
            if isinstance(key, exp.Literal) and key.is_int and columns is not None:
                position = int(key.this)
                if not 1 <= position <= len(columns):
                    raise Refused(f"ORDER BY position {position} is not in the select list", rule="query.order_by")
                resolved = exp.Literal.number(position)
            elif (isinstance(key, exp.Column) and not key.table and isinstance(key.this, exp.Identifier)
                  and fold(key.name) in positions):
                found = positions[fold(key.name)]
                if len(found) > 1:
                    raise Refused(f'ORDER BY "{key.name}" is ambiguous', rule="bind.ambiguous_column")
                # an output name, by its position: no engine can take it for an input column
                resolved = exp.Literal.number(found[0])
            elif outputs_only:
                raise Refused("ORDER BY of a set operation takes output names or positions", rule="query.order_by")
            else:
                resolved = expressions(key, clause)
            keys.append(exp.Ordered(this=resolved, desc=bool(ordered.args.get("desc")),
                                    nulls_first=bool(ordered.args.get("nulls_first"))))
        return exp.Order(expressions=keys)

    def limits(self, node: exp.Expression, built: exp.Expression) -> None:
        limit, offset = node.args.get("limit"), node.args.get("offset")
        if isinstance(limit, exp.Fetch):
            _only(limit, "direction", "count", "limit_options")
            options = limit.args.get("limit_options")
            if options is not None and (options.args.get("percent") or options.args.get("with_ties")):
                raise Refused("FETCH ... WITH TIES or PERCENT is not allowed", rule="query.limit")
            limit = exp.Limit(expression=limit.args.get("count") or exp.Literal.number(1))
        if limit is not None:
            _only(limit, "expression")
            built.set("limit", exp.Limit(expression=_whole_number(limit.expression, "LIMIT")))
        if offset is not None:
            _only(offset, "expression")
            built.set("offset", exp.Offset(expression=_whole_number(offset.expression, "OFFSET")))

    # -- names ------------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        base = f"cte{name}" if name.startswith("__") else name  # "__" names are the gateway's own
        candidate, n = base, 1
        while fold(candidate) in self._taken:
            n += 1
            candidate = f"{base}_{n}"
        self._taken.add(fold(candidate))
        return candidate

    def _derived_name(self) -> str:
        self._subqueries += 1
        return f"subquery{self._subqueries}"


def _ordinal(key: exp.Literal, projections: list[exp.Expression]) -> exp.Expression:
    position = int(key.this)
    if not 1 <= position <= len(projections):
        raise Refused(f"GROUP BY position {position} is not in the select list", rule="query.group_by")
    return projections[position - 1].this


def _whole_number(node: exp.Expression, clause: str) -> exp.Literal:
    if not (isinstance(node, exp.Literal) and node.is_int and 0 <= int(node.this) <= MAX_LIMIT):
        raise Refused(f"{clause} takes a whole number", rule="query.limit")
    return exp.Literal.number(int(node.this))


def _condition(node: exp.Expression) -> exp.Expression:
    if typed(node).kind not in (Kind.BOOLEAN, Kind.NULL):
        raise Refused(f"a condition must be true or false, not {typed(node).kind.value}", rule="expr.type")
    return node


def _typed_null(annotation: Typed) -> exp.Null:
    node = exp.Null()
    node.meta["typed"] = annotation
    return node
