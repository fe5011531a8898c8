"""Quota usage for operators, in the Prometheus text exposition format (0.0.4):
what GET /v1/metrics answers to the users the config lists as operators.

Per analyst (a gateway user, across clean rooms) and per collaborator (of one
clean room): statements running on this host now, statements admitted in the
last minute, engine seconds in the last hour (all gateways sharing the store),
refusals by rule, and the limits in force in each clean room.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from gateway.policy.model import CleanRoom
from gateway.quotas.limits import FIELDS, analyst_limits, collaborator_limits
from gateway.quotas.service import RULES, QuotaService, analyst_subject, collaborator_subject
from gateway.quotas.slots import held_inodes

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_HELP = {
    "running_statements": ("gauge", "Statements admitted and not yet finished, on this gateway host."),
    "statements_last_minute": ("gauge", "Statements admitted in the last 60 seconds."),
    "engine_seconds_last_hour": ("gauge", "Engine seconds used in the last hour."),
    "quota_refusals_total": ("counter", "Statements refused by a quota, by rule."),
    "quota_limit": ("gauge", "The limit in force, by clean room and quota."),
}


def exposition(service: QuotaService, rooms: Mapping[str, CleanRoom]) -> str:
    analysts = sorted({user for room in rooms.values() for user in room.analysts})
    collaborators = sorted({(room.name, analyst.collaborator) for room in rooms.values()
                            for analyst in room.analysts.values()})
    subjects = [analyst_subject(user) for user in analysts]
    subjects += [collaborator_subject(room, collaborator) for room, collaborator in collaborators]
    usage = service.usage.usage(subjects, service.clock())
    held = held_inodes()
    samples: dict[str, list[tuple[dict, float]]] = {}

    def add(family: str, labels: dict, value: float) -> None:
        samples.setdefault(family, []).append((labels, value))

    for who, labels, subject in (
        [("analyst", {"analyst": user}, analyst_subject(user)) for user in analysts]
        + [("collaborator", {"cleanroom": room, "collaborator": c}, collaborator_subject(room, c))
           for room, c in collaborators]
    ):
        running = service.slots.running(subject, held) if held is not None else None
        if running is not None:
            add(f"cleanroom_{who}_running_statements", labels, running)
        add(f"cleanroom_{who}_statements_last_minute", labels, usage[subject].statements_last_minute)
        add(f"cleanroom_{who}_engine_seconds_last_hour", labels, round(usage[subject].engine_seconds_last_hour, 3))
        for rule in RULES:
            add(f"cleanroom_{who}_quota_refusals_total", {**labels, "rule": rule}, usage[subject].refusals.get(rule, 0))
    for room in sorted(rooms.values(), key=lambda r: r.name):
        for user in sorted(room.analysts):
            limits = analyst_limits(service.host, room, user)
            for quota in FIELDS:
                add("cleanroom_analyst_quota_limit", {"cleanroom": room.name, "analyst": user, "quota": quota},
                    getattr(limits, quota))
        for collaborator in sorted({a.collaborator for a in room.analysts.values()}):
            limits = collaborator_limits(service.host, room, collaborator)
            for quota in FIELDS:
                add("cleanroom_collaborator_quota_limit",
                    {"cleanroom": room.name, "collaborator": collaborator, "quota": quota}, getattr(limits, quota))
    return "".join(_family(name, rows) for name, rows in samples.items())


def _family(name: str, rows: Iterable[tuple[dict, float]]) -> str:
    kind, text = _HELP[name.split("_", 2)[2]]
    lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    for labels, value in rows:
        rendered = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
        lines.append(f"{name}{{{rendered}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
