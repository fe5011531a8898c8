"""Model assets: ONNX files a collaborator brings to the clean room.

What a model is to the gateway lives here, below the policy: the declaration as
the runtime needs it (`ModelFile`), the check of a file against its declaration
(`files.py`), the vectorised scoring function executors register with DuckDB
(`scoring.py`) and differentially private training (`training.py`). The policy
layer names and owns models (gateway.policy.model.Model); the resolver
(gateway.plan.scoring) decides where `score('name', ...)` may stand.

onnxruntime, onnx, scikit-learn and skl2onnx come with the `models` extra
(`pip install -e '.[models]'`); without it a policy that declares a model is
refused with that hint, and nothing else changes.
"""
