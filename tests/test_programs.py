"""Strategy programs: extraction from completions, the AST rules (each named), the locked-down build."""

from __future__ import annotations

import pytest

from stratagem.agents.programs import ProgramError, build, check, extract, load
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
