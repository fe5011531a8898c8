"""Expressions, resolved node by node: each allowed node is built anew from the
parts the resolver understood, every column bound to one relation of its scope,
every value typed, and every operation that could raise on a row's value
generated so that it cannot (gateway.plan.arithmetic, gateway.plan.coercion).

Nothing of the analyst's tree is copied wholesale: a node of a kind not listed
here, or one that carries an argument this module does not read, is refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from sqlglot import expressions as exp

from gateway.errors import Refused
from gateway.plan import aggregation, arithmetic
from gateway.plan.aggregation import BIGINT
from gateway.plan.arithmetic import mark as _mark
from gateway.plan.arithmetic import typed
from gateway.plan.allowed import AGGREGATES, DATE_PARTS, EXTRACT_PARTS, MAX_STRING_COPIES, \
    TYPE_NAMES, function_name
from gateway.plan.clauses import Clause
from gateway.plan.clauses import combine as _combine
from gateway.plan.clauses import expect as _expect
from gateway.plan.coercion import common, compared, number_literal
from gateway.plan.checks import check_pattern, date_part, interval_days, literal_moment, only as _only, \
    refuse_unknown, whole_number
from gateway.plan.scope import Scope, fold, reference
from gateway.plan.types import BOOLEAN, NULL, Kind, Range, Typed, engine_range

if TYPE_CHECKING:
    from gateway.plan.resolve import Resolver


COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod)


class Expressions:
    """Resolves the expressions of one query scope."""

    def __init__(self, resolver: "Resolver", scope: Scope):
        self.resolver = resolver
        self.scope = scope

    def __call__(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            return handler(self, node, clause)
        refuse_unknown(node)

    # -- names ----------------------------------------------------------------
    def column(self, node: exp.Column, clause: Clause) -> exp.Expression:
        _only(node, "this", "table", "db", "catalog")
        if isinstance(node.this, exp.Star):
            raise Refused("a whole row (*) cannot be used as a value", rule="bind.row_reference",
                          hint="name the columns, or write COUNT(*)")
        name = node.name
        if node.args.get("catalog") is not None or (node.args.get("db") is not None
                                                   and fold(node.db) not in ("public", "")):
            raise Refused(f"{node.sql(dialect='postgres')} is not a column of a relation in FROM",
                          rule="bind.row_reference", hint="write alias.column")
        if node.table:
            relation, column = self.scope.qualified(node.table, name)
        else:
            found = self.scope.unqualified(name)
            if found is None:
                outputs = clause.outputs or {}
                if fold(name) in outputs:
                    return outputs[fold(name)].copy()
                raise self.scope.missing(name)
            relation, column = found
        return reference(relation, column)

    # -- literals -------------------------------------------------------------
    def literal(self, node: exp.Literal, clause: Clause) -> exp.Expression:
        if node.is_string:
            return _mark(exp.Literal.string(node.this), Typed(Kind.STRING))
        return number_literal(node.this)

    def boolean(self, node: exp.Boolean, clause: Clause) -> exp.Expression:
        return _mark(exp.Boolean(this=bool(node.this)), BOOLEAN)

    def null(self, node: exp.Null, clause: Clause) -> exp.Expression:
        return _mark(exp.Null(), NULL)

    def paren(self, node: exp.Paren, clause: Clause) -> exp.Expression:
        _only(node, "this")
        inner = self(node.this, clause)
        return _mark(exp.Paren(this=inner), typed(inner))

    # -- operators ------------------------------------------------------------
    def logical(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        _only(node, "this", "expression")
        left, right = self(node.this, clause), self(node.expression, clause)
        for side in (left, right):
            _expect(side, (Kind.BOOLEAN,), node)
        return _mark(type(node)(this=left, expression=right), _combine(BOOLEAN, left, right))

    def negation(self, node: exp.Not, clause: Clause) -> exp.Expression:
        _only(node, "this")
        inner = self(node.this, clause)
        _expect(inner, (Kind.BOOLEAN,), node)
        return _mark(exp.Not(this=inner), _combine(BOOLEAN, inner))

    def comparison(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        _only(node, "this", "expression")
        left, right = compared(node, self(node.this, clause), self(node.expression, clause))
        return _mark(type(node)(this=left, expression=right), _combine(BOOLEAN, left, right))

    def is_(self, node: exp.Is, clause: Clause) -> exp.Expression:
        _only(node, "this", "expression", "negate")
        left = self(node.this, clause)
        if not isinstance(node.expression, (exp.Null, exp.Boolean)):
            raise Refused("IS takes NULL, TRUE or FALSE", rule="expr.type")
        right = self(node.expression, clause)
        if isinstance(right, exp.Boolean):
            _expect(left, (Kind.BOOLEAN,), node)
        return _mark(exp.Is(this=left, expression=right, negate=node.args.get("negate")), _combine(BOOLEAN, left))

    def between(self, node: exp.Between, clause: Clause) -> exp.Expression:
        _only(node, "this", "low", "high")
        value, low, high = (self(node.args[k], clause) for k in ("this", "low", "high"))
        value, low = compared(node, value, low)
        value, high = compared(node, value, high)
        return _mark(exp.Between(this=value, low=low, high=high), _combine(BOOLEAN, value, low, high))

    def in_(self, node: exp.In, clause: Clause) -> exp.Expression:
        _only(node, "this", "expressions", "query")
        value = self(node.this, clause)
        if node.args.get("query") is not None:
            query = node.args["query"]
            inner = query.this if isinstance(query, exp.Subquery) else query
            resolved, columns = self.resolver.subquery(inner, self.scope)
            if len(columns) != 1:
                raise Refused("the subquery of IN must return one column", rule="expr.type")
            value, _ = compared(node, value, _mark(exp.Null(), columns[0].typed))
            if typed(value).kind is not columns[0].typed.kind and Kind.NULL not in (typed(value).kind,
                                                                                  columns[0].typed.kind):
                raise Refused("IN compares values of one type with its subquery", rule="expr.type")
            return _mark(exp.In(this=value, query=exp.Subquery(this=resolved)), _combine(BOOLEAN, value))
        items = [self(item, clause) for item in node.expressions]
        if not items:
            raise Refused("IN needs at least one value", rule="expr.type")
        for index, item in enumerate(items):
            value, items[index] = compared(node, value, item)
        return _mark(exp.In(this=value, expressions=items), _combine(BOOLEAN, value, *items))

    def like(self, node: exp.Expression, clause: Clause, escape: exp.Expression | None = None) -> exp.Expression:
        _only(node, "this", "expression", "negate")
        subject, pattern = self(node.this, clause), node.expression
        if not (isinstance(pattern, exp.Literal) and pattern.is_string):
            raise Refused("LIKE and ILIKE take a string literal as the pattern", rule="expr.pattern",
                          hint="a pattern computed per row could make the statement's cost depend on a row")
        target = subject.this if isinstance(subject, (exp.Lower, exp.Upper)) else subject
        if not isinstance(target, exp.Column) or typed(subject).kind is not Kind.STRING:
            raise Refused("LIKE and ILIKE apply to a text column (or lower()/upper() of one)", rule="expr.pattern",
                          hint="matching a computed string can cost time that depends on a row")
        check_pattern(pattern.this)
        text = exp.Literal.string(pattern.this)
        if isinstance(node, exp.ILike):  # DuckDB's ILIKE backtracks on '%' alone; LIKE over lower() does not
            subject, text = _mark(exp.Lower(this=subject), typed(subject)), exp.Lower(this=text)
        built = exp.Like(this=subject, expression=text, negate=node.args.get("negate"))
        if escape is not None:
            built = exp.Escape(this=built, expression=exp.Literal.string(escape.this))
        return _mark(built, _combine(BOOLEAN, subject))

    def escape(self, node: exp.Escape, clause: Clause) -> exp.Expression:
        _only(node, "this", "expression")
        character = node.expression
        if not (isinstance(node.this, (exp.Like, exp.ILike)) and isinstance(character, exp.Literal)
                and character.is_string and len(character.this) == 1 and character.this not in "%_"):
            raise Refused("ESCAPE takes one character after LIKE or ILIKE", rule="expr.pattern")
        return self.like(node.this, clause, escape=character)

    def arithmetic(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        _only(node, "this", "expression", "typed", "safe")
        return arithmetic.arithmetic(node, self(node.this, clause), self(node.expression, clause))

    def negative(self, node: exp.Neg, clause: Clause) -> exp.Expression:
        _only(node, "this")
        return arithmetic.negate(node, self(node.this, clause))

    def concatenation(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        if isinstance(node, exp.DPipe):
            _only(node, "this", "expression", "safe")
            parts = [node.this, node.expression]
        else:
            _only(node, "expressions", "safe", "coalesce")
            parts = list(node.expressions)
        resolved = [self(part, clause) for part in parts]
        copies = sum(typed(p).copies for p in resolved)
        if copies > MAX_STRING_COPIES:
            raise Refused(f"this text holds {copies} copies of row values (at most {MAX_STRING_COPIES})",
                          rule="expr.string_growth", hint="a string grown from many copies costs time per row")
        annotation = _combine(Typed(Kind.STRING, copies=copies), *resolved)
        if isinstance(node, exp.DPipe):
            return _mark(exp.DPipe(this=resolved[0], expression=resolved[1], safe=node.args.get("safe")), annotation)
        return _mark(exp.Concat(expressions=resolved, safe=node.args.get("safe"),
                                coalesce=node.args.get("coalesce")), annotation)

    # -- conditionals -----------------------------------------------------------
    def case(self, node: exp.Case, clause: Clause) -> exp.Expression:
        _only(node, "this", "ifs", "default")
        operand = self(node.this, clause) if node.args.get("this") is not None else None
        ifs, results = [], []
        for branch in node.args["ifs"]:
            _only(branch, "this", "true")
            condition = self(branch.this, clause)
            if operand is not None:
                checked, condition = compared(node, operand, condition)
                if checked is not operand:  # a guard or a cast would change the one operand per branch
                    raise Refused("CASE x WHEN ... compares values of one type", rule="expr.type",
                                  hint="write CASE WHEN x = ... THEN")
            else:
                _expect(condition, (Kind.BOOLEAN,), node)
            result = self(branch.args["true"], clause)
            ifs.append(exp.If(this=condition, true=result))
            results.append(result)
        default = self(node.args["default"], clause) if node.args.get("default") is not None else None
        if default is not None:
            results.append(default)
        annotation = common(node, results)
        parts = [operand, default, *[i.this for i in ifs]]
        return _mark(exp.Case(this=operand, ifs=ifs, default=default),
                     _combine(annotation, *[p for p in parts if p is not None], *results))

    def if_(self, node: exp.If, clause: Clause) -> exp.Expression:
        _only(node, "this", "true", "false")
        rebuilt = exp.Case(ifs=[exp.If(this=node.this, true=node.args["true"])], default=node.args.get("false"))
        return self.case(rebuilt, clause)

    def variadic(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        """COALESCE, GREATEST, LEAST: one common type; NULLIF: two of one type."""
        if isinstance(node, exp.Nullif):
            _only(node, "this", "expression")
            parts = [self(node.this, clause), self(node.expression, clause)]
            annotation = common(node, parts)
            return _mark(exp.Nullif(this=parts[0], expression=parts[1]), _combine(annotation, *parts))
        _only(node, "this", "expressions", "ignore_nulls")
        parts = [self(node.this, clause)] + [self(e, clause) for e in node.expressions]
        annotation = common(node, parts)
        extra = {"ignore_nulls": node.args["ignore_nulls"]} if node.args.get("ignore_nulls") is not None else {}
        return _mark(type(node)(this=parts[0], expressions=parts[1:], **extra), _combine(annotation, *parts))

    # -- functions ----------------------------------------------------------------
    def unary_numeric(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        """ABS (as negation: the smallest integer has no absolute value in its type),
        FLOOR, CEIL and ROUND (DECIMALs of unknown size rounded in floating point)."""
        _only(node, "this", "decimals")
        value = self(node.this, clause)
        if isinstance(node, exp.Abs):
            return arithmetic.negate(node, value)
        annotation = typed(value)
        if not annotation.kind.numeric and annotation.kind is not Kind.NULL:
            raise Refused(f"{function_name(node)}() takes a number", rule="expr.type")
        extra = {}
        if node.args.get("decimals") is not None:
            decimals = whole_number(node.args["decimals"])
            if decimals is None or abs(decimals) > 38:
                raise Refused(f"{function_name(node)}() takes a whole number of decimals between -38 and 38",
                              rule="expr.type")
            extra["decimals"] = exp.Literal.number(decimals)
        result = annotation.range
        if annotation.kind is Kind.DECIMAL and (result is None or not result.finite
                                                or max(abs(result.low), abs(result.high)) > 1e15):
            value = arithmetic.cast(value, "DOUBLE", annotation.with_(kind=Kind.FLOAT))
        if result is not None and result.finite:
            result = Range(math.floor(result.low) - 1, math.ceil(result.high) + 1)
        return _mark(type(node)(this=value, **extra), _combine(typed(value).with_(range=result), value))

    def text(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        """LOWER, UPPER, LENGTH, TRIM: text in; LENGTH gives a number."""
        _only(node, "this", "expression", "position")
        value = self(node.this, clause)
        _expect(value, (Kind.STRING,), node)
        if isinstance(node, exp.Length):
            length = Typed(Kind.INTEGER, Range(0, 2.0 ** 32), width=BIGINT)
            return _mark(exp.Length(this=value), _combine(length, value))
        if isinstance(node, exp.Trim):
            characters = node.args.get("expression")
            if characters is not None and not (isinstance(characters, exp.Literal) and characters.is_string):
                raise Refused("TRIM takes literal characters", rule="expr.type")
            position = node.args.get("position")
            if position is not None and str(position).upper() not in ("BOTH", "LEADING", "TRAILING"):
                raise Refused("TRIM takes BOTH, LEADING or TRAILING", rule="expr.type")
            built = exp.Trim(this=value, expression=exp.Literal.string(characters.this) if characters else None,
                             position=str(position).upper() if position else None)
            return _mark(built, _combine(typed(value), value))
        return _mark(type(node)(this=value), _combine(typed(value), value))

    def substring(self, node: exp.Substring, clause: Clause) -> exp.Expression:
        _only(node, "this", "start", "length")
        value = self(node.this, clause)
        _expect(value, (Kind.STRING,), node)
        parts = {}
        for key in ("start", "length"):
            argument = node.args.get(key)
            if argument is None:
                continue
            number = whole_number(argument)
            if number is None:
                raise Refused(f"SUBSTRING takes a whole-number literal {key}", rule="expr.type")
            # past a million characters both ends mean the same; nearer the limits DuckDB's arithmetic overflows
            parts[key] = exp.Literal.number(max(-1_000_000, min(1_000_000, number)))
        return _mark(exp.Substring(this=value, **parts), _combine(typed(value), value))

    def date_trunc(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        _only(node, "this", "unit")
        part = date_part(node.args.get("unit"), DATE_PARTS, "date_trunc")
        value = self(node.this, clause)
        _expect(value, (Kind.DATE, Kind.TIMESTAMP), node)
        # DuckDB truncates a column's min and max while planning: a guarded argument
        # keeps a stored extreme date from failing every statement over the column
        built = exp.TimestampTrunc(this=arithmetic.guard_moment(value), unit=exp.Var(this=part.upper()))
        return _mark(built, _combine(Typed(Kind.TIMESTAMP), value))

    def extract(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        if isinstance(node, exp.Extract):
            _only(node, "this", "expression")
            part, argument = date_part(node.this, EXTRACT_PARTS, "extract"), node.expression
        else:  # YEAR(x), MONTH(x), DAY(x)
            _only(node, "this")
            part, argument = type(node).__name__.lower(), node.this
        value = self(argument, clause)
        _expect(value, (Kind.DATE, Kind.TIMESTAMP, Kind.INTERVAL), node)
        built = exp.Extract(this=exp.Var(this=part.upper()), expression=arithmetic.guard_moment(value))
        return _mark(built, _combine(Typed(Kind.INTEGER, Range(-1e7, 1e7), width=BIGINT), value))

    def current_date(self, node: exp.CurrentDate, clause: Clause) -> exp.Expression:
        _only(node)
        return _mark(exp.CurrentDate(), Typed(Kind.DATE))

    def cast(self, node: exp.Expression, clause: Clause) -> exp.Expression:
        _only(node, "this", "to", "safe", "requires_string")
        value = self(node.this, clause)
        to = node.args["to"]
        kind = TYPE_NAMES.get(to.this.name if hasattr(to.this, "name") else str(to.this))
        if kind is None or to.args.get("nested") or to.args.get("values") or to.args.get("collate"):
            raise Refused(f"cannot cast to {to.sql(dialect='postgres')}", rule="expr.type",
                          hint="cast to a number, text, boolean, date, timestamp or interval type")
        params = []
        for param in to.expressions:
            inner = param.this if isinstance(param, exp.DataTypeParam) else param
            if not (isinstance(inner, exp.Literal) and inner.is_int and 0 <= int(inner.this) <= 38):
                raise Refused(f"cannot cast to {to.sql(dialect='postgres')}", rule="expr.type")
            params.append(exp.DataTypeParam(this=exp.Literal.number(int(inner.this))))
        target = exp.DataType(this=to.this, expressions=params or None)
        source = typed(value)
        if isinstance(value, exp.Literal) and value.is_string:
            if kind.temporal:
                literal_moment(value.this, kind.value)
            elif kind is Kind.INTERVAL:
                interval_days(value.this)
        elif kind is Kind.INTERVAL and source.kind is not Kind.INTERVAL:
            raise Refused("an INTERVAL must be a literal such as INTERVAL '7 days'", rule="expr.interval")
        width = engine_range(target.sql(dialect="duckdb")) if kind in (Kind.INTEGER, Kind.DECIMAL) else None
        result = None
        if kind.numeric:
            result = width if width is not None else None
            if source.kind.numeric and source.range is not None:
                result = source.range.intersect(width) if width is not None else source.range
        copies = source.copies if kind is Kind.STRING else 0
        annotation = Typed(kind, result, copies, width=width if kind is Kind.INTEGER else None)
        # TRY_CAST: a value that does not convert becomes NULL instead of an error
        return _mark(exp.TryCast(this=value, to=target), _combine(annotation, value))

    def interval(self, node: exp.Interval, clause: Clause) -> exp.Expression:
        _only(node, "this", "unit")
        text = node.this.this if isinstance(node.this, exp.Literal) else None
        unit = node.args.get("unit")
        if text is None or (unit is not None and not isinstance(unit, exp.Var)):
            raise Refused("an INTERVAL must be a literal such as INTERVAL '7 days'", rule="expr.interval")
        spelled = f"{text} {unit.name}" if unit is not None else str(text)
        days = interval_days(spelled)
        return _mark(exp.Interval(this=exp.Literal.string(spelled)), Typed(Kind.INTERVAL, Range(-days, days)))

    # -- subqueries -------------------------------------------------------------------
    def scalar_subquery(self, node: exp.Subquery, clause: Clause) -> exp.Expression:
        _only(node, "this")
        resolved, columns = self.resolver.subquery(node.this, self.scope)
        if len(columns) != 1:
            raise Refused("a subquery used as a value must return one column", rule="expr.type")
        return _mark(exp.Subquery(this=resolved), columns[0].typed)

    def exists(self, node: exp.Exists, clause: Clause) -> exp.Expression:
        _only(node, "this")
        resolved, _ = self.resolver.subquery(node.this, self.scope)
        return _mark(exp.Exists(this=resolved), BOOLEAN)


_HANDLERS: dict[type, Callable] = {
    exp.Column: Expressions.column,
    exp.Literal: Expressions.literal,
    exp.Boolean: Expressions.boolean,
    exp.Null: Expressions.null,
    exp.Paren: Expressions.paren,
    exp.And: Expressions.logical,
    exp.Or: Expressions.logical,
    exp.Not: Expressions.negation,
    exp.Is: Expressions.is_,
    exp.Between: Expressions.between,
    exp.In: Expressions.in_,
    exp.Like: Expressions.like,
    exp.ILike: Expressions.like,
    exp.Escape: Expressions.escape,
    exp.Neg: Expressions.negative,
    exp.DPipe: Expressions.concatenation,
    exp.Concat: Expressions.concatenation,
    exp.Case: Expressions.case,
    exp.If: Expressions.if_,
    exp.Coalesce: Expressions.variadic,
    exp.Greatest: Expressions.variadic,
    exp.Least: Expressions.variadic,
    exp.Nullif: Expressions.variadic,
    exp.Abs: Expressions.unary_numeric,
    exp.Floor: Expressions.unary_numeric,
    exp.Ceil: Expressions.unary_numeric,
    exp.Round: Expressions.unary_numeric,
    exp.Lower: Expressions.text,
    exp.Upper: Expressions.text,
    exp.Length: Expressions.text,
    exp.Trim: Expressions.text,
    exp.Substring: Expressions.substring,
    exp.DateTrunc: Expressions.date_trunc,
    exp.TimestampTrunc: Expressions.date_trunc,
    exp.Extract: Expressions.extract,
    exp.Year: Expressions.extract,
    exp.Month: Expressions.extract,
    exp.Day: Expressions.extract,
    exp.CurrentDate: Expressions.current_date,
    exp.Cast: Expressions.cast,
    exp.TryCast: Expressions.cast,
    exp.Interval: Expressions.interval,
    exp.Filter: aggregation.filtered,
    exp.WithinGroup: aggregation.within_group,
    exp.Anonymous: aggregation.anonymous,
    exp.Window: aggregation.window,
    exp.Subquery: Expressions.scalar_subquery,
    exp.Exists: Expressions.exists,
    **{kind: Expressions.comparison for kind in COMPARISONS},
    **{kind: Expressions.arithmetic for kind in ARITHMETIC},
    **{kind: aggregation.aggregate for kind in AGGREGATES},
}
