"""Property tests of the k-only demo clean room with generated statements
(tests/sqlgen.py): whatever an analyst writes, the gateway either refuses it
with a rule, or releases rows that

(a) come from generated SQL reading only attached source relations, fully
    qualified, and CTEs of that statement in scope, and no table function;
(b) each come from a group with at least k distinct households of every private
    table read, recomputed directly in DuckDB over the attached relations.

It never fails in DuckDB (ExecutionFailed, rule engine.failure) and never
raises anything but a GatewayError. Statements carrying a forbidden fragment
(the hidden column, a join key outside COUNT(DISTINCT), a measure in WHERE or
GROUP BY, a table function or file path, a CTE out of scope, a window
function, a function off the allow-list, a LIKE pattern with many wildcards)
must be refused.

CI runs a bounded, deterministic sample (derandomize, no example database);
bench/properties.py runs thousands of examples and counts refusals by rule.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests import sqlgen
from tests.sqlgen import Room, Statement, check, statements

CI = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def room(engine):
    return Room(engine)


@pytest.mark.slow
@CI
@given(statement=statements())
def test_refused_with_a_rule_or_released_k_safely(room, statement):
    outcome = check(room, statement)
    assert not outcome.violations, "\n".join(outcome.violations)


@pytest.mark.slow
@CI
@given(statement=statements(forbidden="required"))
def test_forbidden_fragments_are_refused(room, statement):
    outcome = check(room, statement)
    assert not outcome.violations, "\n".join(outcome.violations)
    assert not outcome.forbidden_released, (
        f"released {outcome.released_rows} rows although it carries {', '.join(outcome.forbidden_released)}")


# -- the checks themselves catch what they are meant to catch ----------------------------

SMALL_GROUPS = Statement(
    sql="(not run)",
    reference="SELECT t0.purchased_on, t0.category, t0.region, count(*), count(DISTINCT t0.household_id) "
              "FROM @@purchases@@ AS t0 GROUP BY 1, 2, 3",
    outputs=(0, 1, 2, 3),
    nullable=(False,),
    width=4,
)


def test_k_check_flags_a_group_below_k(room):
    groups = room.fetch(room.reference_sql(SMALL_GROUPS))
    small = [g[:4] for g in groups if g[4] < sqlgen.K_MIN]
    large = [g[:4] for g in groups if g[4] >= sqlgen.K_MIN]
    assert small and large, "the demo data should have groups on both sides of k here"
    assert sqlgen.k_violations(room, SMALL_GROUPS, large[:50]) == []
    problems = sqlgen.k_violations(room, SMALL_GROUPS, large[:5] + small[:1])
    assert [tag for tag, _ in problems] == [sqlgen.BELOW_K]


def test_k_check_flags_rows_of_no_group_and_wrong_widths(room):
    made_up = ("2026-01-01", "no such category", "north", 1)
    assert sqlgen.k_violations(room, SMALL_GROUPS, [made_up])[0][0] == sqlgen.UNEXPLAINED
    assert sqlgen.k_violations(room, SMALL_GROUPS, [made_up[:3]])[0][0] == sqlgen.WIDTH
    unverifiable = Statement(sql="(not run)", reference=None, forbidden=("function",))
    assert sqlgen.k_violations(room, unverifiable, [(1,)])[0][0] == sqlgen.UNVERIFIABLE


def test_rows_keep_columns_of_one_name():
    import pyarrow as pa

    table = pa.table([pa.array([1, 2]), pa.array([3, 4])], names=["count", "count"])
    assert sqlgen.table_rows(table) == [(1, 3), (2, 4)]


def test_outer_join_rule_in_the_k_check():
    assert sqlgen.passes_k((10, 0), (False, True))
    assert not sqlgen.passes_k((10, 3), (False, True))
    assert not sqlgen.passes_k((9, 0), (False, True))
    assert not sqlgen.passes_k((10, 0), (False, False))


@pytest.mark.parametrize("sql, bad", [
    ('SELECT count(*) FROM "src_retail"."main"."purchases" AS p', False),
    ('WITH a AS (SELECT * FROM "src_retail"."main"."purchases") SELECT count(*) FROM a', False),
    ('WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b', False),
    ("SELECT * FROM read_csv('/etc/passwd')", True),
    ("SELECT * FROM '/etc/passwd'", True),
    ("SELECT * FROM range(10)", True),
    ("SELECT count(*) FROM purchases", True),  # a bare name that is no CTE: resolved by DuckDB, not the gateway
    ('SELECT count(*) FROM "src_retail"."purchases"', True),
    ('SELECT count(*) FROM "src_retail"."main"."duckdb_tables"', True),
    ('SELECT count(*) FROM "system"."main"."duckdb_tables"', True),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a", True),  # forward reference
    ("SELECT * FROM (WITH c AS (SELECT 1 AS x) SELECT * FROM c) AS t, c", True),  # CTE out of scope
    ("SELECT unnest([1, 2])", True),
])
def test_relation_check(room, sql, bad):
    assert bool(sqlgen.relation_violations(sql, room)) is bad, sqlgen.relation_violations(sql, room)


@pytest.mark.slow
@settings(CI, max_examples=100)
@given(statement=statements())
def test_generated_references_run(room, statement):
    """The generator's references are valid DuckDB over the attached relations (a
    broken reference would make the property vacuous or noisy)."""
    if statement.reference is not None:
        room.fetch(room.reference_sql(statement) + " LIMIT 1")
