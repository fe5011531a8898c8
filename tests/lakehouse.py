"""Write real Delta and Iceberg tables for tests: Delta with delta-rs (`deltalake`),
Iceberg with pyiceberg through a SQLite-backed SQL catalog (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest


def write_delta(folder: Path, table: pa.Table, mode: str = "overwrite", **options) -> Path:
    deltalake = pytest.importorskip("deltalake")
    deltalake.write_deltalake(str(folder), table, mode=mode, **options)
    return folder


def delete_from_delta(folder: Path, predicate: str) -> None:
    deltalake = pytest.importorskip("deltalake")
    deltalake.DeltaTable(str(folder)).delete(predicate)


def iceberg_table(warehouse: Path, name: str, table: pa.Table):
    """A new pyiceberg table `ns.<name>` holding `table`; its files land in
    warehouse/ns/<name>, its catalog in warehouse/catalog.db."""
    pytest.importorskip("pyiceberg")
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("tests", uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=warehouse.as_uri())
    catalog.create_namespace_if_not_exists("ns")
    created = catalog.create_table(f"ns.{name}", schema=table.schema)
    created.append(table)
    return created


def metadata_file(iceberg) -> Path:
    """The table's current metadata file, as a catalog records it."""
    return Path(iceberg.metadata_location.removeprefix("file://"))


def publish_version_hint(iceberg) -> Path:
    """Write metadata/version-hint.text naming the current metadata file, as a
    file-system (Hadoop) catalog does on every commit; pyiceberg has no such
    catalog. Returns the table's folder."""
    current = metadata_file(iceberg)
    current.with_name("version-hint.text").write_text(current.name.removesuffix(".metadata.json"))
    return current.parent.parent
