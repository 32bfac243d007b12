"""From an LLM completion to a locked-down strategy function.

Three steps, each reporting *which* rule a program broke so rewards and logs can say why:

1. ``extract`` (``extraction.py``): find the program in the completion (the last fenced block
   that defines the function, else the bare code from the first ``def``/``import``), trimming
   trailing prose. The completion is untrusted model output: its size is capped and every step is
   linear in it.
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
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from stratagem.agents.extraction import extract, parse
from stratagem.agents.results import ProgramError
from stratagem.envs.spec import StrategySpec


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


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def check(source: str, strategy: StrategySpec) -> Program:
    """Parse and check a program against the rules; the first broken rule raises ProgramError."""
    try:
        tree = parse(source)  # as extraction parses: too deep a nesting is a syntax error, not a RecursionError
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
    elif isinstance(node, ast.MatchClass):  # ``case C(__globals__=g)`` reads attributes by the names it gives
        for attr in node.kwd_attrs:
            if attr.startswith("_") or attr in INTROSPECTION_ATTRIBUTES:
                _refuse("dunder", f"class pattern attribute {attr!r}: private, dunder and introspection "
                        "attributes are not allowed", node)  # fmt: skip
    elif isinstance(node, (ast.MatchAs, ast.MatchStar, ast.MatchMapping)):
        name = node.rest if isinstance(node, ast.MatchMapping) else node.name
        if name and _is_dunder(name):
            _refuse("dunder", f"dunder names ({name!r}) are not allowed", node)
    elif isinstance(node, ast.keyword) and node.arg and _is_dunder(node.arg):
        _refuse("dunder", f"dunder keyword arguments ({node.arg!r}) are not allowed", node)
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
# Functions that read or write attributes by names given at run time (``update_wrapper(f, g,
# updated=("_" * 2 + "globals" + "_" * 2,))``): a door to any object's dunders, so absent too.
REFLECTIVE = frozenset({"update_wrapper", "wraps"})


class _ModuleProxy(types.SimpleNamespace):
    """What ``import math`` gives a program: the module's public, non-module attributes."""


def _proxy(name: str) -> _ModuleProxy:
    """Public attributes only; no module, class factory, reflective function or metaclass (``typing.ABCMeta``:
    calling a metaclass makes a class without a ``class`` statement)."""
    module = importlib.import_module(name)
    public = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_")
        and not isinstance(value, types.ModuleType)
        and key not in CLASS_FACTORIES | REFLECTIVE
        and not (isinstance(value, type) and issubclass(value, type))
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


def new_namespace(strategy: StrategySpec) -> dict[str, Any]:
    """The globals a program runs in: the curated builtins and nothing else."""
    return {"__builtins__": safe_builtins(strategy.imports), "__name__": "strategy_program"}


def build(program: Program, strategy: StrategySpec, namespace: dict[str, Any] | None = None) -> Callable[..., Any]:
    """Run the module's top level with restricted builtins and return the strategy function.

    ``namespace`` (from ``new_namespace``) lets the sandbox recognise the program's frames.
    Errors raised while the module runs (a bad constant, a failing import) propagate: the
    caller records them as the program's exception.
    """
    namespace = new_namespace(strategy) if namespace is None else namespace
    exec(compile(program.source, f"<program {program.sha}>", "exec"), namespace)
    fn = namespace.get(strategy.function)
    if not callable(fn):
        raise ProgramError("policy", "signature", f"{strategy.function} is not a function after running the module")
    return fn


def load(completion: str, strategy: StrategySpec) -> Program:
    """``extract`` then ``check``: a completion in, a checked Program (or ProgramError) out."""
    return check(extract(completion, strategy.function), strategy)
