"""Policy checks of the collaboration sections: members and template outputs."""

from __future__ import annotations

import pytest
import yaml

from gateway.errors import PolicyInvalid
from gateway.policy.loader import load_policy
from gateway.policy.model import MemberRole
from tests.collabkit import policy


def load(tmp_path, data):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policy(path)


def problems(tmp_path, data) -> str:
    with pytest.raises(PolicyInvalid) as error:
        load(tmp_path, data)
    return "\n".join(error.value.problems)


def test_members_and_outputs_load(tmp_path):
    room = load(tmp_path, policy())
    assert room.members["appr_b"].roles == frozenset({MemberRole.APPROVER, MemberRole.AUTHOR})
    assert room.has_role("audit_b", MemberRole.AUDITOR) and not room.has_role("ana", MemberRole.AUDITOR)
    assert room.collaborator_of("ana") == "a" and room.collaborator_of("appr_c") == "c"
    assert room.templates["to_b"].output.receivers == ("b",)


def test_member_problems(tmp_path):
    data = policy()
    data["members"]["appr_a"]["collaborator"] = "zz"
    data["members"]["ana"] = {"collaborator": "b", "roles": ["author"]}  # ana is a's analyst
    data["members"]["appr_c"]["roles"] = ["admin"]
    found = problems(tmp_path, data)
    assert "members.appr_a.collaborator: unknown collaborator 'zz'" in found
    assert "members.ana.collaborator: ana is an analyst for 'a'; a user works for one collaborator" in found
    assert "members.appr_c.roles[0]" in found


def test_output_problems(tmp_path):
    data = policy()
    data["templates"]["to_b"]["output"]["receivers"] = ["b", "nobody"]
    data["templates"]["joined"]["output"] = {"name": "joined_for_b", "receivers": ["b"]}
    found = problems(tmp_path, data)
    assert "templates.to_b.output.receivers[1]: unknown collaborator 'nobody'" in found
    assert "output 'joined_for_b' is already written by template" in found
