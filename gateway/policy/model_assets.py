"""The policy's `models:` section (docs/models.md): the checks a schema cannot
express, the built Model assets, and the check of each ONNX file against its
declaration, all reported with the key they belong to so the loader gives them
file:line:col.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.models import files
from gateway.models.files import ModelFile, ModelInput
from gateway.policy.model import CleanRoom, Model
from gateway.yamlsource import KeyPath

Problems = list[tuple[KeyPath, str]]


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def model_problems(data: dict) -> Problems:
    """Owners that are collaborators, bounds in order, and rules naming declared models."""
    found: Problems = []
    collaborators, models = _map(data.get("collaborators")), _map(data.get("models"))
    declared = ", ".join(sorted(models)) or "none"
    for name, spec in models.items():
        if not isinstance(spec, dict):
            continue
        owner = spec.get("owner")
        if isinstance(owner, str) and owner not in collaborators:
            found.append((("models", name, "owner"), f"unknown collaborator {owner!r} "
                                                     f"(declared: {', '.join(sorted(collaborators)) or 'none'})"))
        bounds = _map(spec.get("output")).get("bounds")
        if isinstance(bounds, list) and len(bounds) == 2 and all(_number(b) for b in bounds) \
                and not bounds[0] < bounds[1]:
            found.append((("models", name, "output", "bounds"),
                          f"lower bound {bounds[0]} must be below upper bound {bounds[1]}"))
    for rule_name, rule in _map(data.get("rules")).items():
        named = rule.get("models") if isinstance(rule, dict) else None
        for i, model in enumerate(named if isinstance(named, list) else []):
            if isinstance(model, str) and model not in models:  # exact spelling: names are case-sensitive
                found.append((("rules", rule_name, "models", i), f"unknown model {model!r} (declared: {declared})"))
    return found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def models_from(data: dict, policy_file: str) -> dict[str, Model]:
    """The declared models, their files resolved against the policy file's folder."""
    folder = Path(policy_file).resolve().parent
    built = {}
    for name, spec in _map(data.get("models")).items():
        output = spec["output"]
        lower, upper = (float(b) for b in output["bounds"])
        model_file = ModelFile(
            path=str((folder / spec["file"]).resolve()),
            sha256=spec["sha256"],
            inputs=tuple(ModelInput(input_name, i["type"]) for input_name, i in spec["inputs"].items()),
            output=output["name"],
            index=output.get("index"),
            lower=lower,
            upper=upper,
        )
        built[name] = Model(name, spec["owner"], model_file, spec.get("description", ""))
    return built


def model_file_problems(room: CleanRoom) -> Problems:
    """Each model file read, hashed and opened: not the declared file, or not the
    declared inputs and output, is a problem at the key that says otherwise."""
    found: Problems = []
    for name, model in room.models.items():
        problem = files.check(model.file)
        if problem is not None:
            found.append((("models", name) + problem.key, problem.message))
    return found


def model_listing(room: CleanRoom, rules: tuple[str, ...], templates: tuple[str, ...]) -> list[dict]:
    """The clean room's models as any of its analysts sees them (GET /v1/models): name,
    owner, inputs, output and bounds, the file's sha256 (what owners approved), and which
    of the caller's rules let it score each; never the file, its path or its weights."""
    listed = []
    for model in room.models.values():
        listed.append({
            "name": model.name,
            "owner": model.owner,
            "description": model.description,
            "sha256": model.file.sha256,
            "inputs": [{"name": i.name, "type": i.type} for i in model.file.inputs],
            "output": {"name": model.file.output, "bounds": [model.file.lower, model.file.upper]},
            "rules": [r for r in rules if model.name in (room.rules[r].models or ())],
            "call": f"score('{model.name}', {', '.join(i.name for i in model.file.inputs)})",
        })
    return listed
