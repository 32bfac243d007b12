"""Strategy programs: extraction from completions, the AST rules (each named), the locked-down build."""

from __future__ import annotations

import ast

import pytest

from stratagem.agents import programs
from stratagem.agents.extraction import MAX_COMPLETION_CHARS, MAX_PARSE_ATTEMPTS, extract
from stratagem.agents.programs import ProgramError, build, check, load
from stratagem.envs.spec import SAFE_IMPORTS, StrategySpec, resolve

STRATEGY = resolve("2048").strategy  # def strategy(board) -> "0".."3"

GOOD = """import math
from collections import Counter

WEIGHTS = [4, 3, 2, 1]

def _empty(board):
    return sum(row.count(0) for row in board)

def strategy(board):
    scores = Counter()
    for move in range(4):
        scores[move] = math.log2(1 + _empty(board)) * WEIGHTS[move]
    return str(max(scores, key=scores.get))
"""


def test_extracts_the_last_fenced_block_that_defines_the_function():
    completion = (
        f"Here is a helper:\n```python\ndef helper():\n    return 1\n```\nAnd the answer:\n```python\n{GOOD}```\nDone."
    )
    assert extract(completion, "strategy") == GOOD


def test_extracts_bare_code_and_drops_trailing_prose():
    completion = "Sure!\n" + GOOD + "\nThis strategy prefers empty boards. It works because\n"
    assert extract(completion, "strategy").strip() == GOOD.strip()


def test_extracts_a_truncated_fence_and_drops_a_cut_off_last_line():
    completion = "```python\ndef strategy(board):\n    return '0'\n\ndef other(x):\n    return (x +"
    assert extract(completion, "strategy") == "def strategy(board):\n    return '0'\n"


def test_no_code_and_syntax_errors_are_reported():
    with pytest.raises(ProgramError, match="no-code") as info:
        extract("I would move left, then up.", "strategy")
    assert info.value.kind == "syntax"
    with pytest.raises(ProgramError) as info:
        extract("```python\ndef strategy(board)\n    return 1\n```", "strategy")
    assert (info.value.kind, info.value.rule) == ("syntax", "syntax")


def test_a_good_program_builds_and_plays():
    program = load(f"```python\n{GOOD}```", STRATEGY)
    fn = build(program, STRATEGY)
    assert fn([[0, 2, 0, 0], [0] * 4, [0] * 4, [2, 0, 0, 0]]) in {"0", "1", "2", "3"}
    assert len(program.sha) == 12 and program.function == "strategy"


