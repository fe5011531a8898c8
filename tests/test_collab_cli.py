"""`cleanroom template ...`: the caller is whoever owns the token; the demo's
approvals go through the same path."""

from __future__ import annotations

import json

import pytest
import yaml

from gateway.auth import hash_token
from gateway.cli import main as cli
from tests.collabkit import build


@pytest.fixture
def config_path(tmp_path):
    build(tmp_path).close()
    path = tmp_path / "gateway.yaml"
    config = yaml.safe_load(path.read_text())
    config["users"] = {name: {"token_sha256": hash_token(f"secret-{name}")} for name in ("ana", "appr_a", "appr_b")}
    path.write_text(yaml.safe_dump(config))
    return path


def template(config_path, *args, token=None):
    argv = ["template", *args, "--config", str(config_path)] + (["--token", token] if token else [])
    return cli(argv)


def test_approve_and_revoke_with_a_token(config_path, capsys):
    assert template(config_path, "status", "joined") == 0
    assert json.loads(capsys.readouterr().out)["missing"] == ["a", "b"]
    assert template(config_path, "approve", "joined") == 2  # no token
    assert "a valid token is required" in capsys.readouterr().err
    assert template(config_path, "approve", "joined", token="wrong") == 2
    capsys.readouterr()
    assert template(config_path, "approve", "joined", token="secret-ana") == 1
    assert "collab.not_approver" in capsys.readouterr().err
    assert template(config_path, "approve", "joined", token="secret-appr_a") == 0
    assert json.loads(capsys.readouterr().out)["missing"] == ["b"]
    assert template(config_path, "approve", "joined", token="secret-appr_b") == 0
    assert json.loads(capsys.readouterr().out)["approved"] is True
    assert template(config_path, "revoke", "joined", token="secret-appr_a") == 0
    assert json.loads(capsys.readouterr().out)["missing"] == ["a"]
    assert template(config_path, "status", "nope") == 1


def test_the_demo_approves_its_template_as_both_owners(demo_config_path):
    from gateway.collab.approvals import Collaboration
    from gateway.collab.demo import approve_demo
    from gateway.config import load_config
    from gateway.policy.loader import load_policy

    again = approve_demo(demo_config_path)  # the fixture already did it once: idempotent
    assert {(a.collaborator, a.approver) for a in again} == {
        ("retailer", "retailer_approver"), ("publisher", "publisher_approver")}
    config = load_config(demo_config_path)
    room = load_policy(config.policies[0])
    status = Collaboration.from_config(config).status(room, "campaign_reach")
    assert status.approved and status.owners == ("publisher", "retailer")
