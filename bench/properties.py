"""The property of tests/test_properties.py over many more generated statements.

    .venv/bin/python bench/properties.py [--examples 5000] [--seed N] [--forbidden mixed|none|required]
                                         [--no-shrink] [--shrink-examples 3000] [--show 2]

Builds the k-only demo clean room the tests use (demo data at scale 0.05,
policies/demo.yaml without its privacy section) in a temporary folder, runs
--examples statements from tests/sqlgen.py through Engine.run and prints:

- how many were released, and how many refused by each rule;
- every violation of the property, by category: engine.failure (with DuckDB's
  message), an exception other than GatewayError, a refusal without a rule,
  (a) generated SQL reading something else than attached sources and its CTEs,
  (b) a released row from a group below k (or one the reference cannot explain);
- forbidden fragments that were released instead of refused;
- outcomes per fragment kind (what the run covered).

Then, unless --no-shrink, a second hypothesis run shrinks one example per
category of failure to the shortest it finds (each category is raised as its
own exception type, so hypothesis treats them as separate bugs). Exits 1 if the property was violated or a forbidden fragment
released, else 0. Deterministic without --seed (hypothesis derandomized).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings  # noqa: E402

from tests.sqlgen import Room, check, statements  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001 - progress shows when the output is a file

FORBIDDEN_RELEASED = "forbidden fragment released"


def build_engine(folder: Path, scale: float):
    from gateway import demo
    from gateway.engine import Engine
    from tests.conftest import DEMO_POLICY, write_demo_config

    data = folder / "data"
    data.mkdir()
    demo.generate(data, scale=scale)
    policy = yaml.safe_load(DEMO_POLICY.read_text())
    policy.pop("privacy")  # k-thresholds only, like the tests' `engine` fixture
    config_dir = folder / "config"
    config_dir.mkdir()
    policy_path = config_dir / "demo-k-only.yaml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return Engine.from_config_file(write_demo_config(config_dir, data, policy_path))


def categories(outcome) -> set[str]:
    found = set(outcome.categories)
    if outcome.forbidden_released:
        found.add(FORBIDDEN_RELEASED)
    return found


class Tally:
    def __init__(self):
        self.outcomes = Counter()
        self.rules = Counter()
        self.violations = Counter()
        self.forbidden_released = Counter()
        self.by_fragment = defaultdict(Counter)
        self.examples: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)

    def add(self, statement, outcome) -> None:
        self.outcomes[outcome.kind] += 1
        if outcome.refused_rule:
            self.rules[outcome.refused_rule] += 1
        for category in outcome.categories:
            self.violations[category] += 1
        for kind in outcome.forbidden_released:
            self.forbidden_released[kind] += 1
        for fragment in statement.forbidden + statement.fragments or ("(plain)",):
            self.by_fragment[fragment][outcome.kind] += 1
        for category in categories(outcome):
            self.examples[category].append((statement.sql, outcome.violations or statement.forbidden))
            self.examples[category].sort(key=lambda e: len(e[0]))
            del self.examples[category][3:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=None, help="a seed instead of hypothesis' derandomized run")
    parser.add_argument("--forbidden", choices=("mixed", "none", "required"), default="mixed")
    parser.add_argument("--scale", type=float, default=0.05, help="demo data scale (0.05: 10,000 households)")
    parser.add_argument("--no-shrink", action="store_true")
    parser.add_argument("--shrink-examples", type=int, default=2000,
                        help="examples the shrinking run may generate before it stops looking")
    parser.add_argument("--show", type=int, default=2, help="examples printed per category, shortest first")
    args = parser.parse_args(argv)

    import logging

    logging.getLogger("gateway").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="properties-") as tmp:
        engine = build_engine(Path(tmp), args.scale)
        try:
            return run(engine, args)
        finally:
            engine.close()


def run(engine, args) -> int:
    room = Room(engine)
    tally = Tally()
    common = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  derandomize=args.seed is None)

    @settings(max_examples=args.examples, phases=[Phase.generate], **common)
    @given(statement=statements(forbidden=args.forbidden))
    def explore(statement):
        tally.add(statement, check(room, statement))

    if args.seed is not None:
        explore = seed(args.seed)(explore)
    started = time.monotonic()
    explore()
    elapsed = time.monotonic() - started
    total = sum(tally.outcomes.values())

    print(f"{total} statements ({args.forbidden} forbidden fragments, "
          f"{'seed ' + str(args.seed) if args.seed is not None else 'derandomized'}) in {elapsed:.0f} s, "
          f"{1000 * elapsed / max(total, 1):.0f} ms each")
    print(f"  released   {tally.outcomes['released']:6d}")
    print(f"  refused    {tally.outcomes['refused']:6d}")
    print(f"  violations {tally.outcomes['violation']:6d}")
    print("\nrefused, by rule:")
    for rule, n in tally.rules.most_common():
        print(f"  {n:6d}  {rule}")
    print("\nviolations of the property, by category:" if tally.violations else "\nno violation of the property")
    for category, n in tally.violations.most_common():
        print(f"  {n:6d}  {category}")
    if tally.forbidden_released:
        print("\nforbidden fragments released (must be refused):")
        for kind, n in tally.forbidden_released.most_common():
            print(f"  {n:6d}  {kind}")
    print("\noutcomes by fragment (a statement may carry two):")
    print(f"  {'fragment':<16} {'released':>9} {'refused':>9} {'violation':>9}")
    for fragment in sorted(tally.by_fragment):
        c = tally.by_fragment[fragment]
        print(f"  {fragment:<16} {c['released']:9d} {c['refused']:9d} {c['violation']:9d}")

    failing = sorted(tally.examples)
    if failing and args.show:
        print("\nexamples found, shortest first:")
        for category in failing:
            print(f"  [{category}]")
            for sql, why in tally.examples[category][: args.show]:
                print(f"    {sql}\n      -> {'; '.join(why)[:400]}")

    if failing and not args.no_shrink:
        print(f"\nshortest examples hypothesis finds (one run, up to {args.shrink_examples} examples, "
              "shrinking each category of failure as a separate bug):")
        started = time.monotonic()
        minimal = shrink(room, args, common, failing)
        print(f"  ({time.monotonic() - started:.0f} s)")
        for category in failing:
            if category not in minimal:
                print(f"  [{category}] not met again; the shortest seen is above")
                continue
            statement, outcome = minimal[category]
            why = outcome.violations or [f"released; carries {', '.join(outcome.forbidden_released)}"]
            print(f"  [{category}]\n    {statement.sql}\n      -> {'; '.join(why)[:400]}")

    return 1 if failing else 0


def shrink(room, args, common, wanted: list[str]) -> dict:
    """Category -> (shortest statement, outcome). Each category raises its own exception
    type, so hypothesis (report_multiple_bugs) shrinks each as a separate bug; the last
    call that raises a category is hypothesis' replay of its minimal example. Hypothesis
    stops generating soon after its first bugs, so a category it did not meet gets a
    run of its own, raising for it alone."""
    minimal: dict = {}
    kinds: dict[str, type] = {}

    def run(only: set[str] | None) -> None:
        @settings(max_examples=args.shrink_examples, phases=[Phase.generate, Phase.shrink],
                  report_multiple_bugs=True, verbosity=Verbosity.quiet, **common)
        @given(statement=statements(forbidden=args.forbidden))
        def failing(statement):
            outcome = check(room, statement)
            found = sorted(c for c in categories(outcome) if only is None or c in only)
            if found:
                minimal[found[0]] = (statement, outcome)
                kind = kinds.setdefault(found[0], type(f"Found{len(kinds)}", (AssertionError,), {}))
                raise kind(found[0])

        if args.seed is not None:
            failing = seed(args.seed)(failing)
        try:
            failing()
        except BaseException as error:  # noqa: BLE001 - the bugs hypothesis found, as one error or a group
            if isinstance(error, KeyboardInterrupt):
                raise

    run(None)
    for category in wanted:
        if category not in minimal:
            run({category})
    return minimal


if __name__ == "__main__":
    sys.exit(main())