def test_imported_modules_are_proxies_without_module_attributes():
    source = "import random\nimport typing\n\ndef strategy(board):\n    return (random, typing)\n"
    random_proxy, typing_proxy = build(check(source, STRATEGY), STRATEGY)(None)
    assert callable(random_proxy.choice) and not hasattr(typing_proxy, "sys")
    assert not hasattr(random_proxy, "_os")
    # No door to dunders by run-time names (update_wrapper's ``updated``), nor a metaclass to call.
    source = "import functools\nimport typing\n\ndef strategy(board):\n    return (functools, typing)\n"
    functools_proxy, typing_proxy = build(check(source, STRATEGY), STRATEGY)(None)
    assert not hasattr(functools_proxy, "update_wrapper") and not hasattr(functools_proxy, "wraps")
    assert callable(functools_proxy.reduce) and callable(functools_proxy.lru_cache)
    assert not hasattr(typing_proxy, "ABCMeta") and hasattr(typing_proxy, "List")


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("import os\ndef strategy(board):\n    return os.system('id')", "import"),
        ("import numpy as np\ndef strategy(board):\n    return '0'", "import"),
        ("from importlib import import_module\ndef strategy(board):\n    return '0'", "import"),
        ("import collections.abc\ndef strategy(board):\n    return '0'", "import"),
        ("from random import _os\ndef strategy(board):\n    return '0'", "import"),
        ("from os import *\ndef strategy(board):\n    return '0'", "import"),
        ("import __future__\ndef strategy(board):\n    return '0'", "import"),
        ("from __future__ import annotations, print\ndef strategy(board):\n    return '0'", "import"),
        ("def strategy(board):\n    return __import__('os').system('id')", "dunder"),
        ("def strategy(board):\n    return eval('1')", "forbidden-name"),
        ("def strategy(board):\n    exec('x = 1')\n    return '0'", "forbidden-name"),
        ("def strategy(board):\n    return open('/etc/passwd').read()", "forbidden-name"),
        ("def strategy(board):\n    return compile('1', 'f', 'eval')", "forbidden-name"),
        ("def strategy(board):\n    return globals()", "forbidden-name"),
        ("def strategy(board):\n    return getattr(board, 'copy')", "forbidden-name"),
        ("def strategy(board):\n    return vars(board)", "forbidden-name"),
        ("def strategy(board):\n    return input()", "forbidden-name"),
        ("def strategy(board):\n    return [getattr for _ in board]", "forbidden-name"),
        ("def helper(open):\n    return open\ndef strategy(board):\n    return open('f')", "forbidden-name"),
        ("def strategy(board):\n    def inner():\n        return eval('1')\n    return inner()", "forbidden-name"),
        ("def strategy(board):\n    return board.__class__.__bases__", "dunder"),
        ("def strategy(board):\n    return __builtins__", "dunder"),
        ("import random\ndef strategy(board):\n    return random._os.getcwd()", "dunder"),
        ("def strategy(board):\n    return (x for x in []).gi_frame.f_back.f_globals", "introspection"),
        ("def strategy(board):\n    return '{0.gi_frame}'.format((x for x in []))", "introspection"),
        ("def strategy(board):\n    return '{0.__class__}'.format(board)", "dunder"),
        ("def strategy(board):\n    return b'{0.__class__}'.decode().format(board)", "dunder"),
        ("def strategy(board):\n    return '{0.real} {1._inst}'.format(1, board)", "dunder"),
        ("def strategy(board):\n    return '{0:{1.__class__}}'.format(1, board)", "dunder"),
        ("def strategy(board):\n    return '{x.__class__}'.format_map({'x': board})", "dunder"),
        ("def strategy(board):\n    return '{0.f_back} {'.format(board)", "introspection"),
        ("def strategy(board):\n    return f'{{0.gi_frame}}'.format(board)", "introspection"),
        ("T = '{0.__class__}'\ndef strategy(board):\n    return T.format(board)", "dunder"),
        ("class Player:\n    pass\ndef strategy(board):\n    return '0'", "class"),
        ("import math\nprint('hi')\ndef strategy(board):\n    return '0'", "top-level"),
        ("for i in range(3):\n    pass\ndef strategy(board):\n    return '0'", "top-level"),
        ("def strategy(board, extra):\n    return '0'", "signature"),
        ("def strategy(*args):\n    return '0'", "signature"),
        ("async def strategy(board):\n    return '0'", "signature"),
        ("def play(board):\n    return '0'", "signature"),
        ("import functools\n@functools.lru_cache\ndef strategy(board):\n    return '0'", "signature"),
        ("def strategy(__board__):\n    return '0'", "dunder"),
        ("import math as __builtins__\ndef strategy(board):\n    return '0'", "dunder"),
        ("def strategy(board):\n    __builtins__ = {}\n    return '0'", "dunder"),
        ("def strategy(board):\n    return (lambda *__args__: 1)()", "dunder"),
        ("def strategy(board):\n    try:\n        pass\n    except Exception as __e__:\n        pass", "dunder"),
        ("def strategy(board):\n    return __name__", "dunder"),
        ("def strategy(board):\n    return '0'\nif __name__ == '__main__':\n    pass\nelse:\n    x = 1", "top-level"),
        ("def strategy(board):\n    return '0'\nif __name__ != '__main__':\n    x = 1", "top-level"),
        # a class pattern reads attributes by the names it gives: the same rules as attribute access
        ("def strategy(board):\n    match board:\n        case object(__class__=c):\n            return c", "dunder"),
        ("def strategy(board):\n    match board:\n        case object(_hidden=h):\n            return h", "dunder"),
        ("def strategy(board):\n    match board:\n        case object(gi_frame=f):\n            return f", "dunder"),
        ("def strategy(board):\n    match board:\n        case [*__rest__]:\n            return '0'", "dunder"),
        ("def strategy(board):\n    match board:\n        case {**__rest__}:\n            return '0'", "dunder"),
    ],
)
def test_each_rule_names_itself(source, rule):
    with pytest.raises(ProgramError) as info:
        check(source, STRATEGY)
    assert info.value.kind == "policy" and info.value.rule == rule, str(info.value)
    assert info.value.line is None or info.value.line >= 1


