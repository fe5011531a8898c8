"""Pass 1b, catalog: statements that read only the PostgreSQL catalog (pg_catalog,
information_schema, version(), current_database(), ...) are answered here, from
the policy, and the pipeline stops.

Drivers and BI tools send such queries on connect and while browsing. They are
answered from a separate, tiny in-memory DuckDB holding pg_catalog and
information_schema tables built from the policy for the calling analyst: only
the tables, columns and templates that analyst may see; no row counts, no
statistics, no hidden columns. The private data is never touched.

Statements that mix catalog relations and clean-room tables are left to bind,
which refuses them (source.system_catalog).
"""

from __future__ import annotations

import threading

import duckdb
from sqlglot import expressions as exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from gateway.engine.resolve import visible_tables
from gateway.engine.state import QueryState
from gateway.engine.types import Release
from gateway.errors import SyntaxProblem, UnknownTable

SERVER_VERSION = "16.4"
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (cleanroom gateway) on x86_64-pc-linux-gnu, 64-bit"

PG_CATALOG, PUBLIC, INFORMATION_SCHEMA = 11, 2200, 13183
FIRST_TABLE_OID, FIRST_ROLE_OID, FIRST_PROC_OID, FIRST_DB_OID = 16384, 16000, 17000, 15000
IO_PROC_OID = 8000  # the types' input/output/receive/send functions follow it
# regproc columns hold the function's name here (pg_proc.proname); PostgreSQL compares them as oids.
REGPROC_COLUMNS = frozenset({"typinput", "typoutput", "typreceive", "typsend"})

# PostgreSQL type OIDs, names and attributes (typname, typlen, typcategory, format_type text).
TYPES = {
    16: ("bool", 1, "B", "boolean"), 17: ("bytea", -1, "U", "bytea"), 18: ("char", 1, "Z", '"char"'),
    19: ("name", 64, "S", "name"), 20: ("int8", 8, "N", "bigint"), 21: ("int2", 2, "N", "smallint"),
    23: ("int4", 4, "N", "integer"), 25: ("text", -1, "S", "text"), 26: ("oid", 4, "N", "oid"),
    114: ("json", -1, "U", "json"), 700: ("float4", 4, "N", "real"), 701: ("float8", 8, "N", "double precision"),
    1043: ("varchar", -1, "S", "character varying"), 1082: ("date", 4, "D", "date"),
    1083: ("time", 8, "D", "time without time zone"), 1114: ("timestamp", 8, "D", "timestamp without time zone"),
    1184: ("timestamptz", 8, "D", "timestamp with time zone"), 1186: ("interval", 16, "T", "interval"),
    1700: ("numeric", -1, "N", "numeric"), 2950: ("uuid", 16, "U", "uuid"), 2249: ("record", -1, "P", "record"),
    705: ("unknown", -2, "X", "unknown"), 1009: ("_text", -1, "A", "text[]"), 1007: ("_int4", -1, "A", "integer[]"),
    3802: ("jsonb", -1, "U", "jsonb"), 2951: ("_uuid", -1, "A", "uuid[]"), 199: ("_json", -1, "A", "json[]"),
    3807: ("_jsonb", -1, "A", "jsonb[]"),
}
ARRAY_OF = {25: 1009, 23: 1007, 2950: 2951, 114: 199, 3802: 3807}
# Template parameter types (policy) as the argument types of their set-returning functions.
PARAMETER_OIDS = {"integer": 20, "number": 701, "date": 1082, "enum": 25, "string": 25}

DUCKDB_TO_OID = {
    "BOOLEAN": 16, "TINYINT": 21, "SMALLINT": 21, "INTEGER": 23, "BIGINT": 20, "UTINYINT": 21,
    "USMALLINT": 23, "UINTEGER": 20, "UBIGINT": 1700, "HUGEINT": 1700, "FLOAT": 700, "DOUBLE": 701,
    "VARCHAR": 25, "DATE": 1082, "TIME": 1083, "TIMESTAMP": 1114, "TIMESTAMP WITH TIME ZONE": 1184,
    "INTERVAL": 1186, "BLOB": 17, "UUID": 2950, "JSON": 114,
}

# Catalog relations every client may read by these names, with well-known OIDs for ::regclass.
WELL_KNOWN = {"pg_class": 1259, "pg_type": 1247, "pg_attribute": 1249, "pg_proc": 1255, "pg_namespace": 2615,
              "pg_constraint": 2606, "pg_database": 1262, "pg_index": 2610, "pg_description": 2609,
              "pg_roles": 1260, "pg_authid": 1260, "pg_am": 2601, "pg_trigger": 2620, "pg_rewrite": 2618}

_lock = threading.Lock()
_databases: dict[tuple, duckdb.DuckDBPyConnection] = {}
_translated: dict[tuple, str] = {}  # (room, policy version, user, sql, params) -> DuckDB SQL


# -- the pass -------------------------------------------------------------------------


def catalog(state: QueryState) -> QueryState:
    if state.release is not None or state.template is not None or state.tree is None:
        return state
    if not reads_only_catalog(state.tree, state):
        return state
    database = catalog_database(state)
    key = (state.cleanroom.name, state.cleanroom.version, state.request.user, state.request.sql,
           repr(state.request.params))
    sql = _translated.get(key)
    if sql is None:  # BI tools repeat the same catalog queries: translate each once
        sql = translate(state.tree.copy(), state).sql(dialect="duckdb")
        with _lock:
            if len(_translated) > 4096:
                _translated.clear()
            _translated[key] = sql
    cursor = database.cursor()
    timer = threading.Timer(state.context.config.engine.query_timeout_seconds, cursor.interrupt)
    timer.start()
    try:
        table = cursor.execute(sql).to_arrow_table()
    except duckdb.CatalogException as error:
        missing = str(error).split("\n")[0]
        raise UnknownTable(f"catalog relation or function not available: {missing[:200]}",
                           rule="catalog.unknown") from None
    except duckdb.Error as error:
        state.context.log.info("catalog query failed: %s\n%s", error, sql)
        raise SyntaxProblem(f"catalog query not supported: {str(error).splitlines()[0][:200]}",
                            rule="catalog.unsupported") from None
    finally:
        timer.cancel()
        cursor.close()
    release = Release(request_id=state.request.request_id, table=table, authorised_by="catalog", min_group_size=None)
    return state.evolve(release=release, canonical_sql=sql)


