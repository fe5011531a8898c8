"""An answer over private tables leaves at a padded time: with 0, 1 or 2 rows
kept by an expensive predicate, the response time is the same ladder step, while
without padding the same statements visibly differ (so this test can fail)."""

from __future__ import annotations

import itertools
import statistics
import time

import pytest

from gateway.engine import QueryRequest
from gateway.engine.timing import StatementClock
from gateway.errors import Refused
from tests.roomkit import build_engine, private_table, simple_policy

STEP = 1.5
BIG = "repeat('abcd', 12500000)"  # 50 MB of text in each row a predicate keeps
SETUP = [
    "CREATE TABLE a AS SELECT 'f' || i AS hh, 'other' AS tag, 'x' AS note FROM range(1000) t(i) "
    f"UNION ALL SELECT 'k1', 'one', {BIG} UNION ALL SELECT 'k2', 'two', {BIG} UNION ALL SELECT 'k3', 'two', {BIG}",
]
# Each keeps the rows of `tag`, then does work proportional to the text of each row kept.
PREDICATES = [
    "upper(a.note) = lower(a.note)",
    "length(lower(a.note)) > 3",
]
_names = itertools.count()


def room(tmp_path, pad: str, dp: bool = True):
    tables = {"a": private_table("a", {"hh": {"role": "join_key"},
                                       "tag": {"role": "dimension", "values": ["none", "one", "two", "other"]},
                                       "note": {"role": "dimension"}})}
    policy = simple_policy(tables, k=2)
    if dp:
        policy["privacy"] = {"epsilon_per_query": 0.01, "budget": {"epsilon": 10000.0}}
    policy["timing"] = {"pad": pad, "step_seconds": STEP}
    engine = build_engine(tmp_path, policy, SETUP)
    engine.warm(wait=True)
    return engine


def seconds(engine, tag: str, predicate: str) -> float:
    # a new statement each time: a repeat would be answered from the release cache
    sql = f"SELECT count(*) FROM a WHERE a.tag = '{tag}' AND {predicate} AND a.note <> 'v{next(_names)}'"
    started = time.monotonic()
    engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql))
    return time.monotonic() - started


def medians(engine, predicate: str, rounds: int = 3) -> dict[str, float]:
    seconds(engine, "none", predicate)  # compile caches warm
    samples = {tag: [] for tag in ("none", "one", "two")}
    for _ in range(rounds):
        for tag in samples:  # interleaved: load on the machine hits every case alike
            samples[tag].append(seconds(engine, tag, predicate))
    return {tag: statistics.median(values) for tag, values in samples.items()}


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    engine = room(tmp_path_factory.mktemp("padded"), "dp")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def unpadded(tmp_path_factory):
    engine = room(tmp_path_factory.mktemp("unpadded"), "off")
    yield engine
    engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("predicate", PREDICATES)
def test_without_padding_the_rows_kept_show_in_the_time(unpadded, predicate):
    """The control: without padding, how many rows a filter keeps shows in the time
    (the signal the padded test must not see). Relative, since the machine's speed
    and load set the absolute size: two heavy rows take well over the time of none."""
    times = medians(unpadded, predicate, rounds=5)
    assert times["two"] > 1.5 * times["none"] and times["two"] - times["none"] > 0.05, times


@pytest.mark.slow
@pytest.mark.parametrize("predicate", PREDICATES)
def test_padded_answers_leave_at_the_same_step_whatever_the_rows(padded, predicate):
    times = medians(padded, predicate)
    assert all(STEP <= t < STEP + 0.2 for t in times.values()), times
    assert max(times.values()) - min(times.values()) < 0.1, times


def test_refusals_are_not_padded(padded):
    """A refusal follows from the text and the policy alone: nothing to hide, nothing waited."""
    started = time.monotonic()
    with pytest.raises(Refused):
        padded.run(QueryRequest(user="ana", cleanroom="room", sql="SELECT hh FROM a"))
    assert time.monotonic() - started < STEP / 2


@pytest.mark.slow
def test_k_only_rooms_pad_when_the_policy_says_always(tmp_path):
    engine = room(tmp_path, "always", dp=False)
    try:
        seconds(engine, "none", PREDICATES[0])  # compile caches warm
        assert STEP <= seconds(engine, "none", PREDICATES[0]) < 2 * STEP  # padded to the first step
    finally:
        engine.close()


def test_the_ladder():
    clock = StatementClock(started=100.0, step=0.25, deadline=130.0)
    assert clock.leaves_at(100.01) == 100.25
    assert clock.leaves_at(100.25) == 100.25
    assert clock.leaves_at(100.26) == 100.5
    assert clock.leaves_at(103.0) == 104.0
    assert clock.leaves_at(125.0) == 130.0  # the deadline is the last rung
    assert clock.leaves_at(131.0) == 131.0
    assert StatementClock(100.0, None, 130.0).leaves_at(100.01) == 100.01
