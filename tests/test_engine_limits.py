"""Limits that protect the engine: timeouts, cancellation, result size; each
fails cleanly and leaves the engine serving."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.engine import QueryRequest
from gateway.errors import QueryCancelled, QueryTimeout, ResultTooLarge
from tests.roomkit import Room, private_table, simple_policy

# 30,000 x 30,000 rows share one key: the declared join explodes to 900M rows.
SETUP = [
    "CREATE TABLE a AS SELECT 'h1' AS hh, i % 7 AS g FROM range(30000) t(i)",
    "CREATE TABLE b AS SELECT 'h1' AS hh FROM range(30000) t(i)",
    "CREATE TABLE lookup AS SELECT i AS n FROM range(5000) t(i)",
]
SLOW = "SELECT count(*) FROM a JOIN b ON a.hh = b.hh"


ROOM = Room(simple_policy({  # the module's `engine` (tests/conftest.py)
    "a": private_table("a", {"hh": {"role": "join_key"}, "g": {"role": "dimension"}}),
    "b": private_table("b", {"hh": {"role": "join_key"}}),
    "lookup": {"owner": "a", "source": "room", "relation": "lookup", "public": True, "columns": {"n": {"role": "dimension"}}},
}, joins=[("a.hh", "b.hh")], k=2), SETUP, settings={"query_timeout_seconds": 0.5, "max_result_rows": 1000}, warm=True)


@pytest.fixture(autouse=True)
def executors_ready(engine):
    """A statement killed by the last test has its executor replaced in the background;
    with a 0.5 s deadline the next must not wait for that start."""
    engine.warm(wait=True)


def run(engine, sql, request_id=None):
    kwargs = {"request_id": request_id} if request_id else {}
    return engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql, **kwargs))


def test_timeout_interrupts_and_engine_keeps_serving(engine):
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as error:
        run(engine, SLOW)
    assert error.value.sqlstate == "57014"
    assert time.monotonic() - started < 10
    assert run(engine, "SELECT count(*) AS n FROM lookup").table.to_pylist() == [{"n": 5000}]


def test_cancel_by_request_id(engine):
    outcome = {}

    def slow():
        try:
            run(engine, SLOW, request_id="cancel-me")
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    worker = threading.Thread(target=slow)
    worker.start()
    deadline = time.monotonic() + 5
    while not engine.interrupt("cancel-me") and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.join(10)
    assert isinstance(outcome.get("error"), (QueryCancelled, QueryTimeout))


def test_results_over_the_row_cap_are_refused_not_truncated(engine):
    with pytest.raises(ResultTooLarge):
        run(engine, "SELECT n FROM lookup")
    assert run(engine, "SELECT n FROM lookup ORDER BY n LIMIT 1000").table.num_rows == 1000


def test_many_statements_in_a_row_keep_the_engine_serving(engine):
    for _ in range(200):
        run(engine, "SELECT count(*) FROM lookup")
    assert run(engine, "SELECT 1 AS one").table.to_pylist() == [{"one": 1}]


# -- the watchdog itself -------------------------------------------------------------------


def test_watchdog_fires_late_alarms_only_and_survives_a_failing_callback():
    from gateway.engine.watchdog import Watchdog

    watchdog, fired = Watchdog(), []

    def fail():
        fired.append("fail")
        raise RuntimeError("a cursor already closed")

    watchdog.arm(0.1, fail)
    kept = watchdog.arm(0.2, lambda: fired.append("kept"))
    dropped = watchdog.arm(0.2, lambda: fired.append("dropped"))
    watchdog.disarm(dropped)
    deadline = time.monotonic() + 5
    while len(fired) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fired == ["fail", "kept"]
    watchdog.disarm(kept)  # after it fired: harmless
    assert not any(watchdog._lanes.values())


def test_watchdog_arm_and_disarm_do_not_wake_its_thread():
    from gateway.engine.watchdog import Watchdog

    watchdog = Watchdog()
    long_running = watchdog.arm(60, lambda: None)  # the thread now sleeps towards a later look
    time.sleep(0.1)
    wakes = []
    notify = watchdog._wake.notify
    watchdog._wake.notify = lambda *args: (wakes.append(1), notify(*args))
    for _ in range(10_000):
        watchdog.disarm(watchdog.arm(60, lambda: None))
    assert wakes == []
    assert list(watchdog._lanes[60]) == [long_running.key]  # disarmed alarms are gone, not kept until due
    fired = []
    watchdog.arm(0.05, lambda: fired.append(1))  # a shorter timeout does wake it
    deadline = time.monotonic() + 5
    while not fired and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fired == [1] and wakes == [1]
