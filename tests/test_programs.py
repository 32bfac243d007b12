"""Strategy programs: extraction from completions, the AST rules (each named), the locked-down build."""

from __future__ import annotations

import ast

import pytest

from stratagem.agents import programs
from stratagem.agents.extraction import MAX_COMPLETION_CHARS, MAX_PARSE_ATTEMPTS, extract
from stratagem.agents.programs import ProgramError, build, check, load
from stratagem.envs.spec import StrategySpec, resolve

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
        ("from math import *\ndef strategy(board):\n    return '0'", "import"),
        ("def strategy(board):\n    return __import__('os').system('id')", "dunder"),
        ("def strategy(board):\n    return eval('1')", "forbidden-name"),
        ("def strategy(board):\n    exec('x = 1')\n    return '0'", "forbidden-name"),
        ("def strategy(board):\n    return open('/etc/passwd').read()", "forbidden-name"),
        ("def strategy(board):\n    return compile('1', 'f', 'eval')", "forbidden-name"),
        ("def strategy(board):\n    return globals()", "forbidden-name"),
        ("def strategy(board):\n    return getattr(board, 'copy')", "forbidden-name"),
        ("def strategy(board):\n    return type(board)", "forbidden-name"),
        ("def strategy(board):\n    return board.__class__.__bases__", "dunder"),
        ("def strategy(board):\n    return __builtins__", "dunder"),
        ("import random\ndef strategy(board):\n    return random._os.getcwd()", "dunder"),
        ("def strategy(board):\n    return (x for x in []).gi_frame.f_back.f_globals", "introspection"),
        ("def strategy(board):\n    return '{0.gi_frame}'.format((x for x in []))", "introspection"),
        ("def strategy(board):\n    return '{0.__class__}'.format(board)", "dunder"),
        ("def strategy(board):\n    return b'__class__'", "dunder"),
        ("class Player:\n    pass\ndef strategy(board):\n    return '0'", "class"),
        ("import math\nprint('hi')\ndef strategy(board):\n    return '0'", "top-level"),
        ("for i in range(3):\n    pass\ndef strategy(board):\n    return '0'", "top-level"),
        ("def strategy(board, extra):\n    return '0'", "signature"),
        ("def strategy(*args):\n    return '0'", "signature"),
        ("async def strategy(board):\n    return '0'", "signature"),
        ("def play(board):\n    return '0'", "signature"),
        ("import functools\n@functools.lru_cache\ndef strategy(board):\n    return '0'", "signature"),
        ("def strategy(__board):\n    return '0'", "dunder"),
        # a class pattern reads attributes by the names it gives: the same rules as attribute access
        ("def strategy(board):\n    match board:\n        case object(__class__=c):\n            return c", "dunder"),
        ("def strategy(board):\n    match board:\n        case object(_hidden=h):\n            return h", "dunder"),
        ("def strategy(board):\n    match board:\n        case object(gi_frame=f):\n            return f", "dunder"),
        ("def strategy(board):\n    match board:\n        case [*__rest]:\n            return '0'", "dunder"),
        ("def strategy(board):\n    return dict(__class__=board)", "dunder"),
    ],
)
def test_each_rule_names_itself(source, rule):
    with pytest.raises(ProgramError) as info:
        check(source, STRATEGY)
    assert info.value.kind == "policy" and info.value.rule == rule, str(info.value)
    assert info.value.line is None or info.value.line >= 1


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
