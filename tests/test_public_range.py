"""MIN and MAX of a dimension whose range or values the policy declares are answered
from the policy (what a BI tool's time-range control and filter lists ask first):
no row is read, no MIN/MAX permission is needed, nothing is spent; anything more
(a filter, a group, a measure) goes the usual way."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.engine import Engine, QueryRequest
from gateway.errors import Refused


@pytest.fixture(scope="module")
def dp_engine(dp_demo_config_path):
    engine = Engine.from_config_file(dp_demo_config_path)
    yield engine
    engine.close()


def run(engine, sql):
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))


@pytest.mark.parametrize("which", ["engine", "dp_engine"])
def test_the_range_of_a_date_dimension_comes_from_its_declared_buckets(request, which):
    engine = request.getfixturevalue(which)
    before = engine.budget("analyst", "demo")
    release = run(engine, 'SELECT MIN(purchased_on) AS "__min", MAX(purchased_on) AS "__max" FROM purchases')
    assert release.table.to_pylist() == [{"__min": dt.date(2026, 1, 1), "__max": dt.date(2026, 12, 31)}]
    assert release.authorised_by == "policy" and "not from the data" in release.notices[0]
    assert engine.budget("analyst", "demo") == before  # nothing spent


def test_a_timestamp_range_ends_at_the_last_moment_of_its_last_day(dp_engine):
    release = run(dp_engine, "SELECT min(shown_at), max(shown_at) FROM impressions")
    assert release.table.to_pylist() == [{"min": dt.datetime(2026, 1, 1),
                                          "max": dt.datetime(2026, 12, 31, 23, 59, 59, 999999)}]


def test_the_ends_of_a_declared_value_list(engine):
    release = run(engine, "SELECT min(region) AS first, max(region) AS last FROM purchases")
    assert release.table.to_pylist() == [{"first": "central", "last": "west"}]


@pytest.mark.parametrize("sql", [
    "SELECT min(purchased_on) FROM purchases WHERE region = 'north'",  # a filter: the data would decide
    "SELECT region, max(purchased_on) FROM purchases GROUP BY region",
    "SELECT max(amount) FROM purchases",  # a measure
    "SELECT min(purchased_on), count(*) FROM purchases",
])
def test_anything_more_goes_the_usual_way(engine, sql):
    """The demo's rules allow no MIN or MAX: the usual way refuses them."""
    with pytest.raises(Refused) as refused:
        run(engine, sql)
    assert refused.value.rule == "aggregate.not_allowed"
