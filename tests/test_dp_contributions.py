"""The data owner's contribution report (`cleanroom contributions`) on real DuckDB
files with known distributions: exact numbers, who may run it (owners' approvers
only: never an analyst, never on another owner's table), the audit record, and the
differentially private version (what it spends, where it is recorded, what it
shows and what it does not)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from gateway.auth import hash_token
from gateway.dp.contributions import NotAnOwner, report_for
from gateway.errors import Refused

# 100 households: h0..h49 two rows, h50..h89 six, h90..h99 twenty (540 rows), plus 3 rows
# without a household. Region: h0..h59 north, the rest south (one region each). Shop: row j in
# shop j % 4 for the 6- and 20-row households (6 rows: shops of 2, 2, 1, 1 rows; 20 rows: 4 x 5),
# j % 2 for the 2-row ones (2 shops of 1 row). Spend 10, except 200 for h90..h99 (bounds [0, 100]).
VISITS = """
CREATE TABLE visits AS
SELECT 'h' || i AS hh, CASE WHEN i < 60 THEN 'north' ELSE 'south' END AS region,
       's' || (CASE WHEN i < 50 THEN j % 2 ELSE j % 4 END) AS shop,
       CASE WHEN i >= 90 THEN 200 ELSE 10 END AS spend
FROM range(100) t(i), range(20) r(j)
WHERE j < CASE WHEN i < 50 THEN 2 WHEN i < 90 THEN 6 ELSE 20 END
UNION ALL SELECT NULL, 'north', 's0', 10 FROM range(3)
"""
# 8 rows in declared regions, 2 outside them (region 'x'), one household each.
ORDERS = "CREATE TABLE orders AS SELECT 'h' || i AS hh, CASE WHEN i < 8 THEN 'north' ELSE 'x' END AS region FROM range(10) t(i)"
ADS = "CREATE TABLE ads AS SELECT 'h' || i AS hh, 'web' AS channel FROM range(50) t(i)"

USERS = {"owner_a": "owner-a-token", "author_a": "author-a-token", "ana": "ana-token", "owner_b": "owner-b-token",
         "auditor_a": "auditor-a-token"}


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """(config path, CleanRoom, GatewayConfig)."""
    from gateway.config import load_config
    from gateway.policy.loader import load_policy

    folder = tmp_path_factory.mktemp("contributions")
    data = folder / "data"
    data.mkdir()
    with duckdb.connect(str(data / "room.duckdb")) as con:
        for statement in (VISITS, ORDERS, ADS):
            con.execute(statement)
    region = {"role": "dimension", "values": ["north", "south"]}
    policy = {
        "cleanroom": "room",
        "collaborators": {"a": {}, "b": {}},
        "privacy": {"epsilon_per_query": 0.5, "max_rows_per_unit": 5, "max_groups_per_unit": 2,
                    "budget": {"epsilon": 10, "delta": 1e-6}},
        "tables": {
            "visits": {"owner": "a", "source": "room", "relation": "visits", "privacy_unit": "hh",
                       "columns": {"hh": {"role": "join_key"}, "region": region, "shop": {"role": "dimension"},
                                   "spend": {"role": "measure", "bounds": [0, 100]}}},
            "orders": {"owner": "a", "source": "room", "relation": "orders", "privacy_unit": "hh",
                       "columns": {"hh": {"role": "join_key"}, "region": region}},
            "ads": {"owner": "b", "source": "room", "relation": "ads", "privacy_unit": "hh",
                    "columns": {"hh": {"role": "join_key"}, "channel": {"role": "dimension"}}},
        },
        "rules": {"agg": {"tables": ["visits", "orders", "ads"], "aggregates": ["count"]}},
        "analysts": {"ana": {"collaborator": "a", "rules": ["agg"]}},
        "members": {"owner_a": {"collaborator": "a", "roles": ["approver"]},
                    "author_a": {"collaborator": "a", "roles": ["author"]},
                    "auditor_a": {"collaborator": "a", "roles": ["auditor"]},
                    "owner_b": {"collaborator": "b", "roles": ["approver", "author"]}},
    }
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    config = {
        "policies": [str(folder / "policy.yaml")],
        "sources": {"room": {"kind": "duckdb", "path": str(data / "room.duckdb")}},
        "engine": {"threads": 2, "memory_limit": "1GB", "data_roots": [str(data)]},
        "state_dir": str(folder / "state"),
        "users": {name: {"token_sha256": hash_token(token)} for name, token in USERS.items()},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(path)
    return path, load_policy(loaded.policies[0]), loaded


def audit_records(config) -> list[dict]:
    from gateway.audit_log import read_records

    return read_records(Path(config.state_dir))


def by_name(items: list[dict], name: str) -> dict:
    return next(item for item in items if item["name"] == name)


def by_bound(rows: list[dict], bound) -> dict:
    return next(row for row in rows if row.get("bound", row.get("upper")) == bound)


# -- exact numbers -------------------------------------------------------------------


def test_the_total_bound_table_applies_all_three_bounds_as_the_gateway_does(room):
    """By region every household is in one group, so what a total C keeps does not depend on
    the hash order: min(C, min(rows, r)) per household (r = 5, g = 2 in the policy)."""
    from gateway.dp.mechanisms import integer_noise

    _, cleanroom, config = room
    (t,) = report_for(config, cleanroom, "owner_a", ["visits"], totals=[3, 10])["tables"]
    region = by_name(t["dimensions"], "region")
    three, ten = by_bound(region["max_contributions_per_unit"], 3), by_bound(region["max_contributions_per_unit"], 10)
    assert not three["current"] and three["units_clipped"] == 0.5  # the 6- and 20-row households
    assert three["count_bias"] == pytest.approx(250 / 540 - 1)  # 50*2 + 50*3
    assert three["sum_bias"]["spend"] == pytest.approx(5200 / 43400 - 1)  # 50*20 + 40*60*3/6 + 10*2000*3/20
    assert three["count_noise_ci95"] == integer_noise(3, 0.25).ci95()  # sensitivity min(3, 5 * 2)
    # a total of r g or more changes nothing: as max_rows_per_unit 5 alone
    five = by_bound(region["max_rows_per_unit"], 5)
    assert (ten["count_bias"], ten["sum_bias"], ten["units_clipped"]) == (five["count_bias"], five["sum_bias"], 0)
    assert ten["count_noise_ci95"] == five["count_noise_ci95"]
    shop = by_name(t["dimensions"], "shop")  # hash order matters there; never above the bounds
    assert all(-1 <= row["count_bias"] <= 0 for row in shop["max_contributions_per_unit"])
    from gateway.dp.contributions_text import render

    assert "max_contributions_per_unit" in render({"mode": "exact", "owner": "a", "tables": [t]})

def test_exact_report_of_known_distributions(room):
    _, cleanroom, config = room
    result = report_for(config, cleanroom, "owner_a", ["visits"], rows=[1, 2, 5, 20], groups=[1, 2, 4])
    assert result["owner"] == "a" and result["mode"] == "exact"
    (t,) = result["tables"]
    assert (t["rows"], t["rows_without_unit"], t["units"]) == (543, 3, 100)
    per_unit = t["rows_per_unit"]
    assert (per_unit["p50"], per_unit["p90"], per_unit["max"], per_unit["mean"]) == (4.0, pytest.approx(7.4), 20, 5.4)

    region = by_name(t["dimensions"], "region")
    assert region["public_keys"] and region["groups"] == 2 and region["share_outside_keys"] == 0
    assert region["groups_per_unit"]["max"] == 1 and region["median_group_rows"] == 270  # north 2*50+6*10, south 270
    five = by_bound(region["max_rows_per_unit"], 5)
    assert five["current"] and five["pairs_clipped"] == 0.5 and five["units_clipped"] == 0.5
    assert five["count_bias"] == pytest.approx(350 / 540 - 1)  # 50*2 + 40*5 + 10*5 kept of 540
    assert five["sum_bias"]["spend"] == pytest.approx(8000 / 43400 - 1)  # 50*20 + 40*60*5/6 + 10*2000*5/20
    one = by_bound(region["max_rows_per_unit"], 1)
    assert one["count_bias"] == pytest.approx(100 / 540 - 1) and one["units_clipped"] == 1.0
    twenty = by_bound(region["max_rows_per_unit"], 20)
    assert twenty["count_bias"] == pytest.approx(0) and twenty["pairs_clipped"] == 0
    assert twenty["sum_bias"]["spend"] == pytest.approx(23400 / 43400 - 1)  # clamping alone
    # a unit in one region is never clipped by max_groups_per_unit
    assert all(r["units_clipped"] == 0 for r in region["max_groups_per_unit"])
    # noise of one count at epsilon 0.5 / 2 with L1 sensitivity groups * rows (Laplace scale 2 * 5 / 0.25)
    from gateway.dp.mechanisms import integer_noise

    assert five["count_noise_ci95"] == integer_noise(10, 0.25).ci95()
    assert five["noise_per_median_group"] == pytest.approx(five["count_noise_ci95"] / 270)

    shop = by_name(t["dimensions"], "shop")
    assert not shop["public_keys"] and shop["groups"] == 4
    assert shop["groups_per_unit"]["p50"] == 3.0 and shop["groups_per_unit"]["max"] == 4  # 50 units of 2, 50 of 4
    # rows per (unit, shop): 100 pairs of 1, 80 of 2 and 80 of 1 (6-row units), 40 of 5
    assert shop["rows_per_unit_group"]["max"] == 5 and shop["rows_per_unit_group"]["mean"] == pytest.approx(540 / 300)
    g2 = by_bound(shop["max_groups_per_unit"], 2)
    assert g2["current"] and g2["units_clipped"] == 0.5
    # with max_rows 5: 2-row units keep 2; 4-shop units keep each shop with probability 2/4
    assert g2["count_bias"] == pytest.approx((100 + 40 * 6 * 0.5 + 10 * 20 * 0.5) / 540 - 1)
    assert by_bound(shop["max_groups_per_unit"], 4)["count_bias"] == pytest.approx(0)
    r1 = by_bound(shop["max_rows_per_unit"], 1)  # with max_groups 2
    assert r1["pairs_clipped"] == pytest.approx(120 / 300) and r1["units_clipped"] == 0.5
    assert r1["count_bias"] == pytest.approx((100 + 40 * 4 * 0.5 + 10 * 4 * 0.5) / 540 - 1)

    (spend,) = t["measures"]
    assert spend["rows"] == 540 and spend["above_upper"] == pytest.approx(200 / 540) and spend["below_lower"] == 0
    assert spend["quantiles"]["p50"] == 10 and spend["quantiles"]["p99"] == 200 and spend["max"] == 200
    assert [r["upper"] for r in spend["upper_bound"]] == [100.0, 200.0]
    now, wider = spend["upper_bound"]
    assert now["current"] and now["rows_clipped"] == pytest.approx(200 / 540)
    assert now["sum_bias"] == pytest.approx(23400 / 43400 - 1)
    assert wider["rows_clipped"] == 0 and wider["sum_bias"] == pytest.approx(0) and wider["sensitivity_vs_current"] == 2


def test_rows_outside_public_keys_are_counted_apart(room):
    _, cleanroom, config = room
    (orders,) = report_for(config, cleanroom, "owner_a", ["orders"])["tables"]
    region = orders["dimensions"][0]
    assert (region["rows_outside_keys"], region["share_outside_keys"], region["groups"]) == (2, 0.2, 1)
    assert by_bound(region["max_rows_per_unit"], 1)["count_bias"] == pytest.approx(0)


def test_default_is_every_private_table_of_the_owner(room):
    _, cleanroom, config = room
    assert [t["table"] for t in report_for(config, cleanroom, "owner_a")["tables"]] == ["orders", "visits"]
    assert [t["table"] for t in report_for(config, cleanroom, "owner_b")["tables"]] == ["ads"]


# -- who may run it ------------------------------------------------------------------------


@pytest.mark.parametrize("user, rule", [
    ("ana", "contributions.analyst"),  # an analyst, even of the owning collaborator
    ("author_a", "contributions.not_owner"),  # a member without the approver role
    ("auditor_a", "contributions.not_owner"),
    ("nobody", "contributions.not_owner"),
])
def test_only_owners_approvers_may_run_it(room, user, rule):
    _, cleanroom, config = room
    with pytest.raises(NotAnOwner) as refused:
        report_for(config, cleanroom, user, ["visits"])
    assert refused.value.rule == rule
    last = audit_records(config)[-1]
    assert (last["user"], last["decision"], last["rule"]) == (user, "refused", rule)


def test_another_owners_table_cannot_be_read(room):
    _, cleanroom, config = room
    with pytest.raises(NotAnOwner) as refused:
        report_for(config, cleanroom, "owner_a", ["visits", "ads"])
    assert refused.value.rule == "contributions.not_your_table" and "belongs to b" in refused.value.message
    with pytest.raises(NotAnOwner):
        report_for(config, cleanroom, "owner_b", ["visits"])
    with pytest.raises(NotAnOwner):  # nor under DP
        report_for(config, cleanroom, "owner_b", ["visits"], epsilon=1.0)
    with pytest.raises(Refused) as unknown:
        report_for(config, cleanroom, "owner_a", ["nope"])
    assert unknown.value.rule == "contributions.unknown_table" and "orders, visits" in unknown.value.hint
    assert audit_records(config)[-1]["decision"] == "refused"


def test_cli_runs_for_the_owner_and_refuses_the_analyst(room, capsys):
    from gateway.cli import main

    path, _, config = room
    assert main(["contributions", "visits", "--config", str(path), "--token", USERS["owner_a"], "--json",
                 "--rows", "1,5", "--groups", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (t,) = shown["tables"]
    assert t["units"] == 100 and [r["bound"] for r in t["dimensions"][0]["max_rows_per_unit"]] == [1, 5]
    assert audit_records(config)[-1]["decision"] == "reported"

    assert main(["contributions", "visits", "--config", str(path), "--token", USERS["owner_a"]]) == 0
    text = capsys.readouterr().out
    assert "Exact report: for the owner only" in text and "dimension region (public keys)" in text
    assert "5 (now)" in text and "-35.2%" in text  # the region count bias at max_rows_per_unit 5

    assert main(["contributions", "--config", str(path), "--token", USERS["ana"]]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "is an analyst" in captured.err and "[contributions.analyst]" in captured.err
    assert main(["contributions", "ads", "--config", str(path), "--token", USERS["owner_a"]]) == 1
    assert "[contributions.not_your_table]" in capsys.readouterr().err
    assert main(["contributions", "--config", str(path), "--token", "wrong"]) == 2
    assert "valid token" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["contributions", "--config", str(path), "--token", USERS["owner_a"], "--rows", "0,x"])
    assert main(["contributions", "--config", str(path), "--token", USERS["owner_a"], "--epsilon", "-1"]) == 2
    assert "epsilon must be in (0, 100]" in capsys.readouterr().err
    assert main(["audit", "verify", "--config", str(path)]) == 0  # the reports' records keep the chain intact
    assert "chain intact" in capsys.readouterr().out


# -- under differential privacy ----------------------------------------------------------------


def test_dp_report_spends_the_stated_epsilon_records_it_and_shows_only_noisy_numbers(room):
    from gateway.dp.ledger import Account, Ledger

    _, cleanroom, config = room
    result = report_for(config, cleanroom, "owner_a", ["visits"], epsilon=50.0, rows=[1, 5], groups=[2, 4])
    assert result["mode"] == "dp" and result["dp"]["epsilon"] == 50.0
    assert "owner:a" in result["dp"]["charged_to"] and "no analyst" in result["dp"]["charged_to"]
    (t,) = result["tables"]
    assert 0 < t["epsilon_spent"] <= 50.0 and t["measurements"] == 1 + 3 * 2 + 5
    assert not {"rows", "rows_without_unit", "rows_per_unit"} & set(t)  # no exact statistic leaves
    assert "min" not in t["measures"][0] and "max" not in t["measures"][0]
    # at epsilon 50 (about 4.2 per measurement) the noise is small: the numbers are near the truth
    assert abs(t["units"] - 100) <= 10
    region = by_name(t["dimensions"], "region")
    assert by_bound(region["max_rows_per_unit"], 5)["units_clipped"] == pytest.approx(0.5, abs=0.15)
    shop = by_name(t["dimensions"], "shop")
    assert by_bound(shop["max_groups_per_unit"], 2)["units_clipped"] == pytest.approx(0.5, abs=0.15)
    assert t["measures"][0]["quantiles"]["p50"] == pytest.approx(10, abs=15)
    charges = [r for r in Ledger.from_config(config).history(Account("room", "owner:a")) if r["kind"] == "charge"]
    assert charges[-1]["epsilon"] == 50.0 and charges[-1]["accounting"] == "pure"
    last = audit_records(config)[-1]
    assert (last["decision"], last["mode"], last["epsilon"]) == ("reported", "dp", 50.0)


def test_dp_report_text(room, capsys):
    from gateway.cli import main

    path, _, _ = room
    assert main(["contributions", "orders", "--config", str(path), "--token", USERS["owner_a"],
                 "--epsilon", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Differentially private report: epsilon 2.0")
    assert "recorded in the ledger as 'owner:a'" in text and "count bias (at least)" in text


def test_dp_report_numbers_are_noisy(room):
    """Fresh noise each run (no seed, no cache): five runs of the unit count of a
    10-household table at epsilon 0.5 (0.125 per measurement) do not all agree."""
    _, cleanroom, config = room
    units = [report_for(config, cleanroom, "owner_a", ["orders"], epsilon=0.5)["tables"][0]["units"] for _ in range(5)]
    assert len(set(units)) > 1, units


def test_noise_column_follows_the_accounting(room, tmp_path):
    """Under zcdp the report's noise is the Gaussian the gateway would add (L2 sensitivity sqrt(groups) * rows)."""
    from gateway.dp import gaussian
    from gateway.dp.contributions import Policy, count_noise_ci95

    pure, zcdp = Policy(5, 4, 0.1, "pure"), Policy(5, 4, 0.1, "zcdp")
    from gateway.dp.mechanisms import integer_noise

    assert count_noise_ci95(pure, 4, 5) == integer_noise(20, 0.05).ci95()
    assert count_noise_ci95(zcdp, 4, 5) == gaussian.integer_noise(10.0, 0.0025).ci95()
    assert count_noise_ci95(zcdp, 4, 5) < count_noise_ci95(pure, 4, 5)
    assert count_noise_ci95(Policy(5, 4, None, "pure"), 4, 5) is None  # no privacy section: no noise to show


