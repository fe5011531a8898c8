"""Pass own_tables: `cleanroom.budget` and `cleanroom.releases`, the analyst's own
privacy budget and paid releases as tables, so a BI tool (which runs SELECTs, not
SHOW, and drops notices) can chart what is left and what each release cost.

    SELECT epsilon_remaining FROM cleanroom.budget
    SELECT at, epsilon, intervals, groups_suppressed FROM cleanroom.releases ORDER BY at DESC

Both hold only what the analyst was already told (their balance; each charge and
what its release said), read from the ledger and the release cache, never a row
of the clean room's data; a statement that reads them and nothing else runs on
them in a DuckDB of its own, with allow-listed functions only.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa
from sqlglot import expressions as exp

from gateway.dp.ledger import Account
from gateway.dp.policy import budget_for
from gateway.engine.authorise import check_allowed_nodes
from gateway.engine.state import QueryState
from gateway.engine.types import Release
from gateway.errors import Refused

SCHEMA = "cleanroom"
MAX_RELEASES = 1000  # the newest charges of the analyst's; older ones: cleanroom budget show / the audit log


def own_tables(state: QueryState) -> QueryState:
    tree = state.tree
    if state.template is not None or not isinstance(tree, exp.Query):
        return state
    tables = list(tree.find_all(exp.Table))
    if not tables or any(not _own(t) for t in tables):
        return state
    if len(tables) != 1 or not isinstance(tree, exp.Select) or tree.find(exp.Join, exp.Subquery, exp.With):
        # it runs in the front end's process, not an executor: one table, read once, so its cost stays
        # that of 1,000 rows (a self-join of the releases could ask for 10^12)
        raise Refused("cleanroom.budget and cleanroom.releases are read one at a time, without joins or subqueries",
                      rule="own_tables.shape", hint="SELECT ... FROM cleanroom.releases WHERE ... GROUP BY ...")
    check_allowed_nodes(tree)
    builders = {"budget": _budget, "releases": _releases}
    with duckdb.connect(config={"enable_external_access": False, "threads": 1}) as con:
        con.execute(f"CREATE SCHEMA {SCHEMA}")
        for name in sorted({t.name.lower() for t in tables}):
            con.register(f"__{name}", builders[name](state))
            con.execute(f'CREATE VIEW {SCHEMA}."{name}" AS SELECT * FROM "__{name}"')
        table = con.execute(_named(tree).sql(dialect="duckdb")).to_arrow_table()
    release = Release(request_id=state.request.request_id, table=table, authorised_by="session", min_group_size=None,
                      notices=("your own privacy budget and releases, from the ledger: no clean-room data was read",))
    return state.evolve(release=release, canonical_sql=tree.sql(dialect="duckdb"))


def _named(tree: exp.Query) -> exp.Query:
    """Output columns named as PostgreSQL names them (`count`, not DuckDB's `count_star()`)."""
    if not isinstance(tree, exp.Select):
        return tree
    named = tree.copy()
    projections = []
    for projection in named.expressions:
        if isinstance(projection, (exp.Alias, exp.Column, exp.Star)):
            projections.append(projection)
            continue
        name = projection.sql_name().lower() if isinstance(projection, exp.Func) else "?column?"
        projections.append(exp.alias_(projection, name, quoted=True))
    named.set("expressions", projections)
    return named


def _own(table: exp.Table) -> bool:
    return (not table.catalog and table.db.lower() == SCHEMA and table.name.lower() in ("budget", "releases")
            and isinstance(table.this, exp.Identifier))


def _budget(state: QueryState) -> pa.Table:
    room, user = state.cleanroom, state.request.user
    budget = budget_for(room, user)
    if budget is None:  # k-thresholds only: nothing is spent
        return pa.table({"enabled": [False], "epsilon_spent": pa.array([None], pa.float64()),
                         "epsilon_remaining": pa.array([None], pa.float64()),
                         "epsilon_budget": pa.array([None], pa.float64()), "queries": pa.array([0], pa.int64()),
                         "refresh": pa.array([None], pa.string()), "renews_at": pa.array([None], pa.string())})
    shown = state.context.privacy.ledger.balance(Account(room.name, user), budget).as_json()
    return pa.table({
        "enabled": [True],
        "epsilon_spent": pa.array([shown["spent"]["epsilon"]], pa.float64()),
        "epsilon_remaining": pa.array([shown["remaining"]["epsilon"]], pa.float64()),
        "epsilon_budget": pa.array([shown["budget"]["epsilon"]], pa.float64()),
        "delta_spent": pa.array([shown["spent"]["delta"]], pa.float64()),
        "delta_remaining": pa.array([shown["remaining"]["delta"]], pa.float64()),
        "queries": pa.array([shown["queries"]], pa.int64()),
        "refresh": pa.array([shown.get("refresh")], pa.string()),
        "renews_at": pa.array([shown.get("renews_at")], pa.string()),
    })


def _releases(state: QueryState) -> pa.Table:
    privacy = state.context.privacy
    history = privacy.ledger.history(Account(state.cleanroom.name, state.request.user), limit=MAX_RELEASES)
    rows = {name: [] for name in ("at", "request_id", "kind", "epsilon", "delta", "rho", "intervals",
                                  "groups_released", "groups_suppressed")}
    for entry in history:
        cached = privacy.releases.get(entry["query_sha256"]) if entry.get("query_sha256") else None
        protection = cached.protection if cached is not None else {}
        groups = protection.get("groups", {})
        rows["at"].append(dt.datetime.fromisoformat(entry["at"]))
        rows["request_id"].append(entry["request_id"])
        rows["kind"].append(entry["kind"])
        rows["epsilon"].append(entry["epsilon"])
        rows["delta"].append(entry["delta"])
        rows["rho"].append(entry["rho"])
        # each aggregate's 95% interval (noise only), in the order the query named them
        rows["intervals"].append("; ".join(str(i.get("text")) for i in protection.get("intervals", {}).values()) or None)
        rows["groups_released"].append(groups.get("released"))
        rows["groups_suppressed"].append(groups.get("suppressed_below_min_group_size"))
    types = {"at": pa.timestamp("us", tz="UTC"), "request_id": pa.string(), "kind": pa.string(),
             "epsilon": pa.float64(), "delta": pa.float64(), "rho": pa.float64(), "intervals": pa.string(),
             "groups_released": pa.int64(), "groups_suppressed": pa.int64()}
    return pa.table({name: pa.array(values, types[name]) for name, values in rows.items()})
