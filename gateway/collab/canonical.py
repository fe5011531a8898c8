"""The identity an approval is bound to: a hash of the canonical template.

Canonical means: the SQL parsed (Postgres dialect) and generated again without
comments, with identifiers normalised, so layout and comments do not matter but
any change to what runs does; plus the parameter declarations (types, allowed
values, bounds, defaults), the release settings (the template's own k and the
k actually enforced; when set, its privacy settings, its declared bounds and
the strictest per-query epsilon cap of the tables it reads) and the output
declaration (who receives the result).
Any change to one of them gives a new hash, and approvals of the old one no
longer count.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from gateway.policy.model import AggregationRule, CleanRoom, Template, group_size


def canonical_sql(sql: str) -> str:
    tree = normalize_identifiers(sqlglot.parse_one(sql, read="postgres"), dialect="postgres")
    return tree.sql(dialect="postgres", comments=False)


def tables_touched(room: CleanRoom, template: Template) -> frozenset[str]:
    """Policy tables the template names (CTE names shadow tables, so they are left out)."""
    tree = normalize_identifiers(sqlglot.parse_one(template.sql, read="postgres"), dialect="postgres")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    return frozenset(t.name for t in tree.find_all(exp.Table) if t.name in room.tables and t.name not in ctes)


def owners(room: CleanRoom, tables: frozenset[str]) -> frozenset[str]:
    """Collaborators whose approval a template reading `tables` needs."""
    return frozenset(room.tables[t].owner for t in tables)


def canonical_form(room: CleanRoom, template: Template) -> dict:
    parameters = [
        {
            "name": p.name, "type": p.type.value, "values": list(p.values) if p.values is not None else None,
            "minimum": p.minimum, "maximum": p.maximum, "pattern": p.pattern, "default": p.default,
        }
        for p in sorted(template.parameters, key=lambda p: p.name)
    ]
    tables = tables_touched(room, template)
    output = template.output
    release = {
        "min_group_size": template.min_group_size,
        "enforced_min_group_size": group_size(room, tables, template.min_group_size),
    }
    # Differential-privacy settings are part of what the owners approve. Each is
    # added only when set, so the hash of a template without them stays as it was.
    if template.privacy is not None:
        release["privacy"] = plain(template.privacy)
    if template.bounds:
        release["bounds"] = plain(dict(template.bounds))
    caps = [room.tables[t].max_epsilon_per_query for t in tables if room.tables[t].max_epsilon_per_query]
    if caps:  # the owners' strictest cap, as enforced_min_group_size is the strictest k
        release["enforced_max_epsilon_per_query"] = min(caps)
    form = {
        "cleanroom": room.name,
        "template": template.name,
        "sql": canonical_sql(template.sql),
        "parameters": parameters,
        "release": release,
        "output": {"name": output.name, "receivers": sorted(output.receivers)} if output else None,
    }
    if template.training is not None:  # what is fitted on rows nobody sees
        form["training"] = plain(template.training)
    if template.row_level_output:  # one row per unit: never covered by an approval of an aggregate version
        form["row_level_output"] = {"key": output.key if output else None}
    scored = models_scored(room, template)
    if scored:  # the files' hashes and declarations are approved with the SQL that scores them
        form["models"] = model_forms(room, scored)
    return form


def models_scored(room: CleanRoom, template: Template) -> frozenset[str]:
    """Declared models the template scores: score('name', ...) with a name the policy declares."""
    tree = sqlglot.parse_one(template.sql, read="postgres")
    calls = [n for n in tree.find_all(exp.Anonymous) if str(n.name).lower() == "score" and n.expressions]
    return frozenset(c.expressions[0].this for c in calls
                     if isinstance(c.expressions[0], exp.Literal) and c.expressions[0].this in room.models)


def model_forms(room: CleanRoom, names) -> dict:
    """What owners approve of each model: its owner and its file's declaration (hash, inputs,
    output, bounds), never where the file lies on one machine."""
    forms = {}
    for name in sorted(names):
        model = room.models[name]
        declared = {k: v for k, v in plain(model.file).items() if k != "path"}
        forms[name] = {"owner": model.owner, **declared}
    return forms


def subject_owners(room: CleanRoom, tables: frozenset[str], form: dict) -> frozenset[str]:
    """Who must approve a template or rule: the owners of the tables it reads or covers, and
    of the models it scores (their approvers approve every use of their model)."""
    return owners(room, tables) | frozenset(m["owner"] for m in (form.get("models") or {}).values())


def template_hash(room: CleanRoom, template: Template) -> str:
    body = json.dumps(canonical_form(room, template), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


# -- rules ---------------------------------------------------------------------
#
# A rule's canonical form is the rule itself plus everything in the policy that
# decides what may leave through it: the clean room's settings, the policy of
# every table it covers (columns, roles, bounds, public values, k, privacy unit,
# keys, privacy settings) and the analysts it is granted to. Fields are read
# generically from the policy model, so settings added to the model later are
# covered without touching this file; only prose is left out.

_PROSE = frozenset({"description", "display_name"})  # notes for people, not policy
_ROOM_PARTS = frozenset({"collaborators", "tables", "models", "rules", "templates", "analysts", "members",
                         "source_file", "version",
                         "quotas", "timing"})  # covered elsewhere in the form, or not what data may be released
# (quotas share the host; timing pads when answers leave, never what they hold)


def plain(value):
    """Policy model values as JSON-ready data: dataclasses as objects of their
    fields (prose left out), enums as their values, sets sorted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in _PROSE and not _omitted(f, getattr(value, f.name))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=_json)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # dates and the like: their text is their identity


