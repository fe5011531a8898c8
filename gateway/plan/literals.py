"""Functions whose arguments are all literals are values: folded to a typed literal
before anything is resolved or authorised, so `purchased_on >= TO_DATE('2026-01-01',
'YYYY-MM-DD')` (as Superset writes a time range) is a comparison with a date, not a
call the allow-list has to know.

Only functions whose result depends on nothing but their arguments are folded, in
Python, never by the engine: to_date / to_timestamp with a format (sqlglot has already
turned PostgreSQL's pattern into strftime directives; a pattern it could not translate
is refused, not guessed), to_timestamp(epoch seconds), make_date, make_timestamp. A
literal that does not match its format is an error (22007) naming the function as
PostgreSQL spells it.
"""

from __future__ import annotations

import datetime as dt
import re

from sqlglot import expressions as exp

from gateway.errors import InvalidDatetimeFormat

# strftime directives Python's strptime reads the way PostgreSQL reads their patterns.
_DIRECTIVES = set("YmdHIMSfpjyBbaAe%")
_EPOCH = dt.datetime(1970, 1, 1)


def fold_literal_functions(tree: exp.Expression) -> exp.Expression:
    return tree.transform(_fold, copy=False)


def _fold(node: exp.Expression) -> exp.Expression:
    if isinstance(node, (exp.StrToDate, exp.StrToTime)) and _strings(node.this, node.args.get("format")):
        value = _parse(node.this.this, node.args["format"].this, _spelling(node))
        if isinstance(node, exp.StrToDate):
            return _date(value.date())
        return _timestamp(value)
    if isinstance(node, exp.UnixToTime) and _number(node.this) and not node.args.get("scale"):
        seconds = float(node.this.this)
        if not -62135596800 <= seconds <= 253402300799:
            raise InvalidDatetimeFormat(f"to_timestamp({node.this.this}): out of range", rule="function.literal_value")
        return _timestamp(_EPOCH + dt.timedelta(seconds=seconds))
    if isinstance(node, exp.Anonymous) and str(node.name).lower() in ("make_date", "make_timestamp"):
        arguments = node.expressions
        name = str(node.name).lower()
        if arguments and all(_number(a) for a in arguments):
            try:
                parts = [int(a.this) for a in arguments[:5]] + [float(a.this) for a in arguments[5:]]
                if name == "make_date" and len(parts) == 3:
                    return _date(dt.date(*parts))
                if name == "make_timestamp" and len(parts) == 6:
                    whole = int(parts[5])
                    micro = round((parts[5] - whole) * 1_000_000)
                    return _timestamp(dt.datetime(*parts[:5], whole, micro))
            except (ValueError, OverflowError):
                raise InvalidDatetimeFormat(f"{name}({', '.join(a.sql() for a in arguments)}): not a valid date "
                                            "or time", rule="function.literal_value") from None
    return node


def _parse(value: str, fmt: str, name: str) -> dt.datetime:
    directives = re.findall(r"%(.)", fmt)
    if any(d not in _DIRECTIVES for d in directives) or re.search(r"[A-Za-z]{2,}", re.sub(r"%.", "", fmt)):
        raise InvalidDatetimeFormat(f"{name}: the format has a pattern the gateway does not read",
                                    rule="function.literal_value",
                                    hint="use YYYY, MM, DD, HH24, HH12, MI, SS, US, AM/PM and separators")
    try:
        return dt.datetime.strptime(value, fmt)
    except ValueError:
        raise InvalidDatetimeFormat(f"{name}('{value}'): does not match its format", rule="function.literal_value",
                                    hint="write the value in the format given, e.g. '2026-01-31' for "
                                         "'YYYY-MM-DD'") from None


def _spelling(node: exp.Expression) -> str:
    return "to_date" if isinstance(node, exp.StrToDate) else "to_timestamp"


def _strings(*nodes) -> bool:
    return all(isinstance(n, exp.Literal) and n.is_string for n in nodes)


def _number(node) -> bool:
    return isinstance(node, exp.Literal) and not node.is_string


def _date(value: dt.date) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))


def _timestamp(value: dt.datetime) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))