def _cte_names(tree: exp.Expression) -> set[str]:
    return {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}


def _catalog_table(node: exp.Table, state: QueryState, ctes: set[str]) -> bool | None:
    """True for a catalog relation, None for a CTE, False for anything else."""
    name, schema = node.name.lower(), node.db.lower()
    if not isinstance(node.this, exp.Identifier):
        function = node.this.expression if isinstance(node.this, exp.Dot) else node.this
        if isinstance(function, (exp.GenerateSeries, exp.ExplodingGenerateSeries, exp.Unnest, exp.Explode)):
            return True
        return _function_name(node.this) in TABLE_FUNCTIONS
    if node.catalog:
        return False
    if schema in ("pg_catalog", "information_schema"):
        return True
    if not schema and name in ctes:
        return None
    if not schema and name.startswith("pg_") and name not in state.cleanroom.tables:
        return True
    return False


def reads_only_catalog(tree: exp.Expression, state: QueryState) -> bool:
    ctes = _cte_names(tree)
    catalog_seen = False
    for node in tree.find_all(exp.Table):
        kind = _catalog_table(node, state, ctes)
        if kind is False:
            return False
        catalog_seen = catalog_seen or bool(kind)
    if catalog_seen:
        return True
    for node in tree.walk():
        if isinstance(node, VALUE_NODES):
            return True
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name.lower() == "pg_catalog":
            return True
        if isinstance(node, exp.Anonymous) and node.name.lower() in FUNCTIONS:
            return True
        if isinstance(node, exp.Cast) and _cast_target(node.to) in ("regclass", "regtype", "regproc", "regnamespace", "oid"):
            return True
    return False


def _function_name(node) -> str:
    if isinstance(node, exp.Dot):
        node = node.expression
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return ""


# -- translation to the catalog database ----------------------------------------------------

VALUE_NODES = (exp.CurrentDatabase, exp.CurrentSchema, exp.CurrentUser, exp.SessionUser, exp.CurrentVersion,
               exp.CurrentSchemas)
TABLE_FUNCTIONS = {"unnest", "generate_series", "generate_subscripts", "pg_get_keywords", "pg_show_all_settings"}

# Functions answered by macros in the catalog database (pgw_<name>), or by constants.
FUNCTIONS = {
    "version", "current_database", "current_schema", "current_schemas", "current_user", "session_user",
    "pg_table_is_visible", "pg_type_is_visible", "pg_function_is_visible", "pg_get_userbyid", "format_type",
    "pg_get_expr", "obj_description", "col_description", "shobj_description", "has_table_privilege",
    "has_schema_privilege", "has_database_privilege", "has_column_privilege", "has_function_privilege",
    "has_any_column_privilege", "pg_has_role", "pg_encoding_to_char", "pg_get_constraintdef",
    "pg_get_indexdef", "pg_get_viewdef", "pg_get_functiondef", "pg_get_function_result",
    "pg_get_function_arguments", "pg_get_function_identity_arguments", "current_setting", "pg_backend_pid",
    "pg_is_in_recovery", "pg_postmaster_start_time", "pg_tablespace_location", "pg_total_relation_size",
    "pg_relation_size", "pg_table_size", "pg_indexes_size", "txid_current", "pg_get_partkeydef",
    "pg_get_statisticsobjdef_columns", "pg_get_triggerdef", "pg_get_ruledef", "array_upper", "array_lower",
    "quote_ident", "pg_relation_is_publishable", "pg_get_serial_sequence", "pg_char_to_encoding",
    "inet_server_addr", "inet_server_port", "inet_client_addr", "pg_size_pretty", "pg_is_other_temp_schema",
    "pg_my_temp_schema", "pg_collation_is_visible", "pg_conversion_is_visible", "pg_opclass_is_visible",
    "pg_get_function_sqlbody", "pg_stat_get_numscans", "to_regclass", "to_regtype", "pg_get_keywords",
    "pg_jit_available", "pg_current_logfile", "row_security_active", "pg_get_indexdef", "pg_index_column_has_property",
    "pg_catalog_version", "set_config", "pg_get_expr", "pg_show_all_settings",
}

RENAMED = {"json_build_object": "json_object", "jsonb_build_object": "json_object", "to_json": "to_json"}

REGEX_OPERATORS = {"~": exp.RegexpLike, "~*": exp.RegexpILike}


def parameter_oid(parameter) -> int:
    """The PostgreSQL type of a template parameter, as its function's argument type."""
    kind = getattr(parameter.type, "value", parameter.type)
    if kind == "enum" and parameter.values and all(isinstance(v, int) and not isinstance(v, bool) for v in parameter.values):
        return 20
    return PARAMETER_OIDS.get(kind, 25)


def _cast_target(to: exp.Expression) -> str:
    if isinstance(to, exp.ObjectIdentifier):
        return to.name.lower()
    if isinstance(to, exp.DataType):
        kind = to.args.get("kind")
        if to.this == exp.DataType.Type.USERDEFINED and kind is not None:
            if isinstance(kind, exp.Dot):
                return kind.expression.name.lower()
            return kind.name.lower()
        if to.this == exp.DataType.Type.NAME:
            return "name"
        return to.this.value.lower() if hasattr(to.this, "value") else str(to.this).lower()
    return to.sql().lower()


