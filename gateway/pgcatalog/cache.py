"""What the catalog keeps between statements, per engine (the engine context owns
one CatalogCache): each analyst's catalog database, and the translation of each
catalog statement. BI tools send the same catalog queries all day.

An evicted database is never closed here: a statement on another thread may be
reading it through its own cursor, which keeps it alive; DuckDB frees it when
the last cursor goes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

import duckdb

Value = TypeVar("Value")


class _Lru(Generic[Value]):
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_make(self, key: Hashable, make: Callable[[], Value]) -> Value:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        made = make()  # outside the lock: a build must not hold up other analysts' statements
        with self._lock:
            found = self._items.setdefault(key, made)  # two threads raced to make it: keep the first
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
            return found

    def __len__(self) -> int:
        return len(self._items)


class CatalogCache:
    def __init__(self, databases: int = 256, translations: int = 4096):
        self.databases: _Lru[duckdb.DuckDBPyConnection] = _Lru(databases)
        self.translations: _Lru[str] = _Lru(translations)

    def database(self, key: tuple, build: Callable[[], duckdb.DuckDBPyConnection]) -> duckdb.DuckDBPyConnection:
        """The catalog database for key (clean room, policy version, user), built on first use."""
        return self.databases.get_or_make(key, build)

    def translation(self, key: tuple, translate: Callable[[], str]) -> str:
        """The DuckDB SQL for key (clean room, policy version, user, text, parameters)."""
        return self.translations.get_or_make(key, translate)
