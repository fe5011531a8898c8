"""zCDP accounting beside pure epsilon: the conversion, the ledger's balances and
refusals under it (SQLite and PostgreSQL), migration of ledgers made before it,
races, the policy key, the engine charging rho, and the claim that the demo's
budget buys at least 3x as many count-by-category queries at the same median
error (from the mechanisms' own privacy maps, then checked by drawing noise)."""

from __future__ import annotations

import math
import multiprocessing
import os
import statistics
import threading
from pathlib import Path

import pytest
import yaml

from gateway.dp import accounting
from gateway.dp.accounting import epsilon_units_of_rho, max_rho, max_rho_units, query_rho, rho_to_epsilon
from gateway.dp.ledger import (
    DELTA_SCALE,
    EPSILON_SCALE,
    RHO_SCALE,
    Account,
    Budget,
    Ledger,
    Spend,
    cost_rho_units,
)
from gateway.errors import BudgetExhausted, PolicyInvalid

REPO = Path(__file__).resolve().parent.parent
ANN = Account("room", "ann")


def zcdp(rho: float, delta: float = 0.0) -> Spend:
    return Spend(0.0, delta, rho, "zcdp")


# -- the conversion --------------------------------------------------------------


def test_standard_conversion_values_and_inverse():
    assert rho_to_epsilon(0.5, 1e-5) == pytest.approx(0.5 + 2 * math.sqrt(0.5 * math.log(1e5)))
    assert rho_to_epsilon(0.5, 1e-5) == pytest.approx(5.298525912188, abs=1e-9)
    assert rho_to_epsilon(0.0, 0.0) == 0.0 and rho_to_epsilon(0.1, 0.0) == math.inf
    assert rho_to_epsilon(0.3, 1.0) == pytest.approx(0.3)  # ln(1/1) = 0
    for epsilon, delta in ((10, 1e-5), (1, 1e-6), (0.5, 1e-9), (100, 1e-3)):
        assert rho_to_epsilon(max_rho(epsilon, delta), delta) == pytest.approx(epsilon, rel=1e-12)
    assert max_rho(10, 1e-5) == pytest.approx(1.5503552285754, rel=1e-12)
    assert query_rho(0.1) == pytest.approx(0.005)
    for bad in (-1, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError):
            query_rho(bad)
    with pytest.raises(ValueError):
        rho_to_epsilon(0.1, 2.0)


@pytest.mark.slow
def test_the_ledger_conversion_is_never_tighter_than_opendps():
    """OpenDP's make_zCDP_to_approxDP is the tighter bound (CKS20): ours may spend
    more, never less."""
    for rho, delta in ((0.005, 1e-5), (0.5, 1e-5), (1.55, 1e-5), (0.02, 1e-7), (3.0, 1e-3)):
        ours, theirs = rho_to_epsilon(rho, delta), accounting.opendp_epsilon(rho, delta)
        assert ours >= theirs > 0, (rho, delta)
        assert ours <= theirs * 1.5  # and not wildly looser


def test_exact_units_round_the_spent_epsilon_up_and_the_rho_left_down():
    delta = 10**13  # 1e-5 in delta units
    worth = epsilon_units_of_rho(5 * 10**11, delta, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE)
    assert worth == math.ceil(rho_to_epsilon(0.5, 1e-5) * EPSILON_SCALE) == 5_298_525_912_189
    assert epsilon_units_of_rho(0, 0, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE) == 0
    assert epsilon_units_of_rho(1, 0, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE) is None  # rho, no delta: unbounded
    most = max_rho_units(10 * EPSILON_SCALE, delta, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE)
    assert most == 1_550_355_228_575
    assert epsilon_units_of_rho(most, delta, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE) <= 10 * EPSILON_SCALE
    assert epsilon_units_of_rho(most + 1, delta, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE) > 10 * EPSILON_SCALE
    assert max_rho_units(0, delta, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE) == 0
    assert max_rho_units(10 * EPSILON_SCALE, 0, EPSILON_SCALE, RHO_SCALE, DELTA_SCALE) == 0


