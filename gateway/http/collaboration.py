"""HTTP endpoints of collaboration, as a Flask Blueprint the app registers:

    POST /v1/templates/<name>/propose   author of a collaborator
    POST /v1/templates/<name>/approve   approver of an owner of a table it reads
    POST /v1/templates/<name>/revoke    approver: withdraws its collaborator's approvals
    GET  /v1/templates/<name>/status    anyone in the clean room: hash, owners, approvals, missing
    POST /v1/rules/<name>/propose       the same for aggregation rules: author
    POST /v1/rules/<name>/approve       approver of an owner of a table the rule covers
    POST /v1/rules/<name>/revoke        approver: withdraws its collaborator's approvals
    GET  /v1/rules/<name>/status        anyone in the clean room
    GET  /v1/audit?n=100                auditors only: the newest records of their clean rooms
    GET  /v1/outputs                    outputs the caller's collaborator receives
    GET  /v1/outputs/<name>             the newest such output (JSON, CSV or Arrow)

The caller is whoever owns the bearer token (gateway.auth.user_for_token);
what it may do comes from the policy's roles. Nothing in the request grants
a role. Errors are the app's problems (403 refused, 404 unknown).
"""

from __future__ import annotations

from flask import Blueprint, g, request

from gateway.collab.approvals import ACTIONS
from gateway.collab.audit_tools import tail
from gateway.collab.subjects import KINDS
from gateway.collab.outputs import list_outputs, read_output
from gateway.engine.types import Release
from gateway.errors import BadParameter, Refused, UnknownCleanRoom
from gateway.http.render import release_response
from gateway.http.requests import authenticate, current_engine, result_media_type
from gateway.policy.model import CleanRoom, MemberRole

blueprint = Blueprint("collaboration", __name__)

MAX_AUDIT_RECORDS = 1000


_engine = current_engine


def _user() -> str:
    """The authenticated user: the app's before_request has set g.user; else
    authenticate the same way it does."""
    if not g.get("user"):
        g.user = authenticate(_engine().config)
    return g.user


def _room(user: str) -> CleanRoom:
    """The clean room named by ?cleanroom= or the body, else the caller's only one."""
    rooms = {n: r for n, r in _engine().context.cleanrooms.items() if r.collaborator_of(user) is not None}
    body = request.get_json(silent=True) if request.method == "POST" else None
    chosen = (body or {}).get("cleanroom") if isinstance(body, dict) else None
    chosen = chosen or request.args.get("cleanroom")
    if chosen is None and len(rooms) == 1:
        return next(iter(rooms.values()))
    if chosen in rooms:
        return rooms[chosen]
    hint = f"name one with ?cleanroom=: {', '.join(sorted(rooms))}" if rooms else None
    raise UnknownCleanRoom(f"no clean room {chosen!r} for user {user!r}", rule="cleanroom.unknown", hint=hint)


def _collab():
    return _engine().context.collab


# One pair of views for both kinds of approval subject (gateway.collab.subjects), each
# path spelt out (as openapi.yaml documents it) and passing its kind and action on.
def act(kind: str, name: str, action: str):
    user = _user()
    return _collab().act(user, _room(user), kind, name, action, front_end="http")


def status(kind: str, name: str):
    user = _user()
    return _collab().status(_room(user), name, kind).as_json()


for _kind, _facts in KINDS.items():  # /v1/templates/..., /v1/rules/...
    for _action in ACTIONS:
        blueprint.add_url_rule(f"/v1/{_facts.plural}/<name>/{_action}", f"{_action}_{_kind.value}", act,
                               methods=["POST"], defaults={"kind": _kind.value, "action": _action})
    blueprint.add_url_rule(f"/v1/{_facts.plural}/<name>/status", f"status_{_kind.value}", status, methods=["GET"],
                           defaults={"kind": _kind.value})


@blueprint.get("/v1/audit")
def audit():
    user = _user()
    engine = _engine()
    rooms = {n for n, r in engine.context.cleanrooms.items() if r.has_role(user, MemberRole.AUDITOR)}
    if not rooms:
        raise Refused("only auditors read the audit log", rule="audit.not_auditor",
                      hint="the auditor role is granted under members: in the policy")
    text = request.args.get("n", "100")
    if not text.isdigit() or not 1 <= int(text) <= MAX_AUDIT_RECORDS:
        raise BadParameter(f"n must be a whole number from 1 to {MAX_AUDIT_RECORDS}, not {text[:40]!r}",
                           rule="audit.bad_n", hint="GET /v1/audit?n=100")
    n = int(text)
    records = tail(engine.context.audit, n, keep=lambda record: record.get("cleanroom") in rooms, rooms=rooms)
    return {"cleanrooms": sorted(rooms), "records": records}


@blueprint.get("/v1/outputs")
def outputs():
    user = _user()
    room = _room(user)
    return {"cleanroom": room.name, "outputs": [o.as_json() for o in list_outputs(_collab(), room, user)]}


@blueprint.get("/v1/outputs/<name>")
def output(name: str):
    user = _user()
    media_type = result_media_type()
    info, table = read_output(_collab(), _room(user), user, name)
    notice = f"output {info.name} of template {info.template}, written {info.as_json()['created_at']}, " \
             f"kept until {info.as_json()['expires_at']}"
    release = Release(request_id=g.get("request_id") or info.request_id, table=table,
                      authorised_by=f"output:{info.name}", min_group_size=None, notices=(notice,))
    return release_response(release, media_type)
