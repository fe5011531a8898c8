"""Differential privacy through the whole engine, on real DuckDB files: what
bounding guarantees, where thresholds apply, what a query costs, and the traps
earlier systems fell into (issue 4)."""

from __future__ import annotations

import math

import pytest

from gateway.dp.ledger import Account
from gateway.engine import QueryRequest
from gateway.errors import BudgetExhausted, Refused, ResultTooLarge
from tests.dpkit import COLUMNS, MAX_GROUPS, MAX_ROWS, REGIONS, VISITS, make_engine, request, spent
from tests.roomkit import build_engine, private_table, simple_policy

# One household with 1,000 rows spread over every region, all far above the bounds.
WHALE = "INSERT INTO visits SELECT 'whale', ['north','south','east','west'][1 + j % 4], 'd0', 10000 FROM range(1000) r(j)"


def bounded(engine, sql: str) -> dict:
    """The bounded (not yet noised) quantities per group, straight from DuckDB."""
    state = engine.compile(request(sql))
    table = engine.database.cursor().sql(state.generated_sql).to_arrow_table()
    names = {q.column: q.kind.value for q in state.noise_plan.quantities}
    return {row.get("__g0"): {names.get(k, k): v for k, v in row.items()} for row in table.to_pylist()}


def test_a_unit_with_1000_rows_moves_each_quantity_by_at_most_its_bound(tmp_path):
    sql = "SELECT region, count(*), count(DISTINCT hh), sum(spend) FROM visits GROUP BY region"
    without = make_engine(tmp_path / "without")
    with_whale = make_engine(tmp_path / "with", setup=VISITS + [WHALE])
    before, after = bounded(without, sql), bounded(with_whale, sql)
    # an empty public key is on the grid with zeros before noise (DuckDB's LEAST skips NULLs: 0, not 3)
    assert {k: before["east"][k] for k in ("units", "rows", "sum")} == {"units": 0, "rows": 0, "sum": 0}
    moved = {region: {k: after[region][k] - before[region][k] for k in ("units", "rows", "sum")} for region in REGIONS}
    # it appears in at most MAX_GROUPS groups, with at most MAX_ROWS rows of at most 50 each
    assert sum(1 for m in moved.values() if m["units"]) == MAX_GROUPS  # in all four, kept in exactly two
    assert all(0 <= m["units"] <= 1 for m in moved.values())
    assert all(0 <= m["rows"] <= MAX_ROWS for m in moved.values())
    assert all(0 <= m["sum"] <= MAX_ROWS * 50 for m in moved.values())
    assert sum(m["rows"] for m in moved.values()) <= MAX_ROWS * MAX_GROUPS
    assert sum(m["units"] for m in moved.values()) >= 1  # it was counted somewhere, not dropped
    # the noise is calibrated to exactly those bounds
    explained = with_whale.explain(request(sql))["differential_privacy"]
    sensitivities = [n["sensitivity"] for a in explained["aggregates"] for n in a["noise"]]
    assert sensitivities == [MAX_ROWS * MAX_GROUPS, MAX_GROUPS, MAX_ROWS * MAX_GROUPS * 50]


def test_which_groups_a_unit_keeps_does_not_follow_the_query_text(tmp_path):
    """The keyed hash picks the groups; a seed in the query cannot steer it."""
    engine = make_engine(tmp_path, setup=VISITS + [WHALE])
    with pytest.raises(Refused):
        engine.run(request("SELECT setseed(0.5)"))
    state = engine.compile(request("SELECT region, count(*) FROM visits GROUP BY region"))
    assert "random" not in state.generated_sql.lower()
    assert engine.context.privacy.hash_key in state.generated_sql


@pytest.mark.slow
def test_thresholds_apply_to_noisy_counts_never_the_true_ones(tmp_path):
    # units get epsilon 0.1 with sensitivity MAX_GROUPS: an empty public group clears k=5 often
    engine = make_engine(tmp_path, epsilon=0.2)
    released = {"east": 0, "west": 0, "north": 0}
    for i in range(40):  # a different WHERE each time: a new measurement, fresh noise
        rows = engine.run(request(f"SELECT region, count(*) FROM visits WHERE day <> 'x{i}' GROUP BY region")).table
        for region in rows.column("region").to_pylist():
            if region in released:
                released[region] += 1
    assert released["east"] > 0  # no household at all, yet released: the threshold saw a noisy count
    assert released["west"] > 0  # 3 households < k, released when the noise says so
    assert released["north"] > 30


