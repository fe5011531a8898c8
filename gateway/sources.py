"""Attach every configured source read-only into one in-memory DuckDB, then lock it.

Naming scheme (the engine's generated SQL always uses `relation_for`, fully
qualified, so analysts' table names and DuckDB's built-in catalogs never collide
with a source):

- duckdb, sqlite, postgres, mysql sources are attached as catalog `src_<source>`;
  a policy relation "schema.table" is `"src_<source>"."schema"."table"`, and a bare
  "table" is `"src_<source>"."main"."table"` (the default schema of DuckDB and
  SQLite files). Server sources have no "main": their relations must name a
  schema ("public.orders", "<database>.orders"); `describe` says so at startup.
- parquet, csv, delta and iceberg sources become one view,
  `"memory"."src_<source>"."<source>"`, over read_parquet / read_csv of the file or
  glob, delta_scan of a Delta table's folder, or iceberg_scan of an Iceberg table's
  folder or metadata file. Each statement re-reads a Delta log (the current version)
  and the Iceberg version its metadata file or version hint names. Analysts' SQL can
  never name these functions (the resolver refuses table functions), only the views.

Once attached, the engine is locked: file access only inside the data roots and
its own temp directory, no extension installs or loads, no Python replacement
scans, resource limits set, and `lock_configuration` last so no SET undoes it.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from gateway.config_model import SOURCE_KINDS, GatewayConfig, Source
from gateway.errors import PolicyInvalid
from gateway.policy.model import CleanRoom, Table

if TYPE_CHECKING:
    import sqlglot.expressions as exp

MEMORY_CATALOG = "memory"  # the name DuckDB gives the in-memory database
# From the one table of source kinds (gateway.config_model.SOURCE_KINDS).
FILE_KINDS = tuple(k.name for k in SOURCE_KINDS.values() if k.reach == "file")  # one table, read through a view
ATTACHED_KINDS = tuple(k.name for k in SOURCE_KINDS.values() if k.reach != "file")
SERVER_KINDS = tuple(k.name for k in SOURCE_KINDS.values() if k.reach == "server")
EXTENSIONS = {k.name: k.extensions for k in SOURCE_KINDS.values() if k.extensions}  # in load order
# Public time buckets need a type whose periods do not depend on a session's time zone.
BUCKET_TYPES = ("DATE", "TIMESTAMP")
CSV_OPTIONS = ("header", "delim")


def source_namespace(source_name: str) -> str:
    """Catalog (attached kinds) or schema (file kinds) holding one source."""
    return f"src_{source_name}"


def relation_for(table: Table) -> exp.Table:
    """The fully qualified, quoted reference the engine uses for a policy table."""
    import sqlglot.expressions as exp  # here: executor processes import this module without sqlglot

    namespace = source_namespace(table.source)
    if table.relation is None:  # file source: the view is the table
        return exp.table_(table.source, db=namespace, catalog=MEMORY_CATALOG, quoted=True)
    parts = table.relation.split(".")
    if len(parts) == 1:
        schema, name = "main", parts[0]
    elif len(parts) == 2:
        schema, name = parts
    else:
        raise ValueError(f"relation {table.relation!r} must be 'table' or 'schema.table'")
    return exp.table_(name, db=schema, catalog=namespace, quoted=True)


def open_database(config: GatewayConfig) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with every source attached read-only, then locked."""
    base = config.path.parent
    roots = [_resolve(base, root) for root in config.engine.data_roots]
    temp_dir = _temp_directory(config)
    con = duckdb.connect(
        config={
            # Startup-only: they cannot be SET later, so they go in here.
            "allow_unsigned_extensions": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            # One directory per process: DuckDB's spill file names are fixed, so two
            # workers sharing a directory would overwrite each other's blocks.
            "temp_directory": str(temp_dir),
        }
    )
    try:
        # A slow statement (binding a view reads a Delta log or Iceberg manifests) would
        # otherwise draw a progress bar on the process's stdout.
        con.execute("SET enable_progress_bar = false")
        # Only the extensions a source needs: each costs 0.15-0.6 s to load, in every
        # process that opens the database (front ends and each executor).
        for name in _extensions_for(config.sources.values()):
            con.execute(f"LOAD {_literal(_extension_file(name))}")
        problems: list[str] = []
        for source in config.sources.values():
            try:
                _attach(con, source, base, roots)
            except (duckdb.Error, ValueError) as e:
                problems.append(f"{config.path}: sources.{source.name}: {_redact(_first_line(e))}")
        if problems:
            raise PolicyInvalid(problems)
        _lock(con, config, roots, temp_dir)
    except BaseException:
        con.close()
        raise
    return con


