"""YAML files that remember where every key came from.

Policy authors and operators fix problems faster when each one names the file,
line and column, and the key path, so both loaders report problems as
`file:line:col: key.path: message` through the helpers here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

KeyPath = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars.

    YAML 1.1 turns `no`, `on`, `off`, `yes` into booleans and `2024-01-01`
    into a date object; in a policy those are almost always meant as text
    (a region called `no`, a date parameter bound), so only true/false are
    booleans and dates stay strings.
    """


_DROPPED_TAGS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class YamlDocument:
    """Plain data (dicts, lists, scalars) plus the position of every key path.

    The position of a mapping entry is where its key is written; of a list
    item, where the item starts. Lines and columns count from 1.
    """

    file: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # duplicate keys, syntax errors
    sha256: str = ""  # of the exact bytes parsed, so a version always matches its content

    def position(self, path: Iterable[str | int]) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor that exists in the file
        (a missing key is reported where its parent is)."""
        path = tuple(path)
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

    def problem(self, path: Iterable[str | int], message: str) -> str:
        path = tuple(path)
        line, col = self.position(path)
        message = re.sub(r"\s*\n\s*", " ", message.strip())  # one problem, one line: tools read them by line
        return f"{self.file}:{line}:{col}: {dotted(path)}: {message}"

    def resolve(self, dotted_path: str) -> KeyPath:
        """Turn `templates.campaign_reach.sql` back into a key path, matching the
        longest existing key at each level (keys may themselves contain dots)."""
        path: list[str | int] = []
        node, rest = self.data, dotted_path
        while rest:
            if isinstance(node, list):
                match = re.match(r"\[(\d+)\]\.?", rest)
                if not match or int(match.group(1)) >= len(node):
                    break
                index = int(match.group(1))
                path.append(index)
                node, rest = node[index], rest[match.end():]
                continue
            if not isinstance(node, dict):
                break
            for key in sorted((k for k in node if isinstance(k, str)), key=len, reverse=True):
                if rest == key or rest.startswith(key + ".") or rest.startswith(key + "["):
                    path.append(key)
                    node, rest = node[key], rest[len(key):].lstrip(".")
                    break
            else:
                break
        return tuple(path)


def dotted(path: Iterable[str | int]) -> str:
    """`("rules", "r", "joins", 0)` -> `rules.r.joins[0]`; keys with dots are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = f'"{part}"' if ("." in part or not part) else part
            out += f".{text}" if out else text
    return out or "(top level)"