# Honest look-alikes of what the rules refuse: each is accepted, builds and returns what Python says it does.
# (source, what strategy(None) returns). The rules read name lookups, attribute access and format fields; text
# and a program's own bindings are not any of those.
HONEST_LOOKALIKES = [
    # forbidden-name: every way to bind a name of one's own, then use it
    ("def strategy(board):\n    eval = 3\n    return eval", 3),
    ("def strategy(input):\n    return input", None),
    ("def helper(type, id=2):\n    return type + id\ndef strategy(board):\n    return helper(1)", 3),
    ("def strategy(board):\n    for dir in range(3):\n        pass\n    return dir", 2),
    ("def strategy(board):\n    return [vars for vars in range(3)]", [0, 1, 2]),
    ("def strategy(board):\n    return {open: 1 for open in 'ab'}", {"a": 1, "b": 1}),
    ("import math as vars\ndef strategy(board):\n    return vars.floor(2.5)", 2),
    ("from math import floor as compile\ndef strategy(board):\n    return compile(2.5)", 2),
    ("def eval(board):\n    return 7\ndef strategy(board):\n    return eval(board)", 7),
    ("def strategy(board):\n    try:\n        {}[1]\n    except KeyError as input:\n        return str(input)", "1"),
    ("def strategy(board):\n    if (getattr := 4) > 3:\n        return getattr", 4),
    ("def strategy(board):\n    return [(setattr := x) for x in range(2)] + [setattr]", [0, 1, 1]),
    ("def strategy(board):\n    global vars\n    vars = 5\n    return vars", 5),
    ("def strategy(board):\n    help = 'me'\n    def inner():\n        return help\n    return inner()", "me"),
    ("def strategy(board):\n    return (lambda locals: locals * 2)(4)", 8),
    (
        "def strategy(board):\n    match [1, 2]:\n        case [globals, *exec]:\n            return globals + exec[0]",
        3,
    ),
    ("def strategy(board):\n    match {'a': 1}:\n        case {'a': breakpoint}:\n            return breakpoint", 1),
    ("LIMIT = 3\ndelattr = [LIMIT]\ndef strategy(board):\n    return delattr", [3]),
    # names absent from the curated builtins but no way around a rule: a NameError when called, not a cheat
    ("def strategy(board):\n    if board:\n        return type(board)\n    return 'no type needed'", "no type needed"),
    ("def strategy(id):\n    max = sum = 1\n    list = [max, sum]\n    return list", [1, 1]),
    # dunder: ``__x`` is an ordinary name outside a class (programs have none); text is text
    ("def strategy(__board):\n    return __board", None),
    ("def strategy(board):\n    match [1, 2]:\n        case [*__rest]:\n            return __rest", [1, 2]),
    ("def strategy(board):\n    return dict(__class__=1)", {"__class__": 1}),
    ("def strategy(board):\n    return {'__init__': 1, '__class__': b'__dict__'}['__init__']", 1),
    ('def strategy(board):\n    """Uses __slots__-like text, f_back and gi_frame, {0.__class__}."""\n    return 1', 1),
    ("def strategy(board):\n    '{0.__class__}: a discarded expression is no template'\n    return 2", 2),
    ("def strategy(board):\n    return '__' + 'init' + '__'", "__init__"),
    (
        "def strategy(board):\n    return '{0[__class__]} {x.real} {{0.__class__}}'.format({'__class__': 1}, x=2)",
        "1 2 {0.__class__}",
    ),
    ("def strategy(board):\n    return '{:>3}|{!r}'.format(7, 'f_back')", "  7|'f_back'"),
    ("def strategy(board):\n    return '%(__name__)s' % {'__name__': 'x'}", "x"),
    ("def strategy(board):\n    f_back = 1\n    gi_frame = 2\n    return f_back + gi_frame", 3),
    ("def strategy(board):\n    x = 5\n    return f'{x!r:>{3}} __{x}__'", "  5 __5__"),
    # import: a star import takes the proxy's public names; ``from __future__`` is a compiler directive
    ("from math import *\ndef strategy(board):\n    return floor(pi)", 3),
    (
        "from __future__ import annotations\nimport typing\n\ndef strategy(board: typing.List[int]) -> str:\n"
        "    return 'ok'",
        "ok",
    ),
]