def translate(tree: exp.Expression, state: QueryState) -> exp.Expression:
    tree = normalize_identifiers(tree, dialect="postgres")  # `AS DATA_TYPE` names a column data_type
    ctes = _cte_names(tree)
    _name_projections(tree)
    user, database = state.request.user, state.cleanroom.name

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            if _catalog_table(node, state, ctes):
                schema = "pgi" if node.db.lower() == "information_schema" else "pgc"
                node.set("db", exp.to_identifier(schema))
                node.set("catalog", None)
                node.set("this", exp.to_identifier(node.name.lower()))
                if not node.alias:
                    node.set("alias", exp.TableAlias(this=exp.to_identifier(node.name)))
            return node
        if isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
            if isinstance(node.this, exp.Dot):
                node.set("this", node.this.expression)
            node.set("db", None)
            node.set("catalog", None)
            alias = node.args.get("alias")
            if alias is not None and alias.name and not alias.columns:  # PostgreSQL: f(...) s names its column s
                alias.set("columns", [exp.to_identifier(alias.name)])
            return node
        if isinstance(node, exp.DataType) and isinstance(node.args.get("kind"), exp.Dot) \
                and node.this == exp.DataType.Type.USERDEFINED:
            name = node.args["kind"].expression.name.lower()
            if name in ("text", "name", "char", "bpchar", "varchar", "regclass", "regtype", "regproc", "unknown"):
                name = "varchar"
            elif name in ("oid", "xid", "regclass", "int2vector", "oidvector"):
                name = "bigint"
            return exp.DataType.build(name, dialect="postgres")
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name.lower() == "pg_catalog" \
                and isinstance(node.expression, exp.Func):
            return node.expression
        if isinstance(node, exp.Column) and node.args.get("db") is not None \
                and node.args["db"].name.lower() in ("pg_catalog", "information_schema"):
            node.set("db", None)  # pg_catalog.pg_class.relname: the table is aliased by its name
            node.set("catalog", None)
            return node
        if isinstance(node, exp.CurrentVersion):
            return exp.Literal.string(VERSION_TEXT)
        if isinstance(node, exp.CurrentDatabase):
            return exp.Literal.string(database)
        if isinstance(node, exp.CurrentSchema):
            return exp.Literal.string("public")
        if isinstance(node, exp.CurrentSchemas):
            return exp.Array(expressions=[exp.Literal.string("pg_catalog"), exp.Literal.string("public")])
        if isinstance(node, (exp.CurrentUser, exp.SessionUser)):
            return exp.Literal.string(user)
        if isinstance(node, exp.Anonymous):
            name = node.name.lower()
            if name == "version":
                return exp.Literal.string(VERSION_TEXT)
            if name in ("current_database",):
                return exp.Literal.string(database)
            if name in ("current_user", "session_user", "user"):
                return exp.Literal.string(user)
            if name == "current_schema":
                return exp.Literal.string("public")
            if name in FUNCTIONS:
                node.set("this", f"pgw_{name}")
            elif name in RENAMED:
                node.set("this", RENAMED[name])
            return node
        if isinstance(node, exp.Operator):
            operator = str(node.args.get("operator") or "").split(".")[-1].strip()
            left, right = node.this, node.expression
            if isinstance(right, exp.Collate):
                right = right.this
            if operator in REGEX_OPERATORS:
                return REGEX_OPERATORS[operator](this=left, expression=right)
            if operator in ("!~", "!~*"):
                return exp.Not(this=REGEX_OPERATORS[operator[1:]](this=left, expression=right))
            if operator == "~~":
                return exp.Like(this=left, expression=right)
            if operator == "=":
                return exp.EQ(this=left, expression=right)
            if operator == "<>":
                return exp.NEQ(this=left, expression=right)
            return node
        if isinstance(node, exp.Collate):
            return node.this
        if isinstance(node, exp.Format) and isinstance(node.this, exp.Literal) and node.this.is_string:
            return _format(node.this.name, node.expressions) or node
        if isinstance(node, exp.EQ):  # proc.oid = typ.typreceive: the function is named by the regproc column
            for oid, function in ((node.this, node.expression), (node.expression, node.this)):
                if isinstance(oid, exp.Column) and oid.name.lower() == "oid" and isinstance(function, exp.Column) \
                        and function.name.lower() in REGPROC_COLUMNS:
                    oid.set("this", exp.to_identifier("proname"))
            return node
        if isinstance(node, (exp.Cast, exp.TryCast)):
            target = _cast_target(node.to)
            inner = node.this
            if target in ("regclass", "regtype", "regproc", "regprocedure", "regnamespace", "regrole"):
                if (isinstance(inner, exp.Literal) and inner.is_string) or isinstance(inner, TEXT_NODES):
                    return exp.Anonymous(this=f"pgw_to_{target}", expressions=[inner])  # a name, to look up
                return exp.Anonymous(this=f"pgw_{target}_name", expressions=[inner])
            if target in ("oid", "xid", "cid", "tid", "regoper", "int2vector", "oidvector", "xid8"):
                node.set("to", exp.DataType.build("BIGINT" if target not in ("int2vector", "oidvector") else "VARCHAR"))
                return node  # changed in place, so transform() still visits its operand
            if target in ("name", "text", "char", "bpchar", "varchar", "character varying", "regconfig", "unknown"):
                node.set("to", exp.DataType.build("VARCHAR"))
                return node
            if target in ("text[]", "_text", "name[]"):
                node.set("to", exp.DataType.build("VARCHAR[]"))
                return node
            if target == "array" and isinstance(inner, exp.Literal) and inner.is_string and inner.name.startswith("{"):
                elements = exp.Array(expressions=[exp.Literal.string(v) for v in _array_text(inner.name)])
                node.set("this", elements)  # '{a,b}'::text[] (DBeaver): the list [a, b], cast to the array type
                return node
            to = node.to
            if isinstance(to, exp.DataType) and isinstance(to.args.get("kind"), exp.Dot):
                node.set("to", exp.DataType.build(to.args["kind"].expression.name, dialect="postgres"))
            return node
        return node

    # transform() does not descend into the nodes it returns: repeat until nothing changes.
    before = None
    for _ in range(6):
        tree = tree.transform(rewrite, copy=False)
        after = tree.sql(dialect="duckdb")
        if after == before:
            break
        before = after
    return tree