def _omitted(field: dataclasses.Field, value) -> bool:
    """A setting added to the model later, left out while unset so that policies
    without it keep their hashes (and their approvals)."""
    return field.metadata.get("canonical") == "omit_when_unset" and value is None


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def rule_tables(rule: AggregationRule) -> frozenset[str]:
    return frozenset(rule.tables)


def rule_canonical_form(room: CleanRoom, rule: AggregationRule) -> dict:
    tables = rule_tables(rule)
    rule_part = plain(rule)
    rule_part.update(
        tables=sorted(tables),
        joins=sorted(sorted([str(j.left), str(j.right)]) for j in rule.joins),
    )
    table_parts = {}
    for name in sorted(tables):
        table = plain(room.tables[name])
        table["keys"] = sorted(table.get("keys") or [])
        table_parts[name] = table
    room_part = {f.name: plain(getattr(room, f.name)) for f in dataclasses.fields(room)
                 if f.name not in _ROOM_PARTS | _PROSE}
    grantees = {
        name: {k: v for k, v in plain(analyst).items() if k not in ("name", "rules", "templates")}
        for name, analyst in sorted(room.analysts.items()) if rule.name in analyst.rules
    }
    form = {
        "kind": "rule",
        "cleanroom": room_part,
        "rule": rule_part,  # k enforced = max of the clean room's, the tables' and the rule's: all here
        "tables": table_parts,
        "analysts": grantees,
    }
    if rule.models:  # only when set, so rules that score nothing keep their hashes
        form["models"] = model_forms(room, rule.models)
    return form


def form_hash(form: dict) -> str:
    return hashlib.sha256(_json(form).encode()).hexdigest()


def rule_hash(room: CleanRoom, rule: AggregationRule) -> str:
    return form_hash(rule_canonical_form(room, rule))


# -- tightening ------------------------------------------------------------------
#
# A change keeps a rule's approvals only when it can only let less leave. Every
# difference between the approved form and the new one must be one of these;
# anything else, including every change to a setting not named here (privacy
# settings among them), is a loosening and needs every owner's approval again:
#
#   rule        tables, aggregates, joins: a subset of the approved ones
#               min_group_size: the same or higher (unset counts as 0)
#   clean room  min_group_size: the same or higher; every other setting unchanged
#   table       (each table the rule still covers) min_group_size: the same or
#               higher; max_epsilon_per_query: the same, lower, or newly set;
#               keys (public tables): a subset; owner, source, relation,
#               privacy unit, public and every other setting: unchanged
#   column      removed from the policy, or moved to hidden: tighter;
#               a new column: only if hidden; otherwise its role unchanged,
#               measure bounds the same or narrower (lower >= old lower,
#               upper <= old upper), its public values list and every other
#               setting unchanged
#   analysts    the rule granted to a subset of the approved analysts, each
#               with unchanged settings (collaborator, privacy overrides)


