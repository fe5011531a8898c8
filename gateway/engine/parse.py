"""Pass 1, parse: text (Postgres dialect) or a template call -> one SELECT tree
with every parameter bound as a literal."""

from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from gateway.engine.parameters import literal, template_arguments
from gateway.engine.state import QueryState
from gateway.errors import BadParameter, Refused, SyntaxProblem, UnknownTemplate

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
    tree = bind_parameters(tree, request.params)
    return state.evolve(tree=tree)


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
