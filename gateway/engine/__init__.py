"""The one engine every front end uses: parse -> bind -> authorise -> rewrite ->
execute -> release -> audit (the passes are listed in gateway/engine/pipeline.py)."""

from gateway.engine.types import ColumnInfo, QueryRequest, Release, TableInfo

__all__ = ["ColumnInfo", "QueryRequest", "Release", "TableInfo", "Engine"]


def __getattr__(name):  # Engine pulls in DuckDB; import it only when asked for
    if name == "Engine":
        from gateway.engine.engine import Engine

        return Engine
    raise AttributeError(name)
