"""PostgreSQL's text conventions the catalog translation needs: format() with a
literal template, array literals ('{a,"b c"}'), and the names PostgreSQL gives
unaliased outputs (?column?, the function's name, the cast's type).
"""

from __future__ import annotations

from sqlglot import expressions as exp

from gateway.pgcatalog.detect import cast_target


def format_concat(template: str, arguments: list[exp.Expression]) -> exp.Expression | None:
    """PostgreSQL's format() with a literal template, as a concatenation: %s is the value
    (NULL gives ''), %I an identifier quoted where needed, %L a literal, %% a percent sign.
    None for what it does not handle (positions, widths): DuckDB then reports the query."""
    parts, literal, pending, position = [], [], iter(arguments), 0
    while position < len(template):
        char = template[position]
        position += 1
        if char != "%":
            literal.append(char)
            continue
        spec = template[position : position + 1]
        position += 1
        if spec == "%":
            literal.append("%")
            continue
        argument = next(pending, None)
        if spec not in ("s", "I", "L") or argument is None:
            return None
        if literal:
            parts.append(exp.Literal.string("".join(literal)))
            literal = []
        text = exp.Cast(this=argument.copy(), to=exp.DataType.build("VARCHAR"))
        if spec == "s":
            text = exp.Coalesce(this=text, expressions=[exp.Literal.string("")])
        else:
            text = exp.Anonymous(this="pgw_quote_ident" if spec == "I" else "pgw_quote_literal", expressions=[text])
        parts.append(text)
    if literal:
        parts.append(exp.Literal.string("".join(literal)))
    return exp.Concat(expressions=parts or [exp.Literal.string("")])


def array_elements(text: str) -> list[str]:
    """The elements of a PostgreSQL array literal such as '{a,"b c",d}' (DuckDB's lists
    are written [a, b]); quoted elements may hold commas and backslash escapes."""
    elements, current, quoted, escaped, inside = [], [], False, False, text.strip()[1:-1]
    for char in inside:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            elements.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if inside.strip():
        elements.append("".join(current).strip())
    return elements


def name_projections(tree: exp.Expression) -> None:
    """PostgreSQL's names for unaliased outputs of the outermost SELECT(s)."""
    selects = [tree] if isinstance(tree, exp.Select) else list(tree.find_all(exp.Select))[:1]
    for select in selects:
        projections = []
        for projection in select.expressions:
            if not isinstance(projection, (exp.Alias, exp.Star, exp.Column)) and not (
                isinstance(projection, exp.Dot) and isinstance(projection.expression, exp.Star)
            ):
                projection = exp.alias_(projection, _output_name(projection), quoted=True)
            projections.append(projection)
        select.set("expressions", projections)


def _output_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Paren):
        return _output_name(node.this)
    if isinstance(node, exp.Dot):
        return _output_name(node.expression)
    if isinstance(node, (exp.Cast, exp.TryCast)):
        inner = _output_name(node.this)
        return inner if inner != "?column?" else cast_target(node.to)
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Case):
        return "case"
    if isinstance(node, exp.CurrentVersion):
        return "version"
    if isinstance(node, exp.CurrentSchemas):
        return "current_schemas"
    if isinstance(node, (exp.CurrentDatabase, exp.CurrentSchema, exp.CurrentUser, exp.SessionUser)):
        return node.sql_name().lower()
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary):
        return node.sql_name().lower()
    return "?column?"
