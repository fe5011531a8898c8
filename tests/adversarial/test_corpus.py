"""The adversarial corpus: statements an attacker would send, each with the answer a careful
resolver must give. One YAML file per class under corpus/, each a list of entries:

    - sql: |-
        SELECT count(DISTINCT p) FROM purchases p
      expect: {refused: bind.row_reference}     # or {refused: [rule.a, rule.b]}: any of them
      why: alias as a value; DISTINCT over whole rows including the hidden column

    - sql: |-
        SELECT region, count(*) FROM purchases GROUP BY region
      expect: released
      why: ...

`@DATA@` in a statement is replaced by the absolute path of the demo data (the files behind
the sources), so path tricks name real files.

refused: engine.run raises a GatewayError whose rule is the expected one (or one of them);
never ExecutionFailed (engine.failure: DuckDB raised on a compiled statement, a bug) and
never any other exception.

released: engine.run returns a Release whose min_group_size is 10, or None only when the
statement reads no private table. Then k is proved on engine.compile(...).generated_sql,
parsed with sqlglot (DuckDB dialect): every relation it reads is either a fully qualified
relation of a policy table in an attached catalog, or a CTE visible where it is named (not a
path-like name); no table function or row generator appears; and when a private relation is
read, a COUNT(DISTINCT ...) is compared with k.

Runs over the session `engine` (demo data, k-only policy, k=10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlglot
import yaml
from sqlglot import expressions as exp

from gateway import sources
from gateway.engine import QueryRequest
from gateway.engine.types import Release
from gateway.errors import ExecutionFailed, GatewayError
from tests.sparkkit import assert_same_rows

CORPUS = Path(__file__).parent / "corpus"
DATA_PLACEHOLDER = "@DATA@"
K = 10
MIN_ENTRIES = 300
RULE_ID = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
HIDDEN = re.compile(r"card_last4", re.IGNORECASE)


@dataclass(frozen=True)
class Case:
    id: str  # "<file stem>:<index>"
    sql: str
    released: bool
    rules: tuple[str, ...]  # expected rule ids when refused
    why: str

    @property
    def expected(self) -> str:
        if self.released:
            return "released"
        return self.rules[0] if len(self.rules) == 1 else "one of " + ", ".join(self.rules)


def load_corpus() -> dict[str, list[Case]]:
    """Every corpus file by stem; a malformed entry raises, naming its file and index."""
    corpus = {}
    for path in sorted(CORPUS.glob("*.yaml")):
        entries = yaml.safe_load(path.read_text()) or []
        if not isinstance(entries, list):
            raise ValueError(f"{path}: expected a list of entries")
        corpus[path.stem] = [_case(path.stem, i, entry) for i, entry in enumerate(entries)]
    return corpus


def _case(stem: str, index: int, entry) -> Case:
    where = f"{stem}:{index}"
    if not isinstance(entry, dict) or set(entry) != {"sql", "expect", "why"}:
        raise ValueError(f"{where}: an entry has exactly the keys sql, expect, why: {entry!r}")
    sql, expect, why = entry["sql"], entry["expect"], entry["why"]
    if not isinstance(sql, str) or not sql.strip() or not isinstance(why, str) or not why.strip():
        raise ValueError(f"{where}: sql and why must be non-empty strings")
    if expect == "released":
        return Case(where, sql, True, (), why)
    if isinstance(expect, dict) and set(expect) == {"refused"}:
        rules = expect["refused"]
        rules = (rules,) if isinstance(rules, str) else tuple(rules or ())
        if rules and all(isinstance(r, str) and RULE_ID.match(r) for r in rules):
            return Case(where, sql, False, rules, why)
    raise ValueError(f"{where}: expect must be `released` or {{refused: rule}} or {{refused: [rules]}}: {expect!r}")


CORPUS_FILES = load_corpus()
CASES = [case for cases in CORPUS_FILES.values() for case in cases]


# -- running a statement ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str  # "released", "refused" (a GatewayError other than ExecutionFailed), "failed", "exception"
    rule: str | None = None
    detail: str = ""
    release: Release | None = None
    error: BaseException | None = None

    def describe(self) -> str:
        if self.kind == "released":
            r = self.release
            return f"released (authorised_by={r.authorised_by}, min_group_size={r.min_group_size}, rows={r.table.num_rows})"
        if self.kind == "refused":
            return f"refused {self.rule} ({self.detail})"
        if self.kind == "failed":
            return f"engine.failure ({self.detail})"
        return f"exception {self.detail}"


def request_for(sql: str, data_dir) -> QueryRequest:
    return QueryRequest(user="analyst", cleanroom="demo", sql=sql.replace(DATA_PLACEHOLDER, str(data_dir)))


def outcome(engine, sql: str, data_dir) -> Outcome:
    try:
        release = engine.run(request_for(sql, data_dir))
    except ExecutionFailed as error:
        return Outcome("failed", error.rule, error.message, error=error)
    except GatewayError as error:
        return Outcome("refused", error.rule, f"{type(error).__name__}: {error.message[:160]}", error=error)
    except Exception as error:  # an internal fault: the client would see a request id only
        return Outcome("exception", None, f"{type(error).__name__}: {str(error)[:160]}", error=error)
    return Outcome("released", release=release)


# -- proving k on the generated SQL -----------------------------------------------------------------

_PATH_LIKE = re.compile(r"[/\\*?.~]|://")
_TABLE_FUNCTION_NAMES = re.compile(
    r"^(read_\w+|\w+_scan|glob|query|query_table|sniff_csv|parquet_\w+|duckdb_\w+|pragma_\w+|range|"
    r"generate_series|unnest|getenv|getvariable|current_setting|error|setseed|random)$"
)
_ROW_SOURCES = (exp.Unnest, exp.Explode, exp.GenerateSeries, exp.ExplodingGenerateSeries, exp.Lateral, exp.Values)


def _key(table: exp.Table) -> tuple[str, str, str]:
    return (table.catalog.lower(), table.db.lower(), table.name.lower())


def _visible_ctes(node: exp.Expression) -> set[str]:
    """Names of the CTEs visible where `node` is: those of every enclosing WITH, but inside a
    CTE body only the CTEs before it (and itself, for WITH RECURSIVE). DuckDB folds case."""
    visible: set[str] = set()
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.With):
            ctes = list(parent.expressions)
            position = next(i for i, cte in enumerate(ctes) if cte is child)
            upto = position + 1 if parent.args.get("recursive") else position
            visible |= {cte.alias_or_name.lower() for cte in ctes[:upto]}
        else:
            with_ = parent.args.get("with_") or parent.args.get("with")
            if isinstance(with_, exp.With) and with_ is not child:
                visible |= {cte.alias_or_name.lower() for cte in with_.expressions}
        child, parent = parent, parent.parent
    return visible


def relations_read(sql: str, allowed: set[tuple[str, str, str]], attached: set[str]) -> set[tuple[str, str, str]]:
    """The policy relations `sql` reads; AssertionError on anything else it reads."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")
    read = set()
    for node in tree.find_all(exp.Table):
        shown = node.sql(dialect="duckdb")
        assert isinstance(node.this, exp.Identifier), f"table function in the generated SQL: {shown}"
        if node.catalog or node.db:
            assert node.catalog and node.db, f"partially qualified relation in the generated SQL: {shown}"
            assert node.catalog.lower() in attached, f"catalog of {shown} is not an attached source catalog"
            assert _key(node) in allowed, f"{shown} is not the relation of a policy table"
            read.add(_key(node))
            continue
        assert not _PATH_LIKE.search(node.name), f"path-like relation name in the generated SQL: {shown}"
        assert node.name.lower() in _visible_ctes(node), f"bare relation {shown} is not a CTE visible where it is read"
    for node in tree.walk():
        assert not isinstance(node, _ROW_SOURCES), f"row source in the generated SQL: {node.sql(dialect='duckdb')[:120]}"
        if isinstance(node, exp.Func):
            name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
            assert not _TABLE_FUNCTION_NAMES.match(name), f"function {name}() in the generated SQL"
    return read