def test_having_order_by_and_limit_run_after_noise_on_released_values(tmp_path):
    engine = make_engine(tmp_path, epsilon=8.0)  # north's ~180 bounded rows stay far above 100
    sql = ("SELECT region, count(*) AS n, avg(spend) AS mean FROM visits GROUP BY region "
           "HAVING count(*) > 100 ORDER BY n DESC LIMIT 1")
    state = engine.compile(request(sql))
    generated = state.generated_sql.replace(engine.context.privacy.hash_key, "<key>")  # random hex may hold "100"
    assert "100" not in generated and "having" not in generated.lower()
    release = engine.run(request(sql))
    rows = release.table.to_pylist()
    assert len(rows) == 1 and rows[0]["n"] > 100
    assert release.protection["columns"]["n"]["aggregate"] == "count"


@pytest.mark.slow
def test_unbounded_values_are_refused_and_every_release_is_finite(tmp_path):
    engine = make_engine(tmp_path, epsilon=0.3)
    with pytest.raises(Refused) as refused:
        engine.run(request("SELECT region, sum(spend * length(day)) FROM visits GROUP BY region"))
    assert refused.value.rule == "dp.unbounded_measure"
    with pytest.raises(Refused) as refused:
        engine.run(request("SELECT region, min(spend) FROM visits GROUP BY region"))
    assert refused.value.rule == "dp.aggregate"
    for i in range(15):  # east has no rows: its noisy count can be 0 or negative
        table = engine.run(request(f"SELECT region, avg(spend) AS a, sum(spend) AS s FROM visits "
                                   f"WHERE day <> 'y{i}' GROUP BY region")).table
        for value in table.column("a").to_pylist():
            assert value is None or (math.isfinite(value) and 0 <= value <= 50)
        assert all(math.isfinite(v) for v in table.column("s").to_pylist())


@pytest.mark.slow
def test_median_is_noised_within_the_bounds(tmp_path):
    engine = make_engine(tmp_path, epsilon=4.0)  # 1 per group for the median: 1,000 draws stayed within ±8
    release = engine.run(request("SELECT region, median(spend) AS m FROM visits GROUP BY region"))
    values = dict(zip(release.table.column("region").to_pylist(), release.table.column("m").to_pylist()))
    assert all(0 <= v <= 50 for v in values.values())
    assert abs(values["north"] - 30) < 10  # true median about 30; noisy, but not arbitrary
    assert release.protection["columns"]["m"]["aggregate"] == "median"
    (entry,) = release.protection["aggregates"]  # each aggregate once, by what was written
    assert entry["sql"] == "median(spend)" and entry["columns"] == ["m"]
    assert entry["noise"][0]["mechanism"] == "quantile_score_permute_and_flip"


def test_cost_comes_from_the_text_and_policy_not_the_data(tmp_path):
    sql = "SELECT region, count(*) FROM visits GROUP BY region"
    private = "SELECT day, count(*) FROM visits GROUP BY day"
    many = make_engine(tmp_path / "many")
    few = make_engine(tmp_path / "few", setup=VISITS + ["DELETE FROM visits WHERE region <> 'north'"])
    for engine in (many, few):
        assert engine.explain(request(sql))["cost"] == {"epsilon": 1.0, "delta": 0.0}
        assert engine.explain(request(private))["cost"] == {"epsilon": 1.0, "delta": 1e-6}
        engine.run(request(sql))
        engine.run(request(private))
    assert engine.budget("ana", "room")["spent"] == many.budget("ana", "room")["spent"] == {"epsilon": 2.0, "delta": 1e-6}


def test_noise_is_fresh_randomness_not_a_function_of_the_query(tmp_path):
    """Same data, same query, two gateways: different noise (Diffix's sticky
    noise, derived from the query, was averaged away exactly this way)."""
    sql = "SELECT region, count(*) AS n, sum(spend) AS s FROM visits GROUP BY region ORDER BY region"
    first = make_engine(tmp_path / "one").run(request(sql)).table.to_pylist()
    second = make_engine(tmp_path / "two").run(request(sql)).table.to_pylist()
    assert [r["s"] for r in first] != [r["s"] for r in second]


