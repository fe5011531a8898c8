"""`cleanroom policy test`: YAML cases beside a policy, run through the engine."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import main as cli

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_policy_tests_pass(demo_config_path, capsys):
    code = cli(["policy", "test", str(REPO / "policies" / "demo.yaml"), "--config", str(demo_config_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "15 of 15 passed" in out


def test_a_failing_case_is_reported_and_exits_1(demo_config_path, tmp_path, capsys):
    (tmp_path / "demo.yaml").write_text((REPO / "policies" / "demo.yaml").read_text())
    (tmp_path / "models").symlink_to(REPO / "policies" / "models", target_is_directory=True)  # its model files
    (tmp_path / "demo.tests.yaml").write_text(
        "cases:\n"
        "  - name: raw rows are allowed (wrongly expected)\n"
        "    user: analyst\n"
        "    sql: SELECT region, amount FROM purchases\n"
        "    expect: allowed\n"
        "  - name: k is 10\n"
        "    user: analyst\n"
        "    sql: SELECT region, COUNT(*) FROM purchases GROUP BY region\n"
        "    expect: {released: {min_group_size: 25}}\n"
        "  - name: refused by the right rule\n"
        "    user: analyst\n"
        "    sql: SELECT region, amount FROM purchases\n"
        "    expect: {refused: query.not_aggregated}\n"
        "  - name: epsilon is 0.1\n"
        "    user: analyst\n"
        "    sql: SELECT region, COUNT(*) FROM purchases GROUP BY region\n"
        "    expect: {released: {epsilon: 0.5}}\n"
        "  - name: a household adds 30 rows in all\n"
        "    user: analyst\n"
        "    sql: SELECT region, COUNT(*) FROM purchases GROUP BY region\n"
        "    expect: {released: {max_contributions_per_unit: 30}}\n"
    )
    code = cli(["policy", "test", str(tmp_path), "--config", str(demo_config_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "raw rows are allowed (wrongly expected): expected allowed; got: refused by query.not_aggregated" in out
    assert ("k is 10: expected min_group_size 25; got: allowed (authorised_by=rule:cross_party_aggregates, "
            "min_group_size=10, epsilon=0.1") in out
    assert "epsilon is 0.1: expected epsilon 0.5; got: allowed (" in out
    assert ("a household adds 30 rows in all: expected max_contributions_per_unit 30; got: allowed (" in out
            and "max_contributions_per_unit=26)" in out)  # chosen from the profile: the demo declares 50
    assert "ok   " in out and "1 of 5 passed, 4 failed" in out


def test_policy_tests_leave_no_trace_in_the_state_folder(demo_config_path, capsys):
    import yaml

    state = Path(yaml.safe_load(demo_config_path.read_text())["state_dir"])
    from gateway.audit_log import chain_paths

    def audit():  # every chain of the folder, and the old single log if there is one
        return sorted((path.name, path.read_bytes()) for path in chain_paths(state))

    before = audit()
    cli(["policy", "test", str(REPO / "policies" / "demo.yaml"), "--config", str(demo_config_path)])
    assert audit() == before
