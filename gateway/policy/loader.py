"""Policy files -> CleanRoom, or PolicyInvalid listing every problem found.

Order of work: YAML (positions, duplicate keys), JSON Schema (shape, unknown
keys), then the cross-references and privacy invariants a schema cannot
express (gateway.policy.checks), then the static template checks
(gateway.policy.templates). Each stage tolerates the garbage an earlier stage
already reported, so one run shows the author everything at once. Template
checks need a built CleanRoom (gateway.policy.build), so they run only once
everything before them is clean.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import PolicyInvalid
from gateway.policy.aggregates import NAMES as AGGREGATE_NAMES
from gateway.policy.build import build
from gateway.policy.checks import semantic_problems
from gateway.policy.model import CleanRoom
from gateway.policy.model_assets import model_file_problems
from gateway.policy.templates import check_templates
from gateway.yamlsource import load_schema, load_yaml, report, schema_problems

_SCHEMA = load_schema("gateway.policy", "schema.json")
# The aggregates a rule may allow come from their registry, not from a list kept here too.
_SCHEMA["$defs"]["rule"]["properties"]["aggregates"]["items"]["enum"] = list(AGGREGATE_NAMES)


def load_policy(path: str | Path, relative_to: str | Path | None = None) -> CleanRoom:
    """Load and validate one policy file; raise PolicyInvalid with every problem.
    relative_to: the file its relative paths (model files) are written against, when
    `path` is a copy kept elsewhere (gateway.collab.reload's last good version)."""
    doc = load_yaml(path)
    if doc.data is None and doc.problems:
        raise PolicyInvalid(doc.problems)
    found = schema_problems(doc, _SCHEMA)
    data = doc.data if isinstance(doc.data, dict) else {}
    found += semantic_problems(data)
    problems = report(doc, found)
    if problems:
        raise PolicyInvalid(problems)
    cleanroom = build(data, str(path), doc.sha256, str(relative_to or path))
    problems = report(doc, model_file_problems(cleanroom))  # each ONNX file is the declared one
    if problems:
        raise PolicyInvalid(problems)
    problems = report(doc, [(doc.resolve(key_path), message) for key_path, message in check_templates(cleanroom)])
    if problems:
        raise PolicyInvalid(problems)
    return cleanroom
