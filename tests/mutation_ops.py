"""Mutant generator of tests/mutation_score.py: the usual operators, applied to the source text of one module.

Operators (each a name in :data:`OPERATORS`):

- ``cmp-boundary``: ``<`` <-> ``<=``, ``>`` <-> ``>=`` (the tie rule);
- ``cmp-flip``: ``<`` <-> ``>``, ``<=`` <-> ``>=``, ``==`` <-> ``!=`` (the direction);
- ``sign``: a unary minus removed (``-x`` -> ``x``), ``a + b`` <-> ``a - b``;
- ``const-x2`` / ``const-half``: a numeric constant (not 0, not a bool) doubled / halved;
- ``minmax``: ``min`` <-> ``max`` (also ``np.minimum``/``maximum``, ``amin``/``amax``, ``argmin``/``argmax``,
  ``clamp_min``/``clamp_max``, ``logaddexp`` is left alone);
- ``drop-term``: ``a + b`` -> ``a`` and ``a - b`` -> ``a`` (a term of a sum dropped; also the left one: ``b``/``-b``);
- ``swap-args``: the first two positional arguments of a call swapped; the operands of ``-``, ``/``, ``**``
  swapped.

A mutant replaces one expression's source segment by the unparsed mutated expression in parentheses; every other
byte of the file (comments, line numbers) is unchanged. Nothing is written here: :func:`mutants` returns the new
texts, and the caller writes them into a copy of the repository.

Skipped (they do not compute a number a verdict reads): docstrings and other string constants, f-strings,
annotations, ``raise``/``assert`` statements, calls to ``print``/``log``/``warn``/``round``/``format``,
``__repr__``/``__str__``, functions that draw figures (``_figures``, ``_length_figure``), the body of
``if __name__ == "__main__"``, and every function listed in the caller's
``skip`` (command lines, report formatting). Each mutant has a stable id: the file, the enclosing function's
qualname, the operator and a short hash of (old segment, new segment, the occurrence number of that pair in that
function), so ids survive edits elsewhere in the file.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import re
from dataclasses import dataclass, field

OPERATORS = ("cmp-boundary", "cmp-flip", "sign", "const-x2", "const-half", "minmax", "drop-term", "swap-args")

_BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
_FLIP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_MINMAX = {"min": "max", "max": "min", "minimum": "maximum", "maximum": "minimum", "amin": "amax", "amax": "amin",
           "argmin": "argmax", "argmax": "argmin", "nanmin": "nanmax", "nanmax": "nanmin",
           "clamp_min": "clamp_max", "clamp_max": "clamp_min", "fmin": "fmax", "fmax": "fmin"}
# calls whose first two arguments commute (swapping them is equivalent by construction) or whose swap only
# raises a TypeError (isinstance, getattr: not a formula)
_SYMMETRIC = {"min", "max", "minimum", "maximum", "fmin", "fmax", "logaddexp", "hypot", "isclose", "allclose",
              "array_equal", "Eq", "Ne", "isinstance", "issubclass", "getattr", "hasattr", "setattr"}
_QUIET_CALLS = {"print", "log", "warn", "warning", "info", "debug", "round", "format", "write", "set_description",
                "set_postfix", "_fmt", "_short", "short_message"}
_QUIET_DEFS = {"__repr__", "__str__", "main", "_main", "build_parser"}
_FIGURE_DEF = re.compile(r"(^|_)(figures?|plot)(_|$)")  # draws a figure; no verdict reads it


@dataclass(frozen=True)
class Mutant:
    """One mutant of one file: ``text`` is the whole mutated file."""

    id: str
    path: str  # relative to the repository root, e.g. "toy_bandits/dataset.py"
    module: str  # "toy_bandits.dataset"
    function: str  # "module.qualname" of the enclosing def, or "module.<module>" at module level
    line: int
    op: str
    old: str  # the original source segment
    new: str  # what replaces it
    text: str = field(repr=False)

    @property
    def description(self) -> str:
        old = " ".join(self.old.split())
        new = " ".join(self.new.split())
        return f"{old[:70]} -> {new[:70]}"


def _variants(node: ast.AST) -> list[tuple[str, ast.AST]]:
    """(operator, replacement node) for one expression node; the replacement is a fresh node."""
    out: list[tuple[str, ast.AST]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for name, table in (("cmp-boundary", _BOUNDARY), ("cmp-flip", _FLIP)):
                if type(op) in table:
                    new = copy.deepcopy(node)
                    new.ops[i] = table[type(op)]()
                    out.append((name, new))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        out.append(("sign", copy.deepcopy(node.operand)))
    elif isinstance(node, ast.BinOp):
        if any(isinstance(side, ast.JoinedStr) or isinstance(side, ast.Constant) and isinstance(side.value, str)
               for side in (node.left, node.right)):
            return out  # text built from strings, not a number
        if isinstance(node.op, (ast.Add, ast.Sub)):
            new = copy.deepcopy(node)
            new.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
            out.append(("sign", new))
            out.append(("drop-term", copy.deepcopy(node.left)))
            right = copy.deepcopy(node.right)
            out.append(("drop-term", right if isinstance(node.op, ast.Add) else ast.UnaryOp(ast.USub(), right)))
        if isinstance(node.op, (ast.Sub, ast.Div, ast.Pow)):
            new = copy.deepcopy(node)
            new.left, new.right = new.right, new.left
            out.append(("swap-args", new))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value != 0:
        for name, factor in (("const-x2", 2), ("const-half", 0.5)):
            value = node.value * factor
            if isinstance(node.value, int) and factor == 0.5 and node.value % 2 == 0:
                value = node.value // 2  # an integer stays an integer where it can (a count, a shape)
            out.append((name, ast.Constant(value)))
    elif isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in _MINMAX:
            new = copy.deepcopy(node)
            if isinstance(new.func, ast.Name):
                new.func.id = _MINMAX[name]
            else:
                new.func.attr = _MINMAX[name]
            out.append(("minmax", new))
        if len(node.args) >= 2 and name not in _SYMMETRIC and not any(isinstance(a, ast.Starred)
                                                                        for a in node.args[:2]):
            if ast.dump(node.args[0]) != ast.dump(node.args[1]):
                new = copy.deepcopy(node)
                new.args[0], new.args[1] = new.args[1], new.args[0]
                out.append(("swap-args", new))
    return out


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


class _Finder(ast.NodeVisitor):
    """Collects (node, qualname of the enclosing def) for every mutable expression, in source order."""

    def __init__(self, skip: set[str]):
        self.skip = skip
        self.stack: list[str] = []
        self.found: list[tuple[ast.AST, str]] = []

    def _qualname(self) -> str:
        stack = self.stack[:-1] if self.stack and self.stack[-1] == "<locals>" else self.stack
        return ".".join(stack) if stack else "<module>"

    def _scope(self, node, name: str, is_def: bool) -> None:
        qual = ".".join([*self.stack, name])
        if name in _QUIET_DEFS or _FIGURE_DEF.search(name) or qual in self.skip:
            return
        # decorators and default values belong to the enclosing scope; annotations are skipped
        for dec in getattr(node, "decorator_list", []):
            self.visit(dec)
        if is_def:
            for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
                self.visit(default)
        self.stack.extend([name, "<locals>"] if is_def else [name])
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]  # the docstring
        for stmt in body:
            self.visit(stmt)
        del self.stack[-2 if is_def else -1:]

    def visit_FunctionDef(self, node):  # noqa: N802
        self._scope(node, node.name, True)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):  # noqa: N802
        for base in node.bases:
            self.visit(base)
        self._scope(node, node.name, False)

    def visit_Module(self, node):  # noqa: N802
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        for stmt in body:
            if not _is_main_guard(stmt):
                self.visit(stmt)

    def visit_AnnAssign(self, node):  # noqa: N802
        if node.value is not None:
            self.visit(node.value)

    def visit_arg(self, node):  # noqa: N802
        return  # annotations

    def visit_Raise(self, node):  # noqa: N802
        return

    def visit_Assert(self, node):  # noqa: N802
        return

    def visit_JoinedStr(self, node):  # noqa: N802
        return

    def visit_Import(self, node):  # noqa: N802
        return

    visit_ImportFrom = visit_Import

    def visit_Call(self, node):  # noqa: N802
        if _call_name(node) in _QUIET_CALLS:
            return
        self._record(node)
        self.generic_visit(node)

    def _record(self, node):
        if hasattr(node, "end_col_offset"):
            self.found.append((node, self._qualname()))

    def generic_visit(self, node):
        if isinstance(node, (ast.Compare, ast.UnaryOp, ast.BinOp, ast.Constant)):
            self._record(node)
        super().generic_visit(node)


def valid(m: Mutant, original: str) -> bool:
    """Whether the mutated file parses, and its syntax tree differs from that of ``original`` (the file's text)."""
    try:
        return ast.dump(ast.parse(m.text)) != ast.dump(ast.parse(original))
    except SyntaxError:
        return False


def _line_offsets(data: bytes) -> list[int]:
    offsets = [0]
    for i, byte in enumerate(data):
        if byte == 0x0A:
            offsets.append(i + 1)
    return offsets


def mutants(source: str, path: str, module: str, skip: set[str] | frozenset[str] = frozenset(),
            only: set[str] | frozenset[str] | None = None) -> list[Mutant]:
    """Every mutant of ``source`` (the text of ``path``, module name ``module``).

    skip: qualnames of defs (and classes) whose bodies are not mutated; only: if given, the qualnames of the only
    top-level defs that are mutated (their nested defs included). The mutated expression differs from the original
    (one equal to it is dropped); a parenthesised expression in place of an expression is valid Python, and
    :func:`valid` checks it (a full parse, so the caller calls it only for the mutants it runs).
    """
    tree = ast.parse(source)
    data = source.encode("utf-8")
    lines = _line_offsets(data)
    finder = _Finder(set(skip))
    finder.visit(tree)
    seen: dict[tuple, int] = {}
    out: list[Mutant] = []
    for node, qual in finder.found:
        top = qual.split(".", 1)[0]
        if only is not None and top not in only:
            continue
        start = lines[node.lineno - 1] + node.col_offset
        end = lines[node.end_lineno - 1] + node.end_col_offset
        old = data[start:end].decode("utf-8")
        old_dump = ast.dump(node)
        for op, new_node in _variants(node):
            if ast.dump(new_node) == old_dump:
                continue  # the same expression (e.g. a swap of two equal arguments): not a mutant
            new = "(" + ast.unparse(ast.fix_missing_locations(new_node)) + ")"
            text = (data[:start] + new.encode("utf-8") + data[end:]).decode("utf-8")
            key = (qual, op, old, new)
            n = seen.get(key, 0)
            seen[key] = n + 1
            digest = hashlib.sha1(repr((old, new, n)).encode()).hexdigest()[:10]
            func = f"{module}.{qual}"
            out.append(Mutant(id=f"{path}::{qual}::{op}::{digest}", path=path, module=module, function=func,
                              line=node.lineno, op=op, old=old, new=new, text=text))
    return out