# Expressions that give text: cast to regclass, they name a relation (Metabase: FORMAT('%I.%I', ...)::regclass).
TEXT_NODES = (exp.Format, exp.Concat, exp.DPipe)


def _format(template: str, arguments: list[exp.Expression]) -> exp.Expression | None:
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


def _array_text(text: str) -> list[str]:
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


def _name_projections(tree: exp.Expression) -> None:
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
        return inner if inner != "?column?" else _cast_target(node.to)
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


# -- the catalog database, per analyst and policy version ----------------------------------------


def catalog_database(state: QueryState) -> duckdb.DuckDBPyConnection:
    room, user = state.cleanroom, state.request.user
    key = (id(state.context), room.name, room.version, user)
    with _lock:
        database = _databases.get(key)
        if database is None:
            if len(_databases) > 256:
                for old in _databases.values():
                    old.close()
                _databases.clear()
            database = _build(state)
            _databases[key] = database
    return database


def _rows(con: duckdb.DuckDBPyConnection, table: str, columns: str, rows: list[tuple]) -> None:
    con.execute(f"CREATE TABLE {table} ({columns})")
    if rows:
        marks = ", ".join("?" for _ in rows[0])
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def _build(state: QueryState) -> duckdb.DuckDBPyConnection:
    room, user, context = state.cleanroom, state.request.user, state.context
    tables = visible_tables(room, state.analyst)
    types = context.column_types[room.name]
    con = duckdb.connect(":memory:", config={"threads": 1})
    con.execute("CREATE SCHEMA pgc")
    con.execute("CREATE SCHEMA pgi")
    owner_names = sorted({user} | {t.owner for t in tables.values()})
    roles = {name: (10 if name == user else FIRST_ROLE_OID + i) for i, name in enumerate(owner_names)}
    rooms = sorted(name for name, r in context.cleanrooms.items() if user in r.analysts)

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
    comments = [(FIRST_DB_OID + i, 1262, 0, context.cleanrooms[name].description or None)
                for i, name in enumerate(rooms) if context.cleanrooms[name].description]

    class_rows, attr_rows, type_rows, info_tables, info_columns = [], [], [], [], []
    regclass = [(name, oid) for name, oid in WELL_KNOWN.items()]
    for index, (name, table) in enumerate(tables.items()):
        oid = FIRST_TABLE_OID + 2 * index
        rowtype = oid + 1
        columns = table.visible()
        class_rows.append((oid, name, PUBLIC, rowtype, 0, roles[table.owner], 2, 0, 0, 0, -1.0, 0, 0, False, False,
                           "p", "r", len(columns), 0, False, False, False, False, False, True, "d", False, 0, None, None))
        type_rows.append((rowtype, name, PUBLIC, 10, -1, False, "c", "C", False, True, ",", oid, 0, 0, 0, -1, 0, 0, None, "d", "x"))
        regclass.append((name, oid))
        if table.description:
            comments.append((oid, 1259, 0, table.description))
        info_tables.append((room.name, "public", name, "BASE TABLE", None, None, None, None, None, "NO", "NO", None))
        for position, (column_name, column) in enumerate(columns.items(), start=1):
            duck = types[name][column_name]
            type_oid = _oid(duck)
            typmod = _typmod(duck)
            attr_rows.append((oid, column_name, type_oid, -1, TYPES[type_oid][1], position, 0, -1, typmod,
                              TYPES[type_oid][1] > 0, "i", "p", "", False, False, False, "", "", False, True, 0,
                              100 if type_oid in (25, 1043) else 0, None, None, None))
            if column.description:
                comments.append((oid, 1259, position, column.description))
            precision, scale = _precision(duck, type_oid)
            info_columns.append((room.name, "public", name, column_name, position, None, "YES",
                                 TYPES[type_oid][3], None, None, precision, 10 if precision else None, scale,
                                 6 if type_oid in (1083, 1114, 1184) else None, None, room.name, "pg_catalog",
                                 TYPES[type_oid][0], str(position), "NO", "NO", "NEVER", "NO", column.description or None))

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
        type_rows.append((type_oid, typname, PG_CATALOG, 10, typlen, 0 < typlen <= 8, "b" if type_oid != 2249 else "p",
                          category, False, True, ",", 0, element, ARRAY_OF.get(type_oid, 0), 0, -1, 0,
                          100 if type_oid in (25, 1043) else 0, None, "i", "p"))
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
    _rows(con, "pgc._format", "oid BIGINT, name VARCHAR", [(o, v[3]) for o, v in TYPES.items()])
    _rows(con, "pgc._regclass", "name VARCHAR, oid BIGINT", regclass)

    # Templates: set-returning functions the analyst may call through the HTTP API.
    procs, routines = [], []
    for index, name in enumerate(state.analyst.templates):
        template = room.templates.get(name)
        if template is None:
            continue
        oid = FIRST_PROC_OID + index
        arg_names = [p.name for p in template.parameters]
        procs.append((oid, name, PUBLIC, 10, 12, 100.0, 1000.0, 0, 0, "f", False, False, True, True, "s", "u",
                      len(arg_names), 0, 2249, " ".join(str(parameter_oid(p)) for p in template.parameters),
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
          [(k, v, None, "", "", "user", "string", "default") for k, v in _SETTINGS.items()])
    _rows(con, "pgc.pg_tablespace", "oid BIGINT, spcname VARCHAR, spcowner BIGINT, spcacl VARCHAR[], spcoptions VARCHAR[]",
          [(1663, "pg_default", 10, None, None)])
    _rows(con, "pgc.pg_collation", "oid BIGINT, collname VARCHAR, collnamespace BIGINT, collowner BIGINT, "
          "collprovider VARCHAR, collisdeterministic BOOLEAN, collencoding INTEGER, collcollate VARCHAR, collctype VARCHAR",
          [(100, "default", PG_CATALOG, 10, "d", True, -1, None, None)])
    # Empty relations clients join against: no indexes, constraints, rules, triggers, inheritance.
    for ddl in _EMPTY:
        con.execute(ddl)
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
    for ddl in _EMPTY_INFO:
        con.execute(ddl)
    for macro in _MACROS:
        con.execute(macro)
    # It holds only what the policy lets this analyst see; now it may reach nothing else.
    con.execute("SET enable_external_access = false")
    con.execute("SET memory_limit = '256MB'")
    con.execute("SET lock_configuration = true")
    return con


def _oid(duck_type: str) -> int:
    upper = duck_type.upper()
    if upper.startswith("DECIMAL") or upper.startswith("NUMERIC"):
        return 1700
    if upper.startswith("TIMESTAMP") and "TIME ZONE" not in upper:
        return 1114
    return DUCKDB_TO_OID.get(upper, 25)


def _typmod(duck_type: str) -> int:
    upper = duck_type.upper()
    if upper.startswith("DECIMAL(") and upper.endswith(")"):
        precision, _, scale = upper[8:-1].partition(",")
        return ((int(precision) << 16) | int(scale or 0)) + 4
    return -1


def _precision(duck_type: str, oid: int) -> tuple[int | None, int | None]:
    if oid == 1700:
        typmod = _typmod(duck_type)
        return ((typmod - 4) >> 16, (typmod - 4) & 0xFFFF) if typmod > 0 else (None, None)
    return {21: (16, 0), 23: (32, 0), 20: (64, 0), 700: (24, None), 701: (53, None)}.get(oid, (None, None))


_SETTINGS = {
    "server_version": SERVER_VERSION, "server_version_num": "160004", "server_encoding": "UTF8",
    "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "TimeZone": "UTC", "integer_datetimes": "on",
    "standard_conforming_strings": "on", "max_identifier_length": "63", "transaction_isolation": "read committed",
    "default_transaction_read_only": "on", "search_path": '"$user", public', "lc_collate": "C.UTF-8",
    "lc_ctype": "C.UTF-8", "max_index_keys": "32", "block_size": "8192", "statement_timeout": "0",
}

_EMPTY = [
    "CREATE TABLE pgc.pg_index (indexrelid BIGINT, indrelid BIGINT, indnatts SMALLINT, indnkeyatts SMALLINT, "
    "indisunique BOOLEAN, indnullsnotdistinct BOOLEAN, indisprimary BOOLEAN, indisexclusion BOOLEAN, "
    "indimmediate BOOLEAN, indisclustered BOOLEAN, indisvalid BOOLEAN, indcheckxmin BOOLEAN, indisready BOOLEAN, "
    "indislive BOOLEAN, indisreplident BOOLEAN, indkey SMALLINT[], indcollation BIGINT[], indclass BIGINT[], "
    "indoption SMALLINT[], indexprs VARCHAR, indpred VARCHAR)",
    "CREATE TABLE pgc.pg_constraint (oid BIGINT, conname VARCHAR, connamespace BIGINT, contype VARCHAR, "
    "condeferrable BOOLEAN, condeferred BOOLEAN, convalidated BOOLEAN, conrelid BIGINT, contypid BIGINT, "
    "conindid BIGINT, conparentid BIGINT, confrelid BIGINT, confupdtype VARCHAR, confdeltype VARCHAR, "
    "confmatchtype VARCHAR, conislocal BOOLEAN, coninhcount INTEGER, connoinherit BOOLEAN, conkey SMALLINT[], "
    "confkey SMALLINT[], conpfeqop BIGINT[], conppeqop BIGINT[], conffeqop BIGINT[], conexclop BIGINT[], conbin VARCHAR)",
    "CREATE TABLE pgc.pg_attrdef (oid BIGINT, adrelid BIGINT, adnum SMALLINT, adbin VARCHAR)",
    "CREATE TABLE pgc.pg_inherits (inhrelid BIGINT, inhparent BIGINT, inhseqno INTEGER, inhdetachpending BOOLEAN)",
    "CREATE TABLE pgc.pg_trigger (oid BIGINT, tgrelid BIGINT, tgparentid BIGINT, tgname VARCHAR, tgfoid BIGINT, "
    "tgtype SMALLINT, tgenabled VARCHAR, tgisinternal BOOLEAN, tgconstrrelid BIGINT, tgconstrindid BIGINT, "
    "tgconstraint BIGINT, tgdeferrable BOOLEAN, tginitdeferred BOOLEAN, tgnargs SMALLINT)",
    "CREATE TABLE pgc.pg_rewrite (oid BIGINT, rulename VARCHAR, ev_class BIGINT, ev_type VARCHAR, "
    "ev_enabled VARCHAR, is_instead BOOLEAN)",
    "CREATE TABLE pgc.pg_policy (oid BIGINT, polname VARCHAR, polrelid BIGINT, polcmd VARCHAR, "
    "polpermissive BOOLEAN, polroles BIGINT[], polqual VARCHAR, polwithcheck VARCHAR)",
    "CREATE TABLE pgc.pg_statistic_ext (oid BIGINT, stxrelid BIGINT, stxname VARCHAR, stxnamespace BIGINT, "
    "stxowner BIGINT, stxstattarget INTEGER, stxkeys SMALLINT[], stxkind VARCHAR[], stxexprs VARCHAR)",
    "CREATE TABLE pgc.pg_publication (oid BIGINT, pubname VARCHAR, pubowner BIGINT, puballtables BOOLEAN, "
    "pubinsert BOOLEAN, pubupdate BOOLEAN, pubdelete BOOLEAN, pubtruncate BOOLEAN, pubviaroot BOOLEAN)",
    "CREATE TABLE pgc.pg_publication_rel (oid BIGINT, prpubid BIGINT, prrelid BIGINT, prqual VARCHAR, prattrs SMALLINT[])",
    "CREATE TABLE pgc.pg_publication_namespace (oid BIGINT, pnpubid BIGINT, pnnspid BIGINT)",
    "CREATE TABLE pgc.pg_partitioned_table (partrelid BIGINT, partstrat VARCHAR, partnatts SMALLINT)",
    "CREATE TABLE pgc.pg_foreign_table (ftrelid BIGINT, ftserver BIGINT, ftoptions VARCHAR[])",
    "CREATE TABLE pgc.pg_foreign_server (oid BIGINT, srvname VARCHAR)",
    "CREATE TABLE pgc.pg_foreign_data_wrapper (oid BIGINT, fdwname VARCHAR)",
    "CREATE TABLE pgc.pg_sequence (seqrelid BIGINT, seqtypid BIGINT, seqstart BIGINT, seqincrement BIGINT, "
    "seqmax BIGINT, seqmin BIGINT, seqcache BIGINT, seqcycle BOOLEAN)",
    "CREATE TABLE pgc.pg_depend (classid BIGINT, objid BIGINT, objsubid INTEGER, refclassid BIGINT, "
    "refobjid BIGINT, refobjsubid INTEGER, deptype VARCHAR)",
    "CREATE TABLE pgc.pg_enum (oid BIGINT, enumtypid BIGINT, enumsortorder DOUBLE, enumlabel VARCHAR)",
    "CREATE TABLE pgc.pg_range (rngtypid BIGINT, rngsubtype BIGINT, rngmultitypid BIGINT)",
    "CREATE TABLE pgc.pg_extension (oid BIGINT, extname VARCHAR, extowner BIGINT, extnamespace BIGINT, "
    "extrelocatable BOOLEAN, extversion VARCHAR)",
    "CREATE TABLE pgc.pg_event_trigger (oid BIGINT, evtname VARCHAR)",
    "CREATE TABLE pgc.pg_opclass (oid BIGINT, opcmethod BIGINT, opcname VARCHAR, opcnamespace BIGINT, opcdefault BOOLEAN)",
    "CREATE TABLE pgc.pg_operator (oid BIGINT, oprname VARCHAR, oprnamespace BIGINT, oprleft BIGINT, oprright BIGINT, oprresult BIGINT)",
    "CREATE TABLE pgc.pg_aggregate (aggfnoid BIGINT, aggkind VARCHAR)",
    "CREATE TABLE pgc.pg_cast (oid BIGINT, castsource BIGINT, casttarget BIGINT, castfunc BIGINT, castcontext VARCHAR, castmethod VARCHAR)",
    "CREATE TABLE pgc.pg_language (oid BIGINT, lanname VARCHAR)",
    "CREATE TABLE pgc.pg_auth_members (roleid BIGINT, member BIGINT, grantor BIGINT, admin_option BOOLEAN)",
    "CREATE TABLE pgc.pg_stat_activity (datid BIGINT, datname VARCHAR, pid INTEGER, usename VARCHAR, "
    "application_name VARCHAR, state VARCHAR, query VARCHAR)",
    "CREATE TABLE pgc.pg_locks (locktype VARCHAR, pid INTEGER)",
    "CREATE TABLE pgc.pg_timezone_names (name VARCHAR, abbrev VARCHAR, utc_offset INTERVAL, is_dst BOOLEAN)",
    "CREATE TABLE pgc.pg_init_privs (objoid BIGINT, classoid BIGINT, objsubid INTEGER, privtype VARCHAR, initprivs VARCHAR[])",
    "CREATE TABLE pgc.pg_statistic_ext_data (stxoid BIGINT)",
    "CREATE TABLE pgc.pg_db_role_setting (setdatabase BIGINT, setrole BIGINT, setconfig VARCHAR[])",
    "CREATE TABLE pgc.pg_largeobject_metadata (oid BIGINT, lomowner BIGINT)",
    "CREATE TABLE pgc.pg_conversion (oid BIGINT, conname VARCHAR)",
    "CREATE TABLE pgc.pg_ts_config (oid BIGINT, cfgname VARCHAR)",
    "CREATE TABLE pgc.pg_default_acl (oid BIGINT, defaclrole BIGINT, defaclnamespace BIGINT, defaclobjtype VARCHAR, defaclacl VARCHAR[])",
    "CREATE TABLE pgc.pg_subscription (oid BIGINT, subname VARCHAR)",
    "CREATE TABLE pgc.pg_stat_user_tables (relid BIGINT, schemaname VARCHAR, relname VARCHAR)",
]

_EMPTY_INFO = [
    "CREATE TABLE pgi.views (table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, view_definition VARCHAR, "
    "check_option VARCHAR, is_updatable VARCHAR, is_insertable_into VARCHAR)",
    "CREATE TABLE pgi.table_constraints (constraint_catalog VARCHAR, constraint_schema VARCHAR, constraint_name VARCHAR, "
    "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, constraint_type VARCHAR, is_deferrable VARCHAR, "
    "initially_deferred VARCHAR, enforced VARCHAR)",
    "CREATE TABLE pgi.key_column_usage (constraint_catalog VARCHAR, constraint_schema VARCHAR, constraint_name VARCHAR, "
    "table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, column_name VARCHAR, ordinal_position INTEGER, "
    "position_in_unique_constraint INTEGER)",
    "CREATE TABLE pgi.referential_constraints (constraint_catalog VARCHAR, constraint_schema VARCHAR, "
    "constraint_name VARCHAR, unique_constraint_catalog VARCHAR, unique_constraint_schema VARCHAR, "
    "unique_constraint_name VARCHAR, match_option VARCHAR, update_rule VARCHAR, delete_rule VARCHAR)",
    "CREATE TABLE pgi.constraint_column_usage (table_catalog VARCHAR, table_schema VARCHAR, table_name VARCHAR, "
    "column_name VARCHAR, constraint_catalog VARCHAR, constraint_schema VARCHAR, constraint_name VARCHAR)",
    "CREATE TABLE pgi.parameters (specific_catalog VARCHAR, specific_schema VARCHAR, specific_name VARCHAR, "
    "ordinal_position INTEGER, parameter_mode VARCHAR, parameter_name VARCHAR, data_type VARCHAR)",
    "CREATE TABLE pgi.sequences (sequence_catalog VARCHAR, sequence_schema VARCHAR, sequence_name VARCHAR)",
    "CREATE TABLE pgi.triggers (trigger_catalog VARCHAR, trigger_schema VARCHAR, trigger_name VARCHAR)",
    "CREATE TABLE pgi.check_constraints (constraint_catalog VARCHAR, constraint_schema VARCHAR, "
    "constraint_name VARCHAR, check_clause VARCHAR)",
    "CREATE TABLE pgi.table_privileges (grantor VARCHAR, grantee VARCHAR, table_catalog VARCHAR, table_schema VARCHAR, "
    "table_name VARCHAR, privilege_type VARCHAR, is_grantable VARCHAR, with_hierarchy VARCHAR)",
    "CREATE TABLE pgi.character_sets (character_set_catalog VARCHAR, character_set_schema VARCHAR, "
    "character_set_name VARCHAR, character_repertoire VARCHAR, form_of_use VARCHAR, default_collate_catalog VARCHAR, "
    "default_collate_schema VARCHAR, default_collate_name VARCHAR)",
    "INSERT INTO pgi.character_sets VALUES (NULL, NULL, 'UTF8', 'UCS', 'UTF8', NULL, NULL, NULL)",
    "CREATE VIEW pgi.enabled_roles AS SELECT rolname AS role_name FROM pgc.pg_roles WHERE oid = 10",
]

_MACROS = [
    "CREATE MACRO pgw_pg_table_is_visible(x) AS true",
    "CREATE MACRO pgw_pg_type_is_visible(x) AS true",
    "CREATE MACRO pgw_pg_function_is_visible(x) AS true",
    "CREATE MACRO pgw_pg_collation_is_visible(x) AS true",
    "CREATE MACRO pgw_pg_conversion_is_visible(x) AS true",
    "CREATE MACRO pgw_pg_opclass_is_visible(x) AS true",
    "CREATE MACRO pgw_pg_is_other_temp_schema(x) AS false",
    "CREATE MACRO pgw_pg_my_temp_schema() AS 0",
    "CREATE MACRO pgw_pg_get_userbyid(x) AS (SELECT rolname FROM pgc.pg_roles WHERE oid = x)",
    "CREATE MACRO pgw_format_type(t, m) AS (SELECT name FROM pgc._format WHERE oid = t) || "
    "CASE WHEN t = 1700 AND m > 4 THEN '(' || CAST((m - 4) // 65536 AS VARCHAR) || ',' || CAST((m - 4) % 65536 AS VARCHAR) || ')' ELSE '' END",
    "CREATE MACRO pgw_pg_get_expr(a, b, c := NULL) AS CAST(NULL AS VARCHAR)",
    # DBeaver reads the keywords for highlighting; DuckDB's grammar derives from PostgreSQL's.
    "CREATE MACRO pgw_pg_get_keywords() AS TABLE SELECT keyword_name AS word, CASE keyword_category "
    "WHEN 'reserved' THEN 'R' WHEN 'type_function' THEN 'T' WHEN 'column_name' THEN 'C' ELSE 'U' END AS catcode, "
    "true AS barelabel, keyword_category AS catdesc, 'can be bare label' AS baredesc FROM duckdb_keywords()",
    "CREATE MACRO pgw_pg_show_all_settings() AS TABLE SELECT * FROM pgc.pg_settings",
    "CREATE MACRO pgw_obj_description(x, c := NULL) AS (SELECT max(description) FROM pgc.pg_description d "
    "WHERE d.objoid = x AND d.objsubid = 0)",
    "CREATE MACRO pgw_shobj_description(x, c) AS (SELECT max(description) FROM pgc.pg_description d "
    "WHERE d.objoid = x AND d.objsubid = 0)",
    "CREATE MACRO pgw_col_description(x, n) AS (SELECT max(description) FROM pgc.pg_description d "
    "WHERE d.objoid = x AND d.objsubid = n)",
    "CREATE MACRO pgw_has_table_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO pgw_has_schema_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO pgw_has_database_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO pgw_has_column_privilege(a, b, c, d := NULL) AS true",
    "CREATE MACRO pgw_has_function_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO pgw_has_any_column_privilege(a, b, c := NULL) AS true",
    "CREATE MACRO pgw_pg_has_role(a, b, c := NULL) AS true",
    "CREATE MACRO pgw_row_security_active(a) AS false",
    "CREATE MACRO pgw_pg_encoding_to_char(x) AS 'UTF8'",
    "CREATE MACRO pgw_pg_char_to_encoding(x) AS 6",
    "CREATE MACRO pgw_pg_get_constraintdef(a, b := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_indexdef(a, b := NULL, c := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_viewdef(a, b := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_functiondef(a) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_function_sqlbody(a) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_function_result(a) AS 'SETOF record'",
    "CREATE MACRO pgw_pg_get_function_arguments(a) AS (SELECT array_to_string(list_transform(proargnames, x -> x || ' text'), ', ') FROM pgc.pg_proc WHERE oid = a)",
    "CREATE MACRO pgw_pg_get_function_identity_arguments(a) AS (SELECT array_to_string(list_transform(proargnames, x -> x || ' text'), ', ') FROM pgc.pg_proc WHERE oid = a)",
    "CREATE MACRO pgw_current_setting(x, m := NULL) AS (SELECT max(setting) FROM pgc.pg_settings WHERE lower(name) = lower(x))",
    "CREATE MACRO pgw_set_config(a, b, c) AS b",
    "CREATE MACRO pgw_pg_backend_pid() AS 0",
    "CREATE MACRO pgw_pg_is_in_recovery() AS false",
    "CREATE MACRO pgw_pg_jit_available() AS false",
    "CREATE MACRO pgw_pg_postmaster_start_time() AS TIMESTAMPTZ '2026-01-01 00:00:00+00'",
    "CREATE MACRO pgw_pg_current_logfile(a := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_tablespace_location(x) AS ''",
    "CREATE MACRO pgw_pg_total_relation_size(x) AS CAST(NULL AS BIGINT)",
    "CREATE MACRO pgw_pg_relation_size(x, f := NULL) AS CAST(NULL AS BIGINT)",
    "CREATE MACRO pgw_pg_table_size(x) AS CAST(NULL AS BIGINT)",
    "CREATE MACRO pgw_pg_indexes_size(x) AS CAST(NULL AS BIGINT)",
    "CREATE MACRO pgw_pg_size_pretty(x) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_stat_get_numscans(x) AS CAST(NULL AS BIGINT)",
    "CREATE MACRO pgw_txid_current() AS 1",
    "CREATE MACRO pgw_pg_get_partkeydef(x) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_statisticsobjdef_columns(x) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_triggerdef(x, p := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_ruledef(x, p := NULL) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_get_serial_sequence(a, b) AS CAST(NULL AS VARCHAR)",
    "CREATE MACRO pgw_pg_relation_is_publishable(x) AS false",
    "CREATE MACRO pgw_pg_index_column_has_property(a, b, c) AS false",
    "CREATE MACRO pgw_array_upper(a, d) AS len(a)",
    "CREATE MACRO pgw_array_lower(a, d) AS CASE WHEN len(a) > 0 THEN 1 END",
    "CREATE MACRO pgw_quote_ident(x) AS CASE WHEN regexp_full_match(x, '[a-z_][a-z0-9_$]*') THEN x "
    "ELSE '\"' || replace(x, '\"', '\"\"') || '\"' END",
    "CREATE MACRO pgw_current_schemas(b) AS ['pg_catalog', 'public']",
    "CREATE MACRO pgw_inet_server_addr() AS '127.0.0.1'",
    "CREATE MACRO pgw_inet_client_addr() AS '127.0.0.1'",
    "CREATE MACRO pgw_inet_server_port() AS 5432",
    "CREATE MACRO pgw_pg_catalog_version() AS 202307071",
    "CREATE MACRO pgw_quote_literal(x) AS CASE WHEN x IS NULL THEN 'NULL' "
    "ELSE chr(39) || replace(x, chr(39), chr(39) || chr(39)) || chr(39) END",
    "CREATE MACRO pgw__strip(x) AS regexp_replace(regexp_replace(x, '^.*\\.', ''), '\"', '', 'g')",
    "CREATE MACRO pgw_to_regclass(x) AS (SELECT max(oid) FROM pgc._regclass WHERE name = pgw__strip(x))",
    "CREATE MACRO pgw_to_regtype(x) AS (SELECT max(oid) FROM pgc.pg_type WHERE typname = pgw__strip(x) "
    "OR oid IN (SELECT oid FROM pgc._format WHERE name = lower(x)))",
    # regproc columns (typinput, ...) hold function names here, so a regproc literal is its name.
    "CREATE MACRO pgw_to_regproc(x) AS pgw__strip(x)",
    "CREATE MACRO pgw_to_regprocedure(x) AS pgw__strip(x)",
    "CREATE MACRO pgw_to_regnamespace(x) AS (SELECT max(oid) FROM pgc.pg_namespace WHERE nspname = pgw__strip(x))",
    "CREATE MACRO pgw_to_regrole(x) AS (SELECT max(oid) FROM pgc.pg_roles WHERE rolname = pgw__strip(x))",
    "CREATE MACRO pgw_regclass_name(x) AS coalesce((SELECT max(name) FROM pgc._regclass WHERE oid = x), CAST(x AS VARCHAR))",
    "CREATE MACRO pgw_regtype_name(x) AS coalesce((SELECT max(name) FROM pgc._format WHERE oid = x), CAST(x AS VARCHAR))",
    "CREATE MACRO pgw_regproc_name(x) AS coalesce((SELECT max(proname) FROM pgc.pg_proc WHERE oid = x), '-')",
    "CREATE MACRO pgw_regprocedure_name(x) AS coalesce((SELECT max(proname) FROM pgc.pg_proc WHERE oid = x), '-')",
    "CREATE MACRO pgw_regnamespace_name(x) AS (SELECT max(nspname) FROM pgc.pg_namespace WHERE oid = x)",
    "CREATE MACRO pgw_regrole_name(x) AS (SELECT max(rolname) FROM pgc.pg_roles WHERE oid = x)",
    "CREATE MACRO pgw_to_regclass_fn(x) AS pgw_to_regclass(x)",
]
