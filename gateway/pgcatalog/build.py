"""The catalog database of one analyst in one clean room: a tiny in-memory DuckDB
holding pg_catalog (schema pgc) and information_schema (schema pgi) tables built
from the policy: only the tables, columns and templates that analyst may see; no
row counts, no statistics, no hidden columns. The private data is never touched,
and once built the database can reach nothing else (external access off,
configuration locked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import duckdb

from gateway.pgcatalog.emulate import EMPTY_INFORMATION_SCHEMA, EMPTY_RELATIONS, MACROS, SETTINGS
from gateway.pgtypes import (ARRAY_OF, FLOAT4, FLOAT8, INT2, INT4, INT8, NUMERIC, RECORD, TEXT, TIME, TIMESTAMP,
                             TIMESTAMPTZ, TYPES, VARCHAR, duckdb_type_oid, duckdb_typmod, parameter_oid)
from gateway.policy.model import Analyst, CleanRoom, Table

PG_CATALOG, PUBLIC, INFORMATION_SCHEMA = 11, 2200, 13183
FIRST_TABLE_OID, FIRST_ROLE_OID, FIRST_PROC_OID, FIRST_DB_OID = 16384, 16000, 17000, 15000
IO_PROC_OID = 8000  # the types' input/output/receive/send functions follow it

# Catalog relations every client may read by these names, with well-known OIDs for ::regclass.
WELL_KNOWN = {"pg_class": 1259, "pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255, "pg_namespace": 2615,
              "pg_constraint": 2606, "pg_database": 1262, "pg_index": 2610, "pg_description": 2609,
              "pg_roles": 1260, "pg_authid": 1260, "pg_am": 2601, "pg_trigger": 2620, "pg_rewrite": 2618}


@dataclass(frozen=True)
class CatalogView:
    """What one analyst may see of one clean room: all a catalog database is built from."""

    room: CleanRoom
    analyst: Analyst
    user: str
    tables: Mapping[str, Table]  # the tables the analyst may name
    column_types: Mapping[str, Mapping[str, str]]  # table -> column -> DuckDB type
    rooms: Mapping[str, CleanRoom]  # every clean room of the gateway: those of the analyst are databases


def _rows(con: duckdb.DuckDBPyConnection, table: str, columns: str, rows: list[tuple]) -> None:
    con.execute(f"CREATE TABLE {table} ({columns})")
    if rows:
        marks = ", ".join("?" for _ in rows[0])
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


FIRST_POLICY_OID = 90_000


def column_roles(table: Table) -> list[str]:
    """What the policy says of each visible column of a private table, one line each
    ("amount: measure in [0, 200]"): psql's \\d shows them as the table's policies (full
    values and descriptions: \\d+, GET /v1/tables, the console's schema browser)."""
    if table.public:
        return []
    lines = []
    for name, column in table.visible().items():
        role = column.role.value.replace("_", " ")
        if name == table.privacy_unit:
            text = f"{name}: privacy unit, {role}"
        elif column.bounds is not None:
            text = f"{name}: {role} in [{column.bounds.lower:g}, {column.bounds.upper:g}]"
        elif column.buckets is not None:
            text = f"{name}: {role}, buckets {column.buckets.start}..{column.buckets.end}"
        elif column.values:
            text = f"{name}: {role}, {len(column.values)} declared values"
        else:
            text = f"{name}: {role}"
        lines.append(text[:63])  # a PostgreSQL name
    return lines


def build(view: CatalogView) -> duckdb.DuckDBPyConnection:
    room, user, tables, types = view.room, view.user, view.tables, view.column_types
    con = duckdb.connect(":memory:", config={"threads": 1})
    con.execute("CREATE SCHEMA pgc")
    con.execute("CREATE SCHEMA pgi")
    owner_names = sorted({user} | {t.owner for t in tables.values()})
    roles = {name: (10 if name == user else FIRST_ROLE_OID + i) for i, name in enumerate(owner_names)}
    rooms = sorted(name for name, r in view.rooms.items() if user in r.analysts)

    _rows(con, "pgc.pg_namespace", "oid BIGINT, nspname VARCHAR, nspowner BIGINT, nspacl VARCHAR[]",
          [(PG_CATALOG, "pg_catalog", 10, None), (PUBLIC, "public", 10, None),
           (INFORMATION_SCHEMA, "information_schema", 10, None)])
    _rows(con, "pgc.pg_roles",
          "oid BIGINT, rolname VARCHAR, rolsuper BOOLEAN, rolinherit BOOLEAN, rolcreaterole BOOLEAN, "
          "rolcreatedb BOOLEAN, rolcanlogin BOOLEAN, rolreplication BOOLEAN, rolconnlimit INTEGER, "
          "rolpassword VARCHAR, rolvaliduntil TIMESTAMPTZ, rolbypassrls BOOLEAN, rolconfig VARCHAR[]",
          [(oid, name, False, True, False, False, name == user, False, -1, "********", None, False, None)
           for name, oid in roles.items()])
    con.execute("CREATE VIEW pgc.pg_user AS SELECT rolname AS usename, oid AS usesysid, rolcreatedb AS usecreatedb, "
                "rolsuper AS usesuper, false AS userepl, false AS usebypassrls, '********' AS passwd, "
                "rolvaliduntil AS valuntil, rolconfig AS useconfig FROM pgc.pg_roles")
    con.execute("CREATE VIEW pgc.pg_authid AS SELECT * FROM pgc.pg_roles")
    _rows(con, "pgc.pg_database",
          "oid BIGINT, datname VARCHAR, datdba BIGINT, encoding INTEGER, datlocprovider VARCHAR, "
          "datistemplate BOOLEAN, datallowconn BOOLEAN, datconnlimit INTEGER, datfrozenxid BIGINT, "
          "datminmxid BIGINT, dattablespace BIGINT, datcollate VARCHAR, datctype VARCHAR, daticulocale VARCHAR, "
          "datcollversion VARCHAR, datacl VARCHAR[]",
          [(FIRST_DB_OID + i, name, 10, 6, "c", False, True, -1, 0, 0, 1663, "C.UTF-8", "C.UTF-8", None, None, None)
           for i, name in enumerate(rooms)])
    comments = [(FIRST_DB_OID + i, 1262, 0, view.rooms[name].description or None)
                for i, name in enumerate(rooms) if view.rooms[name].description]

    class_rows, attr_rows, type_rows, info_tables, info_columns, policies = [], [], [], [], [], []
    regclass = [(name, oid) for name, oid in WELL_KNOWN.items()]
    for index, (name, table) in enumerate(tables.items()):
        oid = FIRST_TABLE_OID + 2 * index
        rowtype = oid + 1
        columns = table.visible()
        described = column_roles(table)  # psql's \d lists them under "Policies:"
        class_rows.append((oid, name, PUBLIC, rowtype, 0, roles[table.owner], 2, 0, 0, 0, -1.0, 0, 0, False, False,
                           "p", "r", len(columns), 0, False, False, False, bool(described), False, True, "d", False, 0,
                           None, None))
        policies += [(FIRST_POLICY_OID + 64 * index + i, text, oid, "r", True, [0], None, None)
                     for i, text in enumerate(described)]
        type_rows.append((rowtype, name, PUBLIC, 10, -1, False, "c", "C", False, True, ",", oid, 0, 0, 0, -1, 0, 0, None, "d", "x"))
        regclass.append((name, oid))
        if table.description:
            comments.append((oid, 1259, 0, table.description))
        info_tables.append((room.name, "public", name, "BASE TABLE", None, None, None, None, None, "NO", "NO", None))
        for position, (column_name, column) in enumerate(columns.items(), start=1):
            duck = types[name][column_name]
            type_oid = duckdb_type_oid(duck)
            typmod = duckdb_typmod(duck)
            pg_type = TYPES[type_oid]
            attr_rows.append((oid, column_name, type_oid, -1, pg_type.length, position, 0, -1, typmod,
                              pg_type.length > 0, "i", "p", "", False, False, False, "", "", False, True, 0,
                              _collation(type_oid), None, None, None))
            if column.description:
                comments.append((oid, 1259, position, column.description))
            precision, scale = _precision(duck, type_oid)
            info_columns.append((room.name, "public", name, column_name, position, None, "YES",
                                 pg_type.display, None, None, precision, 10 if precision else None, scale,
                                 6 if type_oid in (TIME, TIMESTAMP, TIMESTAMPTZ) else None, None, room.name,
                                 "pg_catalog", pg_type.name, str(position), "NO", "NO", "NEVER", "NO", column.description or None))

    _rows(con, "pgc.pg_class",
          "oid BIGINT, relname VARCHAR, relnamespace BIGINT, reltype BIGINT, reloftype BIGINT, relowner BIGINT, "
          "relam BIGINT, relfilenode BIGINT, reltablespace BIGINT, relpages INTEGER, reltuples DOUBLE, "
          "relallvisible INTEGER, reltoastrelid BIGINT, relhasindex BOOLEAN, relisshared BOOLEAN, "
          "relpersistence VARCHAR, relkind VARCHAR, relnatts SMALLINT, relchecks SMALLINT, relhasrules BOOLEAN, "
          "relhastriggers BOOLEAN, relhassubclass BOOLEAN, relrowsecurity BOOLEAN, relforcerowsecurity BOOLEAN, "
          "relispopulated BOOLEAN, relreplident VARCHAR, relispartition BOOLEAN, relrewrite BIGINT, "
          "relacl VARCHAR[], reloptions VARCHAR[]", class_rows)
    con.execute("ALTER TABLE pgc.pg_class ADD COLUMN relhasoids BOOLEAN DEFAULT false")
    con.execute("ALTER TABLE pgc.pg_class ADD COLUMN relpartbound VARCHAR DEFAULT NULL")
    con.execute("ALTER TABLE pgc.pg_class ADD COLUMN relfrozenxid BIGINT DEFAULT 0")
    con.execute("ALTER TABLE pgc.pg_class ADD COLUMN relminmxid BIGINT DEFAULT 0")
    _rows(con, "pgc.pg_attribute",
          "attrelid BIGINT, attname VARCHAR, atttypid BIGINT, attstattarget INTEGER, attlen SMALLINT, "
          "attnum SMALLINT, attndims INTEGER, attcacheoff INTEGER, atttypmod INTEGER, attbyval BOOLEAN, "
          "attalign VARCHAR, attstorage VARCHAR, attcompression VARCHAR, attnotnull BOOLEAN, atthasdef BOOLEAN, "
          "atthasmissing BOOLEAN, attidentity VARCHAR, attgenerated VARCHAR, attisdropped BOOLEAN, "
          "attislocal BOOLEAN, attinhcount INTEGER, attcollation BIGINT, attacl VARCHAR[], attoptions VARCHAR[], "
          "attfdwoptions VARCHAR[]", attr_rows)
    for type_oid, (typname, typlen, category, _) in TYPES.items():
        element = next((e for e, a in ARRAY_OF.items() if a == type_oid), 0)
        type_rows.append((type_oid, typname, PG_CATALOG, 10, typlen, 0 < typlen <= 8, "b" if type_oid != RECORD else "p",
                          category, False, True, ",", 0, element, ARRAY_OF.get(type_oid, 0), 0, -1, 0,
                          _collation(type_oid), None, "i", "p"))
    _rows(con, "pgc.pg_type",
          "oid BIGINT, typname VARCHAR, typnamespace BIGINT, typowner BIGINT, typlen SMALLINT, typbyval BOOLEAN, "
          "typtype VARCHAR, typcategory VARCHAR, typispreferred BOOLEAN, typisdefined BOOLEAN, typdelim VARCHAR, "
          "typrelid BIGINT, typelem BIGINT, typarray BIGINT, typbasetype BIGINT, typtypmod INTEGER, "
          "typndims INTEGER, typcollation BIGINT, typdefault VARCHAR, typalign VARCHAR, typstorage VARCHAR",
          type_rows)
    con.execute("ALTER TABLE pgc.pg_type ADD COLUMN typnotnull BOOLEAN DEFAULT false")
    for column, suffix in (("typinput", "in"), ("typoutput", "out"), ("typreceive", "recv"), ("typsend", "send")):
        con.execute(f"ALTER TABLE pgc.pg_type ADD COLUMN {column} VARCHAR DEFAULT ''")
        con.execute(f"UPDATE pgc.pg_type SET {column} = CASE WHEN typcategory = 'A' THEN 'array_{suffix}' "
                    f"WHEN typtype = 'c' THEN 'record_{suffix}' ELSE typname || '{suffix}' END")
    con.execute("ALTER TABLE pgc.pg_type ADD COLUMN typdefaultbin VARCHAR DEFAULT NULL")
    con.execute("ALTER TABLE pgc.pg_type ADD COLUMN typacl VARCHAR[] DEFAULT NULL")
    _rows(con, "pgc._format", "oid BIGINT, name VARCHAR", [(oid, pg_type.display) for oid, pg_type in TYPES.items()])
    _rows(con, "pgc._regclass", "name VARCHAR, oid BIGINT", regclass)

    # Templates: set-returning functions the analyst may call through the HTTP API.
    procs, routines = [], []
    for index, name in enumerate(view.analyst.templates):
        template = room.templates.get(name)
        if template is None:
            continue
        oid = FIRST_PROC_OID + index
        arg_names = [p.name for p in template.parameters]
        procs.append((oid, name, PUBLIC, 10, 12, 100.0, 1000.0, 0, 0, "f", False, False, True, True, "s", "u",
                      len(arg_names), 0, RECORD, " ".join(str(parameter_oid(p)) for p in template.parameters),
                      arg_names or None, "", None))
        if template.description:
            comments.append((oid, 1255, 0, template.description.strip()))
        routines.append((room.name, "public", f"{name}_{oid}", room.name, "public", name, "FUNCTION", "record",
                         template.description.strip() if template.description else None))
    _rows(con, "pgc.pg_proc",
          "oid BIGINT, proname VARCHAR, pronamespace BIGINT, proowner BIGINT, prolang BIGINT, procost DOUBLE, "
          "prorows DOUBLE, provariadic BIGINT, prosupport BIGINT, prokind VARCHAR, prosecdef BOOLEAN, "
          "proleakproof BOOLEAN, proisstrict BOOLEAN, proretset BOOLEAN, provolatile VARCHAR, proparallel VARCHAR, "
          "pronargs SMALLINT, pronargdefaults SMALLINT, prorettype BIGINT, proargtypes VARCHAR, "
          "proargnames VARCHAR[], prosrc VARCHAR, proacl VARCHAR[]", procs)
    # The types' I/O functions (int4recv, array_recv, ...): Npgsql tells arrays apart by their receive function.
    con.execute(f"""INSERT INTO pgc.pg_proc SELECT {IO_PROC_OID} + row_number() OVER (ORDER BY name), name, {PG_CATALOG},
        10, 12, 1.0, 0.0, 0, 0, 'f', false, false, true, false, 'i', 's', 1, 0, 0, '', NULL, name, NULL
        FROM (SELECT DISTINCT unnest([typinput, typoutput, typreceive, typsend]) AS name FROM pgc.pg_type)""")
    con.execute("ALTER TABLE pgc.pg_proc ADD COLUMN proallargtypes BIGINT[] DEFAULT NULL")
    con.execute("ALTER TABLE pgc.pg_proc ADD COLUMN proargmodes VARCHAR[] DEFAULT NULL")
    con.execute("ALTER TABLE pgc.pg_proc ADD COLUMN proisagg BOOLEAN DEFAULT false")
    con.execute("ALTER TABLE pgc.pg_proc ADD COLUMN proiswindow BOOLEAN DEFAULT false")
    con.execute("ALTER TABLE pgc.pg_proc ADD COLUMN probin VARCHAR DEFAULT NULL")
    con.execute("ALTER TABLE pgc.pg_proc ADD COLUMN proconfig VARCHAR[] DEFAULT NULL")
    _rows(con, "pgc.pg_description", "objoid BIGINT, classoid BIGINT, objsubid INTEGER, description VARCHAR", comments)
    con.execute("CREATE VIEW pgc.pg_shdescription AS SELECT objoid, classoid, description FROM pgc.pg_description WHERE classoid = 1262")
    _rows(con, "pgc.pg_am", "oid BIGINT, amname VARCHAR, amhandler VARCHAR, amtype VARCHAR",
          [(2, "heap", "heap_tableam_handler", "t"), (403, "btree", "bthandler", "i")])
    _rows(con, "pgc.pg_settings", "name VARCHAR, setting VARCHAR, unit VARCHAR, category VARCHAR, short_desc VARCHAR, "
          "context VARCHAR, vartype VARCHAR, source VARCHAR",
          [(k, v, None, "", "", "user", "string", "default") for k, v in SETTINGS.items()])
    _rows(con, "pgc.pg_tablespace", "oid BIGINT, spcname VARCHAR, spcowner BIGINT, spcacl VARCHAR[], spcoptions VARCHAR[]",
          [(1663, "pg_default", 10, None, None)])
    _rows(con, "pgc.pg_collation", "oid BIGINT, collname VARCHAR, collnamespace BIGINT, collowner BIGINT, "
          "collprovider VARCHAR, collisdeterministic BOOLEAN, collencoding INTEGER, collcollate VARCHAR, collctype VARCHAR",
          [(100, "default", PG_CATALOG, 10, "d", True, -1, None, None)])
    # Empty relations clients join against: no indexes, constraints, rules, triggers, inheritance.
    for ddl in EMPTY_RELATIONS:
        con.execute(ddl)
    if policies:
        con.executemany("INSERT INTO pgc.pg_policy VALUES (?, ?, ?, ?, ?, ?, ?, ?)", policies)
    con.execute("CREATE VIEW pgc.pg_tables AS SELECT n.nspname AS schemaname, c.relname AS tablename, "
                "r.rolname AS tableowner, NULL::VARCHAR AS tablespace, false AS hasindexes, false AS hasrules, "
                "false AS hastriggers, false AS rowsecurity FROM pgc.pg_class c JOIN pgc.pg_namespace n "
                "ON n.oid = c.relnamespace LEFT JOIN pgc.pg_roles r ON r.oid = c.relowner WHERE c.relkind = 'r'")
    con.execute("CREATE VIEW pgc.pg_views AS SELECT ''::VARCHAR AS schemaname, ''::VARCHAR AS viewname, "
                "''::VARCHAR AS viewowner, ''::VARCHAR AS definition WHERE false")
    con.execute("CREATE VIEW pgc.pg_matviews AS SELECT ''::VARCHAR AS schemaname, ''::VARCHAR AS matviewname, "
                "''::VARCHAR AS matviewowner, ''::VARCHAR AS definition WHERE false")

    # information_schema
    _rows(con, "pgi.tables", "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, table_type VARCHAR, "
          "self_referencing_column_name VARCHAR, reference_generation VARCHAR, user_defined_type_catalog VARCHAR, "
          "user_defined_type_schema VARCHAR, user_defined_type_name VARCHAR, is_insertable_into VARCHAR, "
          "is_typed VARCHAR, commit_action VARCHAR", info_tables)
    _rows(con, "pgi.columns", "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, column_name VARCHAR, "
          "ordinal_position INTEGER, column_default VARCHAR, is_nullable VARCHAR, data_type VARCHAR, "
          "character_maximum_length INTEGER, character_octet_length INTEGER, numeric_precision INTEGER, "
          "numeric_precision_radix INTEGER, numeric_scale INTEGER, datetime_precision INTEGER, interval_type VARCHAR, "
          "udt_catalog VARCHAR, udt_schema VARCHAR, udt_name VARCHAR, dtd_identifier VARCHAR, is_self_referencing VARCHAR, "
          "is_identity VARCHAR, is_generated VARCHAR, is_updatable VARCHAR, description VARCHAR", info_columns)
    _rows(con, "pgi.schemata", "catalog_name VARCHAR, schema_name VARCHAR, schema_owner VARCHAR, "
          "default_character_set_catalog VARCHAR, default_character_set_schema VARCHAR, "
          "default_character_set_name VARCHAR, sql_path VARCHAR",
          [(room.name, s, user, None, None, None, None) for s in ("information_schema", "pg_catalog", "public")])
    _rows(con, "pgi.routines", "specific_catalog VARCHAR, specific_schema VARCHAR, specific_name VARCHAR, "
          "routine_catalog VARCHAR, routine_schema VARCHAR, routine_name VARCHAR, routine_type VARCHAR, "
          "data_type VARCHAR, routine_comment VARCHAR", routines)
    for ddl in EMPTY_INFORMATION_SCHEMA:
        con.execute(ddl)
    for macro in MACROS:
        con.execute(macro)
    # It holds only what the policy lets this analyst see; now it may reach nothing else.
    con.execute("SET enable_external_access = false")
    con.execute("SET memory_limit = '256MB'")
    con.execute("SET lock_configuration = true")
    return con



def _precision(duck_type: str, oid: int) -> tuple[int | None, int | None]:
    if oid == NUMERIC:
        typmod = duckdb_typmod(duck_type)
        return ((typmod - 4) >> 16, (typmod - 4) & 0xFFFF) if typmod > 0 else (None, None)
    return {INT2: (16, 0), INT4: (32, 0), INT8: (64, 0), FLOAT4: (24, None), FLOAT8: (53, None)}.get(oid, (None, None))


def _collation(oid: int) -> int:
    return 100 if oid in (TEXT, VARCHAR) else 0  # the default collation, for text types