@pytest.mark.parametrize("guard", ['__name__ == "__main__"', "'__main__' == __name__"])
def test_a_scripts_self_test_is_dropped_as_it_could_never_run_here(guard):
    source = (f"def strategy(board):\n    return 'ok'\n\n\nif {guard}:\n    print(strategy(input()))\n"
              "    open('x').read()\n")  # fmt: skip
    program = check(source, STRATEGY)
    assert program.source == "def strategy(board):\n    return 'ok'\n\n\n" and build(program, STRATEGY)(None) == "ok"


@pytest.mark.parametrize(("source", "expected"), HONEST_LOOKALIKES)
def test_honest_look_alikes_are_accepted_and_run(source, expected):
    assert build(check(source, STRATEGY), STRATEGY)(None) == expected


@pytest.mark.parametrize("name", ["type", "id", "dir", "hasattr", "object", "super", "memoryview", "exit"])
def test_an_absent_builtin_is_an_undefined_name_not_a_cheat(name):
    fn = build(check(f"def strategy(board):\n    return {name}(board)\n", STRATEGY), STRATEGY)
    with pytest.raises(NameError):
        fn(None)


def test_a_forbidden_name_is_reported_at_its_lookup():
    source = "def strategy(board):\n    vars = 1\n    return vars\n\ndef other(x):\n    return vars(x)\n"
    with pytest.raises(ProgramError) as info:
        check(source, STRATEGY)
    assert (info.value.rule, info.value.line) == ("forbidden-name", 6)


def test_no_module_proxy_offers_a_forbidden_name():
    """A star import binds the proxy's public names: none may be a builtin the rules refuse."""
    for name in SAFE_IMPORTS:
        assert not set(vars(programs._proxy(name))) & programs.FORBIDDEN_NAMES, name


def test_annotations_are_never_evaluated():
    """Compiled as under ``from __future__ import annotations``: a signature's names are text, looked up by no one."""
    source = "def strategy(board: eval) -> vars:\n    return 1\n"
    assert build(check(source, STRATEGY), STRATEGY)(None) == 1


def test_restricted_builtins_stop_what_the_ast_cannot_see():
    # Names the AST allows but that are simply absent at run time.
    fn = build(check("def strategy(board):\n    return license_plate\n", STRATEGY), STRATEGY)
    with pytest.raises(NameError):
        fn(None)
    fn = build(check("def strategy(board):\n    import math\n    return math.floor(2.5)\n", STRATEGY), STRATEGY)
    assert fn(None) == 2


def test_the_allowlist_comes_from_the_manifest():
    narrow = StrategySpec(function="strategy", args=["board"], imports=["math"])
    with pytest.raises(ProgramError, match="import of 'random' is not allowed; allowed: math"):
        check("import random\ndef strategy(board):\n    return '0'", narrow)
    with pytest.raises(ValueError, match="cannot be offered to programs"):
        StrategySpec(imports=["os"])


