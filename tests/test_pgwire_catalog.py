"""The catalog pass (gateway.engine.catalog): pg_catalog and information_schema
answered from the policy, per analyst, never from the private data. Every front
end gets it; these tests call the engine directly."""

from __future__ import annotations

import pytest

from gateway.engine.types import QueryRequest
from gateway.errors import Refused


def run(engine, sql, params=()):
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql, params=params))


def test_catalog_lists_only_what_the_analyst_may_see(engine):
    release = run(engine, "SELECT c.relname, c.reltuples, c.relpages FROM pg_catalog.pg_class c "
                          "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                          "ORDER BY 1")
    assert release.authorised_by == "catalog" and release.min_group_size is None
    rows = release.table.to_pylist()
    assert [r["relname"] for r in rows] == ["impressions", "purchases", "regions"]
    assert all(r["reltuples"] == -1 and r["relpages"] == 0 for r in rows)  # no row counts
    columns = run(engine, "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                          "ORDER BY ordinal_position", ["purchases"]).table.column(0).to_pylist()
    assert columns == ["household_id", "region", "category", "amount", "purchased_on"]
    attributes = run(engine, "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c "
                             "ON c.oid = a.attrelid WHERE c.relname = 'purchases'").table.column(0).to_pylist()
    assert "card_last4" not in attributes


def test_functions_and_casts_psql_and_drivers_use(engine):
    row = run(engine, "SELECT version(), current_database(), current_user, current_schema(), "
                      "pg_catalog.format_type(1700, 655366), 'purchases'::regclass::oid > 0 AS found").table.to_pylist()[0]
    assert row["version"].startswith("PostgreSQL 16")
    assert row["current_database"] == "demo" and row["current_user"] == "analyst"
    assert row["current_schema"] == "public"
    assert row["format_type"] == "numeric(10,2)"
    assert row["found"] is True
    described = run(engine, "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) "
                            "'^(purchases)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid)")
    assert described.table.column(0).to_pylist() == ["purchases"]


def test_templates_appear_as_functions(engine):
    names = run(engine, "SELECT p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = p.pronamespace WHERE n.nspname = 'public'").table.column(0).to_pylist()
    assert names == ["campaign_reach", "propensity_lift", "propensity_histogram", "household_scores",
                     "propensity_training"]  # the analyst's templates, in policy order


def test_types_name_their_io_functions_which_join_by_oid(engine):
    rows = run(engine, "SELECT t.typname, t.typreceive, p.proname FROM pg_catalog.pg_type t "
                       "LEFT JOIN pg_catalog.pg_proc p ON p.oid = t.typreceive "
                       "WHERE t.typname IN ('int4', '_int4', 'text') ORDER BY 1").table.to_pylist()
    assert [(r["typname"], r["typreceive"], r["proname"]) for r in rows] == [
        ("_int4", "array_recv", "array_recv"), ("int4", "int4recv", "int4recv"), ("text", "textrecv", "textrecv")]
    arrays = run(engine, "SELECT count(*) FROM pg_catalog.pg_type WHERE typinput = 'array_in'::regproc").table
    assert arrays.column(0)[0].as_py() == 5


def test_catalog_mixed_with_clean_room_tables_is_refused(engine):
    with pytest.raises(Refused) as refused:
        run(engine, "SELECT c.relname, COUNT(*) FROM pg_catalog.pg_class c, purchases p GROUP BY 1")
    assert refused.value.rule == "source.system_catalog"


def test_plain_queries_still_go_through_the_policy(engine):
    with pytest.raises(Refused):
        run(engine, "SELECT * FROM purchases")
    assert run(engine, "SELECT 1 AS one").authorised_by == "public"


def test_the_catalog_database_reaches_nothing_but_the_policy(engine):
    from gateway.errors import GatewayError

    for sql in ("SELECT version(), read_text('/etc/passwd')",
                "SELECT pg_catalog.version() FROM read_csv('/etc/passwd')",
                "SELECT current_database(), (SELECT count(*) FROM read_text('/etc/hostname'))"):
        with pytest.raises(GatewayError):
            run(engine, sql)


def test_uuid_json_jsonb_types_and_template_argument_types(engine):
    rows = run(engine, "SELECT oid, typname, typarray FROM pg_catalog.pg_type WHERE typname IN ('uuid', 'json', 'jsonb') "
                       "ORDER BY oid").table.to_pylist()
    assert [(r["oid"], r["typname"], r["typarray"]) for r in rows] == [(114, "json", 199), (2950, "uuid", 2951),
                                                                       (3802, "jsonb", 3807)]
    (proc,) = run(engine, "SELECT proname, proargtypes, proargnames FROM pg_catalog.pg_proc "
                          "WHERE proname = 'campaign_reach'").table.to_pylist()
    assert proc["proargtypes"] == "25" and proc["proargnames"] == ["campaign"]  # an enum of text values


def test_a_template_called_from_sql_is_the_template_run(engine):
    from gateway.errors import BadParameter

    by_sql = run(engine, "SELECT * FROM campaign_reach($1)", ["spring_sale"])
    named = run(engine, "SELECT * FROM campaign_reach(campaign => 'spring_sale')")
    direct = engine.run(QueryRequest(user="analyst", cleanroom="demo", template="campaign_reach",
                                     params={"campaign": "spring_sale"}))
    assert by_sql.authorised_by == named.authorised_by == direct.authorised_by == "template:campaign_reach"
    assert by_sql.table.to_pylist() == named.table.to_pylist() == direct.table.to_pylist()
    with pytest.raises(Refused) as wrapped:
        run(engine, "SELECT * FROM purchases p JOIN campaign_reach('spring_sale') c ON p.region = c.region")
    assert wrapped.value.rule == "template.call_shape"
    with pytest.raises(BadParameter):
        run(engine, "SELECT * FROM campaign_reach('spring_sale', 'again')")


def test_unquoted_aliases_fold_to_lower_case_as_in_postgresql(engine):
    # Power BI's PostgreSQL connector browses with upper-case, unquoted names like these.
    tables = run(engine, "select TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE from INFORMATION_SCHEMA.tables "
                         "where TABLE_SCHEMA not in ('information_schema', 'pg_catalog') order by TABLE_SCHEMA, TABLE_NAME")
    assert tables.table.schema.names == ["table_schema", "table_name", "table_type"]
    assert tables.table.column("table_name").to_pylist() == ["impressions", "purchases", "regions"]
    columns = run(engine, "select COLUMN_NAME, ORDINAL_POSITION, case when (data_type like '%unsigned%') "
                          "then DATA_TYPE || ' unsigned' else DATA_TYPE end as DATA_TYPE from INFORMATION_SCHEMA.columns "
                          "where TABLE_SCHEMA = 'public' and TABLE_NAME = 'purchases' order by ORDINAL_POSITION")
    assert columns.table.schema.names == ["column_name", "ordinal_position", "data_type"]
    assert columns.table.column("column_name").to_pylist()[:2] == ["household_id", "region"]
    quoted = run(engine, 'SELECT typname AS "TypeName" FROM pg_catalog.pg_type LIMIT 1')
    assert quoted.table.schema.names == ["TypeName"]


# What DBeaver's PostgreSQL plugin asks while connecting and browsing (the shapes of its queries).
DBEAVER = [
    ("SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d "
     "ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname", (), 3),
    ("SELECT a.oid,a.* FROM pg_catalog.pg_roles a ORDER BY a.rolname", (), 1),
    ("SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datallowconn AND NOT datistemplate OR db.datname = $1 "
     "ORDER BY db.datname", ("demo",), 1),
    ("SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr, "
     "pg_catalog.pg_get_partkeydef(c.oid) as partition_key FROM pg_catalog.pg_class c LEFT OUTER JOIN "
     "pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass "
     "WHERE c.relnamespace=$1 AND c.relkind not in ('i','I','c')", (2200,), 3),
    ("SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description "
     "FROM pg_catalog.pg_attribute a INNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid) "
     "LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum) "
     "LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid) "
     "WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.relnamespace=$1 ORDER BY a.attnum", (2200,), 12),
    ("SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, d.description "
     "FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem "
     "LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN pg_catalog.pg_description d "
     "ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') "
     "AND (et.typcategory IS NULL OR et.typcategory <> 'C')", (), 20),
    ("select string_agg(word, ',') from pg_catalog.pg_get_keywords() where word <> ALL ('{a,abs,absolute}'::text[])",
     (), 1),
    ("SELECT p.oid,p.*,d.description FROM pg_catalog.pg_proc p LEFT OUTER JOIN pg_catalog.pg_description d "
     "ON d.objoid=p.oid WHERE p.pronamespace=$1 ORDER BY p.proname", (2200,), 1),
    ("SELECT name, setting FROM pg_show_all_settings() WHERE name = 'server_version'", (), 1),
]


@pytest.mark.parametrize("sql, params, at_least", DBEAVER)
def test_dbeaver_browsing_queries(engine, sql, params, at_least):
    assert run(engine, sql, list(params)).table.num_rows >= at_least


def test_postgresql_array_literals_in_catalog_queries(engine):
    row = run(engine, "SELECT '{a,\"b,c\"}'::text[] AS t, 3 = ANY('{1,2,3}'::int[]) AS found "
                      "FROM pg_catalog.pg_class LIMIT 1").table.to_pylist()[0]
    assert row == {"t": ["a", "b,c"], "found": True}


def test_metabase_describe_fields(engine):
    # The shape of Metabase's field sync for PostgreSQL: format() with %s and %I, a name cast to
    # regclass then oid, a regex filter, a LEFT JOIN on a subquery of key constraints.
    sql = """SELECT "c"."column_name" AS "name",
          CASE WHEN "c"."udt_schema" IN ('public', 'pg_catalog') THEN FORMAT('%s', "c"."udt_name")
               ELSE FORMAT('"%s"."%s"', "c"."udt_schema", "c"."udt_name") END AS "database-type",
          "c"."ordinal_position" - 1 AS "database-position", "c"."table_name" AS "table-name",
          "pk"."column_name" IS NOT NULL AS "pk?",
          COL_DESCRIPTION(CAST(CAST(FORMAT('%I.%I', CAST("c"."table_schema" AS TEXT), CAST("c"."table_name" AS TEXT))
                                    AS REGCLASS) AS OID), "c"."ordinal_position") AS "field-comment"
        FROM "information_schema"."columns" AS "c"
        LEFT JOIN (SELECT "tc"."table_schema", "tc"."table_name", "kc"."column_name"
                   FROM "information_schema"."table_constraints" AS "tc"
                   INNER JOIN "information_schema"."key_column_usage" AS "kc"
                     ON ("tc"."constraint_name" = "kc"."constraint_name") AND ("tc"."table_name" = "kc"."table_name")
                   WHERE "tc"."constraint_type" = 'PRIMARY KEY') AS "pk"
          ON ("c"."table_name" = "pk"."table_name") AND ("c"."column_name" = "pk"."column_name")
        WHERE c.table_schema !~ '^information_schema|catalog_history|pg_' AND ("c"."table_schema" = 'public')
          AND "c"."table_name" = 'purchases'
        ORDER BY "table-name" ASC, "database-position" ASC"""
    rows = run(engine, sql).table.to_pylist()
    assert [(r["name"], r["database-type"], r["database-position"]) for r in rows][:2] == [
        ("household_id", "text", 0), ("region", "text", 1)]
    assert rows[0]["field-comment"] == "Hashed household id."  # the policy's description, found through the cast


def test_format_follows_postgresql(engine):
    row = run(engine, "SELECT format('%s-%L-%%-%I', NULL, 'it''s', 'Mixed Case') AS f FROM pg_catalog.pg_class "
                      "LIMIT 1").table.to_pylist()[0]
    assert row["f"] == "-'it''s'-%-\"Mixed Case\""
