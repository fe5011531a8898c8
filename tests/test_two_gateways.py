"""Two gateways, one state (issue #13): two gateway instances, each its own processes
(`cleanroom serve` and `cleanroom pg`) with its own config file and local state_dir,
share one PostgreSQL state store (a schema of its own per run), as two hosts behind a
load balancer would. Over both, HTTP and the wire mixed:

- 16 clients, each trying the same 3N distinct DP statements in its own order, against
  a budget for exactly N charges: exactly N statements are released (every client that
  got one got the same numbers), every other attempt is refused with the budget's
  SQLSTATE / HTTP status, and the ledger holds exactly N charges;
- a repeat on the other instance is free and identical;
- a revocation made through one instance is in force on the other at once, and so is
  the approval that follows it;
- `cleanroom audit verify` from either instance checks the chains of both.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.servers import PASSWORD, REPO, HttpGateway, PgServer

pytestmark = [pytest.mark.server, pytest.mark.slow]  # gateways of its own, on the local PostgreSQL (pg_schema)

DEMO_POLICY = REPO / "policies" / "demo.yaml"
N = 6  # charges the budget pays for
EPSILON = 0.1  # per statement: the budget is exactly N of them (the ledger counts in exact units)
CATEGORIES = ["grocery", "dairy", "bakery", "produce", "meat", "frozen", "beverages", "snacks", "household"]
# 3N distinct statements of the same cost (one charge each): region keys are public, no delta.
STATEMENTS = [f"SELECT region, {aggregate} AS value FROM purchases WHERE category = '{category}' GROUP BY region"
              for category in CATEGORIES for aggregate in ("COUNT(*)", "SUM(amount)")][: 3 * N]
APPROVER = "retailer_approver"  # owns purchases: approves (and revokes) the rule


def write_room(folder: Path, demo_config_path: Path, dsn: str) -> tuple[Path, Path]:
    """The policy (the demo's purchases, one aggregation rule, a budget of N statements)
    and two gateway configs over it: same sources and store, their own state_dir."""
    demo = yaml.safe_load(DEMO_POLICY.read_text())
    policy = {
        "cleanroom": "shared",
        "min_group_size": 10,
        "privacy": {**demo["privacy"], "epsilon_per_query": EPSILON,
                    "budget": {"epsilon": N * EPSILON, "delta": 1.0e-5, "refresh": "never"},
                    "profile": {"purchases": demo["privacy"]["profile"]["purchases"]}},  # the one table kept
        "collaborators": demo["collaborators"],
        "tables": {"purchases": demo["tables"]["purchases"]},
        "rules": {"retail": {"tables": ["purchases"], "aggregates": ["count", "count_distinct", "sum", "avg"]}},
        "analysts": {"analyst": {"collaborator": "publisher", "rules": ["retail"]}},
        "members": {APPROVER: {"collaborator": "retailer", "roles": ["approver", "author"]}},
    }
    (folder / "shared.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    base = yaml.safe_load(demo_config_path.read_text())
    configs = []
    for name in ("a", "b"):
        config = {**base, "policies": [str(folder / "shared.yaml")], "state_dir": str(folder / name / "state"),
                  "store": {"postgres_dsn": dsn},
                  "engine": {**base["engine"], "executors": 1},
                  # 8 clients of one analyst on each instance: room above the default of 8 at once
                  "quotas": {"per_analyst": {"concurrent_statements": 32},
                             "per_collaborator": {"concurrent_statements": 32}}}
        (folder / name).mkdir()
        path = folder / name / "gateway.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        configs.append(path)
    return configs[0], configs[1]


class Instance:
    """One gateway: `cleanroom serve` (one worker) and the wire server over one config."""

    def __init__(self, config: Path, name: str):
        self.config, self.name = config, name
        self.servers = []
        self.servers.append(HttpGateway(config, config.parent / "serve.log", workers=1))
        self.servers.append(PgServer(config, config.parent / "pg.log"))
        self.http_port, self.pg_port = self.servers[0].port, self.servers[1].port

    def stop(self) -> list[int]:
        """Stop both (SIGTERM); their exit statuses."""
        for server in self.servers:
            server.stop()
        return [server.process.returncode for server in self.servers]

    # -- clients ---------------------------------------------------------------------------

    def http(self, path: str, body: dict | None = None, token: str = "analyst") -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def ask_http(self, sql: str) -> tuple:
        """("rows", rows) or ("refused", SQLSTATE, rule)."""
        status, body = self.http("/v1/query", {"sql": sql})
        if status == 200:
            return "rows", normalised(body["rows"])
        return "refused", body.get("sqlstate"), body.get("rule"), status

    def wire(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.pg_port, dbname="shared", user="analyst",
                               password=PASSWORD, sslmode="disable", autocommit=True, connect_timeout=30)

    @staticmethod
    def ask_wire(connection, sql: str) -> tuple:
        import psycopg

        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return "rows", normalised(cursor.fetchall())
        except psycopg.Error as error:
            detail = error.diag.message_detail or ""
            status = {"53400": 429, "42501": 403}.get(error.sqlstate)
            return "refused", error.sqlstate, detail.removeprefix("rule: "), status


def normalised(rows) -> tuple:
    """Rows from JSON (lists) or the wire (tuples, Decimals) as one comparable shape."""
    def value(v):
        return float(v) if isinstance(v, Decimal) else v

    return tuple(sorted(tuple(value(v) for v in (row.values() if isinstance(row, dict) else row))
                        for row in rows))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


BUDGET = ("refused", "53400", "privacy.budget", 429)
NOT_APPROVED = ("refused", "42501", "rule.not_approved", 403)


def test_two_gateways_share_one_state(pg_schema, demo_config_path, tmp_path):
    config_a, config_b = write_room(tmp_path, demo_config_path, pg_schema)
    approved = cli("rule", "approve", "retail", "--config", str(config_a), "--token", APPROVER)
    assert approved.returncode == 0, approved.stderr
    instances = []
    try:
        instances += [Instance(config_a, "a"), Instance(config_b, "b")]
        a, b = instances
        check_budget_race(a, b)
        check_repeat_elsewhere(a, b)
        check_approvals(a, b)
    finally:
        statuses = [instance.stop() for instance in instances]
    assert statuses == [[0, 0], [0, 0]]  # both stopped cleanly
    check_audit(config_a, config_b)


def check_budget_race(a: Instance, b: Instance) -> None:
    """16 clients (each instance: 4 over HTTP, 4 over the wire), every one trying all 3N
    statements in its own order, at once."""
    outcomes: dict[str, list[tuple]] = {sql: [] for sql in STATEMENTS}
    lock, start, failures = threading.Lock(), threading.Barrier(16), []

    def client(index: int) -> None:
        instance = (a, b)[index % 2]
        over_wire = (index // 2) % 2 == 1
        order = random.Random(index).sample(STATEMENTS, len(STATEMENTS))
        try:
            connection = instance.wire() if over_wire else None
            start.wait(60)
            for sql in order:
                outcome = instance.ask_wire(connection, sql) if over_wire else instance.ask_http(sql)
                with lock:
                    outcomes[sql].append(outcome)
            if connection is not None:
                connection.close()
        except Exception as error:  # noqa: BLE001 - reported below, with the client that failed
            failures.append(f"client {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures
    released = {sql: seen for sql, seen in outcomes.items() if any(o[0] == "rows" for o in seen)}
    for sql, seen in outcomes.items():
        assert len(seen) == 16
        kinds = set(seen)
        if sql in released:  # every client got the same numbers, on either instance and front end
            assert len(kinds) == 1, (sql, kinds)
        else:
            assert kinds == {BUDGET}, (sql, kinds)
    assert len(released) == N, f"{len(released)} statements released for a budget of {N}"
    for instance in (a, b):
        status, balance = instance.http("/v1/budget")
        assert status == 200 and balance["queries"] == N and balance["remaining"]["epsilon"] == 0, balance


def check_repeat_elsewhere(a: Instance, b: Instance) -> None:
    """What one instance released, the other answers again, identically and for free."""
    status, before = a.http("/v1/budget")
    for sql in STATEMENTS:
        first = a.ask_http(sql)
        with b.wire() as connection:
            again = b.ask_wire(connection, sql)
        assert again == first, sql
    assert b.http("/v1/budget") == (status, before)


def check_approvals(a: Instance, b: Instance) -> None:
    released = next(sql for sql in STATEMENTS if a.ask_http(sql)[0] == "rows")
    answer = a.ask_http(released)
    status, body = a.http("/v1/rules/retail/revoke", {}, token=APPROVER)
    assert status == 200, body
    with b.wire() as connection:  # revoked through a: refused on b at once, a repeat included
        assert b.ask_http(released) == NOT_APPROVED
        assert b.ask_wire(connection, released) == NOT_APPROVED
        assert a.ask_http(released) == NOT_APPROVED
    status, body = b.http("/v1/rules/retail/approve", {}, token=APPROVER)
    assert status == 200, body
    with a.wire() as connection:  # approved again through b: answered on a at once
        assert a.ask_wire(connection, released) == answer
        assert a.ask_http(released) == answer
        assert b.ask_http(released) == answer


def check_audit(config_a: Path, config_b: Path) -> None:
    """Every statement of both instances is in a chain, and verify from either host checks
    all of them: its own chain files, and the other's through their copies in PostgreSQL."""
    statements = 16 * len(STATEMENTS)
    for config in (config_a, config_b):
        result = cli("audit", "verify", "--config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        last = result.stdout.strip().splitlines()[-1]
        assert last.startswith("audit: ok ("), last
        chains, records = (int(part.split()[0]) for part in last.removeprefix("audit: ok (").rstrip(")").split(", "))
        assert chains >= 4  # a's HTTP worker and wire server, b's too
        assert records >= statements


def test_a_measurement_is_paid_once_however_many_statements_race_for_it(tmp_path):
    """The ledger's side of the race above, without servers: statements for one measurement
    racing from 8 threads pay once, with a budget for one; another measurement is then
    refused; after a reset the same measurement is paid again (its earlier payment is forgiven)."""
    from gateway.dp.ledger import Account, Budget, Ledger, Spend
    from gateway.errors import BudgetExhausted

    ledger, account, budget = Ledger.open(tmp_path / "ledger.sqlite"), Account("room", "ann"), Budget(0.1)
    start, paid = threading.Barrier(8), []

    def statement(index: int) -> None:
        start.wait(30)
        paid.append(ledger.charge_once(account, Spend(0.1), budget, request_id=f"r{index}", query_sha256="m1"))

    threads = [threading.Thread(target=statement, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(paid) == [False] * 7 + [True]
    assert ledger.balance(account, budget).queries == 1
    with pytest.raises(BudgetExhausted):
        ledger.charge_once(account, Spend(0.1), budget, request_id="other", query_sha256="m2")
    ledger.reset(account, by="operator")
    assert ledger.charge_once(account, Spend(0.1), budget, request_id="again", query_sha256="m1")
