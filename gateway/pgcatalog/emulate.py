"""What stands in for PostgreSQL inside the catalog database: the server
version and settings drivers ask for, the empty relations they join against
(no indexes, constraints, rules, triggers, inheritance), and the functions of
pg_catalog as DuckDB macros named pgw_<name> (translate.py renames the calls).

Data only; build.py runs it.
"""

from __future__ import annotations

SERVER_VERSION = "16.4"
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (cleanroom gateway) on x86_64-pc-linux-gnu, 64-bit"

# Functions answered by macros in the catalog database (pgw_<name>), or by constants (translate.py).
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

SETTINGS = {
    "server_version": SERVER_VERSION, "server_version_num": "160004", "server_encoding": "UTF8",
    "client_encoding": "UTF8", "DateStyle": "ISO, MDY", "TimeZone": "UTC", "integer_datetimes": "on",
    "standard_conforming_strings": "on", "max_identifier_length": "63", "transaction_isolation": "read committed",
    "default_transaction_read_only": "on", "search_path": '"$user", public', "lc_collate": "C.UTF-8",
    "lc_ctype": "C.UTF-8", "max_index_keys": "32", "block_size": "8192", "statement_timeout": "0",
}

# Empty relations clients join against.
EMPTY_RELATIONS = [
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

EMPTY_INFORMATION_SCHEMA = [
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

MACROS = [
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
