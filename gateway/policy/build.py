"""A valid policy document -> the immutable CleanRoom model (gateway.policy.model).
Only documents gateway.policy.checks passed come here: keys are where the schema
and the checks said they are.
"""

from __future__ import annotations

from gateway.policy.buckets import buckets_from
from gateway.policy.model import (
    Accounting,
    Aggregate,
    AggregationRule,
    Analyst,
    Bounds,
    CleanRoom,
    Collaborator,
    Column,
    ColumnRef,
    DifferentialPrivacy,
    JoinPath,
    MeasureProfile,
    Member,
    MemberRole,
    Output,
    Parameter,
    ParamType,
    PrivacyBudget,
    PrivacyOverride,
    Refresh,
    Role,
    Table,
    TableProfile,
    Template,
    Timing,
    TimingPad,
    Training,
)
from gateway.policy.model_assets import models_from
from gateway.policy.quotas import quotas_from



def build(data: dict, source_file: str, version: str, relative_to: str | None = None) -> CleanRoom:
    return CleanRoom(
        name=data["cleanroom"],
        description=data.get("description", ""),
        min_group_size=int(data.get("min_group_size", CleanRoom.min_group_size)),
        collaborators={
            name: Collaborator(name, spec.get("display_name", ""), spec.get("description", ""))
            for name, spec in data["collaborators"].items()
        },
        tables={name: _table(name, spec) for name, spec in data["tables"].items()},
        models=models_from(data, relative_to or source_file),
        rules={name: _rule(name, spec) for name, spec in data.get("rules", {}).items()},
        templates={name: _template(name, spec) for name, spec in data.get("templates", {}).items()},
        analysts={
            name: Analyst(
                name, spec["collaborator"], tuple(spec.get("rules", ())), tuple(spec.get("templates", ())),
                privacy=_privacy_override(spec.get("privacy")),
            )
            for name, spec in data.get("analysts", {}).items()
        },
        members={
            name: Member(name, spec["collaborator"], frozenset(MemberRole(r) for r in spec["roles"]))
            for name, spec in data.get("members", {}).items()
        },
        privacy=_privacy(data.get("privacy")),
        quotas=quotas_from(data.get("quotas")),
        timing=_timing(data.get("timing") or {}),
        source_file=source_file,
        version=version,
    )


def _timing(spec: dict) -> Timing:
    return Timing(TimingPad(spec.get("pad", Timing.pad.value)), float(spec.get("step_seconds", Timing.step_seconds)))


def _budget(spec: dict) -> PrivacyBudget:
    return PrivacyBudget(float(spec["epsilon"]), float(spec.get("delta", 0.0)), Refresh(spec.get("refresh", "never")))


def _privacy(spec: dict | None) -> DifferentialPrivacy | None:
    if spec is None:
        return None
    optional = {k: spec[k] for k in ("delta_per_query", "max_rows_per_unit", "max_groups_per_unit",
                                     "max_contributions_per_unit") if k in spec}
    if "report_clipping" in spec:
        optional["report_clipping"] = float(spec["report_clipping"])
    if "accounting" in spec:
        optional["accounting"] = Accounting(spec["accounting"])
    if "min_group_size_on_public_keys" in spec:
        optional["min_group_size_on_public_keys"] = bool(spec["min_group_size_on_public_keys"])
    if "profile" in spec:
        optional["profiles"] = tuple(_profile(table, entry) for table, entry in spec["profile"].items())
    return DifferentialPrivacy(epsilon_per_query=float(spec["epsilon_per_query"]), budget=_budget(spec["budget"]), **optional)


def _profile(table: str, spec: dict) -> TableProfile:
    measures = tuple(MeasureProfile(column, tuple(float(e) for e in m["edges"]), tuple(int(c) for c in m["counts"]))
                     for column, m in (spec.get("measures") or {}).items())
    epsilon = float(spec["epsilon"]) if "epsilon" in spec else None
    return TableProfile(table, tuple(int(u) for u in spec["units_by_rows"]), epsilon, measures)


def _privacy_override(spec: dict | None) -> PrivacyOverride | None:
    if spec is None:
        return None
    fields = {k: spec[k] for k in ("epsilon_per_query", "delta_per_query", "max_rows_per_unit", "max_groups_per_unit",
                                   "max_contributions_per_unit") if k in spec}
    return PrivacyOverride(**fields, budget=_budget(spec["budget"]) if "budget" in spec else None)


def _table(name: str, spec: dict) -> Table:
    columns = {
        column: Column(
            name=column,
            role=Role(c["role"]),
            description=c.get("description", ""),
            values=tuple(c["values"]) if "values" in c else None,
            bounds=Bounds(float(c["bounds"][0]), float(c["bounds"][1])) if "bounds" in c else None,
            buckets=buckets_from(c["buckets"]) if "buckets" in c else None,
        )
        for column, c in spec["columns"].items()
    }
    return Table(
        name=name,
        owner=spec["owner"],
        source=spec["source"],
        relation=spec.get("relation"),
        columns=columns,
        privacy_unit=spec.get("privacy_unit"),
        public=spec.get("public", False),
        keys=tuple(spec.get("keys", ())),
        min_group_size=spec.get("min_group_size"),
        description=spec.get("description", ""),
        max_epsilon_per_query=spec.get("max_epsilon_per_query"),
    )


def _rule(name: str, spec: dict) -> AggregationRule:
    joins = tuple(
        JoinPath(ColumnRef(*left.split(".")), ColumnRef(*right.split("."))) for left, right in spec.get("joins", ())
    )
    return AggregationRule(
        name=name,
        tables=tuple(spec["tables"]),
        aggregates=frozenset(Aggregate(a) for a in spec["aggregates"]),
        joins=joins,
        min_group_size=spec.get("min_group_size"),
        description=spec.get("description", ""),
        privacy=_privacy_override(spec.get("privacy")),
        models=tuple(spec["models"]) if "models" in spec else None,
    )


def _template(name: str, spec: dict) -> Template:
    parameters = tuple(
        Parameter(
            name=pname,
            type=ParamType(p["type"]),
            description=p.get("description", ""),
            values=tuple(p["values"]) if "values" in p else None,
            minimum=p.get("minimum"),
            maximum=p.get("maximum"),
            pattern=p.get("pattern"),
            default=p.get("default"),
        )
        for pname, p in spec.get("parameters", {}).items()
    )
    return Template(
        name=name,
        sql=spec["sql"],
        parameters=parameters,
        description=spec.get("description", ""),
        min_group_size=spec.get("min_group_size"),
        output=Output(spec["output"]["name"], tuple(spec["output"]["receivers"]),
                      spec["output"].get("key")) if "output" in spec else None,
        privacy=_privacy_override(spec.get("privacy")),
        bounds={column: Bounds(float(lo), float(hi)) for column, (lo, hi) in spec.get("bounds", {}).items()},
        row_level_output=spec.get("row_level_output", False),
        training=Training(spec["training"]["kind"], spec["training"]["label"]) if "training" in spec else None,
    )