def describe(con: duckdb.DuckDBPyConnection, cleanroom: CleanRoom) -> dict[str, dict[str, str]]:
    """Declared columns (hidden ones too) of every policy table -> DuckDB type names,
    read from the attached source. Raises PolicyInvalid listing every problem."""
    kinds = dict(con.execute("SELECT database_name, type FROM duckdb_databases()").fetchall())
    file_views = {schema for (schema,) in con.execute(
        "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ?", [MEMORY_CATALOG]).fetchall()}
    where = cleanroom.source_file or cleanroom.name
    problems: list[str] = []
    described: dict[str, dict[str, str]] = {}
    for table in cleanroom.tables.values():
        here = f"{where}: tables.{table.name}"
        namespace = source_namespace(table.source)
        kind = "file" if namespace in file_views else kinds.get(namespace)
        if kind is None:
            problems.append(f"{here}: source {table.source!r} is not attached (not in the gateway config?)")
            continue
        if (kind == "file") != (table.relation is None):
            what = "a file source has no relation" if kind == "file" else f"a {kind} source needs a relation"
            problems.append(f"{here}: {what}")
            continue
        if kind in SERVER_KINDS and "." not in table.relation:
            problems.append(f"{here}: relation {table.relation!r} of a {kind} source must name its schema")
            continue
        try:
            ref = relation_for(table).sql("duckdb")
            actual = {row[0]: row[1] for row in con.execute(f"DESCRIBE {ref}").fetchall()}
        except (duckdb.Error, ValueError) as e:
            problems.append(f"{here}: cannot read {table.relation or table.source!r}: {_first_line(e)}")
            continue
        missing = [c for c in table.columns if c not in actual]
        for column in missing:
            problems.append(f"{here}.columns.{column}: no such column in {table.relation or table.source!r}")
        for name, column in table.columns.items():
            if column.buckets is not None and name in actual and actual[name] not in BUCKET_TYPES:
                problems.append(f"{here}.columns.{name}.buckets: buckets need a DATE or TIMESTAMP column "
                                f"(it is {actual[name]})")
        described[table.name] = {c: actual[c] for c in table.columns if c in actual}
    if problems:
        raise PolicyInvalid(problems)
    return described


def _attach(con: duckdb.DuckDBPyConnection, source: Source, base: Path, roots: list[Path]) -> None:
    namespace = _identifier(source_namespace(source.name))
    if source.kind in SERVER_KINDS:
        if not source.dsn:
            raise ValueError(f"a {source.kind} source needs a dsn")
        con.execute(f"ATTACH {_literal(source.dsn)} AS {namespace} (TYPE {SOURCE_KINDS[source.kind].attach_type}, "
                    "READ_ONLY)")
        return
    if source.kind not in ATTACHED_KINDS + FILE_KINDS:
        raise ValueError(f"unknown source kind {source.kind!r}")
    if source.path is None:
        raise ValueError(f"a {source.kind} source needs a path")
    path = _resolve(base, source.path)
    if not any(path.is_relative_to(root) for root in roots):
        raise ValueError(f"{path} is outside engine.data_roots, so the locked engine could not read it")
    if source.kind in ATTACHED_KINDS:
        attach_type = SOURCE_KINDS[source.kind].attach_type
        con.execute(f"ATTACH {_literal(str(path))} AS {namespace} "
                    f"({f'TYPE {attach_type}, ' if attach_type else ''}READ_ONLY)")
    else:
        view = f"{_identifier(MEMORY_CATALOG)}.{namespace}.{_identifier(source.name)}"
        con.execute(f"CREATE SCHEMA {_identifier(MEMORY_CATALOG)}.{namespace}")
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM {_file_scan(source, path)}")


def _file_scan(source: Source, path: Path) -> str:
    kind = SOURCE_KINDS[source.kind]
    if kind.folder and not path.exists():
        raise ValueError(f"no {source.kind} table at {path}")
    if source.kind == "delta":
        if not (path / "_delta_log").is_dir():
            raise ValueError(f"{path} is not a Delta table (no _delta_log folder)")
        return f"delta_scan({_literal(str(path))})"
    if source.kind == "iceberg":
        if not (path.is_file() or (path / "metadata" / "version-hint.text").is_file()):
            raise ValueError(f"{path} is not an Iceberg table: give a *.metadata.json file, or a table "
                             "folder whose metadata/version-hint.text names the current version")
        return f"iceberg_scan({_literal(str(path))})"
    if source.kind != "csv":  # csv takes options; every other file kind is its table function over the path
        return f"{kind.scan}({_literal(str(path))})"
    unknown = set(source.options) - set(CSV_OPTIONS)
    if unknown:
        raise ValueError(f"unknown csv options {sorted(unknown)}; known: {list(CSV_OPTIONS)}")
    args = [_literal(str(path))]
    if "header" in source.options:
        args.append(f"header = {'true' if source.options['header'] else 'false'}")
    if "delim" in source.options:
        args.append(f"delim = {_literal(str(source.options['delim']))}")
    return f"read_csv({', '.join(args)})"


