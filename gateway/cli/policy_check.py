"""`cleanroom policy check PATH...`: validate policy files before deploying them.

Prints every problem as `file:line:col: key.path: message` (editors and CI
logs link these), or one summary line per valid file. Exit status 1 on any
problem, so it can gate a pull request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.config import load_config, source_problems
from gateway.errors import PolicyInvalid
from gateway.policy.loader import load_policy
from gateway.policy.model import CleanRoom
from gateway.yamlsource import load_yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    policy = subparsers.add_parser("policy", help="work with policy files")
    actions = policy.add_subparsers(dest="policy_command", required=True)
    check = actions.add_parser(
        "check",
        help="validate policy files",
        description="Validate policy files (or folders of *.yaml); print every problem; exit 1 if any.",
    )
    check.add_argument("paths", nargs="*", metavar="PATH", help="policy file or folder of *.yaml files")
    check.add_argument(
        "--config",
        metavar="FILE",
        help="also validate this gateway config, check its policies when no PATH is given, "
        "and check that every table's source exists in it",
    )
    check.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    failed = False
    config = None
    if getattr(args, "config", None):
        try:
            config = load_config(args.config)
        except PolicyInvalid as exc:
            _print_all(exc.problems)
            failed = True
    files = policy_files(args.paths) if args.paths else [_shown(p) for p in (config.policies if config else [])]
    if not files and not failed:
        print("no policy files to check: give PATH or --config")
        return 1
    for file in files:
        try:
            cleanroom = load_policy(file)
        except PolicyInvalid as exc:
            _print_all(exc.problems)
            failed = True
            continue
        mismatches = source_problems(config, cleanroom) if config else []
        if mismatches:
            doc = load_yaml(file)
            _print_all(doc.problem(doc.resolve(path), message) for path, message in mismatches)
            failed = True
            continue
        print(f"{file}: ok ({summary(cleanroom)})")
    return 1 if failed else 0


def policy_files(paths: list[str]) -> list[str]:
    """Files as given, and the *.yaml / *.yml files of folders, sorted."""
    files: list[str] = []
    for path in paths:
        if Path(path).is_dir():
            found = sorted(
                p for p in Path(path).iterdir()
                if p.suffix in (".yaml", ".yml") and p.is_file() and ".tests." not in p.name  # policy tests, not policies
            )
            files += [str(p) for p in found]
        else:
            files.append(path)  # a missing file is reported by the loader
    return files


def _shown(path: Path) -> str:
    """A config's absolute policy path, relative to the current folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary(cleanroom: CleanRoom) -> str:
    counts = [
        (len(cleanroom.tables), "table"),
        *([(len(cleanroom.models), "model")] if cleanroom.models else []),  # docs/models.md
        (len(cleanroom.rules), "rule"),
        (len(cleanroom.templates), "template"),
        (len(cleanroom.analysts), "analyst"),
    ]
    return ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in counts)


def _print_all(lines) -> None:
    for line in lines:
        print(line, flush=True)