def test_a_cost_is_either_pure_or_zcdp():
    assert cost_rho_units(zcdp(0.005)) == 5 * 10**9
    assert cost_rho_units(Spend(0.1)) == 0
    with pytest.raises(ValueError, match="no rho"):
        cost_rho_units(Spend(0.1, 0.0, 0.005))  # pure with rho
    with pytest.raises(ValueError, match="stated as rho"):
        cost_rho_units(Spend(0.1, 0.0, 0.005, "zcdp"))
    with pytest.raises(ValueError, match="accounting"):
        cost_rho_units(Spend(0.0, 0.0, 0.0, "renyi"))
    with pytest.raises(ValueError):
        cost_rho_units(zcdp(-0.1))
    with pytest.raises(ValueError, match="accounting"):
        Budget(1.0, accounting="approx")


# -- the ledger under zCDP ---------------------------------------------------------


def test_zcdp_charges_fill_the_budget_the_conversion_allows(where):
    ledger = Ledger.open(**where)
    budget = Budget(1.0, 1e-6, accounting="zcdp")
    fits = max_rho(1.0, 1e-6)  # 0.01746...
    assert 17 * 0.001 <= fits < 18 * 0.001
    for i in range(17):
        balance = ledger.charge(ANN, zcdp(0.001), budget, request_id=f"r{i}", query_sha256="q")
    assert balance.queries == 17 and balance.spent.rho == pytest.approx(0.017)
    assert balance.spent.epsilon == pytest.approx(rho_to_epsilon(0.017, 1e-6), abs=1e-12)
    assert balance.spent.epsilon <= 1.0 and balance.remaining.epsilon == pytest.approx(1 - balance.spent.epsilon)
    assert balance.remaining.rho == pytest.approx(fits - 0.017, abs=1e-12)
    with pytest.raises(BudgetExhausted) as refused:
        ledger.charge(ANN, zcdp(0.001), budget, request_id="r17", query_sha256="q")
    assert "costs rho 0.001 (zCDP)" in refused.value.message and "rho 0.000468" in refused.value.message
    assert ledger.balance(ANN, budget).queries == 17  # the refusal wrote nothing
    small = ledger.charge(ANN, zcdp(0.0004), budget, request_id="small", query_sha256="q")  # what is left fits
    assert small.queries == 18
    rows = [r for r in ledger.history(ANN) if r["kind"] == "charge"]
    assert {r["accounting"] for r in rows} == {"zcdp"} and rows[0]["rho"] == 0.001 and rows[0]["epsilon"] == 0.0
    shown = ledger.balance(ANN, budget).as_json()
    assert shown["accounting"] == "zcdp" and set(shown["spent"]) == {"epsilon", "delta", "rho"}


def test_pure_and_zcdp_charges_add_up_and_delta_shrinks_the_conversion(where):
    ledger = Ledger.open(**where)
    budget = Budget(10.0, 1e-5, accounting="zcdp")
    ledger.charge(ANN, Spend(1.0), budget, request_id="pure", query_sha256="q")  # from before a policy change
    ledger.charge(ANN, zcdp(0.5), budget, request_id="z", query_sha256="q")
    balance = ledger.balance(ANN, budget)
    assert balance.spent.epsilon == pytest.approx(1.0 + rho_to_epsilon(0.5, 1e-5), abs=1e-12)
    # private selection's delta leaves less delta to convert with: the same rho is worth more epsilon
    ledger.charge(ANN, zcdp(0.001, delta=5e-6), budget, request_id="sel", query_sha256="q")
    balance = ledger.balance(ANN, budget)
    assert balance.spent.delta == pytest.approx(5e-6) and balance.remaining.delta == pytest.approx(5e-6)
    assert balance.spent.epsilon == pytest.approx(1.0 + rho_to_epsilon(0.501, 5e-6), abs=1e-12)
    assert balance.remaining.rho == pytest.approx(max_rho(9.0, 5e-6) - 0.501, abs=1e-11)
    # a delta that takes the last of the budget's delta leaves none to convert the rho: refused
    with pytest.raises(BudgetExhausted):
        ledger.charge(ANN, zcdp(0.001, delta=5e-6), budget, request_id="all", query_sha256="q")
    # a pure budget holds the same charges the same way, and still shows the rho
    pure_view = ledger.balance(ANN, Budget(10.0, 1e-5))
    assert pure_view.spent == Spend(balance.spent.epsilon, balance.spent.delta, 0.501, "pure")
    assert "rho" in pure_view.as_json()["spent"]