# Why the positions are read from PyYAML's nodes here rather than taken from ruamel.yaml
# (issue 15 asked for the library if it makes the module smaller with equal messages):
# measured against a ruamel.yaml 0.19.1 version of load_yaml (its round-trip loader's
# .lc line/column records, dates kept as text, plain types out; 57 lines against these
# 90), on policies/demo.yaml and ten broken files:
# - messages: equal for syntax errors, tabs, non-text keys, merge keys and empty files;
#   worse for duplicate keys (ruamel stops at the first with an exception, so one
#   problem and no data: the other duplicates and every schema problem go unreported;
#   here each duplicate is reported and checking goes on) and for a recursive alias
#   (`a: &x [*x]` loads silently as [None]; here it is a problem). Reporting them
#   equally means walking ruamel's composed nodes, i.e. this code on another parser.
# - speed: 2-4x slower (65-83 ms against 22-30 ms a load of policies/demo.yaml, best of
#   5x20 on the shared 2-core machine), on the path of every policy load and reload.
# - size: a second YAML library (1.4 MB) beside PyYAML, which the config, the OpenAPI
#   document and the tests use anyway.
def load_yaml(path: str | Path) -> YamlDocument:
    """Parse one YAML document, recording positions and duplicate keys.

    A syntax error or an unreadable file leaves `data` None and one problem.
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return YamlDocument(file, None, problems=[f"{file}:1:1: (top level): cannot read file: {exc}"])
    doc = YamlDocument(file, None, sha256=hashlib.sha256(raw).hexdigest())
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            doc.problems.append(f"{file}:1:1: (top level): the file is empty")
        else:
            doc.data = _build(node, (), doc, loader, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = exc.context or ""
        if exc.context and exc.context_mark and exc.problem_mark:
            context += f" (from line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        message = ": ".join(str(p) for p in (context, exc.problem) if p)
        doc.data = None
        doc.problems = [f"{file}:{line}:{col}: (top level): YAML syntax error: {message}"]
    except yaml.YAMLError as exc:
        doc.data = None
        doc.problems = [f"{file}:1:1: (top level): YAML error: {' '.join(str(exc).split())}"]
    finally:
        if loader is not None:
            loader.dispose()
    doc.positions.setdefault((), (1, 1))
    return doc


def _build(node: yaml.Node, path: KeyPath, doc: YamlDocument, loader: _Loader, active: set[int]) -> Any:
    if id(node) in active:  # an alias that contains itself would recurse forever
        doc.problems.append(doc.problem(path, "recursive YAML alias"))
        return None
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node, deep=True)
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            doc.positions[path + (index,)] = _pos(item)
            items.append(_build(item, path + (index,), doc, loader, active))
        return items
    mapping: dict[Any, Any] = {}
    first_seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            doc.positions[path + ("<<",)] = _pos(key_node)
            message = "YAML merge keys (<<) are not supported; write the keys out"
            doc.problems.append(doc.problem(path + ("<<",), message))
            continue
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            doc.positions.setdefault(path + (str(key),), _pos(key_node))
            doc.problems.append(doc.problem(path + (str(key),), f"key {key!r} must be text (quote it)"))
            continue
        where = _pos(key_node)
        if key in first_seen:
            doc.problems.append(
                f"{doc.file}:{where[0]}:{where[1]}: {dotted(path + (key,))}: "
                f"duplicate key (first defined on line {first_seen[key]})"
            )
            continue  # the first definition wins, as in the line the message points back to
        first_seen[key] = where[0]
        doc.positions[path + (key,)] = where
        mapping[key] = _build(value_node, path + (key,), doc, loader, active)
    return mapping


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_schema(package: str, name: str) -> dict:
    return json.loads(resources.files(package).joinpath(name).read_text(encoding="utf-8"))


def schema_problems(doc: YamlDocument, schema: dict) -> list[tuple[KeyPath, str]]:
    """Validate `doc.data` against a JSON Schema; every error as (key path, message)."""
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[tuple[KeyPath, str]] = []
    for error in validator.iter_errors(doc.data):
        problems.extend(_explain(error))
    return problems


def _explain(error: jsonschema.ValidationError) -> list[tuple[KeyPath, str]]:
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        out = []
        for key in error.instance:
            if key in known or any(re.search(p, key) for p in patterns):
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(known)})"
            out.append((path + (key,), f"unknown key{hint}"))
        return out
    if error.validator == "required":
        match = re.match(r"'(.+)' is a required property", error.message)
        missing = match.group(1) if match else error.message
        return [(path, f"missing required key '{missing}'")]
    if "propertyNames" in error.relative_schema_path:
        # jsonschema reports a bad name on the mapping; point at the key itself
        key = str(error.instance)
        return [(path + (key,), f"invalid name {key!r}: {_custom(schema) or error.message}")]
    if _custom(schema) and error.validator in ("pattern", "minItems", "maxItems", "type"):
        return [(path, f"{_custom(schema)} (got {error.instance!r})")]
    return [(path, error.message)]


def _custom(schema: Any) -> str:
    """The schema's own wording for a failed check (`errorMessage`, ignored by validators)."""
    return schema.get("errorMessage", "") if isinstance(schema, dict) else ""


def report(doc: YamlDocument, found: Iterable[tuple[KeyPath, str]]) -> list[str]:
    """The document's own problems plus `found`, formatted, in file order."""
    lines = list(doc.problems) + [doc.problem(path, message) for path, message in found]
    unique = list(dict.fromkeys(lines))  # one schema error can surface twice through $ref

    def where(line: str) -> tuple[int, int]:
        match = re.match(r"(\d+):(\d+): ", line[len(doc.file) + 1:])
        return (int(match.group(1)), int(match.group(2))) if match else (0, 0)

    return sorted(unique, key=where)
