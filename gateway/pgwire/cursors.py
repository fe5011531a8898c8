"""SQL cursors: DECLARE, FETCH, MOVE and CLOSE over an allowed query.

psqlODBC with UseDeclareFetch (Tableau's bundled setting, some Excel setups)
reads every result through one: `declare "SQL_CUR…" cursor with hold for
<query>`, then `fetch 100 in "SQL_CUR…"` until fewer rows come back, then
`close "SQL_CUR…"`. The query goes to the engine when it is declared, like any
other (policy, budget, audit); the cursor holds the rows the engine released
and FETCH hands them out. Only forward fetches: a cursor here is NO SCROLL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.pgwire import messages as m
from gateway.pgwire.portal import Failed, Portal, Statement

_NAME = r'("(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
DECLARE_RE = re.compile(
    rf"^\s*DECLARE\s+{_NAME}\s+((?:(?:BINARY|INSENSITIVE|ASENSITIVE|NO\s+SCROLL|SCROLL)\s+)*)CURSOR\s+"
    rf"(?:(WITH|WITHOUT)\s+HOLD\s+)?FOR\s+(.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
FETCH_RE = re.compile(
    rf"^\s*(FETCH|MOVE)\s+(?:(NEXT|ALL|FORWARD\s+ALL|FORWARD\s+\d+|FORWARD|\d+|(?!(?:FROM|IN)\s)[A-Z]+(?:\s+[-+]?\d+)?)\s+)?"
    rf"(?:(?:FROM|IN)\s+)?{_NAME}\s*;?\s*$", re.IGNORECASE | re.DOTALL)
CLOSE_RE = re.compile(rf"^\s*CLOSE\s+(ALL|{_NAME})\s*;?\s*$", re.IGNORECASE)
MAX_CURSORS = 64  # open at once per session: each holds a released result
CURSOR_KINDS = ("declare", "fetch", "close")  # gateway.pgwire.statements.classify


@dataclass
class Cursor:
    portal: Portal  # the query's portal, run to completion when declared
    hold: bool  # WITH HOLD: survives COMMIT and ROLLBACK


def cursor_name(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


class Cursors:
    async def run_cursor_command(self, portal: Portal, describe: bool) -> None:
        kind, sql = portal.statement.kind, portal.statement.sql
        if kind == "declare":
            await self._declare(sql, portal.params)
        elif kind == "close":
            self._close(sql)
        else:
            await self._fetch(sql, describe)

    async def _declare(self, sql: str, params: list) -> None:
        match = DECLARE_RE.match(sql)
        if match is None:
            raise Failed("42601", "syntax error in DECLARE")
        name, options, hold, query = cursor_name(match.group(1)), match.group(2).upper(), match.group(3), match.group(4)
        if "BINARY" in options:
            raise Failed("0A000", "binary cursors are not supported", "declare the cursor without BINARY")
        if "SCROLL" in options.replace("NO SCROLL", ""):
            raise Failed("0A000", "scrollable cursors are not supported", "fetch forward only (NO SCROLL)")
        if name in self.cursors:
            raise Failed("42P03", f'cursor "{name}" already exists')
        if len(self.cursors) >= MAX_CURSORS:
            raise Failed("54000", f"at most {MAX_CURSORS} cursors may be open in a session", "close the ones you are done with")
        held = Portal(Statement("", query, "query", []), list(params), ())
        await self.run_query(held)
        self.cursors[name] = Cursor(held, hold is not None and hold.upper() == "WITH")
        self.send(m.command_complete("DECLARE CURSOR"))

    async def _fetch(self, sql: str, describe: bool) -> None:
        verb, count, cursor = self._fetch_target(sql)
        if verb == "FETCH":
            if describe:
                self.send(cursor.portal.encoded.row_description)
            sent = await self.send_rows(cursor.portal, count)
        else:  # MOVE: skip rows without sending them
            sent = _skip(cursor.portal, count)
        self.send(m.command_complete(f"{verb} {sent}"))

    def _fetch_target(self, sql: str) -> tuple[str, int, Cursor]:
        match = FETCH_RE.match(sql)
        if match is None:
            raise Failed("42601", "syntax error in FETCH")
        verb, direction = match.group(1).upper(), " ".join((match.group(2) or "NEXT").upper().split())
        if direction in ("NEXT", "FORWARD"):
            count = 1
        elif direction in ("ALL", "FORWARD ALL"):
            count = 0  # no limit
        elif direction.removeprefix("FORWARD ").isdigit():
            count = int(direction.removeprefix("FORWARD "))
            if count == 0:
                raise Failed("0A000", "FETCH 0 (re-fetch the current row) is not supported")
        else:
            raise Failed("0A000", f"FETCH {direction} is not supported: cursors here only move forward",
                         "use NEXT, a count, or ALL")
        cursor = self.cursors.get(cursor_name(match.group(3)))
        if cursor is None:
            raise Failed("34000", f'cursor "{cursor_name(match.group(3))}" does not exist')
        return verb, count, cursor

    def fetched(self, sql: str) -> Portal | None:
        """The portal whose rows a FETCH returns (to describe it), None for MOVE."""
        verb, _, cursor = self._fetch_target(sql)
        return cursor.portal if verb == "FETCH" else None

    def _close(self, sql: str) -> None:
        match = CLOSE_RE.match(sql)
        if match is None:
            raise Failed("42601", "syntax error in CLOSE")
        if match.group(1).upper() == "ALL":
            self.cursors.clear()
        elif self.cursors.pop(cursor_name(match.group(1)), None) is None:
            raise Failed("34000", f'cursor "{cursor_name(match.group(1))}" does not exist')
        self.send(m.command_complete("CLOSE CURSOR"))

    def end_transaction(self) -> None:
        """COMMIT and ROLLBACK close the cursors declared WITHOUT HOLD."""
        self.cursors = {name: cursor for name, cursor in self.cursors.items() if cursor.hold}


def _skip(portal: Portal, count: int) -> int:
    skipped = 0
    while (batch := portal.take(None if count == 0 else count - skipped)) is not None:
        skipped += batch.num_rows
    portal.sent += skipped
    return skipped