def test_pure_balances_are_unchanged(where):
    ledger = Ledger.open(**where)
    for i in range(10):
        ledger.charge(ANN, Spend(0.1), Budget(1.0), request_id=f"r{i}", query_sha256="q")
    balance = ledger.balance(ANN, Budget(1.0))
    assert (balance.spent, balance.remaining) == (Spend(1.0), Spend(0.0))
    assert balance.as_json()["spent"] == {"epsilon": 1.0, "delta": 0.0}  # no rho under pure accounting


def test_the_demo_budget_pays_for_three_times_the_queries_at_the_policy_rho(tmp_path):
    """Counted by the ledger itself: 100 queries of epsilon 0.1 fill a budget of
    (10, 1e-5) under pure accounting; the same queries as zCDP (rho 0.005 each) pay
    for 310."""
    ledger = Ledger.open(sqlite_path=tmp_path / "ledger.sqlite")
    counts = {}
    for name, cost, budget in (("pure", Spend(0.1), Budget(10.0, 1e-5)),
                               ("zcdp", zcdp(query_rho(0.1)), Budget(10.0, 1e-5, accounting="zcdp"))):
        account, n = Account("demo", name), 0
        while True:
            try:
                ledger.charge(account, cost, budget, request_id=str(n), query_sha256="q")
            except BudgetExhausted:
                break
            n += 1
        counts[name] = n
    assert counts == {"pure": 100, "zcdp": 310}


# -- migration of ledgers made before accounting -------------------------------------

OLD_SCHEMA = """CREATE TABLE dp_ledger (
    id {serial}, cleanroom TEXT NOT NULL, analyst TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('charge', 'reset')),
    epsilon_units BIGINT NOT NULL CHECK (epsilon_units >= 0), delta_units BIGINT NOT NULL CHECK (delta_units >= 0),
    at DOUBLE PRECISION NOT NULL, request_id TEXT NOT NULL DEFAULT '', query_sha256 TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '')"""


def _old_ledger(where: dict) -> None:
    """A dp_ledger as the gateway made it before accounting existed, with two charges of 0.25."""
    from gateway.dp.ledger import Database

    db = Database(**where)
    serial = "BIGSERIAL PRIMARY KEY" if db.kind == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    with db.transaction() as tx:
        tx.execute(OLD_SCHEMA.format(serial=serial))
        for i in range(2):
            tx.execute("INSERT INTO dp_ledger (cleanroom, analyst, kind, epsilon_units, delta_units, at, request_id) "
                       "VALUES ('room', 'ann', 'charge', ?, 0, 1.7e9, ?)", (25 * 10**10, f"old{i}"))


def test_an_old_ledger_is_migrated_in_place_and_keeps_its_charges(where):
    _old_ledger(where)
    ledger = Ledger.open(**where)
    assert ledger.migrated == ["accounting", "rho_units"]
    assert ledger.balance(ANN, Budget(1.0)).spent == Spend(0.5)
    old = ledger.history(ANN)
    assert [(r["request_id"], r["accounting"], r["rho"]) for r in old] == [("old0", "pure", 0.0), ("old1", "pure", 0.0)]
    ledger.charge(ANN, zcdp(0.001), Budget(1.0, 1e-6, accounting="zcdp"), request_id="new", query_sha256="q")
    again = Ledger.open(**where)
    assert again.migrated == []  # once
    balance = again.balance(ANN, Budget(1.0, 1e-6, accounting="zcdp"))
    assert balance.spent.epsilon == pytest.approx(0.5 + rho_to_epsilon(0.001, 1e-6), abs=1e-12)
    with pytest.raises(Exception):  # the added CHECK holds on the migrated table too
        with again.db.transaction() as tx:
            tx.execute("INSERT INTO dp_ledger (cleanroom, analyst, kind, epsilon_units, delta_units, at, accounting) "
                       "VALUES ('room', 'ann', 'charge', 0, 0, 0, 'bogus')")