def loosenings(old: dict, new: dict) -> list[str]:
    """What in `new` could let more leave than `old` allowed; [] when `new`
    only tightens `old` (or equals it)."""
    found: list[str] = []
    if old.get("kind") != "rule" or new.get("kind") != "rule" or set(old) != set(new):
        return ["the canonical form changed shape"]
    _at_least(found, "cleanroom", old["cleanroom"], new["cleanroom"], "min_group_size")
    _unchanged(found, "cleanroom", old["cleanroom"], new["cleanroom"], skip={"min_group_size"})
    o, n = old["rule"], new["rule"]
    for key in ("tables", "aggregates"):
        _subset(found, f"rule.{key}", o.get(key), n.get(key))
    _subset(found, "rule.joins", [_json(j) for j in o.get("joins") or []], [_json(j) for j in n.get("joins") or []])
    _at_least(found, "rule", o, n, "min_group_size")
    _unchanged(found, "rule", o, n, skip={"tables", "aggregates", "joins", "min_group_size"})
    for name, table in new["tables"].items():
        before = old["tables"].get(name)
        if before is None:
            found.append(f"tables.{name}: newly covered")
            continue
        _table_loosenings(found, f"tables.{name}", before, table)
    for name, analyst in new["analysts"].items():
        if name not in old["analysts"]:
            found.append(f"analysts.{name}: newly granted the rule")
        elif analyst != old["analysts"][name]:
            found.append(f"analysts.{name}: settings changed")
    for name, model in (new.get("models") or {}).items():  # a new file or declaration is a new model
        if model != (old.get("models") or {}).get(name):
            found.append(f"models.{name}: newly scored or its declaration changed")
    return found


def _table_loosenings(found: list[str], at: str, old: dict, new: dict) -> None:
    _at_least(found, at, old, new, "min_group_size")
    _at_most(found, at, old, new, "max_epsilon_per_query")
    _subset(found, f"{at}.keys", old.get("keys"), new.get("keys"))
    _unchanged(found, at, old, new, skip={"min_group_size", "max_epsilon_per_query", "keys", "columns"})
    old_columns, new_columns = old.get("columns") or {}, new.get("columns") or {}
    for name, column in new_columns.items():
        where = f"{at}.columns.{name}"
        before = old_columns.get(name)
        if column.get("role") == "hidden":
            continue  # hidden: nothing of it leaves, whatever else it says
        if before is None:
            found.append(f"{where}: new column")
            continue
        if column.get("role") != before.get("role"):
            found.append(f"{where}.role: {before.get('role')} -> {column.get('role')}")
            continue
        _narrower_bounds(found, f"{where}.bounds", before.get("bounds"), column.get("bounds"))
        _unchanged(found, where, before, column, skip={"bounds"})


def _unchanged(found: list[str], at: str, old: dict, new: dict, skip: set[str]) -> None:
    for key in sorted((set(old) | set(new)) - skip):
        if key not in old or key not in new or _json(old[key]) != _json(new[key]):
            found.append(f"{at}.{key} changed")


def _at_least(found: list[str], at: str, old: dict, new: dict, key: str) -> None:
    before, after = old.get(key) or 0, new.get(key) or 0
    if after < before:
        found.append(f"{at}.{key} lowered ({before} -> {after})")


def _at_most(found: list[str], at: str, old: dict, new: dict, key: str) -> None:
    """A cap: lowered or newly set is tighter; raised or removed is looser (unset: no cap)."""
    before, after = old.get(key), new.get(key)
    if after is None and before is not None:
        found.append(f"{at}.{key} removed (was {before})")
    elif after is not None and before is not None and after > before:
        found.append(f"{at}.{key} raised ({before} -> {after})")


def _subset(found: list[str], at: str, old, new) -> None:
    added = sorted(set(new or ()) - set(old or ()))
    if added:
        found.append(f"{at}: added {', '.join(map(str, added))}")


def _narrower_bounds(found: list[str], at: str, old, new) -> None:
    if old is None and new is None:
        return
    if old is None or new is None:
        found.append(f"{at} changed")
    elif new["lower"] < old["lower"] or new["upper"] > old["upper"]:
        found.append(f"{at} widened ([{old['lower']}, {old['upper']}] -> [{new['lower']}, {new['upper']}])")


def tightenings(old: dict, new: dict) -> list[str]:
    """What `new` tightened compared with `old` (for the record of a carried approval)."""
    changes = []

    def walk(at, a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in b:
                    changes.append(f"{at}.{key} removed".lstrip("."))
                elif key not in a:
                    changes.append(f"{at}.{key} added".lstrip("."))
                else:
                    walk(f"{at}.{key}", a[key], b[key])
        elif _json(a) != _json(b):
            changes.append(f"{at}: {_json(a)} -> {_json(b)}".lstrip("."))

    walk("", old, new)
    return changes
