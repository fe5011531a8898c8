"""The aggregate registry (gateway/policy/aggregates.py) drives the policy's enum and
schema, the resolver's allow-list and the DP families, so a new aggregate is its
registry entry and its family module (docs/contributing.md#a-new-aggregate). These
fail when one of those places goes back to a list of its own."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.dp.families import AGGREGATES as RELEASED, QUANTITIES
from gateway.dp.plan import QUANTILE_NAMES
from gateway.plan.allowed import AGGREGATES as ALLOWED
from gateway.plan.verify import SAFE_NODES
from gateway.policy import loader
from gateway.policy.aggregates import AGGREGATE_KINDS, BY_NODE, NAMES
from gateway.policy.model import Aggregate

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def test_the_policy_enum_and_the_schema_enum_are_the_registry():
    assert [a.value for a in Aggregate] == list(NAMES)
    items = loader._SCHEMA["$defs"]["rule"]["properties"]["aggregates"]["items"]
    assert items["enum"] == list(NAMES)


def test_the_resolver_and_the_verifier_allow_exactly_the_registered_nodes():
    assert ALLOWED == {node: kind.name for node, kind in BY_NODE.items()}
    assert set(BY_NODE) <= SAFE_NODES


def test_every_noised_aggregate_has_its_family_and_release():
    for kind in AGGREGATE_KINDS:
        for noised in kind.noised_as:
            assert noised in QUANTITIES, f"{kind.name}: no family of kind {noised} in gateway/dp/families"
        if kind.noised_as:
            assert kind.name in RELEASED, f"{kind.name}: no module of gateway/dp/families releases it"
    for name in RELEASED:  # a quantile is released under the name the analyst wrote
        assert name in NAMES or name in QUANTILE_NAMES


def test_an_aggregate_of_the_generic_shape_is_named_only_by_its_registry_entry_and_family():
    """AVG is formed from the registry alone (no branch of its own in the resolver,
    the authoriser, the noise plan or the notices): only these files name it. Spark
    translates it at its boundary (gateway/spark/sql.py), as it must every node."""
    pattern = re.compile(r"exp\.Avg\b|[\"']avg[\"']")
    naming = {str(path.relative_to(GATEWAY)) for path in GATEWAY.rglob("*.py") if pattern.search(path.read_text())}
    assert naming == {"policy/aggregates.py", "dp/families/averages.py", "spark/sql.py"}


def test_source_kinds_drive_the_config_schema_and_the_attaching():
    """docs/contributing.md#a-new-source-kind: one SourceKind entry is a new kind."""
    from gateway import config, sources
    from gateway.config_model import SOURCE_KINDS

    assert config._SCHEMA["$defs"]["source"]["properties"]["kind"]["enum"] == list(SOURCE_KINDS)
    assert set(sources.FILE_KINDS) | set(sources.ATTACHED_KINDS) == set(SOURCE_KINDS)
    assert set(config.PATH_KINDS) | set(config.SERVER_KINDS) == set(SOURCE_KINDS)
    assert sources.EXTENSIONS == {k.name: k.extensions for k in SOURCE_KINDS.values() if k.extensions}
    for kind in SOURCE_KINDS.values():
        assert (kind.scan is not None) == (kind.reach == "file"), kind.name


def test_an_authorisation_is_typed_and_renders_as_before():
    """Audit records, the API and EXPLAIN show "rule:<name>", "template:<name>", "public"."""
    from gateway.engine.state import Authorisation, Authority

    assert Authorisation(Authority.RULE, "agg", 10).authorised_by == "rule:agg"
    assert Authorisation(Authority.TEMPLATE, "reach", 10).authorised_by == "template:reach"
    assert Authorisation(Authority.PUBLIC, None, None).authorised_by == "public"
