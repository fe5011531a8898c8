"""Mutation testing of the enforcement modules: how many small, deliberate bugs
in authorise, rewrite, the DP plan and bounding does the test suite notice?

    .venv/bin/python bench/mutation.py [--modules gateway/engine/authorise.py ...]
        [--tests tests/test_enforcement_units.py ...] [--max-mutants N] [--workers 2]
        [--timeout S] [--out var/mutation] [--list]

mutmut 3 was tried first: it is configured only through pyproject.toml or
setup.cfg, mutates every string (messages, hints, SQL text: hundreds of
mutants per module that say nothing about enforcement) and ran at ~2.5 s a
mutant here, too slow for five modules in 25 minutes. This runner is its
equivalent, built for this code base:

- mutants come from the module's `ast`: comparison swaps (< <=, == !=, in /
  not in, is / is not), arithmetic (+ -, * /, // /), and <-> or, `not`
  removed, unary minus removed, integer and float constants +-1, True <->
  False, min <-> max, any <-> all, exp.and_ <-> exp.or_, `return x` -> `return
  None`, a statement (call, raise, if, for, continue, assignment to an
  attribute or item) replaced by `pass`, and the strings that decide
  something: rule ids (rule="..."), strings compared with, and keys read with
  .get/.set/[...]. Messages, hints, docstrings and f-string text are left
  alone. Each mutant is spliced into the text (the rest of the file, its
  comments and line numbers unchanged) and checked: its AST must be exactly
  the intended one. `# pragma: no mutate` on a line skips it;
- each worker (2 by default, one per core) works in its own copy of the tree
  (so edits made during a run do not leak in) and runs pytest ONCE: it
  collects the selection, imports everything, then forks a child per mutant.
  The child swaps the mutated function's code object into the live function
  (every reference to it, `from x import f` included, sees the mutant), runs
  the tests that cover the mutated line, in collection order, and stops at
  the first failure (-x). Module-level constants are rebound by name in every
  gateway/tests module; anything else at module level (class bodies, default
  arguments, decorators) runs in a fresh `python -m pytest -x` subprocess on
  a file written into the worker's copy;
- which tests cover a line comes from one baseline run of the selection with
  a line tracer on the target modules. A mutant on a line no test runs is
  reported as a survivor (not covered) without running anything;
- killed: a test failed or errored (or the mutant did not import); timeout:
  the tests took longer than --timeout (default 10 s + 3x their baseline
  time); both count as detected. score = detected / (mutants - errors).

Results: OUT/mutation.json and OUT/mutation.md (per module killed/total, score
and wall time; every survivor with its line, operator and diff).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODULES = [
    "gateway/engine/authorise.py",
    "gateway/engine/rewrite.py",
    "gateway/dp/plan.py",
    "gateway/dp/bounding.py",
    "gateway/dp/stability.py",
]
# Fast tests written to kill mutants of the default modules (~8 s, two small rooms). Add
# e.g. tests/test_refusals.py for the resolver (gateway/plan): only mutants its tests
# cover, and that the earlier tests did not kill, pay for its demo engine.
DEFAULT_TESTS = ["tests/test_enforcement_units.py"]
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "node_modules", "var", "data",
                                     "mutants", ".pytest_cache", "*.egg-info", ".hypothesis")
PRAGMA = "pragma: no mutate"


# ---------------------------------------------------------------------------------------
# Mutants
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Mutant:
    id: str  # "<module>#<n>"
    module: str  # path relative to the repository
    line: int  # first line of the mutated node
    span: tuple[int, int]  # lines whose execution means the mutant ran (coverage)
    operator: str
    original: str  # the original line(s)
    mutated: str  # the mutated line(s)
    mode: str  # swap: a function's code; const: module-level names; fresh: a new process
    qualname: str | None  # swap: the module-level function or method whose code changes
    names: tuple[str, ...]  # const: the module-level names assigned
    source: str = dataclasses.field(repr=False, default="")  # the whole mutated module

    def public(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
CMP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
            ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
CMP_PATTERN = {ast.Lt: r"<(?!=)", ast.LtE: r"<=", ast.Gt: r"(?<!-)>(?!=)", ast.GtE: r">=", ast.Eq: r"==",
               ast.NotEq: r"!=", ast.Is: r"\bis\b(?!\s+not\b)", ast.IsNot: r"\bis\s+not\b",
               ast.In: r"(?<!not )\bin\b", ast.NotIn: r"\bnot\s+in\b"}
BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
            ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr}
BIN_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
            ast.Pow: "**", ast.BitOr: "|", ast.BitAnd: "&"}
BIN_PATTERN = {ast.Add: r"\+", ast.Sub: r"-", ast.Mult: r"\*(?!\*)", ast.Div: r"(?<!/)/(?!/)", ast.FloorDiv: r"//",
               ast.Mod: r"%", ast.Pow: r"\*\*", ast.BitOr: r"\|", ast.BitAnd: r"&"}
NAME_SWAP = {"min": "max", "max": "min", "any": "all", "all": "any"}
ATTR_SWAP = {"and_": "or_", "or_": "and_"}
KEY_METHODS = {"get", "set", "pop"}


class Source:
    """A module's text as bytes (AST columns are UTF-8 byte offsets)."""

    def __init__(self, text: str):
        self.text = text
        self.data = text.encode("utf-8")
        self.starts = [0]
        for i, byte in enumerate(self.data):
            if byte == 10:
                self.starts.append(i + 1)
        self.lines = text.splitlines()

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def start(self, node) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end(self, node) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def segment(self, a: int, b: int) -> str:
        return self.data[a:b].decode("utf-8")

    def splice(self, edits: list[tuple[int, int, str]]) -> str:
        data = self.data
        for a, b, text in sorted(edits, reverse=True):
            data = data[:a] + text.encode("utf-8") + data[b:]
        return data.decode("utf-8")


