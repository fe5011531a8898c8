"""Scores under differential privacy (docs/models.md#evaluation): a score is a measure
with its model's declared bounds, so its sums and averages are bounded and noised as
any measure's; score buckets (deciles of the declared range) are public group keys,
released without spending delta; the charge lands on the analyst's budget."""

from __future__ import annotations

import pytest

from tests.modelkit import PEOPLE_SQL, model_entry, np, scored_room, write_classifier
from tests.roomkit import build_engine
from gateway.engine import QueryRequest
from gateway.errors import Refused
from gateway.models.evaluation import auc_from_histogram

SCORED = ("WITH s AS (SELECT p.id, score('m', p.a, p.b) AS propensity FROM people AS p), "
          "y AS (SELECT l.id, l.label FROM labels AS l) ")
LIFT = (SCORED + "SELECT LEAST(FLOOR(s.propensity * 10), 9) AS decile, COUNT(*) AS people, "
        "AVG(s.propensity) AS predicted, AVG(y.label) AS observed FROM s JOIN y ON s.id = y.id GROUP BY 1 ORDER BY 1")
HISTOGRAM = (SCORED + "SELECT LEAST(FLOOR(s.propensity * 20), 19) AS bucket, COUNT(*) AS people, "
             "SUM(y.label) AS positives FROM s JOIN y ON s.id = y.id GROUP BY 1 ORDER BY 1")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scored-dp")
    sha = write_classifier(folder / "clf.onnx")
    templates = {"lift": {"sql": LIFT, "bounds": {"label": [0, 1]},
                          "privacy": {"max_rows_per_unit": 1, "max_groups_per_unit": 1}},
                 "histogram": {"sql": HISTOGRAM, "bounds": {"label": [0, 1]},
                               "privacy": {"max_rows_per_unit": 1, "max_groups_per_unit": 1}}}
    room = scored_room(model_entry("clf.onnx", sha), templates=templates,
                       privacy={"epsilon_per_query": 100.0, "delta_per_query": 1e-6, "max_rows_per_unit": 1,
                                "max_groups_per_unit": 1, "budget": {"epsilon": 1000.0, "delta": 1e-4}})
    room["min_group_size"] = 2
    room["analysts"]["analyst"]["templates"] = ["lift", "histogram"]
    engine = build_engine(folder, room, PEOPLE_SQL)
    yield engine
    engine.close()


def run(engine, **what):
    return engine.run(QueryRequest(user="analyst", cleanroom="scored", **what))


def exact(engine) -> tuple[np.ndarray, np.ndarray]:
    """The scores and labels the releases are noisy views of (the oracle, straight from ONNX Runtime)."""
    import onnxruntime

    path = engine.context.cleanrooms["scored"].models["m"].file.path
    ids = np.arange(200)
    x = np.column_stack([(ids % 10) / 10, (ids % 7) / 7]).astype(np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"X": x})[0][:, 1], (ids % 3 == 0).astype(float)


def test_lift_by_decile_on_public_keys_spends_no_delta(engine):
    before = engine.budget("analyst", "scored")["spent"]
    release = run(engine, template="lift", params={})
    spent = engine.budget("analyst", "scored")["spent"]
    assert spent["delta"] == before["delta"] and spent["epsilon"] == pytest.approx(before["epsilon"] + 100.0)
    assert any("on the declared keys" in n for n in release.notices), release.notices
    got = release.table.to_pydict()
    scores, labels = exact(engine)
    deciles = np.minimum(np.floor(scores * 10), 9)
    for decile, people, predicted in zip(got["decile"], got["people"], got["predicted"]):
        chosen = deciles == decile
        assert abs(people - chosen.sum()) <= 3  # epsilon 100: noise of a few units at most
        if chosen.sum() >= 20 and predicted is not None:
            assert predicted == pytest.approx(scores[chosen].mean(), abs=0.05)


def test_auc_from_the_released_histogram_is_near_the_exact_auc(engine):
    released = run(engine, template="histogram", params={}).table.to_pydict()
    scores, labels = exact(engine)
    buckets = np.minimum(np.floor(scores * 20), 19)
    exact_rows = [(b, float((buckets == b).sum()), float(labels[buckets == b].sum())) for b in np.unique(buckets)]
    exact_auc = auc_from_histogram(exact_rows)
    noisy_auc = auc_from_histogram(zip(released["bucket"], released["people"], released["positives"]))
    assert 0 <= noisy_auc <= 1 and noisy_auc == pytest.approx(exact_auc, abs=0.05)


def test_a_scores_sum_is_bounded_by_the_declared_range_under_dp(engine):
    sql = "SELECT grp, sum(score('m', a, b)) AS s FROM people GROUP BY grp"
    plan = engine.explain(QueryRequest(user="analyst", cleanroom="scored", sql=sql))["differential_privacy"]
    described = repr(plan)
    assert "sensitivity 1" in described or "'sensitivity': 1" in described, described


def test_score_buckets_wider_than_the_bounds_allow_are_refused_as_public_keys(engine):
    sql = ("SELECT FLOOR(score('m', a, b) * 10) AS d, count(*) FROM people GROUP BY 1")
    with pytest.raises(Refused) as refusal:  # under a rule: a score stays inside aggregates
        run(engine, sql=sql)
    assert refusal.value.rule == "model.outside_aggregate"
