"""Tables on the machine's real PostgreSQL and MariaDB for the federated rooms
(tests/test_federation.py on DuckDB, tests/test_spark_sources.py on Spark): each
module gets its own schema and table, dropped when it is done; `private` writes the
policy table of households over one of them."""

from __future__ import annotations

import contextlib
import uuid

from tests.servers import mariadb, postgres

HOUSEHOLDS = 30  # h0..h29 in every table


def private(source: str, relation: str | None, columns: dict, owner: str = "a") -> dict:
    """A policy table of households (privacy unit and join key `hh`) in `source`."""
    table = {"owner": owner, "source": source, "privacy_unit": "hh", "columns": {"hh": {"role": "join_key"}, **columns}}
    if relation:
        table["relation"] = relation
    return table


@contextlib.contextmanager
def server_tables(prefix: str):
    """(PostgreSQL schema, MariaDB table): `<schema>.members` (hh, tier: every third
    household gold) and the MariaDB table (hh, visits), both over HOUSEHOLDS
    households; dropped afterwards. Skips when a server cannot be reached."""
    suffix = uuid.uuid4().hex[:8]
    schema, table = f"{prefix}_{suffix}", f"{prefix}_visits_{suffix}"
    pg = postgres()
    my = None
    try:
        pg.execute(f'CREATE SCHEMA "{schema}"')
        pg.execute(f'CREATE TABLE "{schema}".members (hh text, tier text)')
        with pg.cursor() as cur:
            cur.executemany(f'INSERT INTO "{schema}".members VALUES (%s, %s)',
                            [(f"h{i}", "gold" if i % 3 == 0 else "basic") for i in range(HOUSEHOLDS)])
        my = mariadb()
        with my.cursor() as cur:
            cur.execute(f"CREATE TABLE `{table}` (hh VARCHAR(8), visits INT)")
            cur.executemany(f"INSERT INTO `{table}` VALUES (%s, %s)", [(f"h{i}", i % 7) for i in range(HOUSEHOLDS)])
        yield schema, table
    finally:
        pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        pg.close()
        if my is not None:
            with my.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")
            my.close()