SMALL = "def strategy(board):\n    return '0'\n"


def test_extracts_bare_code_with_its_leading_constants_and_without_the_prose_before():
    constants = 'WEIGHTS = [\n    4, 3,\n    2, 1,\n]\nNAME: str = """\nmulti-line text\n"""\n\n'
    completion = "Here's my answer (it uses weights):\n\n" + constants + GOOD.split("\n\n", 1)[1] + "\nHope it helps!"
    assert extract(completion, "strategy") == "\n" + constants + GOOD.split("\n\n", 1)[1]
    # Prose that is not an assignment stops the constants, wherever it sits.
    completion = "X = 1\nprint(X)\nY = 2\n" + SMALL
    assert extract(completion, "strategy") == "Y = 2\n" + SMALL


def test_a_truncation_deep_in_a_block_keeps_the_longest_prefix_that_parses():
    kept = "def strategy(board):\n    best = '0'\n"
    completion = kept + "    for row in board:\n        if row:\n            for x in row:\n                if x > ("
    assert extract(completion, "strategy") == kept
    assert extract("```python\n" + SMALL + "x = 1```\nDone.", "strategy") == SMALL + "x = 1\n"  # a glued fence


def test_a_syntax_error_in_the_middle_is_reported_with_its_line():
    with pytest.raises(ProgramError) as info:
        extract("```python\ndef strategy(board):\n    x = = 1\n    return x\n```", "strategy")
    assert (info.value.kind, info.value.rule, info.value.line) == ("syntax", "syntax", 2)


@pytest.fixture
def parses(monkeypatch):
    """The ast.parse calls made by extraction and the checks, counted."""
    parse, calls = ast.parse, []

    def counting(*args, **kwargs):
        calls.append(1)
        return parse(*args, **kwargs)

    monkeypatch.setattr(programs.ast, "parse", counting)
    return calls


def test_an_over_long_completion_is_refused_before_any_parsing(parses):
    completion = f"```python\n{GOOD}```\n" + "x" * MAX_COMPLETION_CHARS
    with pytest.raises(ProgramError) as info:
        load(completion, STRATEGY)
    assert (info.value.kind, info.value.rule) == ("syntax", "too-long") and not parses
    assert f"{len(completion):,}" in info.value.message and f"{MAX_COMPLETION_CHARS:,}" in info.value.message
    assert extract("x" * (MAX_COMPLETION_CHARS - len(SMALL) - 1) + "\n" + SMALL, "strategy") == SMALL  # at the cap


@pytest.mark.parametrize(
    "nested",
    [
        "(" * 100_000,  # the tokenizer's limit: a SyntaxError
        "-" * 150_000 + "1",  # the parser's stack: MemoryError
        "not " * 45_000 + "1",
        "1+" * 90_000 + "1",  # building the ast objects: RecursionError
        "f" + "()" * 90_000,
    ],
    ids=["parentheses", "unary", "not", "binary", "calls"],
)
@pytest.mark.timeout(20)
def test_deep_nesting_is_a_syntax_error_not_a_crash(nested):
    source = f"def strategy(board):\n    return {nested}\n"
    for completion in (source, f"```python\n{source}```"):
        with pytest.raises(ProgramError) as info:
            load(completion, STRATEGY)
        assert info.value.kind == "syntax", str(info.value)
    for completion in (f"N = {nested}\n{SMALL}", f"{SMALL}N = {nested}"):  # dropped as prose, or reported
        try:
            assert load(completion, STRATEGY).source == SMALL
        except ProgramError as exc:
            assert exc.kind == "syntax", str(exc)
    with pytest.raises(ProgramError) as info:
        extract(nested, "strategy")
    assert info.value.kind == "syntax"


def test_a_null_byte_is_cut_like_trailing_prose():
    assert extract(SMALL + "\0 and the rest", "strategy") == SMALL
    with pytest.raises(ProgramError) as info:
        extract("def strategy(board):\n    return '\0'\n", "strategy")
    assert (info.value.kind, info.value.rule) == ("syntax", "syntax")


