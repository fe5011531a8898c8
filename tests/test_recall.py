"""The analysis cache: a repeated statement skips parse to rewrite, keyed by
its text, parameters, user and the policy's version; templates never hit it."""

from __future__ import annotations

from dataclasses import replace

from gateway.engine import QueryRequest
from gateway.engine.recall import cache_key

SQL = "SELECT region, count(*) FROM purchases WHERE category = $1 GROUP BY region ORDER BY region"


def test_repeat_is_recalled_with_the_same_result(engine):
    first = engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=["dairy"]))
    state = engine._start(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=["dairy"]))
    assert engine.context.analyses.get(cache_key(state)) is not None
    second = engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=["dairy"]))
    assert first.table.equals(second.table)
    assert second.min_group_size == 10


def test_key_separates_parameters_users_and_policy_versions(engine):
    state = engine._start(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=["dairy"]))
    other_param = engine._start(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=["bakery"]))
    number_vs_text = (
        engine._start(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=[1])),
        engine._start(QueryRequest(user="analyst", cleanroom="demo", sql=SQL, params=["1"])),
    )
    assert cache_key(state) != cache_key(other_param)
    assert cache_key(number_vs_text[0]) != cache_key(number_vs_text[1])
    reloaded = replace(state, cleanroom=replace(state.cleanroom, version="another"))
    assert cache_key(state) != cache_key(reloaded)
    other_user = replace(state, request=replace(state.request, user="someone"))
    assert cache_key(state) != cache_key(other_user)


def test_templates_are_never_recalled(engine):
    state = engine._start(QueryRequest(user="analyst", cleanroom="demo", template="campaign_reach", params={"campaign": "new_year"}))
    assert cache_key(state) is None


# -- constant statements: no data, no function, so DuckDB runs them once ------------------


def _runs_of(monkeypatch) -> list[str]:
    from gateway.engine import execute

    ran, run = [], execute._run
    monkeypatch.setattr(execute, "_run", lambda state, deadline: ran.append(state.generated_sql) or run(state, deadline))
    return ran


def test_a_constant_statement_runs_once_and_every_run_is_audited(engine, monkeypatch):
    ran = _runs_of(monkeypatch)
    sql = "SELECT 41 + 1 AS answer, 'x' || 'y' AS text, CAST('2026-01-02' AS DATE) AS day, NULL IS NULL AS yes"
    before = len(engine.context.audit.records())
    answers = [engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql)) for _ in range(3)]
    assert len(ran) == 1
    assert all(a.table.equals(answers[0].table) for a in answers)
    assert answers[0].table.to_pylist() == [{"answer": 42, "text": "xy", "day": answers[0].table.column(2)[0].as_py(),
                                             "yes": True}]
    records = engine.context.audit.records()[before:]
    assert [r["sql"] for r in records] == [sql] * 3 and {r["decision"] for r in records} == {"released"}


def test_functions_and_tables_are_never_constant(engine, monkeypatch):
    ran = _runs_of(monkeypatch)
    # current_date changes at midnight; upper() never changes, but no function is trusted to be pure
    for sql in ("SELECT current_date AS today", "SELECT upper('a') AS a",
                "SELECT region, count(*) FROM purchases GROUP BY region"):
        for _ in range(2):
            engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))
        assert ran.count(ran[-1]) == 2, sql  # both runs reached DuckDB


def test_is_constant_admits_literals_casts_and_operators_only():
    import sqlglot

    from gateway.engine.rewrite import is_constant

    def constant(sql: str) -> bool:
        return is_constant(sqlglot.parse_one(sql, read="postgres"))

    assert constant("SELECT 1") and constant("SELECT -1.5 * (2 + 3) AS x, 'a' = 'b', NOT TRUE, 1::text")
    for sql in ("SELECT 1 FROM purchases", "SELECT version()", "SELECT current_date", "SELECT (SELECT 1)",
                "SELECT 1 UNION SELECT 2", "SELECT x", "SELECT $1", "SELECT 1 WHERE random() < 0.5"):
        assert not constant(sql), sql


def test_only_a_repeated_constant_statement_runs_in_memory(engine):
    def in_memory(sql: str, user: str = "analyst") -> bool:
        return engine.runs_in_memory(QueryRequest(user=user, cleanroom="demo", sql=sql, front_end="pgwire"))

    sql = "SELECT 'in memory' AS probe"
    assert not in_memory(sql)  # nothing known about it yet
    engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql, front_end="pgwire"))
    assert in_memory(sql)
    assert not in_memory(sql, user="nobody")  # other users are not analysts of the room
    table_sql = "SELECT region, count(*) FROM purchases GROUP BY region"
    engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=table_sql))
    assert not in_memory(table_sql)  # recalled, but DuckDB still runs it
