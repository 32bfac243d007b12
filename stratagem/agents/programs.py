"""From an LLM completion to a locked-down strategy function.

Three steps, each reporting *which* rule a program broke so rewards and logs can say why:

1. ``extract``: find the program in the completion (the last fenced block that defines the
   function, else the bare code from the first ``def``/``import``), trimming trailing prose.
2. ``check``: parse it and walk the AST. String matching for ``import os`` is trivially
   bypassed (``__import__``, ``getattr(__builtins__, ...)``, ``gen.gi_frame.f_back``), so the
   rules are structural: imports only from the task's allowlist; no names that reach the
   interpreter (``eval``, ``exec``, ``open``, ``globals``, ``getattr``, ...); no dunder or private
   names or attributes; no frame/code introspection attributes; no string holding a dunder;
   no class definitions; and exactly the expected function signature.
3. ``build``: execute the module with a curated builtins table and a guarded ``__import__``
   that hands out proxies of the allowed modules (public, non-module attributes only), and
   return the function. The process it runs in is confined separately (``runner.py``): this
   module decides what a program may *say*, the sandbox what it may *do*.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stratagem.envs.spec import StrategySpec


class ProgramError(Exception):
    """A program that cannot be played. ``kind`` is ``syntax`` or ``policy``; ``rule`` names the rule."""

    def __init__(self, kind: str, rule: str, message: str, line: int | None = None) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"{rule}: {message}{where}")
        self.kind, self.rule, self.message, self.line = kind, rule, message, line


@dataclass(frozen=True)
class Program:
    """A checked program: its source, the function name, and a short content hash for logs."""

    source: str
    function: str
    sha: str


FORBIDDEN_NAMES = frozenset(
    {
        "eval", "exec", "compile", "open", "input", "breakpoint", "help", "exit", "quit",
        "globals", "locals", "vars", "dir", "getattr", "setattr", "delattr", "hasattr",
        "memoryview", "classmethod", "staticmethod", "property", "super", "type", "object",
        "id", "copyright", "credits", "license",
    }
)  # fmt: skip
# Attributes that lead from ordinary objects back to frames, code and module globals.
INTROSPECTION_ATTRIBUTES = frozenset(
    {
        "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code",
        "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "f_trace", "tb_frame", "tb_next",
        "co_code", "co_consts", "co_names", "func_globals", "func_code", "mro",
    }
)  # fmt: skip
SAFE_BUILTINS = frozenset(
    {
        "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr", "complex", "dict",
        "divmod", "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int", "isinstance",
        "issubclass", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord", "pow", "print", "range",
        "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip",
        "ArithmeticError", "AssertionError", "AttributeError", "Exception", "IndexError", "KeyError",
        "LookupError", "NotImplementedError", "OverflowError", "RuntimeError", "StopIteration", "TypeError",
        "ValueError", "ZeroDivisionError",
    }
)  # fmt: skip

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(def |import |from |async def |class |@)", re.MULTILINE)


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def extract(completion: str, function: str) -> str:
    """The program inside a completion; raises ProgramError(syntax, no-code) when there is none."""
    definition = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(function)}\s*\(", re.MULTILINE)
    blocks = [body for lang, body in _FENCE.findall(completion) if lang.lower() in ("", "python", "py", "python3")]
    for body in reversed(blocks):
        if definition.search(body):
            return _trim_to_parseable(body)
    start = _CODE_START.search(completion)
    if start is None or not definition.search(completion):
        raise ProgramError("syntax", "no-code", f"no definition of {function}(...) found in the completion")
    return _trim_to_parseable(_with_leading_constants(completion[: start.start()]) + completion[start.start() :])


def _with_leading_constants(before: str) -> str:
    """The longest tail of the text before the first ``def``/``import`` made only of assignments.

    Bare code often opens with constants (``WEIGHTS = [...]``) that the function needs; prose
    before them ("Here is my answer:") does not parse as assignments and stays out.
    """
    lines = before.splitlines(keepends=True)
    for start in range(len(lines)):
        tail = "".join(lines[start:])
        try:
            body = ast.parse(tail).body
        except SyntaxError:
            continue
        if all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in body):
            return tail
    return ""


def _trim_to_parseable(code: str) -> str:
    """Drop trailing lines (prose after the code, a truncated last line) until the code parses."""
    lines = code.rstrip().splitlines()
    error: SyntaxError | None = None
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]).rstrip() + "\n"
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError as exc:
            error = error or exc
    assert error is not None
    raise ProgramError("syntax", "syntax", error.msg or "invalid syntax", error.lineno)


def check(source: str, strategy: StrategySpec) -> Program:
    """Parse and check a program against the rules; the first broken rule raises ProgramError."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ProgramError("syntax", "syntax", exc.msg or "invalid syntax", exc.lineno) from None
    allowed = set(strategy.imports)
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    for node in tree.body:  # classes and async defs are refused by their own rules below
        if not isinstance(node, (*definitions, ast.Assign, ast.AnnAssign, ast.Expr)):
            _refuse("top-level", "only imports, functions and constant assignments may sit at top level, not "
                    f"{type(node).__name__}", node)  # fmt: skip
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            _refuse("top-level", "top-level expressions run at import; put code inside the function", node)
    for node in ast.walk(tree):
        _check_node(node, allowed)
    _check_signature(tree, strategy)
    return Program(source=source, function=strategy.function, sha=program_hash(source))


