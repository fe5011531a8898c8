"""Delta and Iceberg sources (DuckDB's delta and iceberg extensions) on real tables
written by delta-rs and pyiceberg: the gateway reads each table's current version
(after deletes, overwrites and added columns), a broken table stops the start with
the source's name, and neither an analyst's SQL nor the locked engine can point the
lakehouse scans anywhere else."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from gateway.config_model import Source
from gateway.engine import Engine, QueryRequest
from gateway.errors import GatewayError, PolicyInvalid
from gateway.sources import open_database
from tests.lakehouse import delete_from_delta, iceberg_table, metadata_file, publish_version_hint, write_delta
from tests.roomkit import approve_all
from tests.sourcekit import make_config, ref

SEGMENTS = pa.table({"hh": [f"h{i}" for i in range(40)], "segment": [f"s{i % 2}" for i in range(40)],
                     "score": [i % 7 for i in range(40)]})
SCORE_SUMS = {s: sum(i % 7 for i in range(40) if i % 2 == int(s[1])) for s in ("s0", "s1")}  # 58, 57


@pytest.fixture
def lake(tmp_path):
    """tmp_path/data (the data root) with one Delta table, one Iceberg table and the same rows in Parquet."""
    root = tmp_path / "data"
    root.mkdir()
    pq.write_table(SEGMENTS, root / "segments.parquet")
    write_delta(root / "delta_segments", SEGMENTS)
    iceberg = iceberg_table(root / "warehouse", "segments", SEGMENTS)
    return root, iceberg


def test_delta_and_iceberg_read_as_parquet(tmp_path, lake):
    root, iceberg = lake
    sources = [Source("pq", "parquet", path=root / "segments.parquet"),
               Source("dl", "delta", path=root / "delta_segments"),
               Source("ib", "iceberg", path=metadata_file(iceberg)),
               Source("ib_folder", "iceberg", path=publish_version_hint(iceberg))]
    with open_database(make_config(tmp_path, sources)) as con:
        sql = "SELECT segment, count(*), sum(score), min(hh) FROM {} GROUP BY ALL ORDER BY ALL"
        expected = con.execute(sql.format(ref("pq"))).fetchall()
        assert expected == [("s0", 20, SCORE_SUMS["s0"], "h0"), ("s1", 20, SCORE_SUMS["s1"], "h1")]
        for name in ("dl", "ib", "ib_folder"):
            assert con.execute(sql.format(ref(name))).fetchall() == expected, name
        types = {name: con.execute(f"DESCRIBE {ref(name)}").fetchall() for name in ("pq", "dl", "ib")}
        assert types["dl"] == types["pq"] and types["ib"] == types["pq"]


def test_delta_reads_the_current_version(tmp_path, lake):
    root, _ = lake
    table = root / "delta_segments"
    # schema evolution: a later commit adds a column; then a delete rewrites files
    write_delta(table, pa.table({"hh": ["late"], "segment": ["s9"], "score": [100], "region": ["north"]}),
                mode="append", schema_mode="merge")
    delete_from_delta(table, "score < 3")
    with open_database(make_config(tmp_path, [Source("dl", "delta", path=table)])) as con:
        assert con.execute(f"SELECT count(*), sum(score), count(region) FROM {ref('dl')}").fetchone() == (
            sum(1 for s in SEGMENTS["score"].to_pylist() if s >= 3) + 1,
            sum(s for s in SEGMENTS["score"].to_pylist() if s >= 3) + 100,
            1)
        # an overwrite after the engine started is what the next statement reads
        write_delta(table, pa.table({"hh": ["x", "y"], "segment": ["s0", "s0"], "score": [1, 2],
                                     "region": ["south", "south"]}))
        assert con.execute(f"SELECT count(*), sum(score), min(region) FROM {ref('dl')}").fetchone() == (2, 3, "south")


def test_iceberg_reads_the_version_its_metadata_names(tmp_path, lake):
    root, iceberg = lake
    pinned = metadata_file(iceberg)
    iceberg.delete("score >= 5")
    iceberg.refresh()
    sources = [Source("pinned", "iceberg", path=pinned), Source("current", "iceberg", path=publish_version_hint(iceberg))]
    with open_database(make_config(tmp_path, sources)) as con:
        assert con.execute(f"SELECT count(*) FROM {ref('pinned')}").fetchone() == (40,)
        kept = sum(1 for s in SEGMENTS["score"].to_pylist() if s < 5)
        assert con.execute(f"SELECT count(*), max(score) FROM {ref('current')}").fetchone() == (kept, 4)
        iceberg.append(pa.table({"hh": ["late"], "segment": ["s9"], "score": [3]}))
        publish_version_hint(iceberg)  # a commit through a file-system catalog
        assert con.execute(f"SELECT count(*) FROM {ref('current')}").fetchone() == (kept + 1,)


def test_missing_or_corrupt_tables_stop_the_start_naming_the_source(tmp_path, lake):
    root, iceberg = lake
    (root / "not_delta").mkdir()
    (root / "broken_delta").mkdir()
    write_delta(root / "broken_delta", SEGMENTS)
    for log in (root / "broken_delta" / "_delta_log").glob("*.json"):
        log.write_text("{not json")
    broken_metadata = root / "broken.metadata.json"
    broken_metadata.write_text('{"format-version": 2}')
    sources = [Source("gone", "delta", path=root / "no_such_table"),
               Source("plain", "delta", path=root / "not_delta"),
               Source("garbled", "delta", path=root / "broken_delta"),
               Source("unhinted", "iceberg", path=metadata_file(iceberg).parent.parent),
               Source("truncated", "iceberg", path=broken_metadata)]
    with pytest.raises(PolicyInvalid) as caught:
        open_database(make_config(tmp_path, sources))
    problems = caught.value.problems
    assert len(problems) == len(sources), problems
    for source, problem in zip(sources, problems):
        assert f"sources.{source.name}: " in problem and "\n" not in problem, problem
    assert "no delta table at" in problems[0]
    assert "not a Delta table (no _delta_log folder)" in problems[1]
    assert "not an Iceberg table" in problems[3]


@pytest.mark.server  # starts the gateway (which stops at once)
@pytest.mark.parametrize("front_end", ["pg", "serve"])
def test_a_broken_table_is_one_line_on_stderr_at_start(tmp_path, lake, front_end):
    root, _ = lake
    (root / "policy.yaml").write_text(yaml.safe_dump(room_policy({"t": "dl"})))
    config = gateway_config(tmp_path, root, {"dl": {"kind": "delta", "path": str(root / "no_such_table")}})
    started = subprocess.run([sys.executable, "-m", "gateway", front_end, "--config", str(config), "--port", "0"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2
    assert started.stderr.strip() == f"{config}: sources.dl: no delta table at {root / 'no_such_table'}"


def test_locked_engine_keeps_the_scans_inside_the_roots(tmp_path, lake):
    """The scans run with the lock on: data files and Iceberg metadata outside the roots are
    refused. (The Delta kernel reads `_delta_log` itself, outside DuckDB's file checks:
    analysts can never call delta_scan, see below.)"""
    root, iceberg = lake
    outside = tmp_path / "outside"
    write_delta(outside / "secret", SEGMENTS)
    iceberg_outside = iceberg_table(outside / "warehouse", "secret", SEGMENTS)
    sources = [Source("dl", "delta", path=root / "delta_segments"), Source("ib", "iceberg", path=metadata_file(iceberg))]
    with open_database(make_config(tmp_path, sources)) as con:
        for statement in (f"SELECT * FROM delta_scan('{outside / 'secret'}')",
                          f"SELECT * FROM iceberg_scan('{metadata_file(iceberg_outside)}')",
                          "SELECT * FROM iceberg_scan('/etc')",
                          f"SELECT * FROM read_parquet('{outside / 'secret'}/*.parquet')",
                          "ATTACH 'warehouse' AS lakehouse (TYPE iceberg)",
                          "LOAD httpfs"):
            with pytest.raises(duckdb.Error, match="disabled"):
                con.execute(statement)


def room_policy(tables: dict[str, str], **extra) -> dict:
    return {
        "cleanroom": "room", "min_group_size": 10, "collaborators": {"a": {}},
        "tables": {name: {"owner": "a", "source": source, "privacy_unit": "hh",
                          "columns": {"hh": {"role": "join_key"}, "segment": {"role": "dimension"},
                                      "score": {"role": "measure", "bounds": [0, 10]}}}
                   for name, source in tables.items()},
        "rules": {"all": {"tables": list(tables), "aggregates": ["count", "sum"]}},
        "analysts": {"ana": {"collaborator": "a", "rules": ["all"]}},
        **extra,
    }


def gateway_config(tmp_path, root, sources: dict):
    config = {"policies": [str(root / "policy.yaml")], "sources": sources,
              "engine": {"threads": 1, "memory_limit": "512MB", "data_roots": [str(root)]},
              "state_dir": str(tmp_path / "state"), "users": {}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def lake_engine(tmp_path, lake):
    root, iceberg = lake
    (root / "policy.yaml").write_text(yaml.safe_dump(room_policy({"dl": "dl", "ib": "ib"})))
    built = Engine.from_config_file(gateway_config(tmp_path, root, {
        "dl": {"kind": "delta", "path": str(root / "delta_segments")},
        "ib": {"kind": "iceberg", "path": str(metadata_file(iceberg))}}))
    approve_all(built)
    yield built
    built.close()


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM delta_scan('/etc')",
    "SELECT count(*) FROM delta_scan('{root}/delta_segments')",
    "SELECT count(*) FROM iceberg_scan('{metadata}')",
    "SELECT count(*) FROM iceberg_metadata('{metadata}')",
    "SELECT count(*) FROM iceberg_snapshots('{metadata}')",
    "SELECT count(*) FROM read_parquet('{root}/segments.parquet')",
    "SELECT count(*) FROM dl WHERE hh IN (SELECT hh FROM delta_scan('{root}/delta_segments'))",
    "SELECT count(*) FROM src_dl.dl",
    "SELECT count(*) FROM memory.src_ib.ib",
])
def test_analysts_cannot_name_the_scans_or_their_views(lake_engine, lake, sql):
    root, iceberg = lake
    with pytest.raises(GatewayError) as refused:
        lake_engine.run(QueryRequest(user="ana", cleanroom="room",
                                sql=sql.format(root=root, metadata=metadata_file(iceberg))))
    assert refused.value.rule.startswith(("source.", "bind.unknown_table")), refused.value.rule


def test_analysts_query_the_tables_under_the_policy(lake_engine):
    def run(sql):
        return lake_engine.run(QueryRequest(user="ana", cleanroom="room", sql=sql)).table.to_pylist()

    sql = "SELECT segment, count(*) AS n, sum(score) AS s FROM {} GROUP BY segment ORDER BY segment"
    expected = [{"segment": s, "n": 20, "s": SCORE_SUMS[s]} for s in ("s0", "s1")]
    assert run(sql.format("dl")) == expected and run(sql.format("ib")) == expected