@dataclasses.dataclass
class Site:
    node_index: int  # position of the node in ast.walk(tree)
    operator: str
    edits: list  # [(start byte, end byte, replacement)]
    change: object  # callable(node copy) -> None: the same mutation on the AST
    span: tuple[int, int]
    qualname: str | None
    names: tuple[str, ...]
    toplevel: bool  # at module level (not inside a function body)


class Generator(ast.NodeVisitor):
    """Finds mutation sites, tracking where each one runs (which function, which statement)."""

    def __init__(self, source: Source, tree: ast.Module):
        self.src, self.tree = source, tree
        self.index = {id(node): i for i, node in enumerate(ast.walk(tree))}
        self.sites: list[Site] = []
        self.qualname: str | None = None  # the outermost function whose body we are in
        self.classes: list[str] = []
        self.stmt: ast.stmt | None = None
        self.names: tuple[str, ...] = ()  # module-level simple assignment being visited
        self.skip_ids: set[int] = set()
        for node in ast.walk(tree):  # docstrings
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    self.skip_ids.add(id(body[0]))

    # -- bookkeeping -------------------------------------------------------------------
    def add(self, node, operator, edits, change, whole=None):
        stmt = self.stmt
        first = stmt.lineno if stmt is not None else node.lineno
        last = (whole or node).end_lineno
        if any(PRAGMA in self.src.lines[n - 1] for n in range(node.lineno, (whole or node).end_lineno + 1)):
            return
        self.sites.append(Site(self.index[id(node)], operator, edits, change, (first, last), self.qualname,
                               self.names, self.qualname is None))

    def visit_stmt_list(self, body):
        for stmt in body:
            self.visit(stmt)

    def generic_visit(self, node):
        if isinstance(node, ast.stmt):
            if id(node) in self.skip_ids:
                return
            outer = self.stmt
            self.stmt = node
            self.statement(node)
            super().generic_visit(node)
            self.stmt = outer
        else:
            super().generic_visit(node)

    # -- scopes ------------------------------------------------------------------------
    def visit_FunctionDef(self, node):
        self.stmt, outer_stmt = node, self.stmt
        for decorator in node.decorator_list:  # evaluated where the def is: leave decorators alone
            pass
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        self.stmt = outer_stmt
        outer = self.qualname
        if outer is None:
            self.qualname = ".".join(self.classes + [node.name])
        for stmt in node.body:
            self.visit(stmt)
        self.qualname = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        if self.qualname is None:
            self.classes.append(node.name)
        for stmt in node.body:
            self.visit(stmt)
        if self.qualname is None:
            self.classes.pop()

    def visit_Lambda(self, node):
        self.visit(node.body)

    def visit_AnnAssign(self, node):  # annotations are never evaluated here (from __future__)
        if node.value is not None:
            self.stmt, outer = node, self.stmt
            self.visit(node.value)
            self.stmt = outer

    def visit_ImportFrom(self, node):
        return

    def visit_Import(self, node):
        return

    def visit_Assign(self, node):
        outer = self.names
        if self.qualname is None and not self.classes and all(isinstance(t, ast.Name) for t in node.targets):
            self.names = tuple(t.id for t in node.targets)
        self.generic_visit(node)
        self.names = outer

    def visit_If(self, node):
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            return
        self.generic_visit(node)

    def visit_JoinedStr(self, node):  # only the expressions inside f-strings
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                self.visit(value.value)

    # -- statements --------------------------------------------------------------------
    def statement(self, node):
        removable = isinstance(node, (ast.Expr, ast.Raise, ast.AugAssign, ast.If, ast.For, ast.While,
                                      ast.Continue, ast.Break, ast.With, ast.Try)) or (
            isinstance(node, ast.Assign) and any(isinstance(t, (ast.Attribute, ast.Subscript)) for t in node.targets))
        if removable and self.qualname is not None:
            a, b = self.src.start(node), self.src.end(node)
            self.add(node, f"remove {type(node).__name__.lower()}", [(a, b, "pass")], _replace_with_pass)
        if isinstance(node, ast.Return) and node.value is not None and self.qualname is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            a, b = self.src.start(node.value), self.src.end(node.value)
            self.add(node, "return None", [(a, b, "None")], _return_none)
        if isinstance(node, ast.AugAssign) and type(node.op) in BIN_SWAP:
            gap = (self.src.end(node.target), self.src.start(node.value))
            new = BIN_SWAP[type(node.op)]
            edit = self._token(gap, BIN_PATTERN[type(node.op)] + "=", BIN_TEXT[new] + "=")
            if edit:
                self.add(node, f"{BIN_TEXT[type(node.op)]}= -> {BIN_TEXT[new]}=", [edit], _set_op(new))

    # -- expressions -------------------------------------------------------------------
    def _token(self, gap, pattern, replacement):
        text = self.src.segment(*gap)
        found = list(re.finditer(pattern, text))
        if len(found) != 1:
            return None
        m = found[0]
        base = gap[0]
        start = base + len(text[:m.start()].encode("utf-8"))
        end = base + len(text[:m.end()].encode("utf-8"))
        return (start, end, replacement)

    def visit_Compare(self, node):
        left = node.left
        for i, (op, right) in enumerate(zip(node.ops, node.comparators)):
            new = CMP_SWAP[type(op)]
            edit = self._token((self.src.end(left), self.src.start(right)), CMP_PATTERN[type(op)], CMP_TEXT[new])
            if edit:
                self.add(node, f"{CMP_TEXT[type(op)]} -> {CMP_TEXT[new]}", [edit], _set_cmp(i, new))
            left = right
        for comparator in node.comparators:  # strings compared with decide something
            for const in _strings_in(comparator):
                self._string(const)
        if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            self._string(node.left)
        self.generic_visit(node)

    def visit_BinOp(self, node):
        op = type(node.op)
        stringy = any(isinstance(side, ast.JoinedStr) or (isinstance(side, ast.Constant) and isinstance(side.value, str))
                      for side in (node.left, node.right))
        if op in BIN_SWAP and not stringy:
            new = BIN_SWAP[op]
            edit = self._token((self.src.end(node.left), self.src.start(node.right)), BIN_PATTERN[op], BIN_TEXT[new])
            if edit:
                self.add(node, f"{BIN_TEXT[op]} -> {BIN_TEXT[new]}", [edit], _set_op(new))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        edits = []
        for a, b in zip(node.values, node.values[1:]):
            edit = self._token((self.src.end(a), self.src.start(b)), rf"\b{old}\b", new)
            if edit is None:
                edits = None
                break
            edits.append(edit)
        if edits:
            self.add(node, f"{old} -> {new}", edits, _set_bool(ast.Or if old == "and" else ast.And))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.Not, ast.USub)):
            a, b = self.src.start(node), self.src.start(node.operand)
            name = "not" if isinstance(node.op, ast.Not) else "-"
            keyword = re.match(r"not\b\s*" if name == "not" else r"-\s*", self.src.segment(a, b))
            if keyword:  # only the keyword: `not (a and b)` keeps its parentheses
                self.add(node, f"remove {name}", [(a, a + len(keyword.group(0).encode()), "")], _unwrap_unary)
        if not (isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
            self.generic_visit(node)  # a negative literal: only its sign is mutated

    def visit_Constant(self, node):
        value = node.value
        a, b = self.src.start(node), self.src.end(node)
        if isinstance(value, bool):
            self.add(node, f"{value} -> {not value}", [(a, b, str(not value))], _set_const(not value))
        elif isinstance(value, int):
            for new in dict.fromkeys([value + 1, value - 1]):
                if new < 0:
                    continue
                self.add(node, f"{value} -> {new}", [(a, b, repr(new))], _set_const(new))
        elif isinstance(value, float):
            for new in (value + 1.0, value - 1.0):
                if new < 0:  # -1.0 in source is a unary minus, not a constant
                    continue
                self.add(node, f"{value!r} -> {new!r}", [(a, b, repr(new))], _set_const(new))

    def visit_keyword(self, node):
        if node.arg == "rule" and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            self._string(node.value)
            return
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Name) and func.id in NAME_SWAP:
            a, b = self.src.start(func), self.src.end(func)
            self.add(node, f"{func.id} -> {NAME_SWAP[func.id]}", [(a, b, NAME_SWAP[func.id])],
                     _set_call_name(NAME_SWAP[func.id]))
        if isinstance(func, ast.Attribute) and func.attr in ATTR_SWAP:
            end = self.src.end(func)
            new = ATTR_SWAP[func.attr]
            self.add(node, f".{func.attr} -> .{new}", [(end - len(func.attr), end, new)], _set_call_attr(new))
        if isinstance(func, ast.Attribute) and func.attr in KEY_METHODS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                self._string(first)
        self.generic_visit(node)

    def visit_Subscript(self, node):
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            self._string(key)
        self.generic_visit(node)

    def _string(self, node):
        if id(node) in self.skip_ids:
            return
        self.skip_ids.add(id(node))
        new = "XX" + node.value + "XX"
        a, b = self.src.start(node), self.src.end(node)
        self.add(node, "string", [(a, b, repr(new))], _set_const(new))


