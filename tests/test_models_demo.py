"""The demo's model flow (policies/demo.yaml, docs/models.md), as shipped with
differential privacy: the publisher's propensity model scores households from both
sides; lift by decile and an AUC histogram are released with noise and charged; the
per-household scores reach the retailer only; over HTTP another party sees the model's
declaration, never its file."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.modelkit import REPO  # skips without the models extra
from gateway.collab.outputs import UnknownOutput, read_output
from gateway.engine import Engine, QueryRequest
from gateway.errors import Refused
from gateway.models.evaluation import auc_from_histogram


@pytest.fixture(scope="module")
def demo(dp_demo_config_path):
    engine = Engine.from_config_file(dp_demo_config_path)
    yield engine
    engine.close()


def run(engine, template):
    return engine.run(QueryRequest(user="analyst", cleanroom="demo", template=template, params={}))


def test_lift_by_decile_is_released_on_public_keys_and_charged(demo):
    spent = demo.budget("analyst", "demo")["spent"]["epsilon"]
    release = run(demo, "propensity_lift")
    assert release.authorised_by == "template:propensity_lift"
    assert any("on the declared keys" in notice for notice in release.notices), release.notices
    assert demo.budget("analyst", "demo")["spent"]["epsilon"] == pytest.approx(spent + 0.1)
    rows = release.table.to_pydict()
    assert set(rows["decile"]) <= {float(d) for d in range(10)} and len(rows["decile"]) >= 3
    observed = [o for o in rows["observed"] if o is not None]  # a decile's noisy count can make its rate NULL
    assert len(observed) >= 3 and max(observed) > observed[0]  # households ranked higher bought more after an ad


def test_the_auc_comes_from_a_released_histogram(demo):
    rows = run(demo, "propensity_histogram").table.to_pydict()
    auc = auc_from_histogram(zip(rows["bucket"], rows["households"], rows["converted"]))
    assert 0.5 < auc < 1.0


def test_household_scores_go_to_the_retailer_only(demo):
    receipt = run(demo, "household_scores").table.to_pydict()
    assert receipt["receivers"] == ["retailer"] and receipt["rows"][0] > 1000
    room = demo.context.cleanrooms["demo"]
    _, table = read_output(demo.context.collab, room, "retailer_approver", "household_propensity")
    assert table.column_names == ["household_id", "propensity"] and table.num_rows == receipt["rows"][0]
    assert 0 <= min(table["propensity"].to_pylist()) and max(table["propensity"].to_pylist()) <= 1
    for user in ("analyst", "publisher_approver"):  # the publisher ran it, and still never sees the rows
        with pytest.raises(UnknownOutput):
            read_output(demo.context.collab, room, user, "household_propensity")


def test_ad_hoc_scoring_is_refused_without_a_rule_that_names_the_model(demo):
    sql = ("SELECT region, avg(score('purchase_propensity', 1, 1, 0)) AS s FROM purchases GROUP BY region")
    with pytest.raises(Refused) as refusal:
        demo.run(QueryRequest(user="analyst", cleanroom="demo", sql=sql))
    assert refusal.value.rule == "model.not_allowed"


def test_models_over_http_show_the_declaration_never_the_file(dp_http_server):
    request = urllib.request.Request(f"{dp_http_server}/v1/models", headers={"Authorization": "Bearer analyst"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    [model] = body["models"]
    assert model["name"] == "purchase_propensity" and model["owner"] == "publisher"
    assert [i["name"] for i in model["inputs"]] == ["impressions", "campaigns", "ctv_share"]
    assert model["output"] == {"name": "probabilities", "bounds": [0.0, 1.0]}
    text = json.dumps(body)
    assert ".onnx" not in text and str(REPO) not in text and "path" not in model  # no file, no location


def test_cleanroom_train_fits_on_both_sides_and_charges_the_analyst(dp_demo_config_path, demo):
    import subprocess
    import sys

    import yaml

    before = demo.budget("analyst", "demo")["spent"]["epsilon"]
    done = subprocess.run([sys.executable, "-m", "gateway", "train", "propensity_training", "--name",
                           "joint_propensity", "--epsilon", "1", "--token", "analyst", "--config",
                           str(dp_demo_config_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    declared = yaml.safe_load(done.stdout)["models"]["joint_propensity"]
    assert declared["owner"] == "publisher" and list(declared["inputs"]) == ["impressions", "campaigns", "ctv_share"]
    assert demo.budget("analyst", "demo")["spent"]["epsilon"] == pytest.approx(before + 1.0)
    refused = subprocess.run([sys.executable, "-m", "gateway", "train", "propensity_lift", "--name", "x",
                              "--epsilon", "1", "--token", "analyst", "--config", str(dp_demo_config_path)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "[template.training]" in refused.stderr


def test_train_over_http(dp_http_server):
    def post(body):
        request = urllib.request.Request(f"{dp_http_server}/v1/train", data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": "Bearer analyst", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, problem = post({"template": "propensity_training", "name": "over_http", "epsilon": 50})
    assert status == 400 and problem["rule"] == "train.epsilon"
    status, problem = post({"template": "propensity_lift", "name": "over_http", "epsilon": 0.5})
    assert status == 403 and problem["rule"] == "template.training"
    status, trained = post({"template": "propensity_training", "name": "over_http", "epsilon": 0.5})
    assert status == 200, trained
    assert trained["epsilon"] == 0.5 and trained["declaration"]["over_http"]["sha256"] == trained["sha256"]
