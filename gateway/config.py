"""Gateway config file -> GatewayConfig, or PolicyInvalid listing every problem.

Same error style as policies (`file:line:col: key.path: message`). Relative
paths resolve against the config file's folder, so the gateway behaves the
same whatever directory it is started from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config_model import (SOURCE_KINDS, EngineSettings, GatewayConfig, HttpSettings, PgSettings, Source,
                                   StoreSettings, User)
from gateway.errors import PolicyInvalid
from gateway.quotas.limits import host_quotas_from
from gateway.yamlsource import KeyPath, load_schema, load_yaml, report, schema_problems

# From the one table of source kinds (gateway.config_model.SOURCE_KINDS).
PATH_KINDS = tuple(k.name for k in SOURCE_KINDS.values() if k.reach != "server")  # read from `path`
SINGLE_TABLE_KINDS = tuple(k.name for k in SOURCE_KINDS.values() if k.reach == "file")  # the source is the table
SERVER_KINDS = tuple(k.name for k in SOURCE_KINDS.values() if k.reach == "server")
_SCHEMA = load_schema("gateway", "config_schema.json")
_SCHEMA["$defs"]["source"]["properties"]["kind"]["enum"] = list(SOURCE_KINDS)


def load_config(path: str | Path) -> GatewayConfig:
    """Load and validate the gateway config; raise PolicyInvalid with every problem."""
    doc = load_yaml(path)
    if doc.data is None and doc.problems:
        raise PolicyInvalid(doc.problems)
    base = Path(path).resolve().parent
    found = schema_problems(doc, _SCHEMA)
    data = doc.data if isinstance(doc.data, dict) else {}
    found += _semantic_problems(data, base)
    problems = report(doc, found)
    if problems:
        raise PolicyInvalid(problems)
    return _build(data, Path(path).resolve(), base)


def _resolve(base: Path, value: str) -> Path:
    return (base / Path(value).expanduser()).resolve()


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _semantic_problems(data: dict, base: Path) -> list[tuple[KeyPath, str]]:
    found: list[tuple[KeyPath, str]] = []
    policies = data.get("policies")
    for i, policy in enumerate(policies if isinstance(policies, list) else []):
        if isinstance(policy, str) and policy and not _resolve(base, policy).is_file():
            found.append((("policies", i), f"no such policy file: {_resolve(base, policy)}"))
    engine = _dict(data.get("engine"))
    roots = engine.get("data_roots")
    roots = [_resolve(base, r) for r in roots if isinstance(r, str) and r] if isinstance(roots, list) else []
    for name, source in _dict(data.get("sources")).items():
        if isinstance(source, dict):
            found += _source_problems(("sources", name), source, base, roots)
    for name, user in _dict(data.get("users")).items():
        if isinstance(user, dict) and not ("token_sha256" in user or "scram_sha256" in user):
            found.append((("users", name), "a user needs token_sha256 (HTTP) or scram_sha256 (Postgres wire), or both"))
    users = _dict(data.get("users"))
    for i, name in enumerate(data.get("operators") if isinstance(data.get("operators"), list) else []):
        if isinstance(name, str) and name not in users:
            found.append((("operators", i), f"unknown user {name!r} (declared: {', '.join(sorted(users)) or 'none'})"))
    pg = _dict(data.get("pg"))
    if ("tls_cert" in pg) != ("tls_key" in pg):
        found.append((("pg",), "tls_cert and tls_key go together: give both or neither"))
    for key in ("tls_cert", "tls_key"):
        if isinstance(pg.get(key), str) and pg[key] and not _resolve(base, pg[key]).is_file():
            found.append((("pg", key), f"no such file: {_resolve(base, pg[key])}"))
    return found


def _source_problems(at: KeyPath, source: dict, base: Path, roots: list[Path]) -> list[tuple[KeyPath, str]]:
    kind = source.get("kind")
    found: list[tuple[KeyPath, str]] = []
    if kind in PATH_KINDS:
        if "path" not in source:
            what = "a table folder" if SOURCE_KINDS[kind].folder else "a file or a glob"
            found.append((at, f"a {kind} source needs path ({what})"))
        if "dsn" in source:
            found.append((at + ("dsn",), f"a {kind} source is a file: use path, not dsn"))
        path = source.get("path")
        if roots and isinstance(path, str) and path:
            resolved = _resolve(base, path)
            if not any(resolved.is_relative_to(root) for root in roots):
                found.append((at + ("path",), f"{resolved} is outside engine.data_roots, so the engine could not read it"))
    if kind in SERVER_KINDS:
        if "dsn" not in source:
            found.append((at, f"a {kind} source needs dsn (connection string)"))
        if "path" in source:
            found.append((at + ("path",), f"a {kind} source is a server: use dsn, not path"))
    if "options" in source and kind != "csv":
        found.append((at + ("options",), f"options apply to csv sources only (this one is {kind})"))
    return found


def _build(data: dict, config_path: Path, base: Path) -> GatewayConfig:
    sources = {
        name: Source(
            name=name,
            kind=spec["kind"],
            path=_resolve(base, spec["path"]) if "path" in spec else None,
            dsn=spec.get("dsn"),
            options=dict(spec.get("options", {})),
        )
        for name, spec in data["sources"].items()
    }
    users = {
        name: User(name, token_sha256=spec.get("token_sha256"), scram_sha256=spec.get("scram_sha256"))
        for name, spec in data["users"].items()
    }
    engine = dict(data.get("engine", {}))
    if "temp_directory" in engine:
        engine["temp_directory"] = _resolve(base, engine["temp_directory"])
    engine["data_roots"] = tuple(_resolve(base, root) for root in engine.get("data_roots", ()))
    for key in ("query_timeout_seconds", "policy_reload_seconds"):
        if key in engine:
            engine[key] = float(engine[key])
    pg = dict(data.get("pg", {}))
    for key in ("tls_cert", "tls_key"):
        if key in pg:
            pg[key] = _resolve(base, pg[key])
    return GatewayConfig(
        path=config_path,
        policies=tuple(_resolve(base, p) for p in data["policies"]),
        sources=sources,
        users=users,
        engine=EngineSettings(**engine),
        http=HttpSettings(**data.get("http", {})),
        pg=PgSettings(**pg),
        state_dir=_resolve(base, data.get("state_dir", "var")),
        store=StoreSettings(**data.get("store", {})),
        quotas=host_quotas_from(data.get("quotas")),
        operators=tuple(data.get("operators", ())),
    )


def source_problems(config: GatewayConfig, cleanroom: Any) -> list[tuple[str, str]]:
    """How a clean room's tables disagree with the config's sources, as
    (policy key path, message): unknown sources, and `relation` given for a
    single-table file source or missing for a database source."""
    found = []
    for name, table in cleanroom.tables.items():
        source = config.sources.get(table.source)
        if source is None:
            declared = ", ".join(sorted(config.sources)) or "none"
            found.append((f"tables.{name}.source", f"no source {table.source!r} in {config.path} (declared: {declared})"))
        elif source.kind in SINGLE_TABLE_KINDS and table.relation is not None:
            found.append((f"tables.{name}.relation", f"source {table.source!r} is a {source.kind} file: remove relation"))
        elif source.kind not in SINGLE_TABLE_KINDS and table.relation is None:
            found.append((f"tables.{name}", f"source {table.source!r} is a {source.kind} database: name the table in relation"))
    return found