def _refuse(rule: str, message: str, node: ast.AST | None = None) -> None:
    raise ProgramError("policy", rule, message, getattr(node, "lineno", None))


def _is_dunder(name: str) -> bool:
    """``__builtins__``, ``__import__``, ``__class__``...: the handles on the interpreter."""
    return name.startswith("__")


def _check_node(node: ast.AST, allowed: set[str]) -> None:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if isinstance(node, ast.ImportFrom) and node.level:
            _refuse("import", "relative imports are not allowed", node)
        for name in names:
            if name not in allowed:
                _refuse("import", f"import of {name!r} is not allowed; allowed: {', '.join(sorted(allowed))}", node)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*" or alias.name.startswith("_"):
                    _refuse("import", f"'from {node.module} import {alias.name}' is not allowed", node)
    elif isinstance(node, ast.Name):
        if node.id in FORBIDDEN_NAMES:
            _refuse("forbidden-name", f"{node.id!r} reaches the interpreter and is not allowed", node)
        if _is_dunder(node.id):
            _refuse("dunder", f"dunder names ({node.id!r}) are not allowed", node)
    elif isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):  # random._os, x.__class__: private and dunder attributes alike
            _refuse("dunder", f"attribute {node.attr!r}: private and dunder attributes are not allowed", node)
        if node.attr in INTROSPECTION_ATTRIBUTES:
            _refuse("introspection", f"attribute {node.attr!r} reaches frames or code objects", node)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        name = getattr(node, "name", "")
        if _is_dunder(name):
            _refuse("dunder", f"dunder function names ({name!r}) are not allowed", node)
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            if _is_dunder(arg.arg):
                _refuse("dunder", f"dunder parameter names ({arg.arg!r}) are not allowed", node)
    elif isinstance(node, ast.ClassDef):
        _refuse("class", "class definitions are not allowed; use functions, tuples and dicts", node)
    elif isinstance(node, (ast.Global, ast.Nonlocal)) and any(_is_dunder(n) for n in node.names):
        _refuse("dunder", "dunder names are not allowed", node)
    elif isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
        text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
        if "__" in text:
            _refuse("dunder", "strings containing '__' are not allowed (they are how dunder lookups are smuggled)",
                    node)  # fmt: skip
        if any(attr in text for attr in INTROSPECTION_ATTRIBUTES if len(attr) > 4):
            _refuse("introspection", "strings naming frame or code attributes are not allowed", node)


def _check_signature(tree: ast.Module, strategy: StrategySpec) -> None:
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == strategy.function]
    if not defs:
        asyncs = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == strategy.function]
        hint = " (it must be a plain def, not async)" if asyncs else ""
        _refuse("signature", f"no top-level function {strategy.function}(...){hint}")
    fn = defs[-1]
    expected = f"def {strategy.function}({', '.join(strategy.args)})"
    args = fn.args
    if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
        _refuse("signature", f"expected exactly {expected}: no *args, **kwargs or keyword-only parameters", fn)
    if len(args.args) != len(strategy.args):
        _refuse("signature", f"expected exactly {expected}, got {len(args.args)} parameter(s)", fn)
    if fn.decorator_list:
        _refuse("signature", f"{strategy.function} must not be decorated", fn)


# Class factories build their classes with exec and frame lookups, which the sandbox's audit
# hook refuses; programs may not define classes anyway, so these are simply absent.
CLASS_FACTORIES = frozenset({"namedtuple", "NamedTuple", "TypedDict", "NewType", "get_type_hints"})


class _ModuleProxy(types.SimpleNamespace):
    """What ``import math`` gives a program: the module's public, non-module attributes."""


def _proxy(name: str) -> _ModuleProxy:
    module = importlib.import_module(name)
    public = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_") and not isinstance(value, types.ModuleType) and key not in CLASS_FACTORIES
    }
    return _ModuleProxy(**public)


def _guarded_import(allowed: Iterable[str]) -> Callable[..., Any]:
    cache: dict[str, _ModuleProxy] = {}
    allowed = frozenset(allowed)

    def guarded(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level or name not in allowed:
            raise ImportError(f"import of {name!r} is not allowed")
        if name not in cache:
            cache[name] = _proxy(name)
        return cache[name]

    return guarded


def safe_builtins(allowed_imports: Iterable[str]) -> dict[str, Any]:
    table = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    table["__import__"] = _guarded_import(allowed_imports)
    return table


def build(program: Program, strategy: StrategySpec) -> Callable[..., Any]:
    """Run the module's top level with restricted builtins and return the strategy function.

    Errors raised while the module runs (a bad constant, a failing import) propagate: the
    caller records them as the program's exception.
    """
    namespace: dict[str, Any] = {"__builtins__": safe_builtins(strategy.imports), "__name__": "strategy_program"}
    exec(compile(program.source, f"<program {program.sha}>", "exec"), namespace)
    fn = namespace.get(strategy.function)
    if not callable(fn):
        raise ProgramError("policy", "signature", f"{strategy.function} is not a function after running the module")
    return fn


def load(completion: str, strategy: StrategySpec) -> Program:
    """``extract`` then ``check``: a completion in, a checked Program (or ProgramError) out."""
    return check(extract(completion, strategy.function), strategy)