def _strings_in(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


# AST-side mutations, applied to a copy of the tree to check each textual splice.
def _replace_with_pass(node):
    return ast.Pass()


def _return_none(node):
    node.value = ast.Constant(None)


def _set_op(new):
    def change(node):
        node.op = new()
    return change


def _set_cmp(i, new):
    def change(node):
        node.ops[i] = new()
    return change


def _set_bool(new):
    def change(node):
        node.op = new()
    return change


def _unwrap_unary(node):
    return node.operand


def _set_const(value):
    def change(node):
        node.value = value
    return change


def _set_call_name(name):
    def change(node):
        node.func.id = name
    return change


def _set_call_attr(name):
    def change(node):
        node.func.attr = name
    return change


def _apply_on_ast(text: str, index: int, change) -> ast.Module:
    tree = ast.parse(text)  # a fresh copy (faster than deepcopy), walked in the same order
    nodes = list(ast.walk(tree))
    target = nodes[index]
    replacement = change(target)
    if replacement is not None:  # swap the node for another in its parent
        for parent in nodes:
            for field, value in ast.iter_fields(parent):
                if value is target:
                    setattr(parent, field, replacement)
                    return tree
                if isinstance(value, list) and any(v is target for v in value):
                    setattr(parent, field, [replacement if v is target else v for v in value])
                    return tree
    return tree


def generate(repo: Path, module: str) -> tuple[list[Mutant], int]:
    """The mutants of one module, and how many candidate splices were dropped (their
    AST did not come out as intended: a bug here, reported rather than run)."""
    text = (repo / module).read_text()
    source = Source(text)
    tree = ast.parse(text)
    finder = Generator(source, tree)
    finder.visit(tree)
    mutants, seen, dropped = [], set(), 0
    for site in finder.sites:
        mutated = source.splice(site.edits)
        if mutated == text or mutated in seen:
            continue
        try:
            got = ast.dump(ast.parse(mutated))
        except SyntaxError:
            dropped += 1
            continue
        if got != ast.dump(_apply_on_ast(text, site.node_index, site.change)):
            dropped += 1
            continue
        seen.add(mutated)
        first, last = site.span
        old_lines, new_lines = _changed_lines(text, mutated)
        if site.toplevel:
            mode = "const" if site.names else "fresh"
        else:
            mode = "swap"
        mutants.append(Mutant(
            id=f"{module}#{len(mutants)}", module=module, line=_first_changed_line(text, mutated), span=(first, last),
            operator=site.operator, original=old_lines, mutated=new_lines, mode=mode, qualname=site.qualname,
            names=site.names, source=mutated,
        ))
    return mutants, dropped


def _first_changed_line(a: str, b: str) -> int:
    for n, (x, y) in enumerate(zip(a.splitlines(), b.splitlines()), 1):
        if x != y:
            return n
    return min(len(a.splitlines()), len(b.splitlines()))


def _changed_lines(a: str, b: str) -> tuple[str, str]:
    x, y = a.splitlines(), b.splitlines()
    start = 0
    while start < min(len(x), len(y)) and x[start] == y[start]:
        start += 1
    end_x, end_y = len(x), len(y)
    while end_x > start and end_y > start and x[end_x - 1] == y[end_y - 1]:
        end_x, end_y = end_x - 1, end_y - 1
    return "\n".join(x[start:end_x]), "\n".join(y[start:end_y])


# ---------------------------------------------------------------------------------------
# Worker: one pytest session, a forked child per mutant
# ---------------------------------------------------------------------------------------


class Worker:
    """Runs inside the worker process as a pytest plugin: serves jobs from stdin."""

    def __init__(self, config: dict, channel):
        self.config, self.channel = config, channel
        self.root = Path(config["root"])
        self.log = Path(config["log"])
        self.result_path = Path(config["scratch"]) / "result.json"

    def send(self, message: dict) -> None:
        self.channel.write(json.dumps(message) + "\n")
        self.channel.flush()

    def pytest_runtestloop(self, session):
        self.session = session
        self.items = {item.nodeid: item for item in session.items}
        self.order = [item.nodeid for item in session.items]
        if session.testsfailed:
            self.send({"error": f"{session.testsfailed} errors during collection (see {self.log})"})
            return True
        import importlib

        for module in self.config["modules"]:  # loaded once here; the children only swap code
            importlib.import_module(_module_name(module))
        gateway = sys.modules.get("gateway")
        where = Path(getattr(gateway, "__file__", "") or "").resolve()
        if self.root.resolve() not in where.parents:
            self.send({"error": f"gateway was imported from {where}, not from the copy {self.root}"})
            return True
        self.send({"ready": True, "items": self.order})
        for line in sys.stdin:
            job = json.loads(line)
            if job["cmd"] == "quit":
                break
            try:
                if job["cmd"] == "baseline":
                    self.send(self.baseline(job))
                else:
                    self.send(self.run(job))
            except Exception:
                self.send({"id": job.get("id"), "status": "error", "detail": traceback.format_exc()[-2000:]})
        return True

    # -- forking ---------------------------------------------------------------------------
    def _fork(self, body, timeout: float) -> tuple[str, float, dict]:
        """Run body() in a child; (status, seconds, result). status: exit code name or timeout."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.result_path.exists():
            self.result_path.unlink()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child
            code = 4
            try:
                os.setpgid(0, 0)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                out = os.open(str(self.log), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                os.dup2(out, 1)
                os.dup2(out, 2)
                code, result = body()
                self.result_path.write_text(json.dumps(result))
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = started + timeout
        status = None
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(wait_status)
                # 0: the tests passed; 1: one failed; 3: the code could not be swapped in; 4: a fault
                # here; killed by a signal (a crash the mutant caused): detected
                status = {0: "survived", 1: "killed", 3: "fallback"}.get(code, "error" if code >= 0 else "killed")
                break
            if time.monotonic() > deadline:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                os.waitpid(pid, 0)
                status = "timeout"
                break
            time.sleep(0.005)
        seconds = time.monotonic() - started
        result = {}
        if self.result_path.exists():
            try:
                result = json.loads(self.result_path.read_text())
            except ValueError:
                result = {}
        shutil.rmtree(self.config["basetemp"], ignore_errors=True)  # the child's rooms (pytest makes it anew)
        return status, seconds, result

    def _run_items(self, nodeids: list[str]) -> str | None:
        from _pytest.runner import runtestprotocol

        items = [self.items[n] for n in nodeids if n in self.items]
        debug = os.environ.get("MUTATION_DEBUG")
        for i, item in enumerate(items):
            nextitem = items[i + 1] if i + 1 < len(items) else None
            started = time.monotonic()
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            if debug:
                print(f"[mutation] {time.monotonic() - started:.3f} s {item.nodeid} "
                      + " ".join(f"{r.when}={r.duration:.3f}" for r in reports), flush=True)
            if any(r.failed for r in reports):
                return item.nodeid
        return None

    # -- the baseline: which lines each test runs ---------------------------------------------
    def baseline(self, job: dict) -> dict:
        targets = {str(self.root / m): m for m in self.config["modules"]}
        targets.update({str((self.root / m).resolve()): m for m in self.config["modules"]})

        def body():
            from _pytest.runner import runtestprotocol

            current: list[set] = [set()]

            def local(frame, event, arg):
                if event == "line":
                    current[0].add((frame.f_code.co_filename, frame.f_lineno))
                return local

            def tracer(frame, event, arg):
                if frame.f_code.co_filename in targets:
                    current[0].add((frame.f_code.co_filename, frame.f_lineno))
                    return local
                return None

            durations, calls, failed, coverage = {}, {}, [], {}
            items = self.session.items
            for i, item in enumerate(items):
                current[0] = set()
                started = time.monotonic()
                sys.settrace(tracer)
                threading.settrace(tracer)
                try:
                    reports = runtestprotocol(item, nextitem=items[i + 1] if i + 1 < len(items) else None, log=False)
                finally:
                    sys.settrace(None)
                    threading.settrace(None)
                durations[item.nodeid] = time.monotonic() - started
                calls[item.nodeid] = sum(r.duration for r in reports if r.when != "setup")
                if any(r.failed for r in reports):
                    failed.append(item.nodeid)
                per_file: dict[str, list] = {}
                for filename, line in current[0]:
                    per_file.setdefault(targets[filename], []).append(line)
                coverage[item.nodeid] = {f: sorted(v) for f, v in per_file.items()}
            return 0, {"durations": durations, "calls": calls, "failed": failed, "coverage": coverage}

        status, seconds, result = self._fork(body, timeout=job["timeout"])
        if status != "survived" or not result:
            return {"error": f"baseline run ended with {status} after {seconds:.0f} s (see {self.log})"}
        result["seconds"] = seconds
        return result

    # -- one mutant ---------------------------------------------------------------------------
    def run(self, job: dict) -> dict:
        if job["mode"] == "fresh":
            return self.run_fresh(job)

        def body():
            try:
                if job["mode"] == "swap":
                    if not _swap(job["module"], str(self.root / job["module"]), job["source"], job["qualname"]):
                        return 3, {}
                else:
                    _rebind(job["module"], str(self.root / job["module"]), job["source"], job["names"])
            except Exception:
                traceback.print_exc()
                return 1, {"by": "(the mutated module does not load)"}
            failed = self._run_items(job["tests"])
            return (1 if failed else 0), {"by": failed}

        status, seconds, result = self._fork(body, timeout=job["timeout"])
        if status == "fallback":
            return self.run_fresh(job)
        return {"id": job["id"], "status": status, "seconds": seconds, "by": result.get("by")}

    def run_fresh(self, job: dict) -> dict:
        """Module-level code: the mutated file in this worker's copy, a new pytest process."""
        path = self.root / job["module"]
        original = path.read_text()
        for stale in (path.parent / "__pycache__").glob(path.stem + ".*.pyc"):
            stale.unlink()
        basetemp = Path(self.config["scratch"]) / "fresh"
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}",
                   *self.config["tests"]]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        started = time.monotonic()
        try:
            path.write_text(job["source"])
            with open(self.log, "ab") as log:
                process = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
                try:
                    code = process.wait(timeout=job["fresh_timeout"])
                    status = "survived" if code == 0 else "killed"
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    status = "timeout"
        finally:
            path.write_text(original)
            shutil.rmtree(basetemp, ignore_errors=True)
        return {"id": job["id"], "status": status, "seconds": time.monotonic() - started, "by": "(fresh run)"}


