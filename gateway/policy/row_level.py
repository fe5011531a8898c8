"""Row-level outputs (docs/models.md#row-level-outputs): a template that releases one
row per unit (a per-household score, say) instead of aggregates.

Nothing per unit ever leaves otherwise, so the declaration is held to the narrowest
shape, checked when the policy loads:
- the rows go to an output, never back to the caller, and to exactly one receiver;
- they are keyed by the receiver's own unit ids: `output.key` names an output column
  that is, passed on unchanged through CTEs and derived tables, the privacy unit of a
  table the receiver owns (so the receiver learns something about units it already
  knows, and nothing names anyone else's);
- the template runs only with every owner's approval of this exact version (the
  owners of every table it reads and of every model it scores: gateway/collab), which
  the canonical form marks as row-level, so an approval of an aggregate template never
  covers a row-level one.
"""

from __future__ import annotations

from sqlglot import expressions as exp
from sqlglot.optimizer.scope import Scope, build_scope

from gateway.policy.model import CleanRoom, Template


def row_level_problems(room: CleanRoom, template: Template, tree: exp.Expression) -> list[tuple[str, str]]:
    """Problems of a row-level template as (dotted key path, message); `tree` is its
    qualified SQL (gateway.policy.templates)."""
    at = f"templates.{template.name}"
    output = template.output
    if output is None:
        return [(f"{at}.row_level_output", "a row-level output needs an output: the one collaborator who "
                                          "receives the rows (output: {name, receivers: [one], key})")]
    if len(output.receivers) != 1:
        return [(f"{at}.output.receivers", "a row-level output goes to exactly one receiver")]
    if output.key is None:
        return [(f"{at}.output.key", "a row-level output names its key: the output column of the receiver's "
                                     "own unit ids")]
    receiver = output.receivers[0]
    scope = build_scope(tree)
    if scope is None or not isinstance(tree, exp.Select):
        return [(f"{at}.sql", "a row-level output is one SELECT")]
    source = _traced(scope, output.key)
    if source is None:
        return [(f"{at}.output.key", f"{output.key} is not an output column passed on unchanged from a table")]
    table_name, column = source
    table = room.tables.get(table_name)
    if table is None or table.owner != receiver or table.privacy_unit != column:
        owned = sorted(f"{t.name}.{t.privacy_unit}" for t in room.tables.values()
                       if t.owner == receiver and t.privacy_unit)
        return [(f"{at}.output.key", f"{output.key} is {table_name}.{column}, not the privacy unit of a table "
                                     f"{receiver} owns ({', '.join(owned) or 'none'})")]
    return []


def _traced(scope: Scope, name: str) -> tuple[str, str] | None:
    """(table, column) an output column of `scope` is, through projections that pass a
    column on unchanged; None when it is computed or not an output."""
    select = scope.expression
    if not isinstance(select, exp.Select):
        return None
    for projection in select.expressions:
        if projection.alias_or_name != name:
            continue
        value = projection.unalias()
        if not isinstance(value, exp.Column):
            return None
        entry = scope.selected_sources.get(value.table)
        if entry is None:
            return None
        node, source = entry
        if isinstance(source, exp.Table):
            return source.name, value.name
        return _traced(source, value.name) if isinstance(source, Scope) else None
    return None


def training_problems(room: CleanRoom, template: Template, tree: exp.Expression) -> list[tuple[str, str]]:
    """A training template's rows never leave: one per unit (its first output column is
    a privacy unit, passed on unchanged), every other column bounded (the bounds, never
    the data, calibrate the DP fit), the label among them, and no output besides."""
    at = f"templates.{template.name}"
    if template.output is not None or template.row_level_output:
        return [(f"{at}.training", "a training template releases nothing: remove output and row_level_output")]
    scope = build_scope(tree)
    if scope is None or not isinstance(tree, exp.Select):
        return [(f"{at}.sql", "a training template is one SELECT")]
    columns = [p.alias_or_name for p in tree.expressions]
    traced = _traced(scope, columns[0]) if columns else None
    table = room.tables.get(traced[0]) if traced else None
    if table is None or table.privacy_unit != traced[1]:
        return [(f"{at}.sql", f"the first output column ({columns[0] if columns else 'none'}) must be a table's "
                              "privacy unit, passed on unchanged: one row per unit is fitted")]
    found = []
    label = template.training.label
    if label not in columns[1:]:
        found.append((f"{at}.training.label", f"{label} is not an output column ({', '.join(columns[1:])})"))
    for column in columns[1:]:
        if column not in template.bounds:
            found.append((f"{at}.bounds", f"{column} needs bounds: [lower, upper] calibrate the private fit"))
    if len(columns) < 3:
        found.append((f"{at}.sql", "a training template outputs the unit, at least one feature and the label"))
    bounds = template.bounds.get(label)
    if template.training.kind == "logistic" and bounds is not None and (bounds.lower, bounds.upper) != (0, 1):
        found.append((f"{at}.bounds.{label}", "a logistic regression's label is 0 or 1: bounds [0, 1]"))
    return found