def test_repeats_return_the_same_answer_for_free_and_real_changes_pay(tmp_path):
    engine = make_engine(tmp_path)
    first = engine.run(request("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region"))
    assert spent(engine) == (1.0, 1)
    for variant in ("select   REGION, COUNT(*) as visits_seen\nfrom VISITS group by REGION order by region",
                    "SELECT v.region, count(*) FROM visits AS v GROUP BY v.region ORDER BY 1",
                    "SELECT region, count(*) AS n FROM visits GROUP BY region HAVING count(*) > 0 ORDER BY region"):
        again = engine.run(request(variant))
        answered = dict(zip(again.table.column(0).to_pylist(), again.table.column(1).to_pylist()))
        assert answered.items() <= dict(zip(first.table.column("region").to_pylist(),
                                            first.table.column("n").to_pylist())).items()
        assert len(answered) >= 2  # north and south at least, whatever the noise
        assert again.protection["reused"] and again.protection["spent"] == {"epsilon": 0.0, "delta": 0.0}
    assert spent(engine) == (1.0, 1)
    engine.run(request("SELECT region, count(*) AS n FROM visits WHERE day = 'd0' GROUP BY region"))
    assert spent(engine) == (2.0, 2)
    # the cache survives a restart: a new engine over the same state hands back the same answer
    engine.close()
    from gateway.engine import Engine

    reopened = Engine.from_config_file(tmp_path / "gateway.yaml")
    assert reopened.run(request("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region")
                        ).table.column("n").to_pylist() == first.table.column("n").to_pylist()
    assert spent(reopened) == (2.0, 2)


def test_replays_keep_their_own_names_and_labels(tmp_path):
    """Replays are published from a per-process memo (engine/release.py); a spelling of the
    same question must still get its own column names and aggregate labels, and every
    replay the same rows as the first."""
    engine = make_engine(tmp_path)
    first = engine.run(request("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region"))
    spellings = ["SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region",
                 "SELECT region AS r, count(*) AS how_many FROM visits GROUP BY region ORDER BY region",
                 "SELECT region, COUNT(*) AS n FROM visits GROUP BY region ORDER BY region DESC"]
    for _ in range(2):  # the second round is served from the memo
        same, renamed, reversed_ = (engine.run(request(sql)) for sql in spellings)
        assert same.table.equals(first.table) and same.protection["reused"]
        assert renamed.table.column_names == ["r", "how_many"]
        assert renamed.table.column("how_many").to_pylist() == first.table.column("n").to_pylist()
        assert list(renamed.protection["columns"]) == ["how_many"]
        assert reversed_.table.column("n").to_pylist() == first.table.column("n").to_pylist()[::-1]
    assert spent(engine) == (1.0, 1)


def test_the_budget_cannot_be_overspent_and_failures_are_not_refunded(tmp_path):
    engine = make_engine(tmp_path, budget=3.0, max_result_rows=2)
    with pytest.raises(ResultTooLarge):  # four public groups > 2 rows: fails after paying
        engine.run(request("SELECT region, count(*) FROM visits GROUP BY region"))
    assert spent(engine) == (1.0, 1)
    engine.run(request("SELECT count(*) FROM visits"))
    engine.run(request("SELECT count(*) FROM visits WHERE day = 'd1'"))
    with pytest.raises(BudgetExhausted) as exhausted:
        engine.run(request("SELECT count(*) FROM visits WHERE day = 'd0'"))
    assert exhausted.value.sqlstate == "53400" and "exhausted" in exhausted.value.message
    assert spent(engine) == (3.0, 3)
    ledger = engine.context.privacy.ledger
    assert [row["kind"] for row in ledger.history(Account("room", "ana"))] == ["charge"] * 3
    records = engine.context.audit.records()[-4:]
    assert [r["decision"] for r in records] == ["failed", "released", "released", "refused"]
    assert records[0]["privacy_budget_spent"] == {"epsilon": 1.0, "delta": 0.0}
    assert records[1]["privacy_budget_spent"] == {"epsilon": 1.0, "delta": 0.0}
    assert records[1]["rows_suppressed"] == 0 and records[1]["measurement_sha256"]


