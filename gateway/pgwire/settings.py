"""Session parameters (PostgreSQL's GUCs as a client sees them): their defaults,
which ones are reported, and SET / SHOW as text. No I/O, no policy."""

from __future__ import annotations

import re

from gateway.pgwire.statements import strip_comments

SERVER_VERSION = "16.4 (cleanroom gateway)"

# Reported to the client at startup and whenever they change (PostgreSQL's GUC_REPORT set).
REPORTED = ("server_version", "server_encoding", "client_encoding", "application_name", "DateStyle",
            "IntervalStyle", "TimeZone", "integer_datetimes", "standard_conforming_strings",
            "is_superuser", "session_authorization", "default_transaction_read_only", "in_hot_standby")

# The gateway's own: each noisy column's 95% interval as two more columns (gateway/engine/intervals.py).
INTERVALS = "cleanroom.intervals"
_BOOLEANS = {"on": "on", "true": "on", "yes": "on", "1": "on", "off": "off", "false": "off", "no": "off", "0": "off"}

DEFAULTS = {
    "server_version": SERVER_VERSION, "server_version_num": "160004", "server_encoding": "UTF8",
    "client_encoding": "UTF8", "application_name": "", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
    "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on", "is_superuser": "off",
    "default_transaction_read_only": "on", "transaction_read_only": "on", "in_hot_standby": "off",
    "transaction_isolation": "read committed", "default_transaction_isolation": "read committed",
    "search_path": '"$user", public', "extra_float_digits": "1", "max_identifier_length": "63",
    "lc_messages": "C", "lc_monetary": "C", "lc_numeric": "C", "lc_time": "C", "statement_timeout": "0",
    "bytea_output": "hex", "max_index_keys": "32", "block_size": "8192", "datestyle": "ISO, MDY",
    INTERVALS: "off",
}
_CANONICAL = {name.lower(): name for name in DEFAULTS}

# What a client may set in its startup packet; the rest is fixed or comes from the login.
STARTUP_SETTABLE = ("application_name", "DateStyle", "TimeZone", "extra_float_digits", "search_path", INTERVALS)

SET_RE = re.compile(r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?(?!TRANSACTION\b|SESSION\s+CHARACTERISTICS\b)"
                    r"([A-Za-z_][\w.]*)\s*(?:=|\bTO\b)\s*(.*)$", re.IGNORECASE | re.DOTALL)


class BadSetting(ValueError):
    """A SET the gateway cannot honour (22023)."""


def canonical(name: str) -> str:
    """The spelling PostgreSQL reports a parameter under (DateStyle, TimeZone, ...)."""
    return _CANONICAL.get(name.lower(), name)


def parse_set(sql: str) -> tuple[str, str] | None:
    """(parameter, value) of a SET statement; None for SET TRANSACTION and the like,
    which change nothing on a read-only engine."""
    match = SET_RE.match(sql)
    if not match:
        return None
    name, value = match.group(1), match.group(2).strip().rstrip(";").strip()
    if value.lower() == "default" or name.lower() in ("local",):
        value = DEFAULTS.get(canonical(name), "")
    value = ", ".join(unquote(v.strip()) for v in _split_commas(value)) if value else value
    name = canonical(name)
    if name == INTERVALS:
        return name, boolean(name, value)
    if name == "client_encoding":
        if value.upper().replace("-", "") not in ("UTF8", "UNICODE"):
            raise BadSetting(f"client_encoding {value} is not supported: use UTF8")
        value = "UTF8"
    return name, value


def show_name(sql: str) -> str:
    words = strip_comments(sql).strip().rstrip(";").split(None, 1)
    name = words[1].strip() if len(words) > 1 else ""
    if name.lower().replace(" ", "") in ("transactionisolationlevel",):
        return "transaction_isolation"
    if name.lower().replace(" ", "") == "timezone":
        return "TimeZone"
    return unquote(name)


def _split_commas(value: str) -> list[str]:
    return [part for part in re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", value)]


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1].replace(value[0] * 2, value[0])
    return value


def boolean(name: str, value: str) -> str:
    """'on' or 'off', as PostgreSQL reads a boolean setting."""
    found = _BOOLEANS.get(value.strip().lower())
    if found is None:
        raise BadSetting(f'parameter "{name}" requires a Boolean value')
    return found


def intervals_on(params: dict) -> bool:
    return params.get(INTERVALS) == "on"


def startup_options(text: str) -> dict[str, str]:
    """`-c name=value` pairs of the startup packet's `options` (libpq's PGOPTIONS,
    psycopg's options=...), as PostgreSQL reads them; anything else is ignored."""
    found, words = {}, text.replace("--", "-c ").split()
    for i, word in enumerate(words):
        pair = word[2:] if word.startswith("-c") and len(word) > 2 else words[i + 1] if word == "-c" and i + 1 < len(words) else None
        if pair and "=" in pair:
            name, _, value = pair.partition("=")
            found[canonical(name)] = value.replace("\\ ", " ")
    return found
