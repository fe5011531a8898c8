"""Scopes: the relations a clause may name, their columns, and the CTEs in reach.

Names compare the way DuckDB compares them: case-insensitively, quoted or not.
Every column of a relation is kept under its canonical name (the policy's
spelling for declared columns, the output name for derived ones), which is the
only spelling the generated SQL ever uses.
"""

from __future__ import annotations

import difflib

from dataclasses import dataclass, field

from sqlglot import expressions as exp

from gateway.errors import Refused, UnknownColumn, UnknownTable
from gateway.plan.types import Typed
from gateway.policy.model import Column as ColumnSpec
from gateway.policy.model import Role


def fold(name: str) -> str:
    """DuckDB's identifier comparison: ASCII case folded, quoted or not."""
    return name.lower()


@dataclass(frozen=True)
class Declared:
    """A declared column of a policy table, with its role and declared ranges."""

    table: str
    column: str
    spec: ColumnSpec

    @property
    def role(self) -> Role:
        return self.spec.role

    def __deepcopy__(self, memo) -> "Declared":
        return self  # immutable; sqlglot deep-copies node meta on every tree copy


@dataclass(frozen=True)
class Column:
    """One output column of a relation in scope."""

    name: str  # as the enclosing query names it
    typed: Typed
    declared: Declared | None = None  # the declared column it is, when passed on unchanged
    sql_name: str | None = None  # the generated SQL's name, where an alias column list renamed it


@dataclass
class Relation:
    """A FROM item as the enclosing query sees it."""

    alias: str  # as generated (unique in its scope)
    columns: list[Column]
    table: str | None = None  # a policy table read directly

    def find(self, name: str) -> list[Column]:
        wanted = fold(name)
        return [c for c in self.columns if fold(c.name) == wanted]


@dataclass(frozen=True)
class CteDef:
    name: str  # as generated: unique in the statement, never a policy table's name
    columns: tuple[Column, ...]


@dataclass
class CteEnv:
    """CTE names in reach: an inner WITH shadows an outer one, and a CTE shadows a table."""

    names: dict[str, CteDef] = field(default_factory=dict)
    parent: "CteEnv | None" = None

    def lookup(self, name: str) -> CteDef | None:
        env = self
        while env is not None:
            found = env.names.get(fold(name))
            if found is not None:
                return found
            env = env.parent
        return None

    def child(self) -> "CteEnv":
        return CteEnv(parent=self)


@dataclass
class Scope:
    """The relations of one SELECT's FROM clause; `outer` is the enclosing query's
    scope, kept only to tell a correlated reference from a misspelt one."""

    relations: dict[str, Relation] = field(default_factory=dict)  # by folded alias
    outer: "Scope | None" = None
    env: CteEnv = field(default_factory=CteEnv)  # the CTEs its subqueries may read
    merged: dict[str, tuple[Relation, Column]] = field(default_factory=dict)  # JOIN ... USING columns

    def add(self, relation: Relation) -> None:
        key = fold(relation.alias)
        if key in self.relations:
            raise Refused(f'table name "{relation.alias}" is specified more than once', rule="bind.duplicate_alias",
                          hint="give each relation in FROM its own alias")
        self.relations[key] = relation

    def qualified(self, qualifier: str, name: str) -> tuple[Relation, Column]:
        relation = self.relations.get(fold(qualifier))
        if relation is None:
            if self._outer_has_relation(qualifier):
                raise Refused(f"{qualifier}.{name} refers to an enclosing query", rule="bind.correlated",
                              hint="correlated subqueries are not supported: join instead")
            raise UnknownTable(f'missing FROM-clause entry for table "{qualifier}"', rule="bind.unknown_table")
        found = relation.find(name)
        if not found:
            raise UnknownColumn(f'column {qualifier}.{name} does not exist', rule="bind.unknown_column",
                                hint=_suggest(name, relation.columns))
        if len(found) > 1:
            raise Refused(f'column reference "{qualifier}.{name}" is ambiguous', rule="bind.ambiguous_column")
        return relation, found[0]

    def unqualified(self, name: str) -> tuple[Relation, Column] | None:
        """The one relation with a column of this name; None when none has it."""
        if fold(name) in self.merged:
            return self.merged[fold(name)]
        found = [(r, c) for r in self.relations.values() for c in r.find(name)]
        if len(found) > 1:
            raise Refused(f'column reference "{name}" is ambiguous', rule="bind.ambiguous_column",
                          hint="qualify it with its table's alias")
        return found[0] if found else None

    def missing(self, name: str) -> Exception:
        """The refusal for an unqualified name no relation of this scope has."""
        if fold(name) in self.relations:
            return Refused(f"{name} is a whole row, not a column", rule="bind.row_reference",
                           hint="name one of its columns")
        scope = self.outer
        while scope is not None:
            if any(r.find(name) for r in scope.relations.values()):
                return Refused(f'column "{name}" refers to an enclosing query', rule="bind.correlated",
                               hint="correlated subqueries are not supported: join instead")
            scope = scope.outer
        columns = [c for r in self.relations.values() for c in r.columns]
        return UnknownColumn(f'column "{name}" does not exist', rule="bind.unknown_column",
                             hint=_suggest(name, columns))

    def _outer_has_relation(self, qualifier: str) -> bool:
        scope = self.outer
        while scope is not None:
            if fold(qualifier) in scope.relations:
                return True
            scope = scope.outer
        return False


def reference(relation: Relation, column: Column) -> exp.Column:
    """The generated reference to a column of a relation in scope: alias-qualified,
    quoted, spelt as the generated SQL names it, typed, and tied to its declaration."""
    generated = exp.column(column.sql_name or column.name, table=relation.alias, quoted=True)
    generated.meta["typed"] = column.typed
    if column.declared is not None:
        generated.meta["declared"] = column.declared
    return generated


def _suggest(name: str, columns: list[Column]) -> str | None:
    names = sorted({c.name for c in columns})
    close = difflib.get_close_matches(fold(name), names, n=1, cutoff=0.75)
    return f'did you mean "{close[0]}"?' if close else None