def test_a_retry_of_a_failed_statement_pays_again(tmp_path):
    """Copies of a statement in flight share one payment, but a failed run covers nothing:
    each run whose outcome and time the analyst sees is paid for."""
    engine = make_engine(tmp_path, budget=3.0, max_result_rows=2)
    sql = "SELECT region, count(*) FROM visits GROUP BY region"  # four public groups > 2 rows
    for paid in (1, 2, 3):
        with pytest.raises(ResultTooLarge):
            engine.run(request(sql))
        assert spent(engine) == (float(paid), paid)
    with pytest.raises(BudgetExhausted):
        engine.run(request(sql))
    history = engine.context.privacy.ledger.history(Account("room", "ana"))
    assert [(row["kind"], row["reason"]) for row in history] == [("charge", "failed")] * 3


def test_queries_that_cannot_be_bounded_per_unit_are_refused(tmp_path):
    engine = make_engine(tmp_path)
    with pytest.raises(Refused):
        engine.run(request("SELECT count(DISTINCT day) FROM visits"))


def test_public_tables_and_k_only_rooms_are_untouched(tmp_path):
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, k=5)
    engine = build_engine(tmp_path, policy, VISITS)
    release = engine.run(request("SELECT region, count(*) AS n FROM visits GROUP BY region ORDER BY region"))
    assert release.protection is None
    assert release.table.to_pylist() == [{"region": "north", "n": 240}, {"region": "south", "n": 160}]
    assert engine.budget("ana", "room")["enabled"] is False


def test_conditional_sums_take_the_hull_of_their_branches(tmp_path):
    engine = make_engine(tmp_path)
    sql = ("SELECT region, sum(CASE WHEN day = 'd0' THEN spend ELSE -10 END) AS s, "
           "avg(CASE WHEN day = 'd1' THEN spend END) AS a FROM visits GROUP BY region")
    explained = engine.explain(request(sql))["differential_privacy"]["aggregates"]
    assert explained[0]["noise"][0]["sensitivity"] == MAX_ROWS * MAX_GROUPS * 50  # hull [-10, 50]
    assert explained[1]["noise"][0]["sensitivity"] == MAX_ROWS * MAX_GROUPS * 50 / 2  # centred on [0, 50]
    release = engine.run(request(sql))
    assert all(v is None or 0 <= v <= 50 for v in release.table.column("a").to_pylist())
    with pytest.raises(Refused) as refused:  # a branch without bounds leaves the whole CASE unbounded
        engine.run(request("SELECT sum(CASE WHEN day = 'd0' THEN spend ELSE spend * 3 END) FROM visits"))
    assert refused.value.rule == "dp.unbounded_measure"


def test_a_filter_on_public_keys_narrows_the_released_groups(tmp_path):
    engine = make_engine(tmp_path, epsilon=5.0)
    release = engine.run(request("SELECT region, count(*) AS n FROM visits WHERE region IN ('north', 'east') "
                                 "AND day = 'd0' GROUP BY region ORDER BY region"))
    assert set(release.table.column("region").to_pylist()) <= {"north", "east"}
    assert "north" in release.table.column("region").to_pylist()


def test_describe_gives_the_released_columns_not_the_bounded_ones(tmp_path):
    engine = make_engine(tmp_path)
    sql = "SELECT region AS r, count(*) AS n, avg(spend) AS a, count(*) * 2 AS twice FROM visits GROUP BY region"
    schema = engine.describe(request(sql))
    assert schema.names == ["r", "n", "a", "twice"]
    assert schema.names == engine.run(request(sql)).table.schema.names


def test_the_release_cache_is_per_analyst(tmp_path):
    """A free repeat of someone else's question would tell one party what another asked."""
    policy = simple_policy({"visits": private_table("visits", COLUMNS)}, k=5)
    policy["analysts"]["bob"] = {"collaborator": "b", "rules": ["agg"]}
    policy["privacy"] = {"epsilon_per_query": 1.0, "budget": {"epsilon": 10.0}}
    engine = build_engine(tmp_path, policy, VISITS)
    sql = "SELECT region, count(*) FROM visits GROUP BY region"
    engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))
    by_bob = engine.run(QueryRequest(user="bob", cleanroom="room", sql=sql))
    assert not by_bob.protection["reused"] and by_bob.protection["spent"]["epsilon"] == 1.0
    assert engine.budget("bob", "room")["spent"]["epsilon"] == 1.0
