"""The demo generator: deterministic, the advertised sizes, and values that match
the demo policy's declared lists; the demo config opens and describes cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest
import yaml

from gateway import demo

REPO = Path(__file__).resolve().parent.parent
POLICY = yaml.safe_load((REPO / "policies" / "demo.yaml").read_text())


def timed_generate(path: Path, scale: float = 1.0) -> Path:
    started = time.perf_counter()
    demo.generate(path, scale=scale)
    print(f"\ndemo.generate(scale={scale}) took {time.perf_counter() - started:.2f} s")
    return path


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    return timed_generate(tmp_path_factory.mktemp("demo-full"))


def open_data(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"ATTACH '{path / 'retail.duckdb'}' AS retail (READ_ONLY)")
    con.execute("CREATE VIEW purchases AS SELECT * FROM retail.purchases")
    con.execute(f"CREATE VIEW impressions AS SELECT * FROM read_parquet('{path / 'impressions' / '*.parquet'}')")
    con.execute(f"CREATE VIEW regions AS SELECT * FROM read_csv('{path / 'regions.csv'}', header = true)")
    return con


CHECKSUMS = {
    "purchases": "SELECT count(*), sum(hash(household_id, region, category, amount, purchased_on, card_last4)) "
                 "FROM purchases",
    "impressions": "SELECT count(*), sum(hash(household_id, campaign, channel, shown_at)) FROM impressions",
    "regions": "SELECT count(*), sum(hash(region, region_name, country)) FROM regions",
    "amounts": "SELECT sum(amount), min(amount), max(amount) FROM purchases",
}


def checksums(path: Path) -> dict[str, tuple]:
    with open_data(path) as con:
        return {name: con.execute(sql).fetchone() for name, sql in CHECKSUMS.items()}


def test_generation_is_deterministic(full, tmp_path):
    again = timed_generate(tmp_path / "again")
    assert checksums(again) == checksums(full)
    for file in ("regions.csv", "impressions/2026-q1.parquet", "impressions/2026-q4.parquet"):
        assert (again / file).read_bytes() == (full / file).read_bytes(), file


def test_small_scale_is_deterministic_too(tmp_path):
    assert checksums(timed_generate(tmp_path / "a", 0.05)) == checksums(timed_generate(tmp_path / "b", 0.05))


def test_counts(full):
    with open_data(full) as con:
        purchases = con.execute("SELECT count(*) FROM purchases").fetchone()[0]
        impressions = con.execute("SELECT count(*) FROM impressions").fetchone()[0]
        print(f"purchases {purchases:,}, impressions {impressions:,}")
        assert abs(purchases - 1_000_000) <= 50_000
        assert abs(impressions - 2_000_000) <= 100_000
        assert len(list((full / "impressions").glob("*.parquet"))) > 1
        assert con.execute("SELECT count(*) FROM regions").fetchone()[0] == 8


def test_exact_households(full):
    """Every household buys at least once, so the retailer's data holds all of them."""
    with open_data(full) as con:
        assert con.execute("SELECT count(DISTINCT household_id) FROM purchases").fetchone()[0] == demo.HOUSEHOLDS


def test_households_in_data_come_from_the_household_list(full):
    with open_data(full) as con:
        con.execute(f"CREATE TABLE ids AS SELECT left(sha256('household:' || h), 16) AS household_id "
                    f"FROM range({demo.HOUSEHOLDS}) t(h)")
        for table in ("purchases", "impressions"):
            stray = con.execute(f"SELECT count(*) FROM {table} WHERE household_id NOT IN (SELECT household_id FROM ids)")
            assert stray.fetchone()[0] == 0, table


def declared(table: str, column: str) -> list:
    return sorted(POLICY["tables"][table]["columns"][column]["values"])


def test_values_match_the_policy(full):
    with open_data(full) as con:
        def distinct(table: str, column: str) -> list:
            return sorted(r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall())

        assert distinct("purchases", "region") == declared("purchases", "region")
        assert distinct("purchases", "category") == declared("purchases", "category")
        assert distinct("impressions", "campaign") == declared("impressions", "campaign")
        assert distinct("impressions", "channel") == declared("impressions", "channel")
        assert distinct("regions", "region") == declared("purchases", "region")
        template = POLICY["templates"]["campaign_reach"]["parameters"]["campaign"]["values"]
        assert sorted(template) == declared("impressions", "campaign")


