"""`cleanroom policy test`: policy test cases kept beside a policy, in YAML.

    # policies/demo.tests.yaml
    policy: demo.yaml                  # default: this file's name without .tests
    config: ../config/demo.yaml        # gateway config whose sources the queries compile against
    cases:
      - name: raw rows never leave
        user: analyst
        sql: SELECT * FROM purchases
        expect: {refused: query.not_aggregated}
      - name: spend by region is released with k = 10
        user: analyst
        sql: SELECT region, SUM(amount) FROM purchases GROUP BY region
        expect: {released: {min_group_size: 10, authorised_by: "rule:cross_party_aggregates"}}
      - name: the template needs both owners
        user: analyst
        template: campaign_reach
        params: {campaign: spring_sale}
        approvals: [publisher]         # owners that approved its templates and rules (default: every owner)
        expect: {refused: template.not_approved}

Each case compiles its statement through the real engine (every pass up to
the generated SQL; nothing is executed, no row is read) against the policy
under test, in a throwaway state folder, so test runs leave no audit records
or approvals behind.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.config import load_config
from gateway.config_model import StoreSettings
from gateway.dp.families import Contribution
from gateway.engine.engine import Engine
from gateway.engine.types import QueryRequest
from gateway.errors import GatewayError, PolicyInvalid
from gateway.policy.loader import load_policy


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    detail: str  # what happened, and what was expected when it failed


def tests_file_for(path: Path) -> Path:
    """policies/x.yaml -> policies/x.tests.yaml; a tests file stays as it is."""
    path = Path(path)
    return path if path.name.endswith((".tests.yaml", ".tests.yml")) else path.with_name(f"{path.stem}.tests.yaml")


def find_tests_files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.name.endswith((".tests.yaml", ".tests.yml")))
        else:
            found.append(tests_file_for(path))
    return found


def run_file(tests_path: Path, config_path: str | Path | None = None) -> list[CaseResult]:
    """Run every case of one tests file. Raises PolicyInvalid if the policy or
    the tests file itself is broken."""
    tests_path = Path(tests_path)
    spec = yaml.safe_load(tests_path.read_text()) or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("cases"), list):
        raise PolicyInvalid([f"{tests_path}: expected a mapping with a list under cases:"])
    policy_name = spec.get("policy") or tests_path.name.replace(".tests.", ".")
    room = load_policy(tests_path.parent / policy_name)
    config_path = config_path or (tests_path.parent / spec["config"] if spec.get("config") else None)
    if config_path is None:
        raise PolicyInvalid([f"{tests_path}: name the gateway config (config: in the file, or --config)"])
    with tempfile.TemporaryDirectory(prefix="cleanroom-policy-test-") as state:
        config = dataclasses.replace(load_config(config_path), state_dir=Path(state), store=StoreSettings())
        engine = Engine(config, cleanrooms={room.name: room})
        try:
            return [_run_case(engine, room, tests_path, i, case) for i, case in enumerate(spec["cases"])]
        finally:
            engine.close()


def _run_case(engine, room, tests_path: Path, index: int, case: dict) -> CaseResult:
    name = str(case.get("name") or f"case {index + 1}")
    expect = case.get("expect", "allowed")
    collab = engine.context.collab
    collab.store.execute("DELETE FROM approvals")
    # Approvals are state: the case says which owners approved (of templates and rules alike).
    for subject in collab.subjects(room):
        needed = subject.owners
        approving = needed if case.get("approvals") is None else set(case["approvals"]) & needed
        for owner in sorted(approving):
            collab.record_approval(room, subject.kind, subject.name, owner, "policy-test")
    request = QueryRequest(
        user=str(case.get("user", "")), cleanroom=room.name, sql=case.get("sql"), template=case.get("template"),
        params=case.get("params", {} if case.get("template") else ()), front_end="policy-test",
    )
    try:
        state = engine.compile(request)
        outcome, rule = "allowed", state.authorisation.authorised_by if state.authorisation else "catalog"
        guarantees = _guarantees(state)
    except GatewayError as error:
        outcome, rule, guarantees = "refused", error.rule, {}
        message = error.message
    shown = ", ".join(f"{key}={value}" for key, value in guarantees.items())
    happened = f"allowed ({shown})" if outcome == "allowed" else f"refused by {rule}: {message}"
    wanted = _expectation(expect)
    problem = _mismatch(wanted, outcome, rule, guarantees)
    detail = happened if problem is None else f"{problem}; got: {happened}"
    return CaseResult(str(tests_path), name, problem is None, detail)


# What `released:` may promise, and where the compiled statement says it.
RELEASED_KEYS = ("authorised_by", "min_group_size", "epsilon", "delta", "keys", "max_rows_per_unit",
                 "max_groups_per_unit", "max_contributions_per_unit")


def _guarantees(state) -> dict:
    authorisation, plan = state.authorisation, state.noise_plan
    found = {"authorised_by": authorisation.authorised_by if authorisation else "catalog",
             "min_group_size": authorisation.min_group_size if authorisation else None}
    if plan is not None:  # differential privacy: the cost and bounds come from the text and policy alone
        found.update(epsilon=plan.epsilon, delta=plan.delta,
                     keys="public" if plan.public_keys else "selected privately",
                     max_rows_per_unit=plan.privacy.max_rows_per_unit, max_groups_per_unit=plan.groups_per_unit)

        if Contribution.of(plan).binds:  # shown where it bounds more than rows x groups do
            found["max_contributions_per_unit"] = plan.privacy.max_contributions_per_unit
    return found


def _expectation(expect) -> dict:
    if expect == "allowed":
        return {"outcome": "allowed"}
    if isinstance(expect, dict) and "refused" in expect:
        return {"outcome": "refused", "rule": expect["refused"]}
    if isinstance(expect, dict) and "released" in expect:
        released = expect["released"] or {}
        if not isinstance(released, dict) or set(released) - set(RELEASED_KEYS):
            return {"outcome": "invalid", "raw": expect}
        return {"outcome": "allowed", "released": released}
    if isinstance(expect, dict) and "allowed" in expect:
        return {"outcome": "allowed"}
    return {"outcome": "invalid", "raw": expect}


def _mismatch(wanted: dict, outcome: str, rule, guarantees: dict) -> str | None:
    if wanted["outcome"] == "invalid":
        return (f"expect must be allowed, {{refused: RULE}} or {{released: {{KEY: VALUE}}}} with keys "
                f"{', '.join(RELEASED_KEYS)} (not {wanted['raw']!r})")
    if wanted["outcome"] != outcome:
        return f"expected {wanted['outcome']}" + (f" by {wanted['rule']}" if "rule" in wanted else "")
    if outcome == "refused" and wanted["rule"] != rule:
        return f"expected refusal by {wanted['rule']}"
    for key, value in wanted.get("released", {}).items():
        if guarantees.get(key) != value:
            return f"expected {key} {value}"
    return None


def main(args) -> int:
    paths = args.paths
    if not paths:
        if not args.config:
            print("cleanroom policy test: give PATH (a policy, its .tests.yaml, or a folder) or --config")
            return 1
        paths = [str(p) for p in load_config(args.config).policies]
    failed = 0
    total = 0
    for tests_path in find_tests_files(paths):
        if not tests_path.is_file():
            print(f"{tests_path}: no such tests file")
            failed += 1
            continue
        try:
            results = run_file(tests_path, args.config)
        except PolicyInvalid as error:
            print("\n".join(error.problems))
            failed += 1
            continue
        for result in results:
            total += 1
            print(f"{'ok  ' if result.passed else 'FAIL'} {result.file}: {result.name}: {result.detail}")
            failed += not result.passed
    print(f"{total - failed if failed <= total else 0} of {total} passed" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0
