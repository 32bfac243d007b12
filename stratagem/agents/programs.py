"""From an LLM completion to a locked-down strategy function.

Three steps, each reporting *which* rule a program broke so rewards and logs can say why:

1. ``extract``: find the program in the completion (the last fenced block that defines the
   function, else the bare code from the first ``def``/``import``), trimming trailing prose. The
   completion is untrusted model output: its size is capped and every step is linear in it.
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

MAX_COMPLETION_CHARS = 200_000
"""Longer completions are refused before any parsing. A completion is a few thousand tokens, a program a
few hundred lines; anything past this cap is runaway generation or an attempt to tie up the parent."""
MAX_PARSE_ATTEMPTS = 12
"""How many times ``_trim_to_parseable`` (and, separately, ``_with_leading_constants``) may call
``ast.parse``: with the size cap, extraction is a constant number of linear passes over the completion."""

_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})
_FENCE_TAG = re.compile(r"[ \t]*([\w+-]*)")  # matched after a line's opening ```: the block's language
_CODE_START = re.compile(r"^(def |import |from |async def |class |@)", re.MULTILINE)
# A line the constants before bare code may be made of, judged by how it starts: indented or blank (a
# continuation), a comment, a literal or bracket, or an assignment (``NAME =``, ``A, B =``, ``NAME: T =``).
# Every quantifier is followed by a character it cannot match, so a match is linear in the line's length.
_TRIPLE_QUOTE = re.compile("'''|\"\"\"")
_CONSTANT_LINE = re.compile(r"""[ \t\f\r\n#0-9+\-.'"()\[\]{}]|[A-Za-z_][\w.]*[ \t]*(?:[,:][^=\n]*)?=(?!=)""")


class _TooNested(SyntaxError):
    """Source the parser gave up on for its depth (RecursionError, MemoryError): no line to cut at."""


def _parse(source: str) -> ast.Module:
    """``ast.parse``, with every way it can fail turned into a SyntaxError (never RecursionError & co.)."""
    try:
        return ast.parse(source)
    except (RecursionError, MemoryError):
        raise _TooNested("too deeply nested to parse; flatten the nesting") from None
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes, on older Pythons
        error = exc if isinstance(exc, SyntaxError) else SyntaxError(str(exc))
        if error.lineno is None and "\0" in source:  # point at the null byte, so trimming can cut there
            error.lineno = source.count("\n", 0, source.index("\0")) + 1
        raise error from None


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def extract(completion: str, function: str) -> str:
    """The program inside a completion; raises ProgramError(syntax, no-code) when there is none.

    Linear in the completion's length, which is capped at MAX_COMPLETION_CHARS (ProgramError(syntax, too-long)).
    """
    if len(completion) > MAX_COMPLETION_CHARS:
        raise ProgramError("syntax", "too-long", f"the completion is {len(completion):,} characters, over the "
                           f"limit of {MAX_COMPLETION_CHARS:,}; answer with one short program (a few hundred "
                           "lines at most) in a single ```python block")  # fmt: skip
    # [ \t\f], not \s: \s crosses newlines, and a run of blank lines would be rescanned from every line start.
    definition = re.compile(rf"^[ \t\f]*(?:async[ \t\f]+)?def[ \t\f]+{re.escape(function)}[ \t\f]*\(", re.MULTILINE)
    for tag, body in reversed(_fenced_blocks(completion)):
        if tag in _PYTHON_TAGS and definition.search(body):
            return _trim_to_parseable(body)
    start = _CODE_START.search(completion)
    if start is None or not definition.search(completion):
        raise ProgramError("syntax", "no-code", f"no definition of {function}(...) found in the completion")
    return _trim_to_parseable(_with_leading_constants(completion[: start.start()]) + completion[start.start() :])


def _fenced_blocks(completion: str) -> list[tuple[str, str]]:
    """``(language, body)`` of each fenced block, in order, in one pass over the lines.

    ``` opens a block (its language the word after the backticks, the rest of that line ignored) and
    the next ``` closes it, the text before it on its line kept; an unclosed last block runs to the end
    of the completion. Each line is searched from where the previous fence ended, so nothing is rescanned.
    """
    blocks: list[tuple[str, str]] = []
    tag: str | None = None  # None: outside a block
    body: list[str] = []
    for line in completion.split("\n"):
        position = 0
        while True:
            fence = line.find("```", position)
            if tag is None:
                if fence >= 0:
                    match = _FENCE_TAG.match(line, fence + 3)
                    tag, body = (match.group(1) if match else "").lower(), []
                break
            if fence < 0:
                body.append(line[position:])
                break
            body.append(line[position:fence])
            blocks.append((tag, "\n".join(body)))
            tag, position = None, fence + 3
    if tag is not None:
        blocks.append((tag, "\n".join(body)))
    return blocks


def _with_leading_constants(before: str) -> str:
    """The longest tail of the text before the first ``def``/``import`` made only of assignments.

    Bare code often opens with constants (``WEIGHTS = [...]``) that the function needs; prose
    before them ("Here is my answer:") does not parse as assignments and stays out. The tail is
    looked for from the first line after the last line that cannot belong to constants (one that
    starts like prose), then moved forward past syntax errors and non-assignments, with at most
    MAX_PARSE_ATTEMPTS parses; if none succeeds, no constants are kept.
    """
    lines = before.splitlines(keepends=True)
    in_string, quote = [], None  # whether each line starts inside a triple-quoted string (``S = """...``)
    for line in lines:
        in_string.append(quote is not None)
        for match in _TRIPLE_QUOTE.finditer(line):
            quote = match.group() if quote is None else None if match.group() == quote else quote
    start = len(lines)
    while start > 0 and (in_string[start - 1] or _CONSTANT_LINE.match(lines[start - 1])):
        start -= 1
    for _ in range(MAX_PARSE_ATTEMPTS):
        if start >= len(lines):
            break
        tail = "".join(lines[start:])
        try:
            body = _parse(tail).body
        except _TooNested:
            break
        except SyntaxError as exc:  # retry from the line of the error: the lines before it are what failed
            start += max(1, (exc.lineno or 1) - 1)
            continue
        others = [node for node in body if not isinstance(node, (ast.Assign, ast.AnnAssign))]
        if not others:
            return tail
        start += others[-1].end_lineno or others[-1].lineno  # past the last statement that is not an assignment
    return ""


def _trim_to_parseable(code: str) -> str:
    """Drop trailing lines (prose after the code, a truncated last line) until the code parses.

    Parses the whole code first; on a syntax error, cuts just before the error's line (the first line
    of trailing prose, or of a truncated statement) and tries again, at most MAX_PARSE_ATTEMPTS times,
    then once more cut before the last top-level statement. The longest prefix that parses wins; when
    none does, the whole code's syntax error is reported.
    """
    lines = code.rstrip().splitlines()
    first: SyntaxError | None = None
    end = len(lines)
    for _ in range(MAX_PARSE_ATTEMPTS):
        while end > 0 and not lines[end - 1].strip():
            end -= 1
        if end == 0:
            break
        candidate = "\n".join(lines[:end]).rstrip() + "\n"
        try:
            _parse(candidate)
            return candidate
        except _TooNested as exc:  # no line to cut at, and prose never nests this deep: report
            first = first or exc
            break
        except SyntaxError as exc:
            first = first or exc
            end = min(end, exc.lineno or end) - 1  # lineno may lie past the end (unexpected EOF)
    else:  # out of attempts (a deep stack of truncated blocks): cut before the last top-level statement
        end = next((i for i in range(end - 1, 0, -1) if lines[i][:1].isidentifier() or lines[i][:1] == "@"), 0)
        if end > 0:
            candidate = "\n".join(lines[:end]).rstrip() + "\n"
            try:
                _parse(candidate)
                return candidate
            except SyntaxError:
                pass
    if first is None:
        raise ProgramError("syntax", "no-code", "the program is empty")
    raise ProgramError("syntax", "syntax", first.msg or "invalid syntax", first.lineno)


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
