"""The checks of a policy document a JSON Schema cannot express: references
between sections and the invariants the privacy engine relies on. Each returns
(key path, message) pairs; gateway.policy.loader gives them file positions.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import sqlglot
from sqlglot import exp

from gateway.policy.buckets import bucket_problems
from gateway.policy.model import ParamType, Role
from gateway.policy.model_assets import model_problems
from gateway.policy.profiles import profile_problems
from gateway.policy.quotas import quota_problems
from gateway.yamlsource import KeyPath

Problems = list[tuple[KeyPath, str]]

# Helpers return {} / [] for values of the wrong type: the schema already said so.


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _entries(value: Any) -> list[tuple[str, dict]]:
    return [(k, v) for k, v in _map(value).items() if isinstance(v, dict)]


def _names(mapping: dict) -> str:
    return ", ".join(sorted(mapping)) or "none"


def semantic_problems(data: dict) -> Problems:
    """Problems a JSON Schema cannot express: references between sections and
    the invariants the privacy engine relies on."""
    collaborators = _map(data.get("collaborators"))
    tables = _map(data.get("tables"))
    rules = _map(data.get("rules"))
    templates = _map(data.get("templates"))
    found: Problems = []
    for name, table in _entries(tables):
        found += _table_problems(("tables", name), table, collaborators)
    for name, rule in _entries(rules):
        found += _rule_problems(("rules", name), rule, tables)
    for name, template in _entries(templates):
        found += _template_problems(("templates", name), template)
    for name, analyst in _entries(data.get("analysts")):
        at = ("analysts", name)
        if isinstance(analyst.get("collaborator"), str) and analyst["collaborator"] not in collaborators:
            message = f"unknown collaborator {analyst['collaborator']!r} (declared: {_names(collaborators)})"
            found.append((at + ("collaborator",), message))
        for section, declared in (("rules", rules), ("templates", templates)):
            for i, ref in enumerate(_list(analyst.get(section))):
                if isinstance(ref, str) and ref not in declared:
                    found.append((at + (section, i), f"unknown {section[:-1]} {ref!r} (declared: {_names(declared)})"))
    found += _member_problems(data, collaborators)
    found += _output_problems(templates, collaborators)
    found += _privacy_problems(data)
    found += profile_problems(data)
    found += quota_problems(data)
    found += model_problems(data)
    return found


def _privacy_problems(data: dict) -> Problems:
    """Budgets that cannot pay for one query, and template bounds the wrong way round."""
    found: Problems = []
    room = _map(data.get("privacy"))
    sections = [(("privacy",), room)] + [(("analysts", name, "privacy"), _map(a.get("privacy")))
                                         for name, a in _entries(data.get("analysts"))]
    for at, section in sections:
        budget, per_query = _map(section.get("budget")), section.get("epsilon_per_query", room.get("epsilon_per_query"))
        if _is_number(budget.get("epsilon")) and _is_number(per_query) and budget["epsilon"] < per_query:
            found.append((at + ("budget", "epsilon"), f"a budget of {budget['epsilon']} cannot pay for one query "
                                                      f"of epsilon {per_query}"))
        if room.get("accounting") == "zcdp" and budget and not (_is_number(budget.get("delta")) and budget["delta"] > 0):
            found.append((at + ("budget",), "accounting zcdp converts the total rho to (epsilon, delta): "
                                            "the budget needs a delta > 0, e.g. delta: 1.0e-5"))
    if any(_map(a.get("privacy")) for _, a in _entries(data.get("analysts"))) and not room:
        found.append((("analysts",), "analyst privacy settings need a clean-room privacy section"))
    for name, template in _entries(data.get("templates")):
        for column, bounds in _map(template.get("bounds")).items():
            if _is_bounds(bounds) and not bounds[0] < bounds[1]:
                found.append((("templates", name, "bounds", column), f"lower bound {bounds[0]} must be below upper bound {bounds[1]}"))
    return found


def _member_problems(data: dict, collaborators: dict) -> Problems:
    """A member acts for a declared collaborator, the same one it queries for."""
    found: Problems = []
    analysts = _map(data.get("analysts"))
    for name, member in _entries(data.get("members")):
        collaborator = member.get("collaborator")
        if not isinstance(collaborator, str):
            continue
        if collaborator not in collaborators:
            message = f"unknown collaborator {collaborator!r} (declared: {_names(collaborators)})"
            found.append((("members", name, "collaborator"), message))
        elif isinstance(analysts.get(name), dict) and analysts[name].get("collaborator") not in (None, collaborator):
            message = f"{name} is an analyst for {analysts[name]['collaborator']!r}; a user works for one collaborator"
            found.append((("members", name, "collaborator"), message))
    return found


def _output_problems(templates: dict, collaborators: dict) -> Problems:
    found: Problems = []
    seen: dict[str, str] = {}
    for name, template in _entries(templates):
        output = _map(template.get("output"))
        at = ("templates", name, "output")
        for i, receiver in enumerate(_list(output.get("receivers"))):
            if isinstance(receiver, str) and receiver not in collaborators:
                found.append((at + ("receivers", i), f"unknown collaborator {receiver!r} (declared: {_names(collaborators)})"))
        out = output.get("name")
        if isinstance(out, str):
            if out in seen:
                found.append((at + ("name",), f"output {out!r} is already written by template {seen[out]!r}"))
            seen.setdefault(out, name)
    return found


def _table_problems(at: KeyPath, table: dict, collaborators: dict) -> Problems:
    found: Problems = []
    owner = table.get("owner")
    if isinstance(owner, str) and owner not in collaborators:
        found.append((at + ("owner",), f"unknown collaborator {owner!r} (declared: {_names(collaborators)})"))
    columns = _map(table.get("columns"))
    for name, column in _entries(columns):
        found += _column_problems(at + ("columns", name), column)
    unit = table.get("privacy_unit")
    if table.get("public") is True:
        if unit is not None:
            found.append((at + ("privacy_unit",), "a public table has no privacy unit (remove it, or drop public: true)"))
        for i, key in enumerate(_list(table.get("keys"))):
            role = _role(columns, key)
            if role is None:
                found.append((at + ("keys", i), f"key {key!r} is not a declared column (declared: {_names(columns)})"))
            elif role is Role.HIDDEN:
                found.append((at + ("keys", i), f"key {key!r} is a hidden column; keys must be visible"))
    else:
        if unit is None:
            found.append((at, "missing required key 'privacy_unit': name the join_key column of the protected "
                              "entity, or set public: true for reference data"))
        elif isinstance(unit, str):
            role = _role(columns, unit)
            if role is None:
                found.append((at + ("privacy_unit",), f"{unit!r} is not a declared column (declared: {_names(columns)})"))
            elif role is not Role.JOIN_KEY:
                message = f"column {unit!r} must have role join_key to be the privacy unit (it is {role.value})"
                found.append((at + ("privacy_unit",), message))
        if "keys" in table:
            found.append((at + ("keys",), "only public tables declare keys; private tables join on join_key columns"))
    return found


def _role(columns: dict, name: Any) -> Role | None:
    column = columns.get(name) if isinstance(name, str) else None
    role = column.get("role") if isinstance(column, dict) else None
    return Role(role) if isinstance(role, str) and role in Role._value2member_map_ else None


def _column_problems(at: KeyPath, column: dict) -> Problems:
    found: Problems = []
    role = column.get("role")
    bounds = column.get("bounds")
    if role == "measure" and bounds is None:
        found.append((at, "a measure needs bounds: [lower, upper] (values are clamped into them)"))
    if bounds is not None and role != "measure":
        found.append((at + ("bounds",), f"only measures have bounds (this column is {role})"))
    if _is_bounds(bounds) and not bounds[0] < bounds[1]:
        found.append((at + ("bounds",), f"lower bound {bounds[0]} must be below upper bound {bounds[1]}"))
    values = column.get("values")
    if values is not None and role != "dimension":
        found.append((at + ("values",), f"only dimensions list values (this column is {role})"))
    seen: set = set()
    for i, value in enumerate(_list(values)):
        if not isinstance(value, (str, int, float)):
            continue  # the schema reported it
        if value in seen:
            found.append((at + ("values", i), f"duplicate value {value!r}"))
        seen.add(value)
    if "buckets" in column:
        found += bucket_problems(at + ("buckets",), column["buckets"], role, values is not None)
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_bounds(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.count(".") == 1


def _rule_problems(at: KeyPath, rule: dict, tables: dict) -> Problems:
    found: Problems = []
    listed = [t for t in _list(rule.get("tables")) if isinstance(t, str)]
    for i, name in enumerate(_list(rule.get("tables"))):
        if isinstance(name, str) and name not in tables:
            found.append((at + ("tables", i), f"unknown table {name!r} (declared: {_names(tables)})"))
    for i, pair in enumerate(_list(rule.get("joins"))):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_ref(s) for s in pair)):
            continue  # the schema reported the shape
        sides, ok = [], True
        for j, ref in enumerate(pair):
            problem = _join_side_problem(ref, listed, tables)
            if problem:
                found.append((at + ("joins", i, j), problem))
                ok = False
            sides.append(ref.split("."))
        if ok:
            problem = _join_pair_problem(sides[0], sides[1], tables)
            if problem:
                found.append((at + ("joins", i), problem))
    return found


def _join_side_problem(ref: str, listed: list[str], tables: dict) -> str | None:
    table_name, column_name = ref.split(".")
    if table_name not in tables:
        return f"unknown table {table_name!r}"
    if table_name not in listed:
        return f"table {table_name!r} is not in this rule's tables ({', '.join(listed)})"
    columns = _map(_map(tables[table_name]).get("columns"))
    if column_name not in columns:
        return f"{ref}: no such column (declared: {_names(columns)})"
    if _role(columns, column_name) is Role.HIDDEN:
        return f"{ref} is a hidden column and cannot be joined on"
    return None


def _join_pair_problem(left: list[str], right: list[str], tables: dict) -> str | None:
    if left == right:
        return "joins a column to itself"
    if left[0] == right[0]:
        return f"joins table {left[0]!r} to itself; self-joins are not allowed"
    (lt, lc), (rt, rc) = left, right
    lrole = _role(_map(_map(tables[lt]).get("columns")), lc)
    rrole = _role(_map(_map(tables[rt]).get("columns")), rc)

    def public_key(table: str, column: str) -> bool:
        spec = _map(tables[table])
        return spec.get("public") is True and column in _list(spec.get("keys"))

    if lrole is None or rrole is None:
        return None  # a column with an invalid role: the schema reported it
    joinable = (Role.JOIN_KEY, Role.DIMENSION)
    if (public_key(lt, lc) and rrole in joinable) or (public_key(rt, rc) and lrole in joinable):
        return None
    for table in (lt, rt):
        if _map(tables[table]).get("public") is True:
            keys = ", ".join(map(str, _list(_map(tables[table]).get("keys")))) or "none declared"
            return (
                f"a join to public table {table!r} must use one of its keys ({keys}) "
                "against a dimension or join_key column"
            )
    if lrole is Role.JOIN_KEY and rrole is Role.JOIN_KEY:
        return None
    return (
        f"private tables join on join_key columns only ({lt}.{lc} is {lrole.value}, "
        f"{rt}.{rc} is {rrole.value})"
    )


def _template_problems(at: KeyPath, template: dict) -> Problems:
    found: Problems = []
    parameters = _map(template.get("parameters"))
    for name, parameter in _entries(parameters):
        found += _parameter_problems(at + ("parameters", name), parameter)
    sql = template.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        return found
    try:
        statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        detail = getattr(exc, "errors", None) or [{}]
        first = detail[0] if isinstance(detail[0], dict) else {}
        where = f" (SQL line {first['line']}, column {first['col']})" if "line" in first else ""
        message = re.sub(r"<Token [^>]*?text: (.*?), line[^>]*>", r"'\1'", str(first.get("description", exc)))
        found.append((at + ("sql",), f"SQL does not parse: {message}{where}"))
        return found
    except Exception as exc:  # sqlglot fails on some malformed input with TypeError and the like
        found.append((at + ("sql",), f"SQL does not parse ({type(exc).__name__}: {exc})"))
        return found
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        kinds = ", ".join(type(s).__name__.upper() for s in statements) or "nothing"
        found.append((at + ("sql",), f"must be exactly one SELECT statement (found {kinds})"))
        return found
    used: set[str] = set()
    for node in statements[0].find_all(exp.Placeholder, exp.Parameter):
        if isinstance(node, exp.Placeholder) and isinstance(node.this, str) and node.this:
            used.add(node.this)
        else:
            found.append((at + ("sql",), "use named :name placeholders, not positional ones ($1 or ?)"))
    for name in sorted(used - set(parameters)):
        found.append((at + ("sql",), f"placeholder :{name} is not declared under parameters"))
    for name in parameters:
        if name not in used:
            found.append((at + ("parameters", name), f"parameter is not used in sql (no :{name} placeholder)"))
    return found


_RANGED = ("integer", "number", "date")
_APPLIES = {"values": ("enum",), "minimum": _RANGED, "maximum": _RANGED, "pattern": ("string",)}


def _parameter_problems(at: KeyPath, parameter: dict) -> Problems:
    kind = parameter.get("type")
    if not isinstance(kind, str) or kind not in ParamType._value2member_map_:
        return []  # the schema reported it
    found: Problems = []
    for key, kinds in _APPLIES.items():
        if key in parameter and kind not in kinds:
            found.append((at + (key,), f"'{key}' does not apply to {kind} parameters"))
    if kind == "enum" and "values" not in parameter:
        found.append((at, "an enum parameter needs a non-empty list of values"))
    if kind == "string":
        pattern = parameter.get("pattern")
        if pattern is None:
            found.append((at, "a string parameter needs a pattern (a regular expression the whole value must match)"))
        elif isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as exc:
                found.append((at + ("pattern",), f"pattern does not compile: {exc}"))
    bounds = {}
    for key in ("minimum", "maximum"):
        if key in parameter and kind in _APPLIES[key]:
            problem = value_problem(kind, parameter[key], {})
            if problem:
                found.append((at + (key,), problem))
            else:
                bounds[key] = parameter[key]
    if len(bounds) == 2 and bounds["minimum"] > bounds["maximum"]:
        found.append((at + ("maximum",), f"maximum {bounds['maximum']} is below minimum {bounds['minimum']}"))
    if "default" in parameter and not found:
        problem = value_problem(kind, parameter["default"], parameter)
        if problem:
            found.append((at + ("default",), f"default {parameter['default']!r} is invalid: {problem}"))
    return found


def value_problem(kind: str, value: Any, spec: dict) -> str | None:
    """Why `value` is not acceptable for a parameter of type `kind` declared as
    `spec` (values, minimum, maximum, pattern), or None if it is."""
    if kind == "enum":
        return None if value in _list(spec.get("values")) else f"must be one of {_list(spec.get('values'))}"
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be an integer"
    if kind == "number" and not _is_number(value):
        return "must be a number"
    if kind == "date":
        if not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
            return "must be an ISO date (yyyy-mm-dd)"
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            return f"{value!r} is not a calendar date"
    if kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if isinstance(spec.get("pattern"), str) and not re.fullmatch(spec["pattern"], value):
            return f"must match {spec['pattern']!r}"
    if "minimum" in spec and value < spec["minimum"]:
        return f"must be at least {spec['minimum']}"
    if "maximum" in spec and value > spec["maximum"]:
        return f"must be at most {spec['maximum']}"
    return None
