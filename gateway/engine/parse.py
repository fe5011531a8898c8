"""Pass 1, parse: text (Postgres dialect) or a template call -> one SELECT tree
with every parameter bound as a literal."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from gateway.engine.parameters import literal, template_arguments
from gateway.engine.state import QueryState
from gateway.errors import BadParameter, Refused, SyntaxProblem, UnknownTemplate
from gateway.policy.model import CleanRoom, Template
from gateway.engine.intervals import with_placeholders
from gateway.plan.literals import fold_literal_functions

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its fallback warnings are not ours to print

DIALECT = "postgres"
MAX_SQL_BYTES = 256 * 1024

# First keywords of statements that are not queries: refused by name, before parsing,
# because sqlglot parses some of them (ATTACH, EXPORT) only as errors or commands.
NOT_A_QUERY = frozenset(
    """ATTACH DETACH COPY INSTALL LOAD FORCE PRAGMA SET RESET CALL EXPORT IMPORT INSERT UPDATE
    DELETE MERGE UPSERT REPLACE CREATE DROP ALTER TRUNCATE GRANT REVOKE VACUUM CHECKPOINT
    ANALYZE USE SHOW DESCRIBE SUMMARIZE EXPLAIN BEGIN COMMIT ROLLBACK START END ABORT PREPARE
    EXECUTE DEALLOCATE LISTEN UNLISTEN NOTIFY DO COMMENT REFRESH DECLARE FETCH MOVE CLOSE LOCK
    DISCARD REINDEX CLUSTER SECURITY""".split()
)

TOKEN_REPR = re.compile(r"<Token token_type: [\w.]+, text: (.*?), line: \d+.*?>")
QUERY_TYPES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
STATEMENT_TYPES = (exp.DDL, exp.DML, exp.Command, exp.Set, exp.Pragma, exp.Copy, exp.Values, exp.Describe, exp.Use, exp.Transaction, exp.Commit, exp.Rollback)


def parse(state: QueryState) -> QueryState:
    request = state.request
    if request.template is not None:
        return _parse_template(state)
    sql = request.sql
    if not isinstance(sql, str) or not sql.strip():
        raise SyntaxProblem("empty statement: send one SELECT", rule="statement.empty")
    if len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES:
        raise Refused(f"statement longer than {MAX_SQL_BYTES} bytes", rule="statement.too_long")
    _refuse_non_queries(sql)
    tree = _parse_one(sql)
    call = template_call(tree, state.cleanroom, state.analyst.templates)
    if call is not None:  # SELECT * FROM template(...): the same run as the HTTP API's, never recalled
        arguments = call.values(request.params)
        request = dataclasses.replace(request, sql=None, template=call.template.name, params=arguments)
        return _parse_template(state.evolve(request=request))
    tree = fold_literal_functions(bind_parameters(tree, request.params))
    if request.intervals:  # SET cleanroom.intervals = on: a SQL dataset may chart n_low / n_high
        tree = with_placeholders(tree)
    return state.evolve(tree=tree)


# -- templates called from SQL: SELECT * FROM name(arg, ...) ---------------------------


@dataclass(frozen=True)
class TemplateCall:
    """`SELECT * FROM name(a, b)` or `name(p => v)` or `SELECT * FROM name`, for a
    template the analyst may run: each argument node by declared parameter name."""

    template: Template
    arguments: tuple[tuple[str, exp.Expression], ...]

    def parameter_of(self, number: int) -> str | None:
        """The template parameter that `$number` is the argument for, if any."""
        for name, node in self.arguments:
            if isinstance(node, exp.Cast):
                node = node.this
            if isinstance(node, exp.Parameter) and node.name == str(number):
                return name
        return None

    def values(self, params: Mapping[str, object] | Sequence[object]) -> dict[str, object]:
        """The call's arguments as the template's parameters, $n and :name taken from `params`."""
        positional = 0
        values = {}
        for name, node in self.arguments:
            if isinstance(node, exp.Cast):  # 'x'::int, $1::date: the template checks the type
                node = node.this
            if isinstance(node, exp.Placeholder) and not node.name:
                node = exp.Parameter(this=exp.Literal.number(positional + 1))
                positional += 1
            if isinstance(node, (exp.Parameter, exp.Placeholder)):
                tree = bind_parameters(exp.Paren(this=node), params)
                node = tree.this
                if isinstance(node, exp.Cast):
                    node = node.this
            values[name] = _constant(node, name)
        return values


def template_call(tree: exp.Expression, room: CleanRoom, granted) -> TemplateCall | None:
    """The template run `tree` asks for, or None when it names no template the analyst may run.

    A template the analyst may not run is not recognised: the statement goes on
    as any other, so it fails just as an unknown function or table would."""
    found = None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for node in tree.find_all(exp.Table):
        if node.name.lower() in ctes:  # a CTE of the statement shadows a template's name
            continue
        name = _template_name(node, room, granted)
        if name is not None:
            found = (node, room.templates[name])
            break
    if found is None:
        return None
    node, template = found
    if not _bare_call(tree, node):
        raise Refused(
            f"template {template.name} runs on its own: it cannot be joined, filtered, sorted or nested",
            rule="template.call_shape",
            hint=f"write SELECT * FROM {template.name}({', '.join(p.name for p in template.parameters)}) and nothing more",
        )
    declared = [p.name for p in template.parameters]
    arguments: list[tuple[str, exp.Expression]] = []
    named = False
    for index, argument in enumerate(node.this.expressions if isinstance(node.this, exp.Anonymous) else ()):
        if isinstance(argument, (exp.Kwarg, exp.PropertyEQ)):
            name, value, named = argument.this.name, argument.expression, True
            if name not in declared:
                raise BadParameter(f"unknown parameter for template {template.name}: {name}", rule="parameter.unknown",
                                   hint=f"declared parameters: {', '.join(declared) or 'none'}")
        elif named:
            raise BadParameter("positional arguments must come before named ones", rule="parameter.shape")
        elif index >= len(declared):
            raise BadParameter(f"template {template.name} takes {len(declared)} argument(s)", rule="parameter.count",
                               hint=f"declared parameters: {', '.join(declared) or 'none'}")
        else:
            name, value = declared[index], argument
        if any(name == n for n, _ in arguments):
            raise BadParameter(f"parameter {name} given twice", rule="parameter.shape")
        arguments.append((name, value))
    return TemplateCall(template, tuple(arguments))


def _template_name(node: exp.Table, room: CleanRoom, granted) -> str | None:
    if node.catalog or node.db.lower() not in ("", "public"):
        return None
    if isinstance(node.this, exp.Anonymous):
        name = node.this.name
    elif isinstance(node.this, exp.Identifier):
        name = node.name
        if name in room.tables:  # a table keeps its name
            return None
    else:
        return None
    return name if name in room.templates and name in granted else None


def _bare_call(tree: exp.Expression, node: exp.Table) -> bool:
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1 or not isinstance(tree.expressions[0], exp.Star):
        return False
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is None or from_.this is not node:
        return False
    others = [key for key, value in tree.args.items() if value and key not in ("expressions", "from", "from_")]
    return not others


def _constant(node: exp.Expression, name: str) -> object:
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        value = _constant(node.this, name)
        return -value
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        try:
            return int(text)
        except ValueError:
            return float(text)
    if isinstance(node, exp.Cast):
        return _constant(node.this, name)
    raise BadParameter(f"the argument for parameter {name} must be a constant or a $n parameter",
                       rule="parameter.not_constant")


def _refuse_non_queries(sql: str) -> None:
    try:
        tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(sql)
    except TokenError as error:
        raise SyntaxProblem(f"syntax error: {_first_line(error)}", rule="statement.syntax") from None
    statements, current = [], []
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if current:
                statements.append(current)
            current = []
        else:
            current.append(token)
    if current:
        statements.append(current)
    if not statements:
        raise SyntaxProblem("empty statement: send one SELECT", rule="statement.empty")
    if len(statements) > 1:
        raise Refused(
            "only one statement per request is allowed",
            rule="statement.multiple",
            hint="send each SELECT on its own",
        )
    first = statements[0][0].text.upper()
    if first in NOT_A_QUERY:
        raise Refused(
            f"{first} statements are not allowed: the gateway runs single SELECT queries only",
            rule="statement.not_select",
            hint="the engine is read-only and its configuration is locked",
        )


def _parse_one(sql: str) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(sql, read=DIALECT)
    except ParseError as error:
        detail = error.errors[0] if error.errors else {}
        where = f" at line {detail.get('line')}, column {detail.get('col')}" if detail else ""
        near = detail.get("highlight")
        description = TOKEN_REPR.sub(r"'\1'", str(detail.get("description", "invalid statement")))
        raise SyntaxProblem(
            f"syntax error{where}: {description}"
            + (f" near {near!r}" if near else ""),
            rule="statement.syntax",
        ) from None
    except (TokenError, RecursionError, ValueError) as error:
        raise SyntaxProblem(f"syntax error: {_first_line(error)}", rule="statement.syntax") from None
    if isinstance(tree, exp.Select) and not tree.expressions:
        raise SyntaxProblem("syntax error: SELECT needs at least one output column", rule="statement.syntax")
    while isinstance(tree, exp.Subquery) and not tree.args.get("alias"):
        tree = tree.this  # (SELECT ...) is a SELECT
    if not isinstance(tree, QUERY_TYPES):
        if not isinstance(tree, STATEMENT_TYPES):  # e.g. a bare expression: not a statement at all
            raise SyntaxProblem("syntax error: not a SQL statement", rule="statement.syntax")
        kind = tree.key.upper()
        raise Refused(
            f"{kind} statements are not allowed: the gateway runs single SELECT queries only",
            rule="statement.not_select",
        )
    return tree


def bind_parameters(tree: exp.Expression, params: Mapping[str, object] | Sequence[object]) -> exp.Expression:
    """Replace $n, :name and ? placeholders with literals from `params`."""
    positional = 0

    def value_for(node: exp.Expression) -> object:
        nonlocal positional
        if isinstance(node, exp.Parameter):
            key = node.name
            index = int(key) - 1 if key.isdigit() else -1
        elif node.name:  # :name
            key, index = node.name, -1
        else:  # ? or %s
            key, index = str(positional + 1), positional
            positional += 1
        if isinstance(params, Mapping):
            if key in params:
                return params[key]
        elif 0 <= index < len(params):
            return params[index]
        raise BadParameter(f"no value given for parameter {key}", rule="parameter.missing")

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Parameter, exp.Placeholder)):
            return literal(value_for(node), f"parameter {node.name or positional}")
        return node

    if isinstance(params, (str, bytes)) or not isinstance(params, (Mapping, Sequence)):
        raise BadParameter("params must be a list (for $1, $2, ...) or an object (for :name)", rule="parameter.shape")
    return tree.transform(replace, copy=False)


def _parse_template(state: QueryState) -> QueryState:
    name = state.request.template
    template = state.cleanroom.templates.get(name)
    if template is None or name not in state.analyst.templates:
        # Not granted looks the same as absent: template names are not for everyone.
        raise UnknownTemplate(f"no template named {name!r}", rule="template.unknown")
    arguments = template_arguments(template, state.request.params)
    tree = sqlglot.parse_one(template.sql, read=DIALECT)
    tree = bind_parameters(tree, arguments)
    return state.evolve(tree=tree, template=template)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__
