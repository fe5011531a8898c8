"""Statement text as the session needs it before the engine sees it: splitting a
simple Query, what kind each statement is, the $n it uses. No policy here: every
"query" goes to the engine, which decides."""

from __future__ import annotations

import functools
import re

import sqlglot
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

# COPY (SELECT ...) TO STDOUT [WITH] [(FORMAT csv, HEADER ...)]: the inner query goes to the engine.
COPY_RE = re.compile(r"^\s*COPY\s*\((.*)\)\s*TO\s+STDOUT\b(.*?);?\s*$", re.IGNORECASE | re.DOTALL)
_PARAM_RE = re.compile(r"\$(\d+)")


def strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.DOTALL).strip()


CACHED_TEXT = 4096  # statement texts up to this long keep their classification and split (BI tools repeat them)


def classify(sql: str) -> str:
    return _classify_cached(sql) if len(sql) <= CACHED_TEXT else _classify(sql)


@functools.lru_cache(maxsize=2048)
def _classify_cached(sql: str) -> str:
    return _classify(sql)


def _classify(sql: str) -> str:
    words = re.findall(r"[A-Za-z_]+", strip_comments(sql)[:200])
    if not words:
        return "empty"
    first = words[0].upper()
    second = words[1].upper() if len(words) > 1 else ""
    if first in ("BEGIN",) or (first == "START" and second == "TRANSACTION"):
        return "begin"
    if first in ("COMMIT", "END") or (first == "COMMIT" and second == "PREPARED"):
        return "commit"
    if first in ("ROLLBACK", "ABORT"):
        return "rollback"
    if first == "SET":
        return "set"
    if first == "SHOW":
        return "show"
    if first == "EXPLAIN":
        return "explain"
    if first in ("RESET", "DISCARD", "UNLISTEN") or (first == "SAVEPOINT") or (first == "RELEASE"):
        return "noop"
    if first == "DEALLOCATE":
        return "deallocate"
    if first == "COPY" and COPY_RE.match(strip_comments(sql)):
        return "copy"
    if first == "DECLARE":
        return "declare"
    if first in ("FETCH", "MOVE"):
        return "fetch"
    if first == "CLOSE":
        return "close"
    return "query"


def noop_tag(sql: str) -> str:
    words = strip_comments(sql).split()
    first = words[0].upper().rstrip(";") if words else ""
    return {"DISCARD": "DISCARD ALL" if len(words) > 1 and words[1].upper().startswith("ALL") else "DISCARD",
            "RESET": "RESET", "UNLISTEN": "UNLISTEN", "SAVEPOINT": "SAVEPOINT", "RELEASE": "RELEASE",
            "DEALLOCATE": "DEALLOCATE"}.get(first, first)


def split_statements(sql: str) -> list[str]:
    """The statements of a simple Query, split on top-level semicolons."""
    return list(_split_cached(sql)) if len(sql) <= CACHED_TEXT else _split(sql)


@functools.lru_cache(maxsize=2048)
def _split_cached(sql: str) -> tuple[str, ...]:
    return tuple(_split(sql))


def _split(sql: str) -> list[str]:
    if ";" not in sql:
        return [sql] if strip_comments(sql) else []
    try:
        tokens = sqlglot.Dialect.get_or_raise("postgres").tokenize(sql)
    except SqlglotError:
        return [sql]
    pieces, start = [], 0
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            pieces.append(sql[start : token.start])
            start = token.end + 1
    pieces.append(sql[start:])
    return [p for p in pieces if strip_comments(p)]


def parameter_count(sql: str) -> int:
    return _parameter_count_cached(sql) if len(sql) <= CACHED_TEXT else _parameter_count(sql)


@functools.lru_cache(maxsize=2048)
def _parameter_count_cached(sql: str) -> int:
    return _parameter_count(sql)


def _parameter_count(sql: str) -> int:
    numbers = [int(n) for n in _PARAM_RE.findall(re.sub(r"'(?:[^']|'')*'", "''", sql))]
    return max(numbers, default=0)
