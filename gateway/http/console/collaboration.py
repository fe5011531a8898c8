"""The approver's inbox, the auditor's log and the data owner's outputs.

Each page asks the same services the API's collaboration endpoints do
(gateway.collab: Collaboration, audit_tools, outputs) and lets them decide:
an approval the policy does not allow is refused there, with its rule id.
"""

from __future__ import annotations

import difflib
import json

from flask import Response, g, render_template, request

from gateway.collab.canonical import loosenings
from gateway.collab.subjects import Kind, subject_names
from gateway.errors import Refused
from gateway.http import problems
from gateway.http.console import blueprint
from gateway.http.console.views import engine, require_page, session

KINDS = tuple(kind.value for kind in Kind)
ACTIONS = ("approve", "revoke")
AUDIT_SHOWN = 200  # newest matching records on the page
AUDIT_SCANNED = 5000  # newest records searched by a filter


def _collab():
    return engine().context.collab


# -- approver ------------------------------------------------------------------
def _status(room, kind: str, name: str):
    return _collab().status(room, name, kind)


def _diff(old: dict | None, new: dict) -> list[tuple[str, str]]:
    """(css class, line) of a unified diff of the two canonical forms as indented JSON."""
    new_lines = json.dumps(new, indent=2, sort_keys=True).splitlines()
    if old is None:
        return [("", line) for line in new_lines]
    old_lines = json.dumps(old, indent=2, sort_keys=True).splitlines()
    marks = {"+": "diff-add", "-": "diff-del"}
    return [(marks.get(line[:1], ""), line)
            for line in difflib.unified_diff(old_lines, new_lines, "approved", "current", n=3, lineterm="")]


def _item(room, kind: str, name: str, collaborator: str) -> dict | None:
    status = _status(room, kind, name)
    if collaborator not in status.owners:
        return None
    subject = status.subject
    previous = _collab().previous_version(subject)
    form = subject.form
    loosens = loosenings(previous["form"], form) if previous and subject.facts.carries_forward else None
    return {"kind": kind, "name": name, "status": status, "mine_missing": collaborator in status.missing,
            "previous": previous, "diff": _diff(previous["form"] if previous else None, form),
            "loosens": loosens}


def _inbox(room, user: str) -> list[dict]:
    collaborator = room.members[user].collaborator
    kinds = list(Kind)  # templates first, each kind by name
    ordered = sorted(subject_names(room), key=lambda pair: (kinds.index(pair[0]), pair[1]))
    found = [_item(room, kind.value, name, collaborator) for kind, name in ordered]
    return [item for item in found if item is not None]


@blueprint.get("/approver")
def approver():
    room = require_page("approver")
    items = _inbox(room, session().user)
    return render_template("approver.html", room=room, pending=[i for i in items if i["mine_missing"]],
                           approved=[i for i in items if not i["mine_missing"]],
                           collaborator=room.members[session().user].collaborator)


def _chosen(room) -> tuple[str, str, str, str]:
    kind, name, action = request.form.get("kind"), request.form.get("name", ""), request.form.get("action")
    if kind not in KINDS or action not in ACTIONS:
        raise problems.InvalidBody("kind must be template or rule, action approve or revoke")
    return kind, name, action, request.form.get("sha256", "")


@blueprint.post("/approver/confirm")
def confirm():
    """The confirmation step: what exactly will be approved or revoked."""
    room = require_page("approver")
    kind, name, action, _ = _chosen(room)
    item = _item(room, kind, name, room.members[session().user].collaborator)
    if item is None:
        _status(room, kind, name)  # an unknown name is refused there, as by the API
        raise Refused(f"{kind} {name} reads no table of your collaborator", rule=f"{kind}.not_an_owner")
    return render_template("confirm.html", room=room, item=item, action=action)


@blueprint.post("/approver/act")
def act():
    room = require_page("approver")
    kind, name, action, seen = _chosen(room)
    current = _status(room, kind, name).sha256
    if action == "approve" and seen != current:
        raise Refused(f"{kind} {name} changed since you looked at it (now {current[:12]})", rule="console.stale",
                      hint="open the inbox again and review the current version")
    outcome = _collab().act(session().user, room, kind, name, action, front_end="console")
    done = f"revoked {outcome['revoked']} approval(s)" if action == "revoke" \
        else f"approved (approval {outcome['approval_sha256'][:12]})"
    return render_template("done.html", room=room, kind=kind, name=name, done=done, status=_status(room, kind, name))


# -- auditor ---------------------------------------------------------------------
FILTERS = ("user", "decision", "front_end", "rule", "text")


def _matches(record: dict, wanted: dict) -> bool:
    for key in ("user", "decision", "front_end"):
        if wanted[key] and str(record.get(key, "")) != wanted[key]:
            return False
    if wanted["rule"] and not str(record.get("rule", "")).startswith(wanted["rule"]):
        return False
    return not wanted["text"] or wanted["text"].lower() in json.dumps(record, sort_keys=True).lower()


@blueprint.route("/auditor", methods=["GET", "POST"])
def auditor():
    """The audit log of the auditor's clean room, newest first, filtered by a POSTed form
    (filters may quote SQL: they stay out of URLs); the chain verified on every view."""
    from gateway.collab.audit_tools import tail, verify_room

    room = require_page("auditor")
    audit = engine().context.audit
    verify_problems, _, chains, count = verify_room(audit.state_dir, _collab().store)
    wanted = {key: request.form.get(key, "").strip() for key in FILTERS}
    records = tail(audit, AUDIT_SCANNED, keep=lambda r: r.get("cleanroom") == room.name and _matches(r, wanted),
                   rooms={room.name})
    records = list(reversed(records))[:AUDIT_SHOWN]
    return render_template("auditor.html", room=room, records=records, wanted=wanted, count=count,
                           verify_problems=verify_problems, chains=chains,
                           shown=AUDIT_SHOWN, scanned=AUDIT_SCANNED)


# -- data owner ------------------------------------------------------------------
@blueprint.get("/outputs")
def outputs():
    from gateway.collab.outputs import list_outputs

    room = require_page("outputs")
    listed = [o.as_json() for o in list_outputs(_collab(), room, session().user)]
    return render_template("outputs.html", room=room, outputs=listed,
                           collaborator=room.collaborator_of(session().user),
                           retention_hours=_collab().output_retention_hours)


@blueprint.post("/outputs/download")
def download_output():
    from gateway.collab.outputs import read_output
    from gateway.engine.types import Release
    from gateway.http.render import release_response
    from gateway.http.requests import CSV_TYPE

    room = require_page("outputs")
    info, table = read_output(_collab(), room, session().user, request.form.get("output", ""))
    release = Release(request_id=g.request_id, table=table, authorised_by=f"output:{info.name}",
                      min_group_size=None, notices=(f"output {info.name} of template {info.template}",))
    response: Response = release_response(release, CSV_TYPE)
    response.headers["Content-Disposition"] = f'attachment; filename="{info.name}-{info.output_id[:8]}.csv"'
    return response