def _open_old(where: dict, barrier, results) -> None:
    try:
        barrier.wait(timeout=60)
        results.put(Ledger.open(**where).migrated)
    except BaseException as error:
        results.put(f"error: {error!r}")


def test_workers_opening_an_old_ledger_at_once_migrate_it_once(where):
    _old_ledger(where)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_open_old, args=(where, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert sorted(map(str, outcomes)) == sorted(["['accounting', 'rho_units']", "[]", "[]", "[]"]), outcomes


# -- races ---------------------------------------------------------------------------


def _race(where: dict, rho: float, barrier, results) -> None:
    ledger = Ledger.open(**where)
    budget = Budget(1.0, 1e-6, accounting="zcdp")

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            ledger.charge(ANN, zcdp(rho), budget, request_id=f"{os.getpid()}-{i}", query_sha256="q")
            results.put("charged")
        except BudgetExhausted:
            results.put("refused")
        except BaseException as error:
            results.put(f"error: {error!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.slow
def test_sixteen_clients_race_for_ten_zcdp_charges(where):
    ledger = Ledger.open(**where)
    rho = max_rho(1.0, 1e-6) / 10.5  # ten fit, the eleventh does not
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(16), context.Queue()
    processes = [context.Process(target=_race, args=(where, rho, barrier, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in range(16))
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert outcomes == ["charged"] * 10 + ["refused"] * 6
    balance = ledger.balance(ANN, Budget(1.0, 1e-6, accounting="zcdp"))
    assert balance.queries == 10 and balance.spent.epsilon <= 1.0


# -- the policy key --------------------------------------------------------------------


def _demo_with(tmp_path, **privacy) -> Path:
    data = yaml.safe_load((REPO / "policies" / "demo.yaml").read_text())
    data["privacy"].update(privacy)
    for model in data.get("models", {}).values():  # the copy lies elsewhere: its model files stay where they are
        model["file"] = str(REPO / "policies" / model["file"])
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_policy_accounting_key(tmp_path):
    from gateway.dp.policy import budget_for, describe, query_privacy
    from gateway.policy.loader import load_policy
    from gateway.policy.model import Accounting

    shipped = load_policy(REPO / "policies" / "demo.yaml")
    assert shipped.privacy.accounting is Accounting.PURE
    room = load_policy(_demo_with(tmp_path, accounting="zcdp"))
    assert room.privacy.accounting is Accounting.ZCDP and budget_for(room, "analyst").accounting == "zcdp"
    privacy = query_privacy(room, "analyst", None, frozenset({"purchases"}))
    assert privacy.accounting == "zcdp" and privacy.rho == pytest.approx(room.privacy.epsilon_per_query ** 2 / 2)
    assert "as zCDP (rho" in describe(room.privacy)
    pure = query_privacy(shipped, "analyst", None, frozenset({"purchases"}))
    assert (pure.accounting, pure.rho) == ("pure", 0.0)

    with pytest.raises(PolicyInvalid) as bad:
        load_policy(_demo_with(tmp_path, accounting="renyi"))
    assert "accounting" in "\n".join(bad.value.problems)
    no_delta = yaml.safe_load(_demo_with(tmp_path, accounting="zcdp").read_text())
    no_delta["privacy"]["budget"].pop("delta")
    path = tmp_path / "nodelta.yaml"
    path.write_text(yaml.safe_dump(no_delta, sort_keys=False))
    with pytest.raises(PolicyInvalid) as bad:
        load_policy(path)
    assert "needs a delta > 0" in "\n".join(bad.value.problems)


def test_owner_caps_lower_the_rho_too(tmp_path):
    from gateway.dp.policy import query_privacy
    from gateway.policy.loader import load_policy

    data = yaml.safe_load(_demo_with(tmp_path, accounting="zcdp").read_text())
    data["tables"]["purchases"]["max_epsilon_per_query"] = 0.05
    path = tmp_path / "capped.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    privacy = query_privacy(load_policy(path), "analyst", None, frozenset({"purchases"}))
    assert privacy.epsilon == 0.05 and privacy.rho == pytest.approx(0.05 ** 2 / 2)


# -- through the engine ------------------------------------------------------------------


def test_the_engine_charges_rho_under_zcdp(tmp_path):
    from gateway.engine import QueryRequest
    from tests.roomkit import build_engine, private_table, simple_policy

    columns = {"hh": {"role": "join_key"}, "region": {"role": "dimension", "values": ["n", "s"]},
               "spend": {"role": "measure", "bounds": [0, 50]}}
    policy = simple_policy({"visits": private_table("visits", columns)}, k=5)
    policy["privacy"] = {"epsilon_per_query": 0.5, "accounting": "zcdp", "max_rows_per_unit": 2,
                         "max_groups_per_unit": 1, "budget": {"epsilon": 3.0, "delta": 1e-6}}
    engine = build_engine(tmp_path, policy, [
        "CREATE TABLE visits AS SELECT 'h' || i AS hh, CASE WHEN i < 60 THEN 'n' ELSE 's' END AS region, "
        "i % 50 AS spend FROM range(100) t(i)"])
    try:
        first = engine.run(QueryRequest(user="ana", cleanroom="room",
                                        sql="SELECT region, COUNT(*) FROM visits GROUP BY region"))
        assert first.protection["spent"] == {"epsilon": 0.0, "delta": 0.0, "rho": 0.125}
        balance = engine.budget("ana", "room")
        assert balance["accounting"] == "zcdp" and balance["spent"]["rho"] == 0.125
        assert balance["spent"]["epsilon"] == pytest.approx(rho_to_epsilon(0.125, 1e-6), abs=1e-12)
        rows = engine.context.privacy.ledger.history(Account("room", "ana"))
        assert [(r["accounting"], r["rho"], r["epsilon"]) for r in rows] == [("zcdp", 0.125, 0.0)]
        # (3, 1e-6) holds rho 0.1845...: a second query of 0.125 does not fit
        with pytest.raises(BudgetExhausted):
            engine.run(QueryRequest(user="ana", cleanroom="room",
                                    sql="SELECT region, SUM(spend) FROM visits GROUP BY region"))
    finally:
        engine.close()


# -- the claim: >= 3x the queries at the same median error -----------------------------------


def _demo_privacy() -> dict:
    return yaml.safe_load((REPO / "policies" / "demo.yaml").read_text())["privacy"]


def _count_by_category_quantities(privacy: dict) -> list[tuple[str, int, float]]:
    """(name, L1 sensitivity, L2 sensitivity) of what COUNT(*) ... GROUP BY category
    releases on public keys: the unit count and the row count, over the vector of
    groups a unit may touch (max_groups_per_unit of them)."""
    groups, rows = privacy["max_groups_per_unit"], privacy["max_rows_per_unit"]
    return [("units", groups, math.sqrt(groups)), ("rows", groups * rows, math.sqrt(groups) * rows)]


def test_zcdp_buys_at_least_three_times_the_count_by_category_queries_at_the_same_median_error():
    """Pure: each query spends epsilon_per_query, split over its two noisy vectors;
    OpenDP's Laplace gives each its scale and so its median absolute error. zCDP:
    OpenDP's Gaussian (gateway/dp/gaussian.py) at the sigma with the same median
    absolute error, and the rho OpenDP's map reports for it. The budget (epsilon,
    delta) holds budget/epsilon pure queries and max_rho(budget)/rho zCDP ones."""
    import opendp.prelude as dp

    from gateway.dp import gaussian, mechanisms

    privacy = _demo_privacy()
    epsilon, budget = privacy["epsilon_per_query"], privacy["budget"]
    quantities = _count_by_category_quantities(privacy)
    share = epsilon / len(quantities)
    rho_per_query, noises = 0.0, []
    for name, l1, l2 in quantities:
        laplace = mechanisms.integer_noise(l1, share)
        assert laplace.epsilon <= share
        median_laplace = laplace.scale * math.log(2)  # median |X| of Laplace(b) is b ln 2
        sigma = median_laplace / statistics.NormalDist().inv_cdf(0.75)  # same median |X|
        space = dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T=float)
        rho = float(dp.m.make_gaussian(*space, scale=sigma).map(l2))  # OpenDP's own map
        rho_per_query += rho
        noises.append((name, laplace, gaussian.integer_noise(l2, rho)))
    pure_queries = math.floor(budget["epsilon"] / epsilon + 1e-9)
    zcdp_queries = math.floor(max_rho(budget["epsilon"], budget["delta"]) / rho_per_query)
    assert zcdp_queries >= 3 * pure_queries, (pure_queries, zcdp_queries)

    # ... and checked by running them: 12 categories, 400 releases each, on the demo's vectors
    truth = [1000 * (i + 1) for i in range(12)]
    for name, laplace, gauss in noises:
        assert gauss.rho <= rho_per_query
        errors = {}
        for label, noise in (("laplace", laplace), ("gaussian", gauss)):
            draws = [abs(v - t) for _ in range(400) for v, t in zip(noise.apply(truth), truth)]
            errors[label] = statistics.median(draws)
        assert errors["gaussian"] == pytest.approx(errors["laplace"], rel=0.12), (name, errors)


def test_at_the_policy_rho_zcdp_is_both_cheaper_and_more_accurate():
    """What `accounting: zcdp` actually does with the demo's epsilon_per_query:
    rho = epsilon^2/2 per query; Gaussian sigma = L2 / epsilon' is below the Laplace
    scale L1 / epsilon' whenever a unit may touch more than one group."""
    from gateway.dp import gaussian, mechanisms

    privacy = _demo_privacy()
    epsilon, budget = privacy["epsilon_per_query"], privacy["budget"]
    share_eps = epsilon / 2
    share_rho = query_rho(epsilon) / 2
    for name, l1, l2 in _count_by_category_quantities(privacy):
        laplace, gauss = mechanisms.integer_noise(l1, share_eps), gaussian.integer_noise(l2, share_rho)
        median_laplace = laplace.scale * math.log(2)
        median_gauss = gauss.scale * statistics.NormalDist().inv_cdf(0.75)
        assert median_gauss <= median_laplace, name
    assert math.floor(max_rho(budget["epsilon"], budget["delta"]) / query_rho(epsilon)) >= \
        3 * math.floor(budget["epsilon"] / epsilon + 1e-9)


def test_budget_show_under_zcdp(tmp_path, capsys):
    import json as jsonlib

    from gateway.cli import main
    from gateway.config import load_config

    policy = _demo_with(tmp_path, accounting="zcdp")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"policies: [{policy}]\n"
        "sources:\n"
        "  retail: {kind: duckdb, path: retail.duckdb}\n"
        "  publisher_impressions: {kind: parquet, path: 'impressions/*.parquet'}\n"
        "  region_lookup: {kind: csv, path: regions.csv}\n"
        "state_dir: state\n"
        "users: {}\n"
    )
    ledger = Ledger.from_config(load_config(path))
    budget = Budget(10.0, 1e-5, accounting="zcdp")
    for i in range(100):  # 100 demo queries: rho 0.5 in all
        ledger.charge(Account("demo", "analyst"), zcdp(query_rho(0.1)), budget, request_id=str(i), query_sha256="q")
    assert main(["budget", "show", "--config", str(path), "--json"]) == 0
    (shown,) = jsonlib.loads(capsys.readouterr().out)
    assert shown["accounting"] == "zcdp" and shown["queries"] == 100
    assert shown["spent"]["rho"] == pytest.approx(0.5) and shown["spent"]["epsilon"] == pytest.approx(5.298525912189)
    assert shown["remaining"]["rho"] == pytest.approx(max_rho(10, 1e-5) - 0.5, abs=1e-12)
    assert main(["budget", "show", "--config", str(path)]) == 0
    header, row = capsys.readouterr().out.strip().split("\n")
    assert header.split()[-5:] == ["accounting", "rho", "spent", "rho", "left"]
    assert row.split()[-3:] == ["zcdp", "0.5", "1.050355228575"]
