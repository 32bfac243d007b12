"""From an LLM completion to a locked-down strategy function.

Three steps, each reporting *which* rule a program broke so rewards and logs can say why:

1. ``extract`` (``extraction.py``): find the program in the completion (the last fenced block
   that defines the function, else the bare code from the first ``def``/``import``), trimming
   trailing prose. The completion is untrusted model output: its size is capped and every step is
   linear in it.
2. ``check``: parse it, walk the AST and read the compiled code's name lookups. The kernel is the
   boundary (``runner.py``), so these rules only *classify*: a refusal by a cheating rule scores
   as a cheat (``rewards.py``), and a false one teaches a policy to avoid honest code. So each rule
   looks at exactly the construct that would reach the interpreter, never at text that merely
   resembles one:

   - ``import``: imports only from the task's allowlist (and ``from __future__ import <feature>``, a
     compiler directive), no relative import, no private name of a module (``*`` takes public ones);
   - ``forbidden-name``: a *lookup that reaches the builtins* of a name whose builtin would be a way
     around the other rules (``eval``, ``open``, ``globals``, ``getattr``...: ``FORBIDDEN_NAMES``). A
     program's own binding of such a name (a variable, parameter, loop target, import alias, def,
     ``except``/``with`` alias, walrus) is its own; Python's own scoping decides, read from the
     compiled code. Every other builtin missing from ``SAFE_BUILTINS`` (``type``, ``id``, ``dir``...)
     is simply absent: a NameError at run time, a crash like any other undefined name;
   - ``dunder``: names of the interpreter's own (``__x__``: ``__builtins__``, ``__import__``), read or
     bound anywhere; attributes that are private or dunder (``x.__class__``, ``random._inst``), by
     attribute syntax, a ``match`` class pattern, or a replacement field of a string that can serve
     as a format template (``"{0.__class__}".format(x)``);
   - ``introspection``: frame and code attributes (``gen.gi_frame.f_back``), by the same three ways;
   - ``class``, ``top-level``, ``signature`` (broken programs, crashes): no class definitions, only
     definitions and constants at top level, exactly the expected function signature.

   Text is text: a docstring or string holding ``__`` or ``f_back`` is not a lookup. What no static
   rule can see (a template or attribute name built at run time) is the run time's: the curated
   builtins and module proxies below, the audit hook (frames and code objects, imports, files), and
   the kernel.
3. ``build``: execute the module with a curated builtins table and a guarded ``__import__``
   that hands out proxies of the allowed modules (public, non-module attributes only), and
   return the function. The process it runs in is confined separately (``runner.py``): this
   module decides what a program may *say*, the sandbox what it may *do*.
"""

from __future__ import annotations
import __future__

import _string  # the parser str.format itself uses, for format templates' replacement fields
import ast
import builtins
import dis
import hashlib
import importlib
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
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


