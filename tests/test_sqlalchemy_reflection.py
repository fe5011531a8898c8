"""SQLAlchemy's PostgreSQL reflection, 1.4 (Apache Superset pins it) and 2.x,
replayed against the gateway statement by statement.

tests/fixtures/sqlalchemy_reflection/ holds the catalog SQL each version sends
to reflect the demo (columns, primary keys, foreign keys, indexes, unique and
check constraints, comments), recorded by capture.py there. Every statement
must be answered (no `42601 catalog query not supported`), with the columns
the policy shows, and with the same rows the real PostgreSQL gives for a
database holding the same tables (no keys, indexes or constraints; the same
comments), oids aside.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tests import servers
from tests.servers import PG_DSN

psycopg = pytest.importorskip("psycopg")

CAPTURES = Path(__file__).parent / "fixtures" / "sqlalchemy_reflection"
VERSIONS = ["sqlalchemy-1.4.json", "sqlalchemy-2.x.json"]
TABLES = ["impressions", "purchases", "regions"]
PURCHASES = [("household_id", "text", "Hashed household id."), ("region", "text", None), ("category", "text", None),
             ("amount", "numeric(10,2)", "Basket value in EUR."), ("purchased_on", "date", None)]
BUILT_IN = re.compile(r"t\.typtype = 'd'|t\.typtype = 'e'|FROM pg_catalog\.pg_opclass\s+WHERE NOT", re.I)
COLUMN_QUERY = re.compile(r"format_type\(\s*(a|pg_catalog\.pg_attribute)\.atttypid", re.I)


@pytest.fixture(scope="module")
def gateway(pg):
    """A connection to the module's wire gateway over the demo (tests/conftest.py)."""
    conn = psycopg.connect(pg.dsn(), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def postgres(gateway):
    """A database of the real PostgreSQL with the tables the gateway shows, built
    from the gateway's own catalog answers; skips when the server is unreachable."""
    admin = servers.postgres()
    name = f"sa_reflect_{uuid.uuid4().hex[:10]}"
    admin.execute(f"CREATE DATABASE {name}")
    conn = psycopg.connect(PG_DSN.replace("dbname=test", f"dbname={name}"), autocommit=True)
    try:
        for table, columns, comment in _shown_tables(gateway):
            conn.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t, _ in columns)})")
            if comment:
                conn.execute(f"COMMENT ON TABLE {table} IS {_quote(comment)}")
            for column, _, column_comment in columns:
                if column_comment:
                    conn.execute(f"COMMENT ON COLUMN {table}.{column} IS {_quote(column_comment)}")
        yield conn
    finally:
        conn.close()
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


def _shown_tables(gateway):
    shown = []
    for table in TABLES:
        columns = gateway.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
            "FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 ORDER BY a.attnum",
            [table]).fetchall()
        comment = gateway.execute("SELECT obj_description(%s::regclass, 'pg_class')", [table]).fetchone()[0]
        shown.append((table, columns, comment))
    return shown


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def replay(conn, capture: dict) -> list[tuple[dict, list[str], list[tuple]]]:
    """Each captured statement run on conn: (entry, column names, rows with table oids as names).
    psycopg2 (SQLAlchemy 1.4's driver) binds parameters into the text, as ClientCursor does."""
    oids = dict(conn.execute("SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchall())
    names = {oid: name for name, oid in oids.items()}
    cursor = psycopg.ClientCursor(conn) if capture["driver"] == "psycopg2" else conn.cursor()
    answers = []
    for entry in capture["statements"]:
        parameters = _bind_oids(entry["parameters"], oids)
        cursor.execute(entry["statement"], parameters or None)
        columns = [d.name for d in cursor.description or []]
        rows = [tuple(_name_oids(v, names) for v in row) for row in cursor.fetchall()] if columns else []
        answers.append((entry, columns, rows))
    cursor.close()
    return answers


def _bind_oids(value, oids):
    if isinstance(value, dict):
        if set(value) == {"oid_of"}:
            return oids[value["oid_of"]]
        return {k: _bind_oids(v, oids) for k, v in value.items()}
    if isinstance(value, list):
        return [_bind_oids(v, oids) for v in value]
    return value


def _name_oids(value, names):
    if isinstance(value, int) and not isinstance(value, bool) and value in names:
        return f"<oid of {names[value]}>"
    if isinstance(value, list):
        return [_name_oids(v, names) for v in value]
    return value


@pytest.fixture(scope="module", params=VERSIONS)
def capture(request) -> dict:
    return json.loads((CAPTURES / request.param).read_text())


def test_captures_cover_every_reflection_call(capture):
    calls = {entry["call"].split(":")[0] for entry in capture["statements"]}
    assert calls >= {"get_schema_names", "get_table_names", "get_columns", "get_pk_constraint", "get_foreign_keys",
                     "get_indexes", "get_unique_constraints", "get_check_constraints", "get_table_comment"}
    if capture["sqlalchemy"].startswith("1.4"):  # the statement the gateway once refused (42601)
        assert any("a.attnum = ANY(ix.indkey)" in e["statement"] for e in capture["statements"])


def test_every_statement_is_answered_with_what_the_policy_shows(gateway, capture):
    answers = replay(gateway, capture)
    by_call = {}
    for entry, columns, rows in answers:
        by_call.setdefault(entry["call"], []).append((entry["statement"], columns, rows))
    [(_, _, tables)] = by_call["get_table_names"]
    assert sorted(r[0] for r in tables) == TABLES
    [(_, _, views)] = by_call["get_view_names"]
    assert views == []
    [(_, columns, rows)] = [a for a in by_call["get_columns:purchases"] if COLUMN_QUERY.search(a[0])]
    name = columns.index("attname" if "attname" in columns else "name")
    shown = [(r[name], r[columns.index("format_type")], r[columns.index("comment")]) for r in rows]
    assert shown == PURCHASES  # card_last4 is hidden
    for table in TABLES:  # no primary key, index or constraint is declared: none is reported
        for call in ("get_pk_constraint", "get_indexes", "get_unique_constraints"):
            for _, columns, rows in by_call.get(f"{call}:{table}", []):
                if "conname" in columns or "indrelid" in columns or "attname" in columns:
                    assert rows == [], (call, table)
    comments = [rows for _, _, rows in by_call["get_table_comment:purchases"]]
    assert any(row and "One row per purchase." in row for rows in comments for row in rows)


def test_answers_match_postgresql_for_the_same_tables(gateway, postgres, capture):
    mismatches = []
    for (entry, columns, rows), (_, pg_columns, pg_rows) in zip(replay(gateway, capture), replay(postgres, capture)):
        assert columns == pg_columns, entry["call"]
        if entry["call"] == "get_schema_names" or BUILT_IN.search(entry["statement"]):
            # PostgreSQL's own schemas, domains and operator classes (pg_toast, information_schema.cardinal_number,
            # text_pattern_ops) are not the clean room's: what the gateway lists must be among them
            assert set(rows) <= set(pg_rows), entry["statement"]
            continue
        if rows != pg_rows:
            mismatches.append(f"{entry['call']}: {' '.join(entry['statement'].split())[:200]}\n"
                              f"  gateway:    {rows}\n  PostgreSQL: {pg_rows}")
    assert not mismatches, "\n".join(mismatches)
