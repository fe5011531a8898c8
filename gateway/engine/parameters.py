"""Parameters: validating template arguments and binding values as SQL literals.

Values are bound into the parsed tree as literal nodes, never spliced into
text, so a parameter can never change the shape of a statement.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Mapping

from sqlglot import expressions as exp

from gateway.errors import BadParameter
from gateway.policy.model import Parameter, ParamType, Template

MAX_STRING_PARAMETER = 1000


def literal(value: object, what: str) -> exp.Expression:
    """A Python value as a SQL literal node."""
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, Decimal)):
        return _number(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadParameter(f"{what} must be a finite number", rule="parameter.not_finite")
        return _number(value)
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), "TIMESTAMP")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, str):
        if "\x00" in value:
            raise BadParameter(f"{what} contains a NUL character", rule="parameter.bad_text")
        return exp.Literal.string(value)
    raise BadParameter(f"{what} has an unsupported type {type(value).__name__}", rule="parameter.type")


def _number(value: int | float | Decimal) -> exp.Expression:
    node = exp.Literal.number(abs(value))
    return exp.Neg(this=node) if value < 0 else node


def template_arguments(template: Template, given: Mapping[str, object] | object) -> dict[str, object]:
    """Check the caller's arguments against the template's declared parameters."""
    if not isinstance(given, Mapping):
        raise BadParameter("template parameters must be an object of name: value", rule="parameter.shape")
    declared = {p.name: p for p in template.parameters}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise BadParameter(
            f"unknown parameter(s) for template {template.name}: {', '.join(unknown)}",
            rule="parameter.unknown",
            hint=f"declared parameters: {', '.join(declared) or 'none'}",
        )
    values = {}
    for name, param in declared.items():
        if name not in given or given[name] is None:
            if param.default is None:
                raise BadParameter(f"parameter {name} is required", rule="parameter.missing", hint=describe(param))
            values[name] = param.default
        else:
            values[name] = check_value(param, given[name])
    return values


def check_value(param: Parameter, value: object) -> object:
    what = f"parameter {param.name}"
    fail = lambda why: BadParameter(f"{what} {why}", rule="parameter.invalid", hint=describe(param))  # noqa: E731
    if param.type is ParamType.ENUM:
        for allowed in param.values or ():
            if value == allowed or (isinstance(value, str) and not isinstance(allowed, str) and value == str(allowed)):
                return allowed
        raise fail("is not one of the allowed values")
    if param.type in (ParamType.INTEGER, ParamType.NUMBER):
        number = _as_number(value, integer=param.type is ParamType.INTEGER)
        if number is None:
            raise fail(f"must be {'an integer' if param.type is ParamType.INTEGER else 'a finite number'}")
        if (param.minimum is not None and number < param.minimum) or (
            param.maximum is not None and number > param.maximum
        ):
            raise fail("is out of range")
        return number
    if param.type is ParamType.DATE:
        try:
            day = value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else dt.date.fromisoformat(str(value))
        except ValueError:
            raise fail("must be a date written YYYY-MM-DD") from None
        if (param.minimum is not None and day < dt.date.fromisoformat(str(param.minimum))) or (
            param.maximum is not None and day > dt.date.fromisoformat(str(param.maximum))
        ):
            raise fail("is out of range")
        return day
    if not isinstance(value, str) or len(value) > MAX_STRING_PARAMETER:
        raise fail(f"must be a string of at most {MAX_STRING_PARAMETER} characters")
    if param.pattern is not None and not re.fullmatch(param.pattern, value):
        raise fail("does not match the required pattern")
    return value


def _as_number(value: object, *, integer: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            return None
    if isinstance(value, float) and integer:
        return int(value) if value.is_integer() else None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return None


def describe(param: Parameter) -> str:
    """The constraint in words, for hints and the template listing."""
    if param.type is ParamType.ENUM:
        return f"{param.name}: one of {', '.join(map(str, param.values or ()))}"
    if param.type is ParamType.STRING:
        return f"{param.name}: a string matching {param.pattern}"
    lo = "" if param.minimum is None else f" from {param.minimum}"
    hi = "" if param.maximum is None else f" to {param.maximum}"
    return f"{param.name}: {param.type.value}{lo}{hi}"