# Builtins that, were they there, would be a way around the other rules: code from text, the host (files, the
# terminal, a debugger, pydoc), namespaces and any object's ``__dict__``, attributes by names made at run time.
# None is in SAFE_BUILTINS, so a lookup finds nothing; the rule names the attempt. Builtins absent for no such
# reason (``type``, ``id``, ``dir``, ``hasattr``, ``object``, ``super``...) are not listed: a NameError, a crash.
FORBIDDEN_NAMES = frozenset(
    {
        "eval", "exec", "compile",
        "open", "input", "breakpoint", "help",
        "globals", "locals", "vars",
        "getattr", "setattr", "delattr",
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
# ``from __future__ import annotations`` is a compiler directive (it also imports ``__future__``, whose proxy
# holds only the feature records): honest, and common in generated code.
FUTURE = "__future__"
FUTURE_FEATURES = frozenset(__future__.all_feature_names)
# The compiled lookups that go to the module's globals, then to the builtins.
_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
# How programs are compiled, here and in ``build``: annotations are kept as text, never evaluated (PEP 563),
# so ``def strategy(board: List[List[int]])`` runs no code of ``typing`` and looks up no name.
COMPILE_FLAGS = __future__.annotations.compiler_flag


def program_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def check(source: str, strategy: StrategySpec) -> Program:
    """Parse and check a program against the rules; the first broken rule raises ProgramError."""
    try:
        tree = parse(source)  # as extraction parses: too deep a nesting is a syntax error, not a RecursionError
    except SyntaxError as exc:
        raise ProgramError("syntax", "syntax", exc.msg or "invalid syntax", exc.lineno) from None
    guards = [node for node in tree.body if _is_main_guard(node)]
    if guards:  # a script's self-test: it could never run here (the program is not __main__), so it is dropped
        lines = source.splitlines(keepends=True)
        for node in reversed(guards):
            del lines[node.lineno - 1 : node.end_lineno]
        source = "".join(lines)
        tree = parse(source)
    allowed = set(strategy.imports)
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)
    for node in tree.body:  # classes and async defs are refused by their own rules below
        if not isinstance(node, (*definitions, ast.Assign, ast.AnnAssign, ast.Expr)):
            _refuse("top-level", "only imports, functions and constant assignments may sit at top level, not "
                    f"{type(node).__name__}", node)  # fmt: skip
        if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Constant):
            _refuse("top-level", "top-level expressions run at import; put code inside the function", node)
    discarded = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings & co.
    for node in ast.walk(tree):
        _check_node(node, allowed)
        if isinstance(node, ast.Constant) and id(node) not in discarded:
            _check_template(node)
    _check_builtin_lookups(tree)
    _check_signature(tree, strategy)
    return Program(source=source, function=strategy.function, sha=program_hash(source))


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round, no ``else``) at top level."""
    if not isinstance(node, ast.If) or node.orelse or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [side.id for side in sides if isinstance(side, ast.Name)]
    constants = [side.value for side in sides if isinstance(side, ast.Constant)]
    return names == ["__name__"] and constants == ["__main__"]


def _refuse(rule: str, message: str, node: ast.AST | None = None) -> None:
    raise ProgramError("policy", rule, message, getattr(node, "lineno", None))


def _is_dunder(name: str) -> bool:
    """``__builtins__``, ``__import__``, ``__class__``...: the interpreter's own names (``__x`` is an ordinary
    name outside a class, and programs have no classes)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _attribute_rule(attr: str) -> str | None:
    """The rule an attribute name breaks, by whatever syntax it is read: private or dunder, or introspection."""
    if attr.startswith("_"):  # random._os, x.__class__: private and dunder attributes alike
        return "dunder"
    return "introspection" if attr in INTROSPECTION_ATTRIBUTES else None


def _bound_names(node: ast.AST) -> list[str]:
    """The names a node binds that are not ``ast.Name`` nodes: defs, parameters, aliases, handlers, patterns."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.arguments):
        every = [*node.posonlyargs, *node.args, *node.kwonlyargs, node.vararg, node.kwarg]
        return [arg.arg for arg in every if arg is not None]
    if isinstance(node, ast.alias):
        return [node.asname] if node.asname else []
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return list(node.names)
    if isinstance(node, ast.ExceptHandler):
        return [node.name] if node.name else []
    if isinstance(node, (ast.MatchAs, ast.MatchStar)):
        return [node.name] if node.name else []
    if isinstance(node, ast.MatchMapping):
        return [node.rest] if node.rest else []
    return []


def _check_node(node: ast.AST, allowed: set[str]) -> None:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        _check_import(node, allowed)
    elif isinstance(node, ast.Name):
        if _is_dunder(node.id):
            _refuse("dunder", f"dunder names ({node.id!r}) are not allowed", node)
    elif isinstance(node, ast.Attribute):
        rule = _attribute_rule(node.attr)
        if rule == "dunder":
            _refuse("dunder", f"attribute {node.attr!r}: private and dunder attributes are not allowed", node)
        if rule == "introspection":
            _refuse("introspection", f"attribute {node.attr!r} reaches frames or code objects", node)
    elif isinstance(node, ast.ClassDef):
        _refuse("class", "class definitions are not allowed; use functions, tuples and dicts", node)
    elif isinstance(node, ast.MatchClass):  # ``case C(__globals__=g)`` reads attributes by the names it gives
        for attr in node.kwd_attrs:
            if _attribute_rule(attr):
                _refuse("dunder", f"class pattern attribute {attr!r}: private, dunder and introspection "
                        "attributes are not allowed", node)  # fmt: skip
    for name in _bound_names(node):
        if _is_dunder(name):
            _refuse("dunder", f"dunder names ({name!r}) are not allowed", node)


def _check_import(node: ast.Import | ast.ImportFrom, allowed: set[str]) -> None:
    if isinstance(node, ast.ImportFrom):
        if node.level:
            _refuse("import", "relative imports are not allowed", node)
        if node.module == FUTURE and all(alias.name in FUTURE_FEATURES for alias in node.names):
            return
        names = [node.module or ""]
    else:
        names = [alias.name for alias in node.names]
    for name in names:
        if name not in allowed:
            _refuse("import", f"import of {name!r} is not allowed; allowed: {', '.join(sorted(allowed))}", node)
    if isinstance(node, ast.ImportFrom):  # ``*`` brings the proxy's public names, as ``import m`` would
        for alias in node.names:
            if alias.name.startswith("_"):
                _refuse("import", f"'from {node.module} import {alias.name}' is not allowed", node)


def _check_template(node: ast.Constant) -> None:
    """A string constant that ``str.format``/``format_map`` would read attributes from, by its replacement fields.

    Only attribute fields (``{0.attr}``) reach attributes; an index (``{0[__key__]}``) is an item lookup, and
    text around the fields is text. Fields are read as ``str.format`` reads them, left to right, and a
    template that turns out malformed still had its earlier fields evaluated, so those count.
    """
    if isinstance(node.value, str):
        text = node.value
    elif isinstance(node.value, bytes):  # a template once decoded
        text = node.value.decode("latin-1")
    else:
        return
    if "{" not in text:
        return
    for attr in _template_attributes(text):
        rule = _attribute_rule(attr)
        if rule == "dunder":
            _refuse("dunder", f"format field attribute {attr!r}: private and dunder attributes are not allowed",
                    node)  # fmt: skip
        if rule == "introspection":
            _refuse("introspection", f"format field attribute {attr!r} reaches frames or code objects", node)


def _template_attributes(text: str, depth: int = 0) -> Iterator[str]:
    """The attribute names in a format template's replacement fields, nested ones (``{0:{1.x}}``) included."""
    try:
        for _, field, spec, _ in _string.formatter_parser(text):
            if field is not None:
                _, rest = _string.formatter_field_name_split(field)
                yield from (key for is_attribute, key in rest if is_attribute and isinstance(key, str))
            if spec and depth < 2:
                yield from _template_attributes(spec, depth + 1)
    except ValueError:  # malformed from here on: str.format stops here too
        return


