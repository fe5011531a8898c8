"""The privacy budget ledger: exact sums, refusals that write nothing, refresh
periods, resets, races between processes and threads, kill -9, and the
`cleanroom budget` commands. Every ledger test runs on SQLite and PostgreSQL
(skipped with the reason when 127.0.0.1:5432 is not reachable)."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

from gateway.dp.ledger import Account, Budget, Ledger, Spend, budget_units, cost_units, period_start
from gateway.errors import BudgetExhausted

REPO = Path(__file__).resolve().parent.parent
ANN = Account("room", "ann")
UTC = dt.timezone.utc


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def charges(ledger: Ledger, account: Account = ANN) -> list[dict]:
    return [row for row in ledger.history(account) if row["kind"] == "charge"]


# -- amounts ---------------------------------------------------------------------


def test_units_round_costs_up_and_budgets_down():
    assert cost_units(Spend(0.1)) == (10**11, 0)
    assert budget_units(Budget(1.0)) == (10**12, 0)
    assert cost_units(Spend(1 / 3)) == (333_333_333_334, 0)  # up
    assert budget_units(Budget(1 / 3)) == (333_333_333_333, 0)  # down
    assert cost_units(Spend(0.5, 1e-9)) == (5 * 10**11, 10**9)
    assert cost_units(Spend(0, 1e-30)) == (0, 1)  # below one unit still costs one
    assert budget_units(Budget(0.3))[0] == 3 * 10**11  # 0.3 as written, not 0.29999...
    for bad in (Spend(-0.1), Spend(float("nan")), Spend(float("inf")), Spend(0.1, 2.0)):
        with pytest.raises(ValueError):
            cost_units(bad)
    with pytest.raises(ValueError):
        Budget(1.0, refresh="hourly")


def test_ten_tenths_fill_a_budget_of_one_exactly(where):
    ledger = Ledger.open(**where)
    budget = Budget(1.0)
    for i in range(10):
        balance = ledger.charge(ANN, Spend(0.1), budget, request_id=f"r{i}", query_sha256="q")
        assert balance.queries == i + 1
    assert (balance.spent, balance.remaining) == (Spend(1.0), Spend(0.0))
    assert ledger.balance(ANN, budget) == balance
    with pytest.raises(BudgetExhausted) as refused:
        ledger.charge(ANN, Spend(0.1), budget, request_id="r10", query_sha256="q")
    error = refused.value
    assert (error.sqlstate, error.http_status, error.rule) == ("53400", 429, "privacy.budget")
    assert "costs epsilon 0.1" in error.message and "epsilon 0 left of epsilon 1" in error.message
    assert "delta" not in error.message  # pure epsilon-DP budget: no delta talk
    assert "cleanroom budget show --cleanroom room --analyst ann" in error.hint
    assert "does not renew" in error.hint
    assert [c["request_id"] for c in charges(ledger)] == [f"r{i}" for i in range(10)]
    # A query that costs nothing still fits an exhausted budget.
    assert ledger.charge(ANN, Spend(0.0), budget, request_id="free", query_sha256="q").queries == 11


def test_refusal_writes_nothing_and_smaller_charges_still_fit(where):
    ledger = Ledger.open(**where)
    budget = Budget(1.0, delta=1e-6)
    ledger.charge(ANN, Spend(0.7, 4e-7), budget, request_id="a", query_sha256="qa")
    with pytest.raises(BudgetExhausted, match=r"costs epsilon 0.5, delta 0.0000001.*epsilon 0.3, delta 0.0000006 left"):
        ledger.charge(ANN, Spend(0.5, 1e-7), budget, request_id="b", query_sha256="qb")
    with pytest.raises(BudgetExhausted):  # epsilon fits, delta does not
        ledger.charge(ANN, Spend(0.1, 7e-7), budget, request_id="c", query_sha256="qc")
    assert [c["request_id"] for c in charges(ledger)] == ["a"]
    balance = ledger.charge(ANN, Spend(0.3, 6e-7), budget, request_id="d", query_sha256="qd")
    assert balance.spent == Spend(1.0, 1e-6) and balance.remaining == Spend(0.0, 0.0) and balance.queries == 2
    history = charges(ledger)
    assert [(c["request_id"], c["query_sha256"], c["epsilon"], c["delta"]) for c in history] == [
        ("a", "qa", 0.7, 4e-7), ("d", "qd", 0.3, 6e-7)]
    # Accounts are separate: another analyst, or the same name in another room, starts at zero.
    for other in (Account("room", "bob"), Account("other", "ann")):
        assert ledger.balance(other, budget).queries == 0
        ledger.charge(other, Spend(1.0), budget, request_id="x", query_sha256="q")


def test_refresh_periods_follow_the_utc_calendar(where):
    now = [at(2026, 3, 10, 23, 59, 59)]  # a Tuesday
    ledger = Ledger.open(**where, clock=lambda: now[0])
    daily, weekly, monthly, never = (Budget(1.0, refresh=r) for r in ("daily", "weekly", "monthly", "never"))
    accounts = {b.refresh: Account("room", b.refresh) for b in (daily, weekly, monthly, never)}
    for budget in (daily, weekly, monthly, never):
        ledger.charge(accounts[budget.refresh], Spend(1.0), budget, request_id="1", query_sha256="q")
        with pytest.raises(BudgetExhausted):
            ledger.charge(accounts[budget.refresh], Spend(0.1), budget, request_id="2", query_sha256="q")

    balance = ledger.balance(accounts["daily"], daily)
    assert balance.period_start == at(2026, 3, 10) and balance.renews_at == at(2026, 3, 11)
    assert ledger.balance(accounts["weekly"], weekly).period_start == at(2026, 3, 9)  # Monday
    assert ledger.balance(accounts["monthly"], monthly).renews_at == at(2026, 4, 1)
    assert ledger.balance(accounts["never"], never).period_start is None

    with pytest.raises(BudgetExhausted) as refused:
        ledger.charge(accounts["daily"], Spend(0.1), daily, request_id="3", query_sha256="q")
    assert "renews daily at 2026-03-11 00:00 UTC" in refused.value.hint

    now[0] = at(2026, 3, 11)  # midnight: a new day, same week and month
    assert ledger.balance(accounts["daily"], daily).spent == Spend(0.0)
    assert ledger.balance(accounts["weekly"], weekly).spent == Spend(1.0)
    ledger.charge(accounts["daily"], Spend(1.0), daily, request_id="4", query_sha256="q")

    now[0] = at(2026, 3, 16, 0, 0, 1)  # next Monday
    assert ledger.balance(accounts["weekly"], weekly).remaining == Spend(1.0)
    assert ledger.balance(accounts["monthly"], monthly).remaining == Spend(0.0)

    now[0] = at(2026, 4, 1)
    assert ledger.balance(accounts["monthly"], monthly).queries == 0
    never_balance = ledger.balance(accounts["never"], never)
    assert (never_balance.spent, never_balance.queries) == (Spend(1.0), 1)

    now[0] = at(2027, 12, 31, 12)
    assert ledger.balance(accounts["never"], never).remaining == Spend(0.0)
    assert ledger.balance(accounts["monthly"], monthly).renews_at == at(2028, 1, 1)


def test_period_start_accepts_naive_and_other_zones():
    cet = dt.timezone(dt.timedelta(hours=1))
    assert period_start("daily", dt.datetime(2026, 3, 11, 0, 30, tzinfo=cet)) == at(2026, 3, 10)
    assert period_start("monthly", dt.datetime(2026, 3, 1, 5)) == at(2026, 3, 1)  # naive: UTC
    assert period_start("weekly", at(2026, 3, 9)) == at(2026, 3, 9)


def test_reset_forgives_past_charges_and_deletes_nothing(where):
    now = [at(2026, 5, 20, 12)]
    ledger = Ledger.open(**where, clock=lambda: now[0])
    budget = Budget(1.0, refresh="monthly")
    for i in range(4):
        ledger.charge(ANN, Spend(0.25), budget, request_id=f"r{i}", query_sha256="q")
    with pytest.raises(BudgetExhausted):
        ledger.charge(ANN, Spend(0.25), budget, request_id="r4", query_sha256="q")
    with pytest.raises(ValueError):
        ledger.reset(ANN, by="")
    ledger.reset(ANN, by="operator:alice", reason="demo day")
    balance = ledger.balance(ANN, budget)
    assert (balance.spent, balance.queries) == (Spend(0.0), 0)
    ledger.charge(ANN, Spend(0.25), budget, request_id="r5", query_sha256="q")
    history = ledger.history(ANN)
    assert [r["kind"] for r in history] == ["charge"] * 4 + ["reset", "charge"]
    assert history[4]["actor"] == "operator:alice" and history[4]["reason"] == "demo day"
    assert ledger.history(ANN, limit=2) == history[-2:]
    assert ledger.balance(Account("room", "bob"), budget).queries == 0  # bob untouched
    now[0] = at(2026, 6, 1)  # the reset lies in an earlier period: the period alone decides
    assert ledger.balance(ANN, budget).queries == 0
    ledger.charge(ANN, Spend(1.0), budget, request_id="r6", query_sha256="q")
    assert ledger.balance(ANN, budget).remaining == Spend(0.0)


def test_from_config_uses_state_dir_or_the_dsn(tmp_path, where):
    config = types.SimpleNamespace(state_dir=tmp_path / "state",
                                   store=types.SimpleNamespace(postgres_dsn=where.get("postgres_dsn")))
    ledger = Ledger.from_config(config)
    ledger.charge(ANN, Spend(0.5), Budget(1.0), request_id="r", query_sha256="q")
    if "sqlite_path" in where:
        assert ledger.db.kind == "sqlite" and (tmp_path / "state" / "ledger.sqlite").is_file()
        with sqlite3.connect(tmp_path / "state" / "ledger.sqlite") as con:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        assert ledger.db.kind == "postgres"
    assert Ledger.from_config(config).balance(ANN, Budget(1.0)).spent == Spend(0.5)  # a restart


# -- races -----------------------------------------------------------------------

PROCESSES, THREADS = 4, 4


def _race(where: dict, barrier, results) -> None:
    """One OS process: THREADS threads each try to charge 0.1 at the same moment."""
    ledger = Ledger.open(**where)

    def one(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            ledger.charge(ANN, Spend(0.1), Budget(1.0), request_id=f"{os.getpid()}-{i}", query_sha256="q")
            results.put("charged")
        except BudgetExhausted:
            results.put("refused")
        except BaseException as error:  # reported, so the parent shows it
            results.put(f"error: {error!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_sixteen_clients_in_four_processes_race_for_ten_charges(where):
    ledger = Ledger.open(**where)  # tables exist before the race
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES * THREADS)
    results = context.Queue()
    processes = [context.Process(target=_race, args=(where, barrier, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=120) for _ in range(PROCESSES * THREADS))
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert outcomes == ["charged"] * 10 + ["refused"] * 6
    balance = ledger.balance(ANN, Budget(1.0))
    assert (balance.queries, balance.spent, balance.remaining) == (10, Spend(1.0), Spend(0.0))
    assert len(charges(ledger)) == 10


# -- kill -9 ---------------------------------------------------------------------

_CHARGER = """
import sys
from gateway.dp.ledger import Account, Budget, Ledger, Spend
ledger = Ledger.open(**{sys.argv[1]: sys.argv[2]})
i = 0
while True:
    ledger.charge(Account("room", "ann"), Spend(0.001), Budget(1e6), request_id=f"r{i}", query_sha256="q")
    sys.stdout.write(f"r{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_kill_9_loses_no_reported_charge(where):
    Ledger.open(**where)
    (key, value), = where.items()
    child = subprocess.Popen([sys.executable, "-c", _CHARGER, key, value], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    reported = []
    try:
        for line in child.stdout:
            reported.append(line.decode().strip())
            if len(reported) == 40:
                os.kill(child.pid, signal.SIGKILL)  # most likely in the middle of the next charge
                break
        rest, errors = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert len(reported) == 40, errors.decode()[-2000:]
    reported += [line for line in rest.decode().split("\n")[:-1]]  # complete lines written before it died
    assert child.returncode == -signal.SIGKILL

    ledger = Ledger.open(**where)  # a restart, on the same file or database
    stored = [c["request_id"] for c in charges(ledger)]
    assert stored[: len(reported)] == reported  # every reported charge is there, in order
    assert len(stored) - len(reported) in (0, 1)  # at most one committed but not reported
    balance = ledger.charge(ANN, Spend(0.001), Budget(1e6), request_id="after", query_sha256="q")
    assert balance.queries == len(stored) + 1
    assert balance.spent.epsilon == pytest.approx(0.001 * balance.queries)
    if "sqlite_path" in where:
        with sqlite3.connect(where["sqlite_path"]) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- cleanroom budget show|reset -------------------------------------------------


@pytest.fixture
def cli_config(tmp_path, monkeypatch) -> Path:
    """A config with the demo policy whose analyst has a monthly budget of 1.0
    (budgets_for stubbed: the policy's privacy section is not this test's subject)."""
    budgets = {"analyst": Budget(1.0, refresh="monthly"), "zed": Budget(2.0)}
    monkeypatch.setattr("gateway.cli.dp.budgets_for", lambda room: budgets)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"policies: [{REPO / 'policies' / 'demo.yaml'}]\n"
        "sources:\n"
        "  retail: {kind: duckdb, path: retail.duckdb}\n"
        "  publisher_impressions: {kind: parquet, path: 'impressions/*.parquet'}\n"
        "  region_lookup: {kind: csv, path: regions.csv}\n"
        "state_dir: state\n"
        "users:\n"
        "  analyst: {token_sha256: f44ceb062e35dfeea6ed7f8524d53bb0bff19f553e25cae7ef4850e4185ccbba}\n"
    )
    return path


@pytest.mark.slow
def test_budget_show_and_reset(cli_config, capsys):
    from gateway.cli import main
    from gateway.config import load_config

    ledger = Ledger.from_config(load_config(cli_config))
    analyst = Account("demo", "analyst")
    for i in range(3):
        ledger.charge(analyst, Spend(0.25), Budget(1.0, refresh="monthly"), request_id=f"r{i}", query_sha256="q")

    assert main(["budget", "show", "--config", str(cli_config), "--json"]) == 0
    shown = {b["analyst"]: b for b in json.loads(capsys.readouterr().out)}
    assert set(shown) == {"analyst", "zed"}
    assert shown["analyst"]["spent"] == {"epsilon": 0.75, "delta": 0.0}
    assert shown["analyst"]["remaining"]["epsilon"] == 0.25 and shown["analyst"]["queries"] == 3
    assert shown["analyst"]["refresh"] == "monthly" and shown["analyst"]["renews_at"]
    assert shown["zed"]["queries"] == 0 and shown["zed"]["renews_at"] is None

    assert main(["budget", "show", "--config", str(cli_config), "--cleanroom", "demo", "--analyst", "analyst"]) == 0
    header, row = capsys.readouterr().out.strip().split("\n")
    assert header.split()[:5] == ["cleanroom", "analyst", "epsilon", "spent", "remaining"]
    assert row.split()[:5] == ["demo", "analyst", "1.0", "0.75", "0.25"] and " monthly " in row

    assert main(["budget", "reset", "--config", str(cli_config), "--analyst", "analyst",  # the only room
                 "--reason", "new quarter"]) == 0
    assert "reset the privacy budget of 'analyst'" in capsys.readouterr().out
    assert ledger.balance(analyst, Budget(1.0, refresh="monthly")).queries == 0
    reset_row = ledger.history(analyst)[-1]
    assert reset_row["kind"] == "reset" and reset_row["reason"] == "new quarter"
    assert reset_row["actor"].startswith("operator")

    assert main(["budget", "reset", "--config", str(cli_config), "--cleanroom", "demo", "--analyst", "nobody"]) == 2
    assert "no privacy budget" in capsys.readouterr().err
    assert main(["budget", "show", "--config", str(cli_config), "--cleanroom", "nowhere"]) == 2
    assert "no clean room 'nowhere'" in capsys.readouterr().err