_CAP = MAX_COMPLETION_CHARS - 200  # room for the fixed parts around each repeated one
_NESTED_BLOCKS = "".join(" " * depth + "if x:\n" for depth in range(90))


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("```" * (_CAP // 3), None),  # fences on one line: quadratic for a backtracking regex
        (SMALL + "```" * (_CAP // 3), SMALL),
        ("```python\n" + SMALL + "```" * (_CAP // 3), SMALL),
        ("```python\n" + "\n" * _CAP, None),  # blank lines: quadratic for ^\s* under MULTILINE
        ("import math" + "\n" * _CAP, None),
        ("\n" * _CAP + SMALL, SMALL),
        (" \n" * (_CAP // 2) + SMALL, SMALL),
        (" " * _CAP + "\n" + SMALL, SMALL),
        ("```python\n" + SMALL + "x = (\n" + "1,\n" * 20_000, SMALL),  # one parse per line, dropped from the end
        (SMALL + "x = (\n" + "1,\n" * 20_000, SMALL),
        ("x = (\n" + "1,\n" * 20_000 + SMALL, SMALL),  # and the same before the code, as leading constants
        ("x = (\n" * (_CAP // 6) + SMALL, SMALL),
        ("x = 1\n" * (_CAP // 6) + SMALL, "x = 1\n" * (_CAP // 6) + SMALL),
        ("def strategy(\n" * (_CAP // 14), "syntax"),
        ("def strategy(board):\n" * (_CAP // 21), "syntax"),
        ("```python\n" + "def strategy(board):\n" * (_CAP // 21), "syntax"),
        (SMALL + _NESTED_BLOCKS, SMALL),  # a truncated stack of blocks: one line at a time, then the fallback
        ("```python\n" + SMALL + "if x:\n" * (_CAP // 6), SMALL),
        ("@decorator\n" * (_CAP // 11) + SMALL, "@decorator\n" * (_CAP // 11) + SMALL),
    ],
    ids=[
        "fences-only",
        "code-then-fences",
        "open-fence-then-fences",
        "fenced-newlines",
        "code-then-newlines",
        "newlines-then-code",
        "blank-lines-then-code",
        "spaces-then-code",
        "open-paren-after-fenced-code",
        "open-paren-after-code",
        "open-paren-before-code",
        "open-parens-before-code",
        "assignments-before-code",
        "open-defs",
        "bodiless-defs",
        "bodiless-defs-fenced",
        "nested-blocks",
        "bodiless-ifs",
        "decorators",
    ],
)
@pytest.mark.timeout(20)
def test_crafted_completions_cost_a_bounded_number_of_parses(parses, completion, expected):
    assert len(completion) <= MAX_COMPLETION_CHARS
    if expected is None or expected == "syntax":
        with pytest.raises(ProgramError) as info:
            extract(completion, "strategy")
        assert info.value.kind == "syntax" and info.value.rule == ("no-code" if expected is None else "syntax")
    else:
        assert extract(completion, "strategy").strip() == expected.strip()
    assert len(parses) <= 2 * MAX_PARSE_ATTEMPTS + 1


def test_an_ordinary_fenced_completion_is_parsed_once(parses):
    assert extract(f"Sure:\n```python\n{GOOD}```\nThat's all.", "strategy") == GOOD
    assert len(parses) == 1


def test_a_program_whose_text_warns_loads_without_printing_the_warning(recwarn):
    """``1if`` and ``"\\d"`` make Python's tokenizer warn; a model's program text must not print to the terminal."""
    completion = '```python\ndef strategy(board):\n    pattern = "\\d+"\n    return 1if board else 2\n```'
    program = load(completion, resolve("2048").strategy)
    assert program.source.startswith("def strategy")
    assert not [w for w in recwarn.list if issubclass(w.category, (SyntaxWarning, DeprecationWarning))]
