"""Training runs (docs/models.md#training): `cleanroom train` and POST /v1/train.

A training run is a statement with a pass list of its own: the template's SQL is
compiled like any template's (resolved, authorised only with every owner's
approval of this exact training template, verified), the analyst's quotas are
taken, then `fit`:

- the epsilon is charged to the analyst's budget before anything runs, as any
  query is (a failure afterwards is not refunded: the cost is fixed by the request);
- the rows run in an executor and stay inside the gateway: one per privacy unit,
  clamped to the template's bounds, they feed diffprivlib (gateway.models.training);
- the fitted model is written as an ONNX file under the state folder, owned by the
  analyst's collaborator; the caller gets its declaration (file, sha256, inputs,
  output, bounds) to add to the policy's `models:`, where, like any model, it scores
  only in templates and rules every owner approved.

Nothing of the rows is released: the receipt holds the declaration and the cost.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pyarrow as pa

from gateway.dp.ledger import Account, Spend
from gateway.dp.policy import budget_for
from gateway.engine import admit, audit, pipeline
from gateway.engine.state import QueryState
from gateway.engine.types import Release
from gateway.errors import BadParameter, Refused
from gateway.models import training
from gateway.models.files import TRAIN_FRONT_END
from gateway.plan import scoring
from gateway.policy.model import Accounting

MAX_EPSILON = 10.0  # one fit never costs more than this, whatever the budget holds


def train_passes(name: str, epsilon: float):
    """The passes of one training run: compile, quotas, fit, audit."""

    def fit(state: QueryState) -> QueryState:
        return _fit(state, name, epsilon)

    return (*pipeline.COMPILE, admit.admit, fit, audit.audit)


def check_request(name: str, epsilon) -> float:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise BadParameter("the model's name is a plain identifier", rule="train.name")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon <= MAX_EPSILON:
        raise BadParameter(f"epsilon is a number in (0, {MAX_EPSILON}]", rule="train.epsilon")
    return float(epsilon)


def _fit(state: QueryState, name: str, epsilon: float) -> QueryState:
    room, template = state.cleanroom, state.template
    if template is None or template.training is None or state.request.front_end != TRAIN_FRONT_END:
        raise Refused("only a training template is trained", rule="template.training")
    if room.privacy is None:
        raise Refused("training charges a privacy budget: this clean room has no privacy section",
                      rule="train.no_privacy", hint="add privacy: to the policy (docs/privacy.md)")
    if name in room.models:
        raise Refused(f"the clean room already declares a model named {name}", rule="train.name")
    cost = Spend(0.0, 0.0, epsilon * epsilon / 2, "zcdp") if room.privacy.accounting is Accounting.ZCDP \
        else Spend(epsilon, 0.0)  # an epsilon-DP fit is (epsilon^2 / 2)-zCDP
    request_sha = hashlib.sha256(f"{state.authorisation.template_sha256}:{name}:{epsilon}".encode()).hexdigest()
    state.context.privacy.ledger.charge(Account(room.name, state.request.user), cost,
                                        budget_for(room, state.request.user),
                                        request_id=state.request.request_id, query_sha256=request_sha)
    state = state.evolve(charged=(cost.epsilon, cost.delta, cost.rho) if cost.rho else (cost.epsilon, cost.delta))
    rows = state.context.executors.run(
        state.request.request_id, principal=state.request.user, sql=state.generated_sql,
        max_rows=state.context.config.engine.max_result_rows,
        deadline=_deadline(state), on_engine_seconds=state.admission.used if state.admission else None,
        models=scoring.models_in(state.generated_sql, room))
    unit, label = rows.column_names[0], template.training.label
    bounds = {c: (template.bounds[c].lower, template.bounds[c].upper) for c in rows.column_names[1:]}
    try:
        fitted = training.fit(template.training.kind, rows, unit, label, bounds, epsilon)
    except training.TrainingUnavailable as missing:
        raise Refused(str(missing), rule="train.unavailable") from None
    path = _store(state, name, fitted)
    owner = state.analyst.collaborator
    declaration = {
        "owner": owner, "file": str(path), "sha256": fitted.sha256,
        "inputs": {feature: {"type": "float"} for feature in fitted.features},
        "output": {"name": fitted.output, "index": fitted.index, "bounds": list(fitted.bounds)},
    }
    receipt = pa.table({"model": [name], "owner": [owner], "sha256": [fitted.sha256], "epsilon": [epsilon],
                        "declaration": [json.dumps({name: declaration})]})
    notice = (f"model {name} fitted under epsilon {epsilon} ({template.training.kind} regression, diffprivlib) and "
              f"stored for {owner}; it scores once the policy declares it (models: {name}) and its owners approve")
    release = Release(state.request.request_id, receipt, f"template:{template.name}", None, (notice,))
    return state.evolve(release=release)


def _deadline(state: QueryState) -> float:
    return time.monotonic() + state.context.config.engine.query_timeout_seconds


def _store(state: QueryState, name: str, fitted: training.Trained) -> Path:
    """The model file, owned by the requester's collaborator: state_dir/models/<room>/<owner>/<name>-<sha>.onnx."""
    folder = Path(state.context.config.state_dir) / "models" / state.cleanroom.name / state.analyst.collaborator
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{fitted.sha256[:12]}.onnx"
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(fitted.onnx)
    temporary.replace(path)
    return path