# -- the profile an owner publishes into the policy (privacy.profile) ---------------------------


def test_profile_counts_units_by_rows_and_values_near_the_truth_and_is_charged(room):
    from gateway.dp.ledger import Account, Ledger

    _, cleanroom, config = room
    result = report_for(config, cleanroom, "owner_a", ["visits"], epsilon=100.0, profile=25)
    assert result["tables"] == [] and set(result["profile"]) == {"visits"}
    profile = result["profile"]["visits"]
    assert 0 < profile["epsilon_spent"] <= 100.0 and profile["epsilon"] == 100.0
    units = profile["units_by_rows"]
    assert len(units) == 26  # 1 to 25 rows, and more
    # 50 households with 2 rows, 40 with 6, 10 with 20 (50 per histogram: noise scale 0.02 for units)
    assert (units[1], units[5], units[19]) == (50, 40, 10) and sum(units) == 100
    spend = profile["measures"]["spend"]
    assert spend["edges"][0] == 0 and spend["edges"][-1] == 100 and len(spend["counts"]) == len(spend["edges"])
    # values of 10 (340 rows) and 200 (at or above the upper bound: 200 rows), noise scale 0.5 per bin
    assert spend["counts"][5] == pytest.approx(340, abs=5) and spend["counts"][-1] == pytest.approx(200, abs=5)
    charges = [r for r in Ledger.from_config(config).history(Account("room", "owner:a")) if r["kind"] == "charge"]
    assert charges[-1]["epsilon"] == 100.0


def test_profile_text_is_the_policy_block_and_loads(room, capsys, tmp_path):
    from gateway.cli import main
    from gateway.policy.loader import load_policy

    path, _, config = room
    assert main(["contributions", "visits", "--config", str(path), "--token", USERS["owner_a"],
                 "--epsilon", "1", "--profile", "5"]) == 0
    text = capsys.readouterr().out
    block = yaml.safe_load(text[text.index("profile:"):])
    policy = yaml.safe_load(Path(config.policies[0]).read_text())
    policy["privacy"].update(block, max_contributions_per_unit=5)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    (profile,) = load_policy(tmp_path / "policy.yaml").privacy.profiles
    assert profile.table == "visits" and len(profile.units_by_rows) == 6


def test_profile_needs_epsilon(room):
    _, cleanroom, config = room
    with pytest.raises(ValueError, match="--profile CEILING needs --epsilon"):
        report_for(config, cleanroom, "owner_a", ["visits"], profile=5)
