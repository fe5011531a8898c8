"""Templates: callable by name, parameters typed and validated, results still
threshold-checked."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.engine import QueryRequest
from gateway.errors import BadParameter, UnknownTemplate
from tests.roomkit import build_engine, private_table, simple_policy


def run_template(engine, name, params, user="analyst", cleanroom="demo"):
    return engine.run(QueryRequest(user=user, cleanroom=cleanroom, template=name, params=params))


def test_campaign_reach_runs(engine):
    release = run_template(engine, "campaign_reach", {"campaign": "spring_sale"})
    assert release.authorised_by == "template:campaign_reach"
    assert release.table.column_names == ["region", "reach", "frequency", "conversion_rate"]
    assert 1 <= release.table.num_rows <= 8
    for row in release.table.to_pylist():
        assert row["reach"] >= 10
        assert 0 <= row["conversion_rate"] <= 1


@pytest.mark.parametrize(
    "params, rule",
    [
        ({"campaign": "not_a_campaign"}, "parameter.invalid"),
        ({"campaign": "spring_sale' OR 1=1 --"}, "parameter.invalid"),
        ({"campaign": 3}, "parameter.invalid"),
        ({}, "parameter.missing"),
        ({"campaign": "spring_sale", "extra": 1}, "parameter.unknown"),
        (["spring_sale"], "parameter.shape"),
    ],
)
def test_bad_parameters(engine, params, rule):
    with pytest.raises(BadParameter) as error:
        run_template(engine, "campaign_reach", params)
    assert error.value.rule == rule
    assert error.value.sqlstate == "22023"


def test_unknown_template(engine):
    with pytest.raises(UnknownTemplate):
        run_template(engine, "no_such_template", {})


TYPED = {
    "typed": {
        "parameters": {
            "min_spend": {"type": "integer", "minimum": 0, "maximum": 100},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "since": {"type": "date", "minimum": "2026-01-01", "maximum": "2026-12-31"},
            "code": {"type": "string", "pattern": "[A-Z]{2}[0-9]{2}"},
        },
        "sql": "SELECT region, COUNT(*) AS n FROM visits WHERE spend >= :min_spend AND spend * :ratio >= 0 "
        "AND day >= :since AND code <> :code GROUP BY region",
    }
}


@pytest.fixture(scope="module")
def typed_engine(tmp_path_factory):
    columns = {
        "hh": {"role": "join_key"},
        "region": {"role": "dimension"},
        "day": {"role": "dimension"},
        "code": {"role": "dimension"},
        "spend": {"role": "measure", "bounds": [0, 100]},
    }
    setup = [
        "CREATE TABLE visits AS SELECT 'h' || i AS hh, 'r' AS region, DATE '2026-06-01' AS day, "
        "'AB12' AS code, i AS spend FROM range(30) t(i)"
    ]
    policy = simple_policy({"visits": private_table("visits", columns)}, templates=TYPED)
    engine = build_engine(tmp_path_factory.mktemp("typed"), policy, setup)
    yield engine
    engine.close()


GOOD = {"min_spend": 5, "ratio": 0.5, "since": "2026-02-01", "code": "ZZ99"}


def test_typed_parameters_accept_valid_values(typed_engine):
    release = run_template(typed_engine, "typed", GOOD, user="ana", cleanroom="room")
    assert release.table.to_pylist() == [{"region": "r", "n": 25}]
    as_strings = {k: str(v) for k, v in GOOD.items()}  # what a wire client sends
    assert run_template(typed_engine, "typed", as_strings, user="ana", cleanroom="room").table.num_rows == 1
    as_date = dict(GOOD, since=dt.date(2026, 2, 1))
    assert run_template(typed_engine, "typed", as_date, user="ana", cleanroom="room").table.num_rows == 1


@pytest.mark.parametrize(
    "change",
    [
        {"min_spend": 101},
        {"min_spend": -1},
        {"min_spend": 2.5},
        {"min_spend": "ten"},
        {"min_spend": True},
        {"ratio": 1.5},
        {"ratio": float("nan")},
        {"ratio": "inf"},
        {"since": "2025-12-31"},
        {"since": "yesterday"},
        {"since": "2026-02-30"},
        {"code": "ab12"},
        {"code": "AB123"},
        {"code": "AB12' OR '1'='1"},
        {"code": 12},
    ],
)
def test_typed_parameters_refuse_bad_values(typed_engine, change):
    with pytest.raises(BadParameter):
        run_template(typed_engine, "typed", dict(GOOD, **change), user="ana", cleanroom="room")
