"""Static checks of a clean room's templates, run when a policy loads.

A template is trusted SQL, but its released rows still need the group-size
test: each private table it reads must have its privacy unit reach the outer
query. That is checked here, once, when gateway.policy.loader loads the
policy, so a broken template never goes live.
"""

from __future__ import annotations

import sqlglot
from sqlglot import expressions as exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify import qualify

from gateway.errors import GatewayError
from gateway.policy.model import CleanRoom
from gateway.policy.row_level import row_level_problems, training_problems
from gateway.policy.units import unit_columns


def check_templates(cleanroom: CleanRoom) -> list[tuple[str, str]]:
    """Problems with the clean room's templates as (key path, message)."""
    # Column names are all qualify needs; types come from the sources at run time.
    schema = {t.name: {c: "VARCHAR" for c in t.visible()} for t in cleanroom.tables.values()}
    problems = []
    for template in cleanroom.templates.values():
        where = f"templates.{template.name}.sql"
        try:
            tree = sqlglot.parse_one(template.sql, read="postgres")
            tree = tree.transform(lambda n: exp.null() if isinstance(n, exp.Placeholder) else n)
            tree = normalize_identifiers(tree, dialect="postgres")
            read = {t.name for t in tree.find_all(exp.Table)} - {c.alias_or_name for c in tree.find_all(exp.CTE)}
            unknown = sorted(read - set(cleanroom.tables))
            if unknown:
                problems.append((where, f"reads unknown table(s): {', '.join(unknown)}"))
                continue
            tree = qualify(tree, schema=schema, dialect="postgres", validate_qualify_columns=True)
            if template.row_level_output:  # one row per unit, by every owner's consent (gateway.policy.row_level)
                problems += row_level_problems(cleanroom, template, tree)
            elif template.training is not None:  # rows never released: a DP fit on them (gateway.policy.row_level)
                problems += training_problems(cleanroom, template, tree)
            elif any(not cleanroom.tables[t].public for t in read):
                if not isinstance(tree, exp.Select) or not (tree.args.get("group") or tree.find(exp.AggFunc)):
                    problems.append((where, "the outer query over private tables must aggregate"))
                    continue
                unit_columns(tree, cleanroom, frozenset(read))
        except GatewayError as error:
            problems.append((where, error.message))
        except SqlglotError as error:
            problems.append((where, str(error).splitlines()[0]))
    return problems