def _module_name(path: str) -> str:
    return path[:-3].replace("/", ".").removesuffix(".__init__")


def _code_objects(code, qualname: str) -> list:
    found = []
    if code.co_qualname == qualname:
        found.append(code)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            found.extend(_code_objects(const, qualname))
    return found


def _functions(module, qualname: str) -> list:
    """The live function objects (in source order) whose qualified name is qualname."""
    import inspect

    parts = qualname.split(".")
    holder = module
    for part in parts[:-1]:
        holder = getattr(holder, part, None)
        if not isinstance(holder, type):
            return []
    namespace = holder.__dict__ if isinstance(holder, type) else vars(module)
    value = namespace.get(parts[-1])
    candidates = []
    if isinstance(value, (staticmethod, classmethod)):
        candidates = [value.__func__]
    elif isinstance(value, property):
        candidates = [f for f in (value.fget, value.fset, value.fdel) if f is not None]
    elif value is not None:
        candidates = [value]
    functions = []
    for candidate in candidates:
        candidate = inspect.unwrap(candidate)
        if hasattr(candidate, "__code__") and candidate.__code__.co_qualname == qualname:
            functions.append(candidate)
    return sorted(functions, key=lambda f: f.__code__.co_firstlineno)


def _swap(module_path: str, filename: str, source: str, qualname: str) -> bool:
    import importlib

    module = importlib.import_module(_module_name(module_path))
    new_codes = _code_objects(compile(source, filename, "exec", dont_inherit=True), qualname)
    functions = _functions(module, qualname)
    if not functions or len(functions) != len(new_codes):
        return False
    try:
        for function, code in zip(functions, new_codes):
            function.__code__ = code
    except ValueError:  # a different closure: cannot be swapped in place
        return False
    return True


