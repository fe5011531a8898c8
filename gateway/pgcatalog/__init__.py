"""PostgreSQL's catalog for drivers and BI tools: statements that read only
pg_catalog, information_schema, version(), current_database(), ... are answered
from the policy, per analyst, never from the private data.

    detect         is a statement catalog-only?
    translate      its SQL for the catalog database: one small rewrite per kind of node
    postgres_text  format(), array literals, PostgreSQL's names of unaliased outputs
    build          the catalog database of one analyst in one clean room
    emulate        what stands in for PostgreSQL there: settings, empty relations, functions as macros
    cache          databases and translations kept per engine (its context owns the cache)
    answer         running a statement there, within the statement timeout

The types are gateway.pgtypes', which the wire protocol reads too. The engine's
`catalog` pass (gateway/engine/catalog.py) is the one caller; this package
imports only the policy model, errors and pgtypes.
"""

from gateway.pgcatalog.answer import answer
from gateway.pgcatalog.build import CatalogView, build
from gateway.pgcatalog.cache import CatalogCache
from gateway.pgcatalog.detect import reads_only_catalog
from gateway.pgcatalog.translate import translate

__all__ = ["CatalogCache", "CatalogView", "answer", "build", "reads_only_catalog", "translate"]
