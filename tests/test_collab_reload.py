"""Policies reload while the gateway serves; a reload that fails validation
keeps the old policy serving and says why."""

from __future__ import annotations

import logging
import os
import time

import pytest

from gateway.engine import Engine, QueryRequest
from gateway.errors import Refused
from tests import collabkit
from tests.collabkit import build, rewrite_policy

COUNT = "SELECT region, COUNT(*) AS n FROM visits GROUP BY region"


def run(engine, sql=COUNT):
    return engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))


ROOM = collabkit.ROOM  # fresh_engine (tests/conftest.py): the room per test, no template approved


def test_a_good_edit_is_served_after_reload(tmp_path, fresh_engine):
    assert run(fresh_engine).table.num_rows == 2
    rewrite_policy(tmp_path, lambda p: p.update(min_group_size=20))  # north (15) is now too small
    assert fresh_engine.reload()
    assert run(fresh_engine).table.to_pylist() == [{"region": "south", "n": 25}]
    assert fresh_engine.policy_status()["status"] == "ok"


def test_a_broken_edit_leaves_the_old_policy_serving(tmp_path, fresh_engine, caplog):
    version = fresh_engine.context.cleanrooms["room"].version
    rewrite_policy(tmp_path, lambda p: p["tables"]["visits"]["columns"]["region"].update(role="dimensoin"))
    with caplog.at_level(logging.ERROR, logger="gateway.engine"):
        assert not fresh_engine.reload()
    assert run(fresh_engine).table.num_rows == 2  # still serving the old policy
    status = fresh_engine.policy_status()
    assert status["status"] == "stale"
    assert status["serving"] == {"room": version}
    assert any("tables.visits.columns.region.role" in p for p in status["problems"])
    assert "keep serving" in caplog.text and "dimensoin" in caplog.text
    # Fixed: served again, status back to ok.
    rewrite_policy(tmp_path, lambda p: p["tables"]["visits"]["columns"]["region"].update(role="dimension"))
    assert fresh_engine.reload() and fresh_engine.policy_status()["status"] == "ok"


def test_an_edit_naming_a_missing_column_keeps_the_old_policy(tmp_path, fresh_engine):
    rewrite_policy(tmp_path, lambda p: p["tables"]["visits"]["columns"].update(nope={"role": "dimension"}))
    assert not fresh_engine.reload()  # valid YAML and schema, but the source has no such column
    assert run(fresh_engine).table.num_rows == 2
    assert fresh_engine.policy_status()["status"] == "stale"


def test_a_file_change_is_picked_up_by_the_next_request(tmp_path):
    import yaml

    build(tmp_path).close()
    config = yaml.safe_load((tmp_path / "gateway.yaml").read_text())
    config["engine"]["policy_reload_seconds"] = 0.1
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    engine = Engine.from_config_file(tmp_path / "gateway.yaml")
    try:
        assert run(engine).table.num_rows == 2
        rewrite_policy(tmp_path, lambda p: p["analysts"]["ana"].update(rules=[]))
        path = tmp_path / "policy.yaml"
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a distinct mtime even on coarse clocks
        time.sleep(0.2)  # one polling interval
        with pytest.raises(Refused) as refusal:
            run(engine)
        assert refusal.value.rule == "rule.no_rule_for_tables"
        # A broken edit is noticed the same way, and reported by policy_status (GET /v1/health).
        path.write_text("cleanroom: [unclosed\n")
        time.sleep(0.2)
        status = engine.policy_status()
        assert status["status"] == "stale" and status["problems"]
        with pytest.raises(Refused):
            run(engine)  # still the last good policy
    finally:
        engine.close()


def test_a_restart_after_a_broken_edit_serves_the_last_good_policy(tmp_path):
    build(tmp_path).close()  # validated once: its copy is kept under state_dir
    rewrite_policy(tmp_path, lambda p: p.update(min_group_size=1))  # below the schema's minimum of 2
    engine = Engine.from_config_file(tmp_path / "gateway.yaml")
    try:
        assert run(engine).table.num_rows == 2
        status = engine.policy_status()
        assert status["status"] == "stale" and any("min_group_size" in p for p in status["problems"])
    finally:
        engine.close()


def test_sighup_reloads(tmp_path, fresh_engine):
    import signal

    from gateway.collab.reload import install_sighup

    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert install_sighup(fresh_engine.reload)
        rewrite_policy(tmp_path, lambda p: p.update(min_group_size=20))
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while fresh_engine.context.cleanrooms["room"].min_group_size != 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run(fresh_engine).table.num_rows == 1
    finally:
        signal.signal(signal.SIGHUP, previous)
