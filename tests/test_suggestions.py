"""'Did you mean' hints for unknown tables and columns are built only from what the
analyst may name: a hidden column or another party's table outside the analyst's
rules is never suggested, however close its name."""

from __future__ import annotations

import pytest

from gateway.engine import QueryRequest
from gateway.errors import UnknownColumn, UnknownTable
from tests.roomkit import Room, private_table, simple_policy

COLUMNS = {"hh": {"role": "join_key"}, "region": {"role": "dimension"}, "secret_score": {"role": "hidden"},
           "spend": {"role": "measure", "bounds": [0, 10]}}
ROWS = ["CREATE TABLE visits AS SELECT 'h' || i AS hh, 'north' AS region, i % 7 AS secret_score, i % 10 AS spend "
        "FROM range(50) t(i)",
        "CREATE TABLE salaries AS SELECT 'h' || i AS hh, 'north' AS region, 1 AS spend FROM range(50) t(i)"]


def policy() -> dict:
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, k=5)
    # b's table: in the policy, in no rule of the analyst's, so not theirs to name
    policy["tables"]["salaries"] = private_table("salaries", {"hh": {"role": "join_key"},
                                                              "region": {"role": "dimension"},
                                                              "spend": {"role": "measure", "bounds": [0, 1]}},
                                                 owner="b")
    return policy


ROOM = Room(policy(), ROWS)  # the module's `engine` (tests/conftest.py)


def refusal(engine, sql):
    with pytest.raises((UnknownTable, UnknownColumn)) as error:
        engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))
    return error.value


@pytest.mark.parametrize("sql, hint", [
    ("SELECT count(*) FROM visit", 'did you mean "visits"?'),
    ("SELECT count(*) FROM VISITZ", 'did you mean "visits"?'),
    ("SELECT regon, count(*) FROM visits GROUP BY 1", 'did you mean "region"?'),
    ("SELECT v.regin, count(*) FROM visits v GROUP BY 1", 'did you mean "region"?'),
])
def test_a_close_name_the_analyst_may_use_is_suggested(engine, sql, hint):
    assert refusal(engine, sql).hint == hint


@pytest.mark.parametrize("sql, unwanted", [
    ("SELECT count(*) FROM salarie", "salaries"),  # another party's table, in no rule of the analyst's
    ("SELECT secret_scor, count(*) FROM visits GROUP BY 1", "secret_score"),  # hidden: does not exist
])
def test_what_the_analyst_may_not_name_is_never_suggested(engine, sql, unwanted):
    error = refusal(engine, sql)
    assert unwanted not in (error.hint or "") and unwanted not in error.message