def test_value_shapes(full):
    with open_data(full) as con:
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE purchases)").fetchall())
        assert types == {"household_id": "VARCHAR", "region": "VARCHAR", "category": "VARCHAR",
                         "amount": "DECIMAL(10,2)", "purchased_on": "DATE", "card_last4": "VARCHAR"}
        types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE impressions)").fetchall())
        assert types == {"household_id": "VARCHAR", "campaign": "VARCHAR", "channel": "VARCHAR",
                         "shown_at": "TIMESTAMP"}
        row = con.execute("""
            SELECT min(amount), max(amount), median(amount) < avg(amount),
                   min(purchased_on), max(purchased_on), bool_and(regexp_full_match(card_last4, '[0-9]{4}')),
                   bool_and(regexp_full_match(household_id, '[0-9a-f]{16}'))
            FROM purchases""").fetchone()
        assert row[0] >= 0 and row[1] <= 500 and row[2], "amounts in 0..500, skewed right"
        assert str(row[3]).startswith("2026") and str(row[4]).startswith("2026")
        assert row[5] and row[6]
        years = con.execute("SELECT min(year(shown_at)), max(year(shown_at)) FROM impressions").fetchone()
        assert years == (2026, 2026)
        # One home region per household.
        assert con.execute("SELECT count(*) FROM (SELECT household_id FROM purchases GROUP BY 1 "
                           "HAVING count(DISTINCT region) > 1)").fetchone()[0] == 0


def test_exposure_raises_purchases(full):
    """Households buy more in the three weeks after first seeing a campaign than
    households in general do in the same weeks."""
    with open_data(full) as con:
        exposed, baseline = con.execute("""
            WITH first AS (SELECT household_id, CAST(min(shown_at) AS DATE) AS seen FROM impressions
                           WHERE campaign = 'summer_fresh' GROUP BY 1),
                 span AS (SELECT min(seen) AS lo, max(seen) + 20 AS hi FROM first)
            SELECT (SELECT count(*) FROM purchases p JOIN first f USING (household_id)
                    WHERE p.purchased_on BETWEEN f.seen AND f.seen + 20) / (SELECT count(*) FROM first),
                   (SELECT count(*) FROM purchases, span WHERE purchased_on BETWEEN lo AND hi)
                     / (SELECT count(DISTINCT household_id) FROM purchases)
                     * 21 / (SELECT hi - lo + 1 FROM span)""").fetchone()
        print(f"purchases in 21 days: exposed {exposed:.3f}, all households {baseline:.3f}")
        assert exposed > 1.2 * baseline


def test_complete_generation_is_not_redone(full):
    before = (full / "retail.duckdb").stat().st_mtime_ns
    started = time.perf_counter()
    demo.generate(full)
    assert time.perf_counter() - started < 1
    assert (full / "retail.duckdb").stat().st_mtime_ns == before


def test_incomplete_generation_is_redone(tmp_path):
    path = timed_generate(tmp_path / "d", 0.02)
    (path / demo.MARKER).unlink()  # as if the previous run died before finishing
    (path / "impressions" / "2026-q1.parquet").unlink()
    demo.generate(path, scale=0.02)
    assert (path / demo.MARKER).is_file() and (path / "impressions" / "2026-q1.parquet").is_file()


def test_demo_config_opens_and_describes(full, tmp_path):
    """config/demo.yaml's sources, pointed at the generated data, attach and
    match every column policies/demo.yaml declares."""
    from gateway.config import load_config
    from gateway.policy.loader import load_policy
    from gateway.sources import describe, open_database

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["policies"] = [str(REPO / "policies" / "demo.yaml")]
    for source in config["sources"].values():
        source["path"] = source["path"].replace("../var/demo", str(full))
    config["engine"]["data_roots"] = [str(full)]
    config["state_dir"] = str(tmp_path / "state")
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))

    with open_database(load_config(tmp_path / "gateway.yaml")) as con:
        types = describe(con, load_policy(REPO / "policies" / "demo.yaml"))
    assert types["purchases"] == {"household_id": "VARCHAR", "region": "VARCHAR", "category": "VARCHAR",
                                  "amount": "DECIMAL(10,2)", "purchased_on": "DATE", "card_last4": "VARCHAR"}
    assert types["impressions"]["shown_at"] == "TIMESTAMP"
    assert types["regions"] == {"region": "VARCHAR", "region_name": "VARCHAR", "country": "VARCHAR"}


def test_demo_instructions_name_the_endpoints():
    text = demo._instructions(8080, 5433, demo._privacy(REPO / "config" / "demo.yaml"))
    assert "demo: differential privacy, laplace, epsilon 0.1 per query, budget 10.0 (never)" in text
    for needle in ("Authorization: Bearer analyst", "/v1/tables", "/v1/query", "/v1/budget",
                   "/v1/templates/campaign_reach/run", 'psql "host=127.0.0.1 port=5433 dbname=demo user=analyst"'):
        assert needle in text
