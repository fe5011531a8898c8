"""A small differentially private room for the DP tests: visits of 103 households
in four regions (public keys) over two days (private keys), with its policy's
contribution bounds, and the helpers that query it."""

from __future__ import annotations

from gateway.engine import QueryRequest
from tests.roomkit import build_engine, private_table, simple_policy

REGIONS = ["north", "south", "east", "west"]
COLUMNS = {
    "hh": {"role": "join_key"},
    "region": {"role": "dimension", "values": REGIONS},  # public keys
    "day": {"role": "dimension"},  # keys selected privately
    "spend": {"role": "measure", "bounds": [0, 50]},
}
MAX_ROWS, MAX_GROUPS = 3, 2

# 60 households in north (4 rows each), 40 in south, 3 in west, none in east.
VISITS = [
    "CREATE TABLE visits AS SELECT 'h' || i AS hh, "
    "CASE WHEN i < 60 THEN 'north' WHEN i < 100 THEN 'south' ELSE 'west' END AS region, "
    "'d' || (j % 2) AS day, (i * 7 + j) % 60 AS spend FROM range(103) t(i), range(4) r(j)",
]


def make_engine(tmp_path, setup=VISITS, epsilon=1.0, budget=1000.0, k=5, **engine_settings):
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy = simple_policy({"visits": private_table("visits", COLUMNS)},
                           aggregates=("count", "count_distinct", "sum", "avg", "median", "min"), k=k)
    policy["privacy"] = {"epsilon_per_query": epsilon, "delta_per_query": 1e-6, "max_rows_per_unit": MAX_ROWS,
                         "max_groups_per_unit": MAX_GROUPS, "budget": {"epsilon": budget, "delta": 0.001}}
    return build_engine(tmp_path, policy, list(setup), **engine_settings)


def request(sql: str) -> QueryRequest:
    return QueryRequest(user="ana", cleanroom="room", sql=sql)


def spent(engine) -> tuple[float, int]:
    balance = engine.budget("ana", "room")
    return balance["spent"]["epsilon"], balance["queries"]
