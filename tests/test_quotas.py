"""Per-analyst and per-collaborator quotas (issue 18), refused with SQLSTATE 53400 /
HTTP 429 and a time to retry before anything is charged. All real: lock files and
SQLite under a state_dir, other processes holding slots (and dying), PostgreSQL
shared by two gateways, gunicorn and the wire server over one config; a statement
is held running by a slow join watched through the metrics, not by sleeping."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pytest
import yaml

from gateway.config import load_config
from gateway.engine import QueryRequest
from gateway.errors import PolicyInvalid, QuotaExceeded
from gateway.policy.loader import load_policy
from gateway.quotas.limits import HostQuotas, Limits, analyst_limits, collaborator_limits
from gateway.quotas.service import QuotaService
from gateway.quotas.slots import SlotDirectory
from gateway.quotas.usage import UsageStore
from tests.roomkit import approve_config, build_engine, private_table, simple_policy
from tests.servers import HttpGateway, PgServer

REPO = Path(__file__).resolve().parent.parent
COLUMNS = {"hh": {"role": "join_key"}, "g": {"role": "dimension"}}
SMALL = "CREATE TABLE t AS SELECT 'h' || (i % 40) AS hh, i % 3 AS g FROM range(600) t(i)"
QUERY = "SELECT g, count(*) AS n FROM t GROUP BY g"


class Clock:
    now = 1_800_000_000.0  # on a minute boundary; tests move it

    def __call__(self) -> float:
        return self.now


def policy(quotas: dict | None = None, analysts: dict | None = None, name: str = "room") -> dict:
    room = simple_policy({"t": private_table("t", COLUMNS)}, k=2)
    room["cleanroom"] = name
    room["collaborators"] = {"a": {}, "b": {}, "c": {}}
    room["analysts"] = analysts or {"ana": {"collaborator": "a", "rules": ["agg"]},
                                    "ann": {"collaborator": "a", "rules": ["agg"]},
                                    "bob": {"collaborator": "b", "rules": ["agg"]}}
    if quotas is not None:
        room["quotas"] = quotas
    return room


def write_policy(folder: Path, room: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{room['cleanroom']}.yaml"
    path.write_text(yaml.safe_dump(room, sort_keys=False))
    return path


def service(tmp_path: Path, clock: Clock, host: HostQuotas = HostQuotas()) -> QuotaService:
    state = tmp_path / "state" / "quotas"
    usage = UsageStore(sqlite_path=state / "usage.sqlite", clock=clock)
    return QuotaService(host, usage, SlotDirectory(state / "slots"), clock)


def refused(call) -> QuotaExceeded:
    with pytest.raises(QuotaExceeded) as info:
        call()
    assert ((error := info.value).sqlstate, error.http_status) == ("53400", 429)
    assert error.retry_after >= 1 and f"retry in {error.retry_after} s" in error.hint
    return error


# -- policy and config --------------------------------------------------------------------------------


def test_limits_combine_analyst_room_and_operator_levels_and_the_operator_caps_them(tmp_path):
    room = load_policy(write_policy(tmp_path, policy({
        "per_analyst": {"concurrent_statements": 2, "statements_per_minute": 30},
        "per_collaborator": {"engine_seconds_per_hour": 100},
        "analysts": {"ann": {"statements_per_minute": 90, "concurrent_statements": 50}},
        "collaborators": {"b": {"concurrent_statements": 3}},
    })))
    host = HostQuotas(Limits(8, 60, 3600.0), Limits(16, 6000, 7200.0))
    assert analyst_limits(host, room, "ana") == Limits(2, 30, 3600.0)  # room default, operator's seconds
    assert analyst_limits(host, room, "ann") == Limits(8, 60, 3600.0)  # asked for more than the operator allows
    assert collaborator_limits(host, room, "a") == Limits(16, 6000, 100.0)
    assert collaborator_limits(host, room, "b") == Limits(3, 6000, 100.0)
    assert analyst_limits(HostQuotas(), load_policy(write_policy(tmp_path / "none", policy())), "ana") == \
        Limits(8, 3000, 3600.0)  # the built-in defaults


def test_quota_mistakes_in_a_policy_are_located(tmp_path):
    path = write_policy(tmp_path, policy({
        "per_analyst": {"concurrent_statements": 0, "statements_per_minutes": 5},
        "analysts": {"anna": {"statements_per_minute": 5}},
        "collaborators": {"zed": {"engine_seconds_per_hour": -1}},
    }))
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    problems = "\n".join(info.value.problems)
    assert re.search(r"room\.yaml:\d+:\d+: quotas\.per_analyst\.concurrent_statements: .*1", problems)
    assert re.search(r"room\.yaml:\d+:\d+: quotas\.per_analyst.*statements_per_minutes", problems)
    assert re.search(r"room\.yaml:\d+:\d+: quotas\.analysts\.anna: unknown analyst 'anna' \(declared: ana, ann, bob\)",
                     problems)
    assert re.search(r"room\.yaml:\d+:\d+: quotas\.collaborators\.zed: unknown collaborator 'zed'", problems)
    assert re.search(r"room\.yaml:\d+:\d+: quotas\.collaborators\.zed\.engine_seconds_per_hour", problems)


def test_config_quotas_and_operators(tmp_path):
    room = write_policy(tmp_path, policy())
    base = {"policies": [str(room)], "sources": {}, "users": {"ops": {"token_sha256": "0" * 64}}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({**base, "operators": ["ops"],
                                    "quotas": {"per_analyst": {"concurrent_statements": 3}}}))
    config = load_config(path)
    assert config.operators == ("ops",)
    assert config.quotas.per_analyst == Limits(3, 3000, 3600.0)
    assert config.quotas.per_collaborator == Limits(16, 6000, 7200.0)
    path.write_text(yaml.safe_dump({**base, "operators": ["root"],
                                    "quotas": {"per_analyst": {"statements_per_minute": "many"}}}))
    with pytest.raises(PolicyInvalid) as info:
        load_config(path)
    problems = "\n".join(info.value.problems)
    assert re.search(r"gateway\.yaml:\d+:\d+: operators\[0\]: unknown user 'root' \(declared: ops\)", problems)
    assert re.search(r"gateway\.yaml:\d+:\d+: quotas\.per_analyst\.statements_per_minute", problems)


# -- windows, with a clock the test moves ------------------------------------------------------------


def test_rate_is_refused_at_its_limit_until_the_oldest_statement_leaves_the_minute(tmp_path):
    clock = Clock()
    room = load_policy(write_policy(tmp_path, policy({"per_analyst": {"statements_per_minute": 3}})))
    quotas = service(tmp_path, clock)
    for step in (0.0, 10.0, 20.0):
        clock.now += step
        quotas.admit(room, "ana", "a").close()
    clock.now += 5  # 35 s after the first
    error = refused(lambda: quotas.admit(room, "ana", "a"))
    assert error.rule == "quota.rate" and error.retry_after == 25  # the first leaves at +60 s
    assert "analyst ana has run the 3 statements allowed per minute" == error.message
    quotas.admit(room, "bob", "b").close()  # another analyst is not touched
    quotas.admit(room, "ann", "a").close()  # nor another of the same collaborator (its own limit is far)
    clock.now += 24
    refused(lambda: quotas.admit(room, "ana", "a"))
    clock.now += 1
    quotas.admit(room, "ana", "a").close()
    usage = quotas.usage.usage(["analyst:ana", "collaborator:room:a"], clock())
    assert usage["analyst:ana"].statements_last_minute == 3  # +10, +20 and now: the first has left
    assert usage["analyst:ana"].refusals == {"quota.rate": 2}
    assert usage["collaborator:room:a"].statements_last_minute == 4  # ann's too


def test_collaborator_rate_counts_all_its_analysts(tmp_path):
    clock = Clock()
    room = load_policy(write_policy(tmp_path, policy({"collaborators": {"a": {"statements_per_minute": 2}}})))
    quotas = service(tmp_path, clock)
    quotas.admit(room, "ana", "a").close()
    quotas.admit(room, "ann", "a").close()
    error = refused(lambda: quotas.admit(room, "ann", "a"))
    assert error.message == "collaborator a's analysts have run the 2 statements allowed per minute"
    quotas.admit(room, "bob", "b").close()


def test_engine_seconds_refuse_once_used_up_without_saying_how_many(tmp_path):
    clock = Clock()
    room = load_policy(write_policy(tmp_path, policy({"per_analyst": {"engine_seconds_per_hour": 10}})))
    quotas = service(tmp_path, clock)
    first = quotas.admit(room, "ana", "a")
    first.used(4.25)
    first.close()
    clock.now += 600  # ten minutes later
    second = quotas.admit(room, "ana", "a")
    second.used(6.5)  # 10.75 in the hour: the next one is refused
    second.close()
    clock.now += 30
    error = refused(lambda: quotas.admit(room, "ana", "a"))
    assert error.rule == "quota.engine_seconds"
    assert error.message == "analyst ana has used the 10 engine seconds allowed per hour"  # not 10.75
    assert error.retry_after == 3600 - 630  # when the first minute leaves the hour, 6.5 < 10 remain
    quotas.admit(room, "bob", "b").close()
    clock.now += error.retry_after
    quotas.admit(room, "ana", "a").close()
    for bad in (float("nan"), -1.0, float("inf")):  # ignored, never counted as negative time
        quotas.admit(room, "bob", "b").used(bad)
    assert quotas.usage.usage(["analyst:bob"], clock())["analyst:bob"].engine_seconds_last_hour == 0
    padded = quotas.admit(room, "bob", "b")  # a padded answer counts the padding step it reached: 0.5 and 30
    padded.count_on_ladder(0.25, 30.0), padded.used(0.3), padded.used(100.0), padded.close()
    assert quotas.usage.usage(["analyst:bob"], clock())["analyst:bob"].engine_seconds_last_hour == 30.5


def test_leases_never_admit_more_than_the_limit_across_processes(tmp_path):
    """At 600 a minute a process leases up to ten statements at once; four processes racing admit exactly
    the limit, and the database counts exactly what was admitted (unused leases are given back)."""
    config = gateway_config(tmp_path, policy({"per_analyst": {"statements_per_minute": 600}}), users=())
    script = (
        "import sys\n"
        "from gateway.config import load_config\nfrom gateway.policy.loader import load_policy\n"
        "from gateway.errors import QuotaExceeded\nfrom gateway.quotas.service import QuotaService\n"
        "config = load_config(sys.argv[1]); room = load_policy(config.policies[0])\n"
        "quotas = QuotaService.from_config(config); admitted = 0\n"
        "for _ in range(400):\n"
        "    try:\n        quotas.admit(room, 'ana', 'a').close(); admitted += 1\n"
        "    except QuotaExceeded:\n        pass\n"
        "print(admitted)\n"
    )
    racers = [subprocess.Popen([sys.executable, "-c", script, str(config)], cwd=REPO, stdout=subprocess.PIPE, text=True)
              for _ in range(4)]
    admitted = [int(racer.communicate(timeout=120)[0]) for racer in racers]
    # Never more than the limit. Fewer only by what another racer still held in a lease when
    # one finished its loop (at most a lease of 10 per racer still running).
    assert 600 - 30 <= sum(admitted) <= 600, admitted
    store = UsageStore(sqlite_path=tmp_path / "state" / "quotas" / "usage.sqlite")
    assert store.usage(["analyst:ana"], time.time())["analyst:ana"].statements_last_minute == sum(admitted)


# -- concurrency: lock files, other processes, crashes, forks ------------------------------------------

HOLDER = (
    "import sys\n"
    "from gateway.config import load_config\nfrom gateway.policy.loader import load_policy\n"
    "from gateway.quotas.service import QuotaService\n"
    "config = load_config(sys.argv[1]); room = load_policy(config.policies[0])\n"
    "admission = QuotaService.from_config(config).admit(room, sys.argv[2], room.analysts[sys.argv[2]].collaborator)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_a_slot_held_by_another_process_refuses_and_is_freed_when_that_process_is_killed(tmp_path):
    config = gateway_config(tmp_path, policy({"per_analyst": {"concurrent_statements": 1}}), users=())
    room, quotas = load_policy(load_config(config).policies[0]), QuotaService.from_config(load_config(config))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(config), "ana"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        error = refused(lambda: quotas.admit(room, "ana", "a"))
        assert error.rule == "quota.concurrent" and error.retry_after == 1
        assert error.message == "analyst ana already has 1 statement running, the most allowed at once"
        assert quotas.slots.running("analyst:ana") == 1  # seen in the kernel's lock table, not taken
        quotas.admit(room, "bob", "b").close()
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup of its own: the kernel drops its locks
        holder.wait(10)
    admission = quotas.admit(room, "ana", "a")
    refused(lambda: quotas.admit(room, "ana", "a"))  # the same process: threads exclude each other too
    admission.close()
    admission.close()  # idempotent
    quotas.admit(room, "ana", "a").close()
    assert quotas.slots.running("analyst:ana") == 0


FORKING_HOLDER = HOLDER.replace(
    "print('held', flush=True)\n",
    "import os, time\n"
    "child = os.fork()\n"
    "if child == 0:\n    admission.close()\n    time.sleep(120)\n    os._exit(0)\n"
    "print('held', child, flush=True)\n",
)


def test_a_forked_child_does_not_keep_a_dead_parents_slot(tmp_path):
    """A process holding a slot forks (as a server may, mid-statement) and is killed; its child lives on.
    The slot is free: the child closed its copies at the fork, and its close() gave nothing back."""
    config = gateway_config(tmp_path, policy({"per_analyst": {"concurrent_statements": 1}}), users=())
    room, quotas = load_policy(load_config(config).policies[0]), QuotaService.from_config(load_config(config))
    holder = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER, str(config), "ana"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    word, child = holder.stdout.readline().split()
    try:
        assert word == "held"
        refused(lambda: quotas.admit(room, "ana", "a"))  # the child's close() did not free the parent's slot
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        assert Path(f"/proc/{child}").exists()  # the child is still alive
        quotas.admit(room, "ana", "a").close()
    finally:
        os.kill(int(child), signal.SIGKILL)


def test_an_admission_dropped_without_close_gives_its_slots_back(tmp_path):
    room = load_policy(write_policy(tmp_path, policy({"per_analyst": {"concurrent_statements": 1}})))
    quotas = service(tmp_path, Clock())
    admission = quotas.admit(room, "ana", "a")
    refused(lambda: quotas.admit(room, "ana", "a"))
    del admission
    quotas.admit(room, "ana", "a").close()


# -- through the front ends: gunicorn and the wire server over one state_dir ------------------------------

BIG = "CREATE TABLE {name} AS SELECT 'h1' AS hh FROM range(200000) t(i)"  # every row joins every row
SLOW = "SELECT count(*) FROM big1 JOIN big2 ON big1.hh = big2.hh"  # 4e10 pairs: runs until cancelled
USERS = ("rate_user", "slow_user", "peer_user", "sec_user", "bob", "ops")


def gateway_config(tmp_path: Path, room: dict, users=USERS, extra_rooms=(), **settings) -> Path:
    """A config over real files: the policies, a DuckDB file with `t` (and the slow
    join's tables), users whose token and password are their names, approved rules."""
    from gateway.pgwire.scram import make_verifier

    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(data / "room.duckdb")) as con:
        for statement in (SMALL, BIG.format(name="big1"), BIG.format(name="big2")):
            con.execute(statement)
    config = {
        "policies": [str(write_policy(tmp_path / "policies", r)) for r in (room, *extra_rooms)],
        "sources": {"room": {"kind": "duckdb", "path": str(data / "room.duckdb")}},
        "engine": {"threads": 1, "memory_limit": "1GB", "query_timeout_seconds": 60, "data_roots": [str(data)]},
        "state_dir": str(tmp_path / "state"),
        "users": {name: {"token_sha256": hashlib.sha256(name.encode()).hexdigest(),
                         "scram_sha256": make_verifier(name, iterations=4096)} for name in users},
        **settings,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    approve_config(path)
    return path


def served_room(name: str, rate_user_collaborator: str) -> dict:
    room = policy({
        "per_analyst": {"concurrent_statements": 1},
        "analysts": {"rate_user": {"statements_per_minute": 3}, "sec_user": {"engine_seconds_per_hour": 5}},
        "collaborators": {"c": {"concurrent_statements": 1}},
    }, analysts={
        "rate_user": {"collaborator": rate_user_collaborator, "rules": ["agg"]},
        "slow_user": {"collaborator": "c", "rules": ["agg", "slow"]},
        "peer_user": {"collaborator": "c", "rules": ["agg"]},
        "sec_user": {"collaborator": "a", "rules": ["agg"]},
        "bob": {"collaborator": "b", "rules": ["agg"]},
    }, name=name)
    room["tables"].update({big: private_table(big, {"hh": {"role": "join_key"}}) for big in ("big1", "big2")})
    room["rules"]["slow"] = {"tables": ["big1", "big2"], "aggregates": ["count"], "joins": [["big1.hh", "big2.hh"]]}
    return room


class Gateway:
    def __init__(self, tmp_path: Path):
        # rate_user works for collaborator a in `room` and for b in `room2`: neither escapes its count
        self.config = gateway_config(tmp_path, served_room("room", "a"), extra_rooms=[served_room("room2", "b")],
                                     operators=["ops"])
        self.state = tmp_path / "state"
        self.servers = [HttpGateway(self.config, tmp_path / "http.log", own_group=True)]
        try:
            self.servers.append(PgServer(self.config, tmp_path / "wire.log", workers=2, own_group=True))
        except BaseException:
            self.stop()
            raise
        self.http, self.wire_port = self.servers[0].url, self.servers[1].port

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def post(self, user: str, sql: str = QUERY, cleanroom: str = "room") -> tuple[int, dict, dict]:
        request = urllib.request.Request(self.http + "/v1/query", method="POST",
                                         data=json.dumps({"sql": sql, "cleanroom": cleanroom}).encode(),
                                         headers={"Authorization": f"Bearer {user}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error), dict(error.headers)

    def metrics(self, user: str = "ops") -> tuple[int, str, str]:
        request = urllib.request.Request(self.http + "/v1/metrics", headers={"Authorization": f"Bearer {user}"}
                                         if user else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    def sample(self, line_start: str) -> float:
        status, _, text = self.metrics()
        assert status == 200
        found = [line for line in text.splitlines() if line.startswith(line_start + " ")]
        assert len(found) == 1, (line_start, text)
        return float(found[0].rsplit(" ", 1)[1])

    def wait_for(self, line_start: str, value: float, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.sample(line_start) != value:
            assert time.monotonic() < deadline, f"{line_start} never reached {value}"
            time.sleep(0.05)

    def wire(self, user: str, cleanroom: str = "room", password: str | None = None):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.wire_port, dbname=cleanroom, user=user,
                               password=password or user, sslmode="disable", autocommit=True)

    def audit(self) -> list[dict]:
        from gateway.audit_log import read_records

        return read_records(self.state)  # every process's chain, merged by time


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    pytest.importorskip("psycopg")
    served = Gateway(tmp_path_factory.mktemp("quotas"))
    try:
        yield served
    finally:
        served.stop()


@pytest.mark.server  # the module's gateway: HTTP and wire servers
def test_the_rate_holds_across_front_ends_rooms_and_collaborator_identities(gateway):
    import psycopg

    assert [gateway.post("rate_user")[0] for _ in range(2)] == [200, 200]  # either gunicorn worker
    with gateway.wire("rate_user", cleanroom="room2") as conn:  # another front end, room, and collaborator (b)
        assert conn.execute(QUERY).fetchall()
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as info:  # SQLSTATE 53400
            conn.execute(QUERY)
    diag = info.value.diag
    assert diag.sqlstate == "53400" and diag.message_detail == "rule: quota.rate"
    assert re.fullmatch(r"retry in \d+ s", diag.message_hint) and 1 <= int(diag.message_hint.split()[2]) <= 60
    status, problem, headers = gateway.post("rate_user")
    assert status == 429 and problem["rule"] == "quota.rate" and problem["sqlstate"] == "53400"
    assert problem["type"].endswith("/quota-exceeded") and headers["Content-Type"] == "application/problem+json"
    assert headers["Retry-After"] == str(problem["retry_after"]) and 1 <= problem["retry_after"] <= 60
    assert problem["hint"] == f"retry in {problem['retry_after']} s"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        gateway.wire("Rate_User", password="rate_user")  # another letter case is another (unknown) user
    assert gateway.post("bob")[0] == 200  # other analysts are not slowed
    records = [r for r in gateway.audit() if r["user"] == "rate_user"]
    assert [r["decision"] for r in records] == ["released"] * 3 + ["refused"] * 2
    assert {(r["rule"], r["sqlstate"]) for r in records[3:]} == {("quota.rate", "53400")}
    assert {r["front_end"] for r in records[3:]} == {"pgwire", "http"}
    assert gateway.sample('cleanroom_analyst_quota_refusals_total{analyst="rate_user",rule="quota.rate"}') == 2


@pytest.mark.server  # the module's gateway: HTTP and wire servers
def test_a_running_statement_holds_its_slot_against_other_front_ends_and_its_collaborator(gateway):
    import psycopg

    running = 'cleanroom_analyst_running_statements{analyst="slow_user"}'
    conn = gateway.wire("slow_user")
    outcome: dict = {}

    def slow() -> None:
        try:
            conn.execute(SLOW)
            outcome["done"] = True
        except psycopg.Error as error:
            outcome["error"] = error

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        gateway.wait_for(running, 1)  # admitted and running in a wire worker
        status, problem, headers = gateway.post("slow_user")
        assert (status, problem["rule"], headers["Retry-After"]) == (429, "quota.concurrent", "1")
        assert problem["detail"] == "analyst slow_user already has 1 statement running, the most allowed at once"
        status, problem, _ = gateway.post("peer_user")  # its own slot is free, its collaborator's is not
        assert (status, problem["rule"]) == (429, "quota.concurrent")
        assert problem["detail"].startswith("collaborator c's analysts already have 1 statement running")
        assert gateway.post("bob")[0] == 200
        assert gateway.sample('cleanroom_collaborator_running_statements{cleanroom="room",collaborator="c"}') == 1
    finally:
        conn.cancel()
        worker.join(60)
        conn.close()
    assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
    gateway.wait_for(running, 0)
    assert gateway.post("slow_user")[0] == 200
    assert gateway.post("peer_user")[0] == 200


@pytest.mark.server  # the module's gateway: HTTP and wire servers
def test_engine_seconds_used_elsewhere_refuse_on_both_front_ends(gateway):
    import psycopg

    config = load_config(gateway.config)
    room = load_policy(config.policies[0])
    elsewhere = QuotaService.from_config(config)  # another process on the host: this test's
    admission = elsewhere.admit(room, "sec_user", "a")
    admission.used(5.0)
    admission.close()
    elsewhere.usage.flush()
    status, problem, headers = gateway.post("sec_user")
    assert (status, problem["rule"]) == (429, "quota.engine_seconds")
    assert problem["detail"] == "analyst sec_user has used the 5 engine seconds allowed per hour"
    assert 3540 <= int(headers["Retry-After"]) <= 3600
    with gateway.wire("sec_user") as conn:
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            conn.execute(QUERY)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # reads nothing: not counted, not refused


@pytest.mark.server  # the module's gateway: HTTP and wire servers
def test_metrics_are_for_operators_only(gateway):
    status, kind, body = gateway.metrics(user=None)
    assert status == 401 and "rate_user" not in body
    status, kind, body = gateway.metrics(user="bob")
    assert status == 403 and json.loads(body)["rule"] == "metrics.operators_only" and "rate_user" not in body
    status, kind, body = gateway.metrics()
    assert status == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE cleanroom_analyst_statements_last_minute gauge" in body
    assert 'cleanroom_analyst_quota_limit{cleanroom="room",analyst="rate_user",quota="statements_per_minute"} 3' in body
    assert ('cleanroom_collaborator_quota_limit{cleanroom="room",collaborator="c",quota="concurrent_statements"} 1'
            in body)
    health = urllib.request.urlopen(gateway.http + "/v1/health", timeout=10).read().decode()
    assert "rate_user" not in health and "statements" not in health


# -- in one engine: differential privacy, policy reloads ---------------------------------------------


def test_a_refused_statement_is_not_charged_and_its_refusal_is_audited(tmp_path):
    room = simple_policy({"t": private_table("t", {**COLUMNS, "g": {"role": "dimension", "values": [0, 1, 2]}})},
                         aggregates=("count",), k=2)
    room["privacy"] = {"epsilon_per_query": 0.5, "budget": {"epsilon": 10.0, "delta": 0.001}}
    room["quotas"] = {"per_analyst": {"statements_per_minute": 2}}
    engine = build_engine(tmp_path, room, [SMALL])
    try:
        for g in (0, 1):
            engine.run(QueryRequest(user="ana", cleanroom="room", sql=f"SELECT count(*) FROM t WHERE g = {g}"))
        before = engine.budget("ana", "room")
        assert before["spent"]["epsilon"] == 1.0 and before["queries"] == 2
        with pytest.raises(QuotaExceeded):
            engine.run(QueryRequest(user="ana", cleanroom="room", sql="SELECT count(*) FROM t WHERE g = 2",
                                    request_id="over-quota"))
        assert engine.budget("ana", "room") == before
        seconds = engine.context.quotas.usage.usage(["analyst:ana"], time.time())["analyst:ana"]
        assert seconds.engine_seconds_last_hour >= 0.5 and (seconds.engine_seconds_last_hour * 4).is_integer()  # steps
        record = engine.context.audit.records()[-1]
        assert (record["request_id"], record["decision"], record["rule"], record["sqlstate"]) == \
            ("over-quota", "refused", "quota.rate", "53400")
        assert record["privacy_budget_spent"] is None
    finally:
        engine.close()


def test_a_reloaded_policy_changes_the_limits_in_force(tmp_path):
    room = simple_policy({"t": private_table("t", COLUMNS)}, k=2)
    room["quotas"] = {"per_analyst": {"statements_per_minute": 1}}
    engine = build_engine(tmp_path, room, [SMALL])
    try:
        engine.run(QueryRequest(user="ana", cleanroom="room", sql=QUERY))
        with pytest.raises(QuotaExceeded):
            engine.run(QueryRequest(user="ana", cleanroom="room", sql=QUERY))
        room["quotas"]["per_analyst"]["statements_per_minute"] = 2
        (tmp_path / "policy.yaml").write_text(yaml.safe_dump(room))
        assert engine.reload()
        engine.run(QueryRequest(user="ana", cleanroom="room", sql=QUERY))  # the count stands; the limit moved
        with pytest.raises(QuotaExceeded):
            engine.run(QueryRequest(user="ana", cleanroom="room", sql=QUERY))
    finally:
        engine.close()


# -- several gateways sharing PostgreSQL ---------------------------------------------------------------------


def test_gateways_sharing_postgresql_share_rate_and_engine_seconds(tmp_path, pg_schema):
    room = load_policy(write_policy(tmp_path, policy({"per_analyst": {"statements_per_minute": 3,
                                                                      "engine_seconds_per_hour": 2}})))
    first, second = (QuotaService(HostQuotas(), UsageStore(postgres_dsn=pg_schema), SlotDirectory(tmp_path / name),
                                  time.time) for name in ("one", "two"))  # two hosts: their own lock files
    first.admit(room, "ana", "a").close()
    first.admit(room, "ana", "a").close()
    second.admit(room, "ana", "a").close()
    assert refused(lambda: second.admit(room, "ana", "a")).rule == "quota.rate"
    assert refused(lambda: first.admit(room, "ana", "a")).rule == "quota.rate"
    admission = first.admit(room, "bob", "b")
    admission.used(2.5)
    admission.close()
    first.usage.flush()
    assert refused(lambda: second.admit(room, "bob", "b")).rule == "quota.engine_seconds"
    usage = second.usage.usage(["analyst:ana", "analyst:bob"], time.time())
    assert usage["analyst:ana"].statements_last_minute == 3 and usage["analyst:ana"].refusals == {"quota.rate": 2}
    assert usage["analyst:bob"].engine_seconds_last_hour == 2.5
