"""Build the demo publisher's purchase-propensity model: policies/models/purchase_propensity.onnx.

The publisher brings this model to the demo clean room (policies/demo.yaml, models:). It was
fitted on the publisher's own data only: per-household impression features and a conversion
signal the publisher observed itself (a visit to the advertiser's site after an ad). Here that
history is simulated, deterministically: features drawn like the demo's impressions, and a
visit whose odds rise with frequency, with campaigns seen and with connected-TV exposure.

    .venv/bin/python policies/models/train_propensity.py      # rewrites the file; prints its sha256

The model is a scikit-learn logistic regression exported with skl2onnx (no ZipMap, so its
`probabilities` output is a float matrix); score() reads column 1, the probability of a visit.
Its inputs, in order: impressions, campaigns, ctv_share (a [n, 3] float matrix named X).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from skl2onnx import to_onnx

HERE = Path(__file__).resolve().parent
TARGET = HERE / "purchase_propensity.onnx"
SEED = 17
ROWS = 50_000


def history(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Simulated publisher history: (impressions, campaigns, ctv_share) per household, and
    whether the household visited the advertiser's site."""
    rng = np.random.default_rng(seed)
    campaigns = rng.binomial(6, 0.3, rows).astype(np.float32)  # six campaigns, about a third reach each
    impressions = campaigns * (1 + rng.exponential(5.0, rows)).astype(np.float32)
    ctv_share = np.where(impressions > 0, rng.beta(2, 8, rows), 0).astype(np.float32)
    logit = -2.2 + 0.045 * np.minimum(impressions, 50) + 0.35 * campaigns + 1.2 * ctv_share
    visited = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return np.column_stack([impressions, campaigns, ctv_share]).astype(np.float32), visited.astype(np.int64)


def build(target: Path = TARGET) -> str:
    features, visited = history(ROWS, SEED)
    model = LogisticRegression(max_iter=1000).fit(features, visited)
    onnx_model = to_onnx(model, features[:1], options={id(model): {"zipmap": False}}, target_opset=15)
    onnx_model.doc_string = "Demo publisher purchase propensity (policies/models/train_propensity.py)"
    onnx_model.producer_version = ""  # the file's bytes, and so its sha256, do not depend on skl2onnx's version
    data = onnx_model.SerializeToString()
    target.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    print(f"{build(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET)}  {TARGET.name}")
