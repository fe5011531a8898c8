"""Policy loading: the demo and examples load; every kind of problem is reported
with its file position, all at once; `cleanroom policy check` exit codes."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import PolicyInvalid
from gateway.cli import policy_check as check
from gateway.policy.loader import load_policy
from gateway.policy.model import Aggregate, Bounds, ColumnRef, ParamType, Role

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "policies"


def problems(name: str) -> list[str]:
    """Problems of a fixture, with the file prefix cut to its bare name."""
    path = FIXTURES / name
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    assert str(info.value) == "\n".join(info.value.problems)
    return [p.replace(str(path), name, 1) for p in info.value.problems]


def variant(tmp_path: Path, old: str, new: str, base: str = "base_ok.yaml") -> Path:
    text = (FIXTURES / base).read_text()
    assert old in text
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


# --- valid policies ------------------------------------------------------------------------


def test_demo_policy_loads_into_the_model():
    path = REPO / "policies" / "demo.yaml"
    room = load_policy(path)
    assert room.name == "demo" and room.min_group_size == 10
    assert room.version == hashlib.sha256(path.read_bytes()).hexdigest()
    assert room.source_file == str(path)
    purchases = room.tables["purchases"]
    assert purchases.privacy_unit == "household_id" and purchases.relation == "purchases"
    assert purchases.columns["amount"].bounds == Bounds(0.0, 500.0)
    assert purchases.columns["card_last4"].role is Role.HIDDEN
    assert "card_last4" not in purchases.visible()
    assert purchases.columns["region"].values[:2] == ("north", "south")
    assert room.tables["impressions"].relation is None
    regions = room.tables["regions"]
    assert regions.public and regions.privacy_unit is None and regions.keys == ("region",)
    rule = room.rules["cross_party_aggregates"]
    assert rule.aggregates == frozenset({Aggregate.COUNT, Aggregate.COUNT_DISTINCT, Aggregate.SUM, Aggregate.AVG})
    assert rule.joins[0].connects(ColumnRef("impressions", "household_id"), ColumnRef("purchases", "household_id"))
    (parameter,) = room.templates["campaign_reach"].parameters
    assert parameter.type is ParamType.ENUM and "spring_sale" in parameter.values
    assert room.analyst("analyst").rules == ("cross_party_aggregates",)


@pytest.mark.parametrize("path", sorted((REPO / "policies" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_policies_load(path):
    assert load_policy(path).name


def test_parameters_convert_with_their_bounds_and_defaults():
    template = load_policy(FIXTURES / "base_ok.yaml").templates["by_country"]
    params = {p.name: p for p in template.parameters}
    assert params["since"].type is ParamType.DATE and params["since"].minimum == "2024-01-01"
    assert params["top"].default == 10 and params["top"].maximum == 100
    assert params["site"].pattern == "[a-z]+"


def test_yaml_1_1_surprises_stay_text(tmp_path):
    # `no` is a region code, not False; an unquoted date stays a string for date parameters
    path = variant(tmp_path, "values: [de, fr]", "values: [de, no, on]")
    path.write_text(path.read_text().replace('minimum: "2024-01-01"', "minimum: 2024-01-01"))
    room = load_policy(path)
    assert room.tables["orders"].columns["country"].values == ("de", "no", "on")


# --- problems, with positions ---------------------------------------------------------------


def test_references_to_undeclared_things():
    assert problems("bad_references.yaml") == [
        "bad_references.yaml:6:5: tables.orders.owner: unknown collaborator 'shopp' (declared: shop)",
        "bad_references.yaml:8:5: tables.orders.privacy_unit: 'customer' is not a declared column (declared: country, customer_id)",
        "bad_references.yaml:14:22: rules.stats.tables[1]: unknown table 'ghosts' (declared: orders)",
        "bad_references.yaml:18:5: analysts.ana.collaborator: unknown collaborator 'media' (declared: shop)",
        "bad_references.yaml:19:20: analysts.ana.rules[1]: unknown rule 'nope' (declared: stats)",
        "bad_references.yaml:20:17: analysts.ana.templates[0]: unknown template 'missing' (declared: none)",
    ]


def test_column_roles_bounds_values_and_privacy_units():
    found = problems("bad_columns.yaml")
    assert found == [
        "bad_columns.yaml:8:5: tables.orders.privacy_unit: column 'country' must have role join_key to be the privacy unit (it is dimension)",
        "bad_columns.yaml:9:5: tables.orders.keys: only public tables declare keys; private tables join on join_key columns",
        "bad_columns.yaml:11:37: tables.orders.columns.customer_id.bounds: only measures have bounds (this column is join_key)",
        "bad_columns.yaml:12:51: tables.orders.columns.country.values[2]: duplicate value 'de'",
        "bad_columns.yaml:13:30: tables.orders.columns.total.bounds: lower bound 1000 must be below upper bound 0",
        "bad_columns.yaml:14:7: tables.orders.columns.tax: a measure needs bounds: [lower, upper] (values are clamped into them)",
        "bad_columns.yaml:15:28: tables.orders.columns.note.values: only dimensions list values (this column is hidden)",
        "bad_columns.yaml:20:5: tables.lookup.privacy_unit: a public table has no privacy unit (remove it, or drop public: true)",
        "bad_columns.yaml:21:21: tables.lookup.keys[1]: key 'missing' is not a declared column (declared: country, secret)",
        "bad_columns.yaml:21:30: tables.lookup.keys[2]: key 'secret' is a hidden column; keys must be visible",
        "bad_columns.yaml:25:3: tables.plain: missing required key 'privacy_unit': name the join_key column of the protected entity, or set public: true for reference data",
    ]


def test_joins_and_aggregates():
    found = problems("bad_joins.yaml")
    assert found == [
        "bad_joins.yaml:38:25: rules.r.aggregates[1]: 'variance' is not one of ['count', 'count_distinct', 'sum', 'avg', 'min', 'max', 'median']",
        "bad_joins.yaml:40:16: rules.r.joins[0][1]: table 'c' is not in this rule's tables (a, b, lookup)",
        "bad_joins.yaml:41:10: rules.r.joins[1][0]: a.secret is a hidden column and cannot be joined on",
        "bad_joins.yaml:42:9: rules.r.joins[2]: private tables join on join_key columns only (a.region is dimension, b.region is dimension)",
        "bad_joins.yaml:43:10: rules.r.joins[3][0]: a.nothing: no such column (declared: amount, id, region, secret)",
        "bad_joins.yaml:44:9: rules.r.joins[4]: a join to public table 'lookup' must use one of its keys (region) against a dimension or join_key column",
        "bad_joins.yaml:45:9: rules.r.joins[5]: a join to public table 'lookup' must use one of its keys (region) against a dimension or join_key column",
        "bad_joins.yaml:46:9: rules.r.joins[6]: a join is a pair [table.column, table.column] (got ['a.id'])",
        "bad_joins.yaml:47:9: rules.r.joins[7]: joins a column to itself",
    ]


def test_template_sql_and_placeholders():
    found = problems("bad_templates.yaml")
    for expected in [
        "bad_templates.yaml:13:5: templates.placeholders.sql: placeholder :undeclared is not declared under parameters",
        "bad_templates.yaml:16:7: templates.placeholders.parameters.unused: parameter is not used in sql (no :unused placeholder)",
        "bad_templates.yaml:18:5: templates.two_statements.sql: must be exactly one SELECT statement (found SELECT, SELECT)",
        "bad_templates.yaml:20:5: templates.not_select.sql: must be exactly one SELECT statement (found DELETE)",
        "bad_templates.yaml:24:5: templates.positional.sql: use named :name placeholders, not positional ones ($1 or ?)",
    ]:
        assert expected in found
    assert any(p.startswith("bad_templates.yaml:22:5: templates.broken.sql: SQL does not parse:") for p in found)


def test_parameter_definitions_and_defaults():
    found = problems("bad_templates.yaml")
    for expected in [
        "bad_templates.yaml:28:7: templates.params.parameters.e: an enum parameter needs a non-empty list of values",
        "bad_templates.yaml:29:39: templates.params.parameters.i.maximum: maximum 1 is below minimum 10",
        "bad_templates.yaml:30:49: templates.params.parameters.n.default: default 2 is invalid: must be at most 1",
        "bad_templates.yaml:31:23: templates.params.parameters.d.minimum: '2024-13-01' is not a calendar date",
        "bad_templates.yaml:31:44: templates.params.parameters.d.maximum: must be an ISO date (yyyy-mm-dd)",
        "bad_templates.yaml:32:7: templates.params.parameters.s: a string parameter needs a pattern (a regular expression the whole value must match)",
        "bad_templates.yaml:33:39: templates.params.parameters.p.minimum: 'minimum' does not apply to string parameters",
        "bad_templates.yaml:37:39: templates.defaults.parameters.e.default: default 'c' is invalid: must be one of ['a', 'b']",
        "bad_templates.yaml:38:44: templates.defaults.parameters.s.default: default 'ABC' is invalid: must match '[a-z]+'",
        "bad_templates.yaml:39:26: templates.defaults.parameters.i.default: default 1.5 is invalid: must be an integer",
    ]:
        assert expected in found
    assert any(p.startswith("bad_templates.yaml:33:25: templates.params.parameters.p.pattern: pattern does not compile") for p in found)


def test_types_names_and_group_sizes():
    found = problems("bad_types.yaml")
    assert found[:5] == [
        "bad_types.yaml:1:1: cleanroom: use letters, digits and underscores, not starting with a digit (got '1bad name')",
        "bad_types.yaml:2:1: min_group_size: 1 is less than the minimum of 2",
        "bad_types.yaml:10:5: tables.orders.min_group_size: True is not of type 'integer'",
        "bad_types.yaml:13:7: tables.orders.columns.bad-name: invalid name 'bad-name': use letters, digits and underscores, not starting with a digit",
        "bad_types.yaml:14:30: tables.orders.columns.total.bounds: write bounds as [lower, upper], two numbers (got [0])",
    ]
    assert "bad_types.yaml:19:5: rules.r.min_group_size: 1.5 is less than the minimum of 2" in found


def test_unknown_keys_are_errors_with_a_suggestion():
    assert problems("unknown_keys.yaml") == [
        "unknown_keys.yaml:2:1: colaborators: unknown key (did you mean 'collaborators'?)",
        "unknown_keys.yaml:4:10: collaborators.shop.colour: unknown key (allowed: display_name, description)",
        "unknown_keys.yaml:10:5: tables.orders.colums: unknown key (did you mean 'columns'?)",
        "unknown_keys.yaml:12:28: tables.orders.columns.id.rol: unknown key (did you mean 'role'?)",
    ]


def test_duplicate_keys():
    assert problems("duplicate_keys.yaml") == [
        "duplicate_keys.yaml:11:7: tables.orders.columns.id: duplicate key (first defined on line 10)",
        "duplicate_keys.yaml:12:3: tables.orders: duplicate key (first defined on line 5)",
    ]


def test_yaml_syntax_error_is_one_located_problem():
    assert problems("syntax_error.yaml") == [
        "syntax_error.yaml:6:8: (top level): YAML syntax error: while parsing a flow sequence "
        "(from line 5, column 33): expected ',' or ']', but got ':'"
    ]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(PolicyInvalid, match="cannot read file"):
        load_policy(tmp_path / "absent.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(PolicyInvalid, match=r"empty.yaml:1:1: \(top level\): the file is empty"):
        load_policy(tmp_path / "empty.yaml")


def test_every_problem_is_reported_at_once_in_file_order(tmp_path):
    path = variant(tmp_path, "owner: shop\n", "owner: nobody\n")
    text = path.read_text().replace("aggregates: [count, sum, min, max]", "aggregates: [count, mode]")
    path.write_text(text.replace("    collaborator: media", "    collaborator: media\n    extra: 1"))
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    found = info.value.problems
    assert len(found) == 3
    assert [p.split(": ")[1] for p in found] == [
        "tables.orders.owner",
        "rules.stats.aggregates[1]",
        "analysts.ana.extra",
    ]
    lines = [int(p[len(str(path)) + 1 :].split(":")[0]) for p in found]
    assert lines == sorted(lines)


def test_template_check_problems_are_located(tmp_path):
    # problems from gateway.policy.templates come back as key paths; they get a position too
    path = variant(tmp_path, "FROM orders AS o JOIN", "FROM nowhere AS n, orders AS o JOIN")
    with pytest.raises(PolicyInvalid) as info:
        load_policy(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:46:5: templates.by_country.sql: ")


# --- cleanroom policy check --------------------------------------------------------------------


def run_check(capsys, *paths: str, config: str | None = None) -> tuple[int, list[str]]:
    code = check.main(argparse.Namespace(paths=list(paths), config=config))
    return code, capsys.readouterr().out.splitlines()


def test_check_reports_ok_per_file(capsys):
    code, out = run_check(capsys, str(REPO / "policies" / "demo.yaml"))
    assert code == 0
    assert out == [f"{REPO / 'policies' / 'demo.yaml'}: ok (3 tables, 1 model, 1 rule, 5 templates, 1 analyst)"]


def test_check_walks_folders_and_fails_on_any_problem(capsys):
    code, out = run_check(capsys, str(FIXTURES))
    assert code == 1
    assert f"{FIXTURES / 'base_ok.yaml'}: ok (3 tables, 1 rule, 1 template, 1 analyst)" in out
    assert any(line.startswith(f"{FIXTURES / 'duplicate_keys.yaml'}:11:7: ") for line in out)
    assert any(line.startswith(f"{FIXTURES / 'syntax_error.yaml'}:6:8: ") for line in out)


def test_check_against_a_config_finds_missing_sources(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # policies named by the config are shown relative to here
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"policies: [{FIXTURES / 'base_ok.yaml'}]\n"
        "sources:\n  shop_db: {kind: sqlite, path: shop.db}\n  lookup: {kind: csv, path: c.csv}\n"
        "users:\n  ana: {token_sha256: \"" + "0" * 64 + "\"}\n"
    )
    code, out = run_check(capsys, config=str(config))
    assert code == 1
    assert out == [
        "tests/fixtures/policies/base_ok.yaml:19:5: tables.views.source: "
        f"no source 'media_files' in {config} (declared: lookup, shop_db)"
    ]


def test_cli_subprocess_exit_codes():
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "policy", "check", *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )

    ok = run("policies/demo.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout == "policies/demo.yaml: ok (3 tables, 1 model, 1 rule, 5 templates, 1 analyst)\n"
    bad = run("policies/demo.yaml", "tests/fixtures/policies/unknown_keys.yaml")
    assert bad.returncode == 1
    assert "tests/fixtures/policies/unknown_keys.yaml:2:1: colaborators: unknown key" in bad.stdout