def _lock(con: duckdb.DuckDBPyConnection, config: GatewayConfig, roots: list[Path], temp_dir: Path) -> None:
    """Apply each restriction in an order where none blocks the next, and read each
    back: a setting DuckDB silently ignored would leave the engine open."""
    engine = config.engine
    allowed = [str(p) for p in (*roots, temp_dir)]
    con.execute("SET allowed_directories = ?", [allowed])
    granted = con.execute("SELECT current_setting('allowed_directories')").fetchone()[0]
    granted = {g.rstrip("/") for g in granted}
    if not set(allowed) <= granted:
        raise RuntimeError(f"allowed_directories did not apply: {granted}")
    for name, value in (
        ("enable_external_access", False),
        ("autoinstall_known_extensions", False),
        ("autoload_known_extensions", False),
        ("allow_community_extensions", False),
        ("python_enable_replacements", False),
        ("threads", engine.threads),
    ):
        _set_and_check(con, name, value, lambda got, want=value: got == want)
    for name, value in (
        ("memory_limit", engine.memory_limit),
        ("max_temp_directory_size", engine.max_temp_directory_size),
    ):
        _set_and_check(con, name, value, lambda got, want=value: _same_size(got, want))
    temp_now = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    if Path(temp_now) != temp_dir:
        raise RuntimeError(f"temp_directory is {temp_now}, expected {temp_dir}")
    if con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0] is not False:
        raise RuntimeError("allow_unsigned_extensions is on")
    _set_and_check(con, "lock_configuration", True, lambda got: got is True)


def _set_and_check(con: duckdb.DuckDBPyConnection, name: str, value: object, ok) -> None:
    con.execute(f"SET {name} = ?", [value])
    got = con.execute("SELECT current_setting(?)", [name]).fetchone()[0]
    if not ok(got):
        raise RuntimeError(f"setting {name} = {value!r} did not apply (it reads {got!r})")


_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _same_size(got: str, want: str) -> bool:
    """DuckDB reads '2GB' back as '1.8 GiB' (one decimal, truncated): compare
    sizes to within a tenth of the unit it displays."""
    def parse(text: str) -> tuple[float, float]:
        match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"unreadable size {text!r}")
        unit = _UNITS[match.group(2).lower()]
        return float(match.group(1)) * unit, unit

    got_bytes, got_unit = parse(got)
    want_bytes, _ = parse(want)
    return abs(got_bytes - want_bytes) <= 0.1 * got_unit


def _temp_directory(config: GatewayConfig) -> Path:
    base = config.engine.temp_directory or config.state_dir / "tmp"
    base = _resolve(config.path.parent, base)
    base.mkdir(parents=True, exist_ok=True)
    # DuckDB creates (and on close removes) the leaf directory itself.
    return base / f"duckdb-{os.getpid()}-{secrets.token_hex(4)}"


def _extensions_for(sources) -> list[str]:
    needed: list[str] = []
    for kind in sorted({source.kind for source in sources}):
        needed += [name for name in EXTENSIONS.get(kind, ()) if name not in needed]
    return needed


def _extension_file(name: str) -> str:
    """The extension binary shipped by the PyPI package for this DuckDB version."""
    wheel = f"duckdb-extension-{name.replace('_', '-')}=={duckdb.__version__}"
    try:
        package = importlib.resources.files(f"duckdb_extension_{name}")
    except ModuleNotFoundError:
        raise RuntimeError(f"the {name} extension is not installed: install {wheel}") from None
    path = package / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: install {wheel}")
    return str(path)


def _resolve(base: Path, path: Path) -> Path:
    return (base / Path(path).expanduser()).resolve()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _redact(message: str) -> str:
    """Keep passwords from DSNs out of startup errors and logs."""
    message = re.sub(r"(?i)\b(password|passwd|pwd)\s*=\s*('[^']*'|[^\s\"']+)", r"\1=***", message)
    return re.sub(r"(://[^:/@\s]+):[^@\s]+@", r"\1:***@", message)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
