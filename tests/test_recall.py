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
