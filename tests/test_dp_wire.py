"""Differential privacy over the PostgreSQL wire protocol, on the demo as
shipped: notices say how a result was protected, prepared statements describe
the released columns, the budget and EXPLAIN answer, exhaustion is 53400."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

from tests.demokit import DEMO_POLICY, write_demo_config
from tests.servers import PASSWORD, psql_env, serve_pg, wire_config

psycopg = pytest.importorskip("psycopg")
pytestmark = pytest.mark.server  # dp_pg (tests/conftest.py), or a wire gateway of the test's own


def test_psycopg_gets_noisy_rows_with_notices_and_a_free_repeat(dp_pg):
    sql = "SELECT category, count(DISTINCT household_id) AS households FROM purchases GROUP BY category"
    with psycopg.connect(dp_pg.dsn()) as conn:
        notices = []
        conn.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary))
        before = conn.execute("SHOW cleanroom.budget").fetchone()
        rows = conn.execute(sql).fetchall()
        assert len(rows) == 12  # every declared category: public keys
        assert any(n.startswith("differential privacy: laplace, epsilon 0.1") for n in notices)
        assert any("households" in n and "discrete_laplace" in n for n in notices)
        spent = conn.execute("SHOW cleanroom.budget").fetchone()
        names = [c.name for c in conn.execute("SHOW cleanroom.budget").description]
        column = names.index("epsilon_spent")
        assert float(spent[column]) == pytest.approx(float(before[column]) + 0.1)
        notices.clear()
        assert conn.execute(sql.replace("households", "hh")).fetchall() == rows  # same noisy answer
        assert any("nothing was spent" in n for n in notices)
        assert float(conn.execute("SHOW cleanroom.budget").fetchone()[column]) == float(spent[column])
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql).fetchall())
        assert '"answered_before": true' in plan


def test_prepared_statements_describe_the_released_columns(dp_pg):
    asyncpg = pytest.importorskip("asyncpg")

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=dp_pg.port, user="analyst", password=PASSWORD,
                                     database="demo", ssl=False)
        try:
            statement = await conn.prepare("SELECT region, count(*) AS n, avg(amount) AS basket FROM purchases "
                                           "WHERE category = $1 GROUP BY region ORDER BY region")
            assert [a.name for a in statement.get_attributes()] == ["region", "n", "basket"]
            rows = await statement.fetch("dairy")
            # every declared region is a candidate; one whose noisy count falls below k is left out
            assert 1 <= len(rows) <= 8 and all(r["basket"] is None or 0 <= r["basket"] <= 500 for r in rows)
        finally:
            await conn.close()

    asyncio.run(main())
    with psycopg.connect(dp_pg.dsn()) as conn:
        cursor = conn.cursor()
        cursor.execute("SELECT channel, count(DISTINCT household_id) FROM impressions WHERE campaign = %s "
                       "GROUP BY channel", ("spring_sale",), prepare=True)
        assert [c.name for c in cursor.description] == ["channel", "count"] and len(cursor.fetchall()) == 4


def test_refusals_under_differential_privacy_are_42501(dp_pg):
    with psycopg.connect(dp_pg.dsn()) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute("SELECT region, count(DISTINCT category) FROM purchases GROUP BY region")
        assert "differentially private only on the privacy unit" in str(refused.value)
        conn.rollback()  # as with PostgreSQL: the failed transaction ends, the session goes on
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql missing (apt install postgresql-client)")
def test_psql_shows_notices(dp_pg):
    result = subprocess.run(["psql", "-X", dp_pg.dsn(password=None), "-c",
                             "SELECT count(*) FROM impressions WHERE channel = 'web'"],
                            capture_output=True, text=True, env=psql_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "NOTICE:  differential privacy" in result.stderr and "(1 row)" in result.stdout


@pytest.fixture(scope="module")
def dp_pg_small_bounds(demo_data_dir, tmp_path_factory):
    """The demo with its earlier, smaller bounds (5 rows and 4 groups per household, amount in
    [0, 500]): at the test data's scale (10,000 households) the shipped bounds' noise at
    epsilon 0.1 can suppress a region of bakery buyers or leave its average NULL, and this
    test is about what the notices say, not about the bounds or the epsilon."""
    import yaml

    folder = tmp_path_factory.mktemp("dp-pgwire-small-bounds")
    policy = yaml.safe_load(DEMO_POLICY.read_text())
    # k on public keys (the notices below say how many groups k released)
    # epsilon 1: at 0.1 a small region's noisy count reached 0 about once in ten runs, its average NULL
    policy["privacy"].update(max_rows_per_unit=5, max_groups_per_unit=4, min_group_size_on_public_keys=True,
                             epsilon_per_query=1.0)
    policy["privacy"].pop("profile")  # bounds as declared: the profile is of the full-size data, not this scale
    policy["tables"]["purchases"]["columns"]["amount"]["bounds"] = [0, 500]
    (folder / "demo.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    config = write_demo_config(folder, demo_data_dir, folder / "demo.yaml")
    yield from serve_pg(wire_config(config, folder), folder)


def test_notices_carry_each_values_interval_and_explain_shows_them(dp_pg_small_bounds):
    """NoticeResponses name the columns and aggregates as written, give every value's 95%
    interval (an average's per row, in the order the rows come), say that the intervals
    cover the noise only and which bounds can bias the values, and agree with the rows
    returned after HAVING and LIMIT; EXPLAIN shows the same before anything runs."""
    sql = ("SELECT region, count(*) AS n, avg(amount) AS basket FROM purchases "
           "GROUP BY region HAVING count(*) > 0 ORDER BY region LIMIT 5")  # ~6,000 purchases a region here
    with psycopg.connect(dp_pg_small_bounds.dsn()) as conn:
        plan = [r[0] for r in conn.execute("EXPLAIN " + sql).fetchall()]
        assert plan[0].startswith("cost: epsilon 1")
        assert any(line.startswith("basket: avg(amount): 95% interval (noise only) per row") for line in plan)
        assert any(line.startswith("n: count(*): 95% interval (noise only) ±") for line in plan)
        notices = []
        conn.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary))
        rows = conn.execute(sql).fetchall()
    assert len(rows) == 5 and not any("__" in n for n in notices)
    assert any("8 released" in n and "5 row(s) returned after HAVING" in n for n in notices)
    basket = [n for n in notices if n.startswith("column basket: avg(amount)")]
    assert len(basket) == 1 and basket[0].count("[") == 5
    intervals = [tuple(float(x) for x in part.split("]")[0].split(", ")) for part in basket[0].split("[")[1:]]
    assert all(0 <= low <= basket_value <= high <= 500 for (low, high), (_, _, basket_value) in zip(intervals, rows))
    assert any(n.startswith("column n: count(*)") and "95% interval (noise only): ±" in n for n in notices)
    assert any(n.startswith("intervals cover the noise only") and "max_rows_per_unit" in n for n in notices)


def test_set_cleanroom_intervals_adds_each_noisy_columns_interval_as_two_columns(dp_pg):
    """What a BI tool charts as error bars, since it drops notices."""
    sql = "SELECT category, count(*) AS n, sum(amount) AS revenue FROM purchases GROUP BY category ORDER BY category"
    with psycopg.connect(dp_pg.dsn(), autocommit=True) as conn:
        plain = conn.execute(sql)
        assert [d.name for d in plain.description] == ["category", "n", "revenue"]
        conn.execute("SET cleanroom.intervals = on")
        assert conn.execute("SHOW cleanroom.intervals").fetchone() == ("on",)
        cursor = conn.execute(sql)  # the same release (free), with its intervals
        names = [d.name for d in cursor.description]
        assert names == ["category", "n", "revenue", "n_low", "n_high", "revenue_low", "revenue_high"]
        rows = cursor.fetchall()
        assert rows and all(r[3] <= r[1] <= r[4] and r[5] <= r[2] <= r[6] for r in rows)
        assert all(r[3] >= 0 for r in rows)  # clamped like the value: a count is never negative
        prepared = conn.execute("SELECT region, avg(amount) AS basket FROM purchases WHERE region = %s GROUP BY region",
                                ("north",), prepare=True)
        assert [d.name for d in prepared.description] == ["region", "basket", "basket_low", "basket_high"]
        conn.execute("SET cleanroom.intervals TO off")
        assert [d.name for d in conn.execute(sql).description] == ["category", "n", "revenue"]
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET cleanroom.intervals = sometimes")


def test_the_intervals_can_be_asked_for_at_connection(dp_pg):
    """libpq's options (PGOPTIONS): a BI tool's connection string can carry the setting."""
    with psycopg.connect(dp_pg.dsn(), options="-c cleanroom.intervals=on") as conn:
        cursor = conn.execute("SELECT count(*) AS n FROM purchases")
        assert [d.name for d in cursor.description] == ["n", "n_low", "n_high"]