def k_tests(sql: str, k: int) -> int:
    """How many COUNT(DISTINCT x) comparisons with k (>= k, or NOT BETWEEN 1 AND k-1) `sql` has."""
    tree = sqlglot.parse_one(sql, dialect="duckdb")

    def distinct_count(node) -> bool:
        return isinstance(node, exp.Count) and isinstance(node.this, exp.Distinct)

    found = 0
    for node in tree.find_all(exp.GTE, exp.Between):
        if isinstance(node, exp.GTE):
            found += distinct_count(node.this) and node.expression.sql() == str(k)
        else:
            found += distinct_count(node.this) and node.args["high"].sql() == str(k - 1)
    return found


@pytest.fixture(scope="module")
def source_relations(engine):
    """(every policy table's relation, the private ones, the attached catalogs)."""
    room = engine.cleanrooms["demo"]
    every = {_key(sources.relation_for(t)) for t in room.tables.values()}
    private = {_key(sources.relation_for(t)) for t in room.tables.values() if not t.public}
    cursor = engine.database.cursor()
    try:
        databases = {name.lower() for (name,) in cursor.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
    finally:
        cursor.close()
    attached = {catalog for catalog, _, _ in every} & databases
    return every, private, attached


def check(case: Case, result: Outcome, engine, data_dir, source_relations) -> None:
    if not case.released:
        assert result.kind != "failed", f"expected {case.expected}, the engine failed: {result.describe()}"
        assert result.kind != "exception", f"expected {case.expected}, got an internal error: {result.describe()}"
        assert result.kind == "refused", f"expected {case.expected}, got {result.describe()}"
        assert result.rule in case.rules, f"expected {case.expected}, got {result.describe()}"
        return
    assert result.kind == "released", f"expected released, got {result.describe()}"
    release = result.release
    assert release.min_group_size in (K, None), f"min_group_size {release.min_group_size}, expected {K}"
    state = engine.compile(request_for(case.sql, data_dir))
    if state.release is not None:  # answered from the policy catalog: no data read
        assert state.release.authorised_by == "catalog", state.release.authorised_by
        return
    every, private, attached = source_relations
    read = relations_read(state.generated_sql, every, attached)
    private_read = read & private
    if release.min_group_size is None:
        assert not private_read, f"released without k but reads private {sorted(private_read)}: {state.generated_sql}"
    else:
        assert k_tests(state.generated_sql, K) >= (1 if private_read else 0), \
            f"no COUNT(DISTINCT ...) >= {K} in the generated SQL: {state.generated_sql}"


# -- the tests -------------------------------------------------------------------------------------------


def test_corpus_size_and_classes():
    assert len(CASES) >= MIN_ENTRIES, f"{len(CASES)} entries, at least {MIN_ENTRIES} wanted"
    assert len(CORPUS_FILES) >= 9, sorted(CORPUS_FILES)
    empty = [stem for stem, cases in CORPUS_FILES.items() if not cases]
    assert not empty, f"empty corpus files: {empty}"
    assert sum(c.released for c in CORPUS_FILES.get("i_allowed", [])) >= 40


def test_corpus_statements_are_unique():
    first: dict[str, str] = {}
    duplicates = []
    for case in CASES:
        if case.sql.strip() in first:
            duplicates.append((first[case.sql.strip()], case.id))
        first.setdefault(case.sql.strip(), case.id)
    assert not duplicates, duplicates


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_entry(engine, demo_data_dir, source_relations, case):
    check(case, outcome(engine, case.sql, demo_data_dir), engine, demo_data_dir, source_relations)


HIDDEN_CASES = [c for c in CASES if not c.released and HIDDEN.search(c.sql)]


@pytest.mark.parametrize("case", HIDDEN_CASES, ids=[c.id for c in HIDDEN_CASES])
def test_hidden_column_answers_like_a_missing_one(engine, demo_data_dir, case):
    """A statement naming the hidden column gets the same answer as the same statement
    naming a column that does not exist: the refusal does not reveal that it exists."""
    hidden = outcome(engine, case.sql, demo_data_dir)
    missing = outcome(engine, HIDDEN.sub("no_such_col", case.sql), demo_data_dir)
    assert (hidden.kind, hidden.rule, type(hidden.error)) == (missing.kind, missing.rule, type(missing.error)), \
        f"hidden: {hidden.describe()}; missing: {missing.describe()}"


# -- the same corpus on the Spark engine (tests/sparkkit.py: a local Spark Connect server) ------------

# Released on DuckDB, refused on Spark (rule engine.spark, before anything runs or is charged):
# what Spark computes differently and gateway/spark/sql.py does not emulate.
SPARK_REFUSES = {
    "d_overflow:54": "SUBSTRING from a negative start beyond the string: DuckDB and Spark cut differently",
    "d_overflow:69": "a LIMIT above 2**31 - 1: Spark's LIMIT is 32-bit",
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_entry_on_spark(spark_engine, engine, demo_data_dir, case):
    """Every refusal is the same on Spark; every release has DuckDB's rows and column types."""
    on_spark = outcome(spark_engine, case.sql, demo_data_dir)
    if case.id in SPARK_REFUSES:
        assert (on_spark.kind, on_spark.rule) == ("refused", "engine.spark"), on_spark.describe()
        return
    if not case.released:
        assert on_spark.kind == "refused" and on_spark.rule in case.rules, \
            f"expected {case.expected}, got {on_spark.describe()}"
        return
    assert on_spark.kind == "released", f"expected released, got {on_spark.describe()}"
    on_duckdb = outcome(engine, case.sql, demo_data_dir)
    assert on_duckdb.kind == "released", on_duckdb.describe()
    assert_same_rows(on_spark.release.table, on_duckdb.release.table)