def _rebind(module_path: str, filename: str, source: str, names) -> None:
    """A module-level constant changed: execute the mutated module aside and rebind
    the names it assigns wherever gateway or the tests imported them by name."""
    import importlib

    module = importlib.import_module(_module_name(module_path))
    namespace = {"__name__": module.__name__, "__file__": filename, "__package__": module.__package__}
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    for name in names:
        old, new = getattr(module, name), namespace[name]
        for other in list(sys.modules.values()):
            other_name = getattr(other, "__name__", "") or ""
            if not other_name.startswith(("gateway", "tests")):
                continue
            if getattr(other, name, _MISSING) is old:
                setattr(other, name, new)


_MISSING = object()


def worker_main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    root = config["root"]
    sys.path[0:1] = [root]  # the copy, never the tree this script came from
    os.chdir(root)
    channel = os.fdopen(os.dup(1), "w")
    log = os.open(config["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(log, 1)
    os.dup2(log, 2)
    import pytest

    args = [*config["tests"], "-q", "--capture=no", "-p", "no:cacheprovider", f"--basetemp={config['basetemp']}"]
    worker = Worker(config, channel)

    class Plugin:
        @pytest.hookimpl(tryfirst=True)
        def pytest_runtestloop(self, session):  # replaces pytest's loop: serve mutants instead
            return worker.pytest_runtestloop(session)

    pytest.main(args, plugins=[Plugin()])


# ---------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, number: int, scratch: Path, tests: list[str], modules: list[str]):
        self.number, self.scratch = number, scratch
        self.root = scratch / "repo"
        (scratch / "basetemp").mkdir(parents=True, exist_ok=True)
        self.config = {
            "root": str(self.root), "log": str(scratch / "worker.log"), "scratch": str(scratch),
            "basetemp": str(scratch / "basetemp"), "tests": tests, "modules": modules,
        }
        (scratch / "worker.json").write_text(json.dumps(self.config))
        self.start()

    def start(self) -> None:
        script = self.root / "bench" / "mutation.py"
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--worker", str(self.scratch / "worker.json")], cwd=self.root,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.scratch / "worker.stderr", "ab"),
            text=True, bufsize=1, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        hello = self.receive(600)
        if "error" in hello:
            raise SystemExit(f"worker {self.number}: {hello['error']}")
        self.items = hello["items"]

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(json.loads(line))
        self.replies.put({"error": f"worker {self.number} exited (log: {self.config['log']})"})

    def receive(self, timeout: float) -> dict:
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            return {"error": "no answer", "status": "error"}

    def ask(self, job: dict, timeout: float) -> dict:
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        reply = self.receive(timeout)
        if "error" in reply and "status" not in reply:
            reply = {"id": job.get("id"), "status": "error", "detail": reply["error"]}
        if self.process.poll() is not None:  # died: start again for the next job
            self.start()
        return reply

    def stop(self) -> None:
        try:
            self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.process.kill()


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=DEFAULT_MODULES, help="module files to mutate")
    parser.add_argument("--tests", nargs="+", default=DEFAULT_TESTS, help="pytest selection (files or node ids)")
    parser.add_argument("--max-mutants", type=int, default=None,
                        help="run a random sample of at most this many mutants per module")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --max-mutants sample")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 10 + 3x the baseline time of the tests it runs)")
    parser.add_argument("--out", default=str(REPO / "var" / "mutation"), help="folder for mutation.json and .md")
    parser.add_argument("--ids", nargs="+", help="run only these mutants (ids as --list and the report show them)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies (their logs)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0

    started = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still remove the copies (finally below)
    modules = [m.removeprefix("./") for m in args.modules]
    for module in modules:
        if not (REPO / module).is_file():
            parser.error(f"{module}: no such file")
    scratch = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        copies = []
        for n in range(args.workers):
            root = scratch / f"w{n}" / "repo"
            shutil.copytree(REPO, root, ignore=COPY_IGNORE)
            copies.append(root)
        mutants, dropped = [], {}
        for module in modules:
            found, dropped[module] = generate(copies[0], module)
            if args.ids:
                found = [m for m in found if m.id in args.ids]
            if args.max_mutants is not None and len(found) > args.max_mutants:
                found = sorted(random.Random(f"{args.seed}:{module}").sample(found, args.max_mutants),
                               key=lambda m: int(m.id.rsplit("#", 1)[1]))
            mutants += found
        if args.list:
            for m in mutants:
                print(f"{m.id:40} {m.module}:{m.line:<4} {m.mode:5} {m.operator:22} {m.mutated.strip()[:90]}")
            print(f"{len(mutants)} mutants; splices dropped (AST not as intended): {dropped}", file=sys.stderr)
            return 0
        _log(f"{len(mutants)} mutants in {len(modules)} modules; starting {args.workers} workers")
        workers = [WorkerProcess(n, scratch / f"w{n}", args.tests, modules) for n in range(args.workers)]
        try:
            base = workers[0].ask({"cmd": "baseline", "timeout": 1800}, 1900)
            if "coverage" not in base:
                raise SystemExit(f"baseline failed: {base.get('detail') or base}")
            _log(f"baseline: {len(base['durations'])} tests in {base['seconds']:.1f} s"
                 + (f", {len(base['failed'])} FAILING (left out): {base['failed'][:5]}" if base["failed"] else ""))
            results = run_all(workers, mutants, base, args)
        finally:
            for w in workers:
                w.stop()
        report = build_report(mutants, results, base, dropped, args, modules, time.monotonic() - started)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "mutation.json").write_text(json.dumps(report, indent=1))
        (out / "mutation.md").write_text(markdown(report))
        _log(f"wrote {out / 'mutation.json'} and {out / 'mutation.md'}")
        for name, m in report["modules"].items():
            print(f"{name}: {m['detected']}/{m['total']} detected ({m['score']:.1%}), {m['survived']} survived "
                  f"({m['not_covered']} not covered), {m['errors']} errors, {m['seconds']:.0f} s")
        total = report["total"]
        print(f"total: {total['detected']}/{total['total']} ({total['score']:.1%}) in {report['wall_seconds']:.0f} s")
        return 0
    finally:
        if args.keep:
            _log(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _log(message: str) -> None:
    print(f"[mutation {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def covering_tests(mutant: Mutant, base: dict, order: list[str]) -> list[str]:
    """The tests that run any line of the mutant, test file by test file in collection
    order (a file's fixtures are built once), the quickest first within a file."""
    first, last = mutant.span
    chosen = []
    for nodeid in order:
        lines = base["coverage"].get(nodeid, {}).get(mutant.module)
        if lines and any(first <= n <= last for n in lines):
            chosen.append(nodeid)
    files = list(dict.fromkeys(n.split("::")[0] for n in chosen))
    return sorted(chosen, key=lambda n: (files.index(n.split("::")[0]), base["calls"].get(n, 0.0)))


def run_all(workers, mutants: list[Mutant], base: dict, args) -> dict[str, dict]:
    order = [n for n in workers[0].items if n not in set(base["failed"])]
    results: dict[str, dict] = {}
    jobs: queue.Queue = queue.Queue()
    all_seconds = sum(base["durations"][n] for n in order)
    for m in mutants:
        tests = order if m.mode != "swap" else covering_tests(m, base, order)
        if not tests:
            results[m.id] = {"status": "survived", "not_covered": True, "seconds": 0.0, "by": None}
            continue
        baseline = sum(base["durations"][n] for n in tests)
        timeout = args.timeout or 10 + 3 * baseline
        jobs.put({"cmd": "run", "id": m.id, "mode": m.mode, "module": m.module, "source": m.source,
                  "qualname": m.qualname, "names": list(m.names), "tests": tests, "timeout": timeout,
                  "fresh_timeout": args.timeout or 60 + 3 * all_seconds})
    total, done = jobs.qsize(), [0]
    lock = threading.Lock()
    started = time.monotonic()

    def serve(worker):
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                return
            reply = worker.ask(job, job["fresh_timeout"] + 120)
            with lock:
                results[job["id"]] = reply
                done[0] += 1
                if done[0] % 25 == 0 or done[0] == total:
                    elapsed = time.monotonic() - started
                    _log(f"{done[0]}/{total} mutants run, {elapsed:.0f} s, "
                         f"~{elapsed / done[0] * (total - done[0]):.0f} s to go")

    threads = [threading.Thread(target=serve, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def build_report(mutants, results, base, dropped, args, modules, wall) -> dict:
    per_module = {}
    rows = []
    for module in modules:
        ms = [m for m in mutants if m.module == module]
        counts = {"killed": 0, "timeout": 0, "survived": 0, "not_covered": 0, "errors": 0}
        seconds = 0.0
        for m in ms:
            r = results.get(m.id, {"status": "error"})
            status = r.get("status", "error")
            seconds += r.get("seconds", 0.0)
            if status == "killed":
                counts["killed"] += 1
            elif status == "timeout":
                counts["timeout"] += 1
            elif status == "survived":
                counts["survived"] += 1
                counts["not_covered"] += bool(r.get("not_covered"))
            else:
                counts["errors"] += 1
            rows.append({**m.public(), "status": status, "not_covered": bool(r.get("not_covered")),
                         "seconds": round(r.get("seconds", 0.0), 3), "killed_by": r.get("by"),
                         "detail": r.get("detail")})
        detected = counts["killed"] + counts["timeout"]
        counted = len(ms) - counts["errors"]
        per_module[module] = {"total": len(ms), "detected": detected, **counts,
                              "score": detected / counted if counted else 0.0, "seconds": seconds,
                              "dropped_splices": dropped.get(module, 0),
                              "modes": {mode: sum(m.mode == mode for m in ms) for mode in ("swap", "const", "fresh")}}
    detected = sum(m["detected"] for m in per_module.values())
    counted = sum(m["total"] - m["errors"] for m in per_module.values())
    return {
        "command": " ".join([".venv/bin/python", "bench/mutation.py", *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
        "tests": args.tests, "workers": args.workers, "max_mutants": args.max_mutants, "seed": args.seed,
        "baseline": {"tests": len(base["durations"]), "seconds": round(base["seconds"], 1), "failed": base["failed"]},
        "wall_seconds": round(wall, 1),
        "modules": per_module,
        "total": {"total": sum(m["total"] for m in per_module.values()), "detected": detected,
                  "score": detected / counted if counted else 0.0},
        "mutants": rows,
    }


def markdown(report: dict) -> str:
    out = [
        "# Mutation testing", "",
        f"`{report['command']}`", "",
        f"{report['date']}, commit {report['commit']}{' (with uncommitted changes)' if report['dirty'] else ''}; "
        f"{report['workers']} workers; tests: {' '.join(report['tests'])} "
        f"(baseline {report['baseline']['tests']} tests, {report['baseline']['seconds']} s)"
        + (f"; a sample of at most {report['max_mutants']} mutants per module (seed {report['seed']})"
           if report["max_mutants"] else "") + f"; wall time {report['wall_seconds']:.0f} s.", "",
        "| module | detected / total | score | killed | timeout | survived (not covered) | errors | test time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["modules"].items():
        out.append(f"| `{name}` | {m['detected']} / {m['total']} | {m['score']:.1%} | {m['killed']} | {m['timeout']} | "
                   f"{m['survived']} ({m['not_covered']}) | {m['errors']} | {m['seconds']:.0f} s |")
    t = report["total"]
    out += ["", f"Total: {t['detected']} / {t['total']} detected ({t['score']:.1%}).", ""]
    if report["baseline"]["failed"]:
        out += ["Tests failing on the unmutated tree (left out): " + ", ".join(report["baseline"]["failed"]), ""]
    for status, title in (("survived", "Survivors"), ("error", "Errors")):
        rows = [r for r in report["mutants"] if r["status"] == status or (status == "error" and r["status"] not in
                                                                             ("killed", "timeout", "survived"))]
        if not rows:
            continue
        out += [f"## {title}", ""]
        for r in rows:
            where = f"`{r['module']}:{r['line']}`" + (f" in `{r['qualname']}`" if r["qualname"] else "")
            note = " (no test runs this line)" if r["not_covered"] else ""
            out += [f"- {where}: {r['operator']}{note} (`{r['id']}`)", "", "  ```diff"]
            out += [f"  - {line}" for line in r["original"].splitlines()]
            out += [f"  + {line}" for line in r["mutated"].splitlines()] or ["  + "]
            out += ["  ```", ""]
            if r.get("detail"):
                out += ["  " + r["detail"].strip().splitlines()[-1][:300], ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