def _check_builtin_lookups(tree: ast.Module) -> None:
    """``forbidden-name``: a lookup of a FORBIDDEN_NAMES name that no binding of the program's own answers.

    The compiler has already resolved every name by Python's scoping rules: a local, a parameter or a
    closure's variable is a fast or cell lookup; only a global lookup can fall through to the builtins,
    and it does when the module never binds that name (at top level, or through ``global``).
    """
    try:
        with warnings.catch_warnings():  # the compiler's SyntaxWarnings are the worker's to show, not the parent's
            warnings.simplefilter("ignore")
            module = compile(tree, "<program>", "exec", flags=COMPILE_FLAGS, dont_inherit=True)
    except SyntaxError as exc:
        raise ProgramError("syntax", "syntax", exc.msg or "invalid syntax", exc.lineno) from None
    except (RecursionError, MemoryError, ValueError):
        raise ProgramError("syntax", "syntax", "too deeply nested to compile; flatten the nesting") from None
    bound: set[str] = set()
    lookups: list[tuple[str, int | None]] = []
    pending = [module]
    while pending:
        code = pending.pop()
        pending.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
        for instruction in dis.get_instructions(code):
            name = instruction.argval
            if instruction.opname == "STORE_GLOBAL" or (instruction.opname == "STORE_NAME" and code is module):
                bound.add(name)
            elif instruction.opname in _GLOBAL_LOADS and name in FORBIDDEN_NAMES:
                positions = getattr(instruction, "positions", None)
                lookups.append((name, positions.lineno if positions else None))
    for name, line in sorted(lookups, key=lambda lookup: lookup[1] or 0):
        if name not in bound:
            raise ProgramError("policy", "forbidden-name", f"{name!r} reaches the interpreter and is not allowed "
                               "(a name of your own is fine: bind it before use)", line)  # fmt: skip


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
    allowed = frozenset(allowed) | {FUTURE}  # what ``from __future__ import annotations`` imports

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
    exec(compile(program.source, f"<program {program.sha}>", "exec", flags=COMPILE_FLAGS, dont_inherit=True), namespace)
    fn = namespace.get(strategy.function)
    if not callable(fn):
        raise ProgramError("policy", "signature", f"{strategy.function} is not a function after running the module")
    return fn


def load(completion: str, strategy: StrategySpec) -> Program:
    """``extract`` then ``check``: a completion in, a checked Program (or ProgramError) out."""
    return check(extract(completion, strategy.function), strategy)
