"""An honest corpus: programs a sandbox must never mistake for cheats, for every environment with a strategy function.

Each environment has a few honest base strategies (the examples', the baselines', the default model's
training corpus for 2048), and every base gets the same unusual-but-honest variants (``VARIANTS``): builtins
shadowed by names of the program's own, text that looks like dunders or frame attributes, deep recursion
within the limit, a lot of memory, heavy compute, every allowed module (together and one at a time), and
other idioms a generated program may use. ``test_honest_corpus.py`` plays them all sandboxed and unsandboxed.

A variant changes how a program computes, never what it answers: each wraps a base strategy and returns the
base's answer, so the variants of a good base play exactly as well, and any difference between sandboxed
and unsandboxed play is the sandbox's doing. Nothing here may depend on a process's hash seed (no iteration
over a set of strings): the sandbox's worker and the test process hash differently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stratagem.agents.baselines import HEURISTIC_2048, MATMUL_FAST, MATMUL_TEXTBOOK
from stratagem.rl.corpus import generate_samples

EXAMPLES = Path(__file__).parents[1] / "examples"


def example(name: str) -> str:
    return (EXAMPLES / name).read_text()


@dataclass(frozen=True)
class Honest:
    name: str
    source: str


# --- the variants -------------------------------------------------------------------------------------------
# A variant is (name, top-level code, lines run at the start of every call). ``{fn}``/``{args}``/``{params}`` in
# top-level code are filled in per environment. Lines at the start of a call use only their own names.

FUTURE = """from __future__ import annotations


def typed(rows: List[List[int]], cache: Dict[str, Any] | None = None) -> Optional[int]:
    return len(rows)
"""

SHADOWED_HELPER = '''
def shadows(dir, type=2, *input, **vars):
    """Every way to bind a builtin's name: parameters, locals, targets, aliases, handlers, walrus, match."""
    id = dir + type
    open = [id for id in range(3)]
    eval = {exec: 1 for exec in "ab"}
    for compile in open:
        pass
    try:
        {}[0]
    except KeyError as globals:
        locals = str(globals)
    if (getattr := id) > 0:
        setattr = getattr + 1
    delattr = lambda help, breakpoint=1: help + breakpoint
    match [id, compile]:
        case [max, *min]:
            sum = max + min[0]
    len = sum + setattr + delattr(1) + eval["a"] + int(locals) + (1 if input else 0) + (1 if vars else 0)
    return len


def eval(board):
    """A helper of the program's own, named like a builtin, at top level."""
    return 1


def vars():
    global input
    input = 7
    return input
'''

DUNDER_TEXT = '''
"""A strategy with __dunder__-like text: __init__, __class__, __dict__, f_back, gi_frame, co_code, mro.

It reads f_globals of nothing and only talks about {0.__class__} in this docstring.
"""

NOTE = "__main__ __builtins__ __import__ f_back gi_frame tb_frame __subclasses__ mro()"
KEYS = {"__class__": 1, "__init__": 2, "f_back": 3}
BYTES = b"__dict__ {0} f_locals"


def describe(x):
    """Format templates with public attributes and indexes only: {0.real} and {0[__class__]} are fine."""
    return "{0.real}|{1[__class__]}|{2}__{3}".format(x, KEYS, "a", "b") + "%(__name__)s" % {"__name__": NOTE[:8]}
'''

RECURSION = """
def depth(n):
    return 0 if n == 0 else 1 + depth(n - 1)
"""

HEAVY = """
WARMED = []


def warm_up():
    if not WARMED:
        WARMED.append(sum(i * i for i in range(1_500_000)))
    return sum(range(2_000))
"""

MEMORY = """
HELD = []


def hold():
    if not HELD:
        block = [0] * 20_000_000
        HELD.append(len(block))
        del block
        HELD.append(len(bytearray(64 * 2**20)))
    return HELD[0]
"""

GENERATORS = """
def evens(n):
    yield from (i for i in range(n) if i % 2 == 0)


def counter():
    count = 0

    def tick():
        nonlocal count
        count += 1
        return count

    return tick


TICK = counter()
"""

STATE = """
CALLS = 0
SEEN = {}


def remember(key):
    global CALLS
    CALLS += 1
    SEEN[key] = SEEN.get(key, 0) + 1
    return CALLS
"""

PRIVATE_NAMES = """
__cache = {}
_helpers = []


def __twice(x):
    return 2 * x


def _once(x):
    __cache[x] = __twice(x)
    return __cache[x]
"""

# Lines that use each allowed module, none of them changing the answer (``random`` advances the program's own
# stream, which the unsandboxed play seeds the same way). ``typing`` only in annotations and at run time without
# subscription here: subscriptions are test_honest_corpus.py's TYPING_AT_RUN_TIME.
MODULE_LINES = {
    "math": "used = math.floor(math.sqrt(16.0)) + math.gcd(12, 8) + math.isqrt(10) + math.comb(5, 2)",
    "itertools": "used = len(list(itertools.product([1, 2], repeat=2))) + sum(itertools.accumulate([1, 2])) "
    "+ len(list(itertools.islice(itertools.count(), 3))) + len(list(itertools.permutations('abc', 2)))",
    "functools": "used = functools.reduce(lambda a, b: a + b, [1, 2, 3]) + functools.partial(max, 2)(3) "
    "+ cached(10) + sorted([3, 1], key=functools.cmp_to_key(lambda a, b: a - b))[0]",
    "collections": "used = collections.Counter('abca').most_common(1)[0][1] + len(collections.deque([1, 2], "
    "maxlen=1)) + len(collections.defaultdict(list)['k']) + len(collections.OrderedDict(a=1))",
    "heapq": "heap = [5, 1, 3]\nheapq.heapify(heap)\nheapq.heappush(heap, 0)\nused = heapq.heappop(heap) "
    "+ sum(heapq.nsmallest(2, heap)) + sum(heapq.nlargest(1, heap, key=lambda v: -v))",
    "bisect": "ordered = [1, 3, 5]\nbisect.insort(ordered, 4)\nused = bisect.bisect_left(ordered, 4) "
    "+ bisect.bisect(ordered, 9)",
    "typing": "used: typing.Dict[str, int] = {}\nused = typing.cast(int, 3) + (typing.get_origin(typing.List) is list)"
    " + annotated([[1]])",
    "copy": "used = len(copy.deepcopy([[1, 2], {'a': [3]}])) + len(copy.copy([1]))",
    "statistics": "used = statistics.mean([1, 2, 3]) + statistics.median([3, 1, 2]) + statistics.pstdev([1.0, 2.0]) "
    "+ statistics.mode([1, 1, 2]) + len(statistics.quantiles([1, 2, 3, 4]))",
    "random": "used = random.random() + random.choice([1, 2, 3]) + random.Random(7).randint(1, 6) "
    "+ len(random.sample(range(10), 3))",
}
# Top-level helpers some MODULE_LINES need.
MODULE_HELPERS = {
    "functools": "@functools.lru_cache(maxsize=None)\ndef cached(n):\n"
    "    return n if n < 2 else cached(n - 1) + cached(n - 2)\n",
    "typing": "def annotated(rows: typing.List[typing.List[int]]) -> typing.Optional[int]:\n    return len(rows)\n",
}


def module_variant(modules: list[str]) -> tuple[str, str]:
    """(top-level code, lines of each call) using every module of ``modules``."""
    top = "import " + ", ".join(modules) + "\n\n" + "\n".join(MODULE_HELPERS[m] for m in modules if m in MODULE_HELPERS)
    lines = "\n".join(MODULE_LINES[m] for m in modules)
    return top, lines


Variant = tuple[str, str, str]  # (name, top-level code, lines at the start of each call)


def variants(imports: list[str]) -> list[Variant]:
    """Every unusual-but-honest variant, for an environment whose programs may import ``imports``."""
    every_top, every_lines = module_variant(imports)
    found: list[Variant] = [
        ("builtins shadowed by names of its own", SHADOWED_HELPER, "input = dir = type = id = shadows(1)\n"
         "format = max(shadows(2), vars(), eval(None))"),
        ("dunder-like text in strings and docstrings", DUNDER_TEXT,
         "text = describe(3) + NOTE + str(BYTES) + str(KEYS['__init__'])\n'''A string statement: {0.__class__}.'''"),
        ("deep recursion within the limit", RECURSION, "depth(850)"),
        ("a lot of memory", MEMORY, "hold()"),
        ("heavy compute", HEAVY, "warm_up()"),
        ("every allowed module", every_top, every_lines),
        ("generators and closures", GENERATORS, "seen = sum(evens(10)) + TICK()"),
        ("module state and a global statement", STATE, "remember('call')"),
        ("private-style names of its own", PRIVATE_NAMES, "_once(3)"),
        ("exceptions caught inside", "", "try:\n    {}['missing']\nexcept KeyError:\n    pass\n"
         "try:\n    1 / 0\nexcept (ZeroDivisionError, ValueError) as error:\n    message = str(error)"),
        ("match, walrus and lambdas", "", "match [1, (2, 3)]:\n"
         "    case [first, (second, *rest)] if (n := first + second):\n"
         "        total = (lambda a, b=1: a + b)(n)\n    case _:\n        total = 0"),
        ("a star import", "from math import *\n", "root = floor(sqrt(17)) + ceil(pi)"),
        ("from __future__ import annotations", FUTURE, "typed([[1]])"),
        ("f-strings and formats", "", "x = 3.25\nshown = f'{x:.1f} {x!r:>8} __{x}__ {{x}}' + format(x, '>10') "
         "+ '{:>{}}'.format('a', 4)"),
    ]  # fmt: skip
    found += [(f"the module {m} alone", *module_variant([m])) for m in imports]
    return found


def apply(base: str, function: str, args: list[str], variant: Variant) -> str:
    """``base`` with the variant's top-level code before it and its lines at the start of every call."""
    name, top, lines = variant
    definition = f"def {function}({', '.join(args)}):\n"
    assert base.count(definition) == 1, (name, definition)
    body = "".join(f"    {line}\n" for line in lines.splitlines())
    future, rest = (top, "") if top.startswith("from __future__") else ("", top)
    return future + rest + "\n\n" + base.replace(definition, definition + body, 1)


def with_parameters_named_like_builtins(base: str, function: str, args: list[str]) -> str:
    """The base renamed, and the strategy's parameters named like builtins (each name the program's own)."""
    names = ["input", "type", "id", "dir", "vars", "open"][: len(args)]
    wrapper = f"def {function}({', '.join(names)}):\n    return base_{function}({', '.join(names)})\n"
    return base.replace(f"def {function}(", f"def base_{function}(") + "\n\n" + wrapper


def family(env: str, bases: dict[str, str], function: str, args: list[str], imports: list[str],
           varied: str) -> list[Honest]:  # fmt: skip
    """Every base as it is, plus every variant (and the builtin-named parameters) of the base ``varied``."""
    found = [Honest(f"{env}: {name}", source) for name, source in bases.items()]
    base = bases[varied]
    found += [Honest(f"{env}: {v[0]}", apply(base, function, args, v)) for v in variants(imports)]
    found.append(
        Honest(f"{env}: parameters named like builtins", with_parameters_named_like_builtins(base, function, args))
    )
    return found


# --- the environments -----------------------------------------------------------------------------------------
ALL_MODULES = ["bisect", "collections", "copy", "functools", "heapq", "itertools", "math", "random", "statistics",
               "typing"]  # fmt: skip

FIRST_LEGAL = "def strategy(observation):\n    return observation['legal_actions'][0]['id']\n"
RANDOM_LEGAL = (
    "import random\n\n\ndef strategy(observation):\n    return random.choice(observation['legal_actions'])['name']\n"
)
LAST_BY_NAME = (
    "def strategy(observation):\n    names = [a['name'] for a in observation['legal_actions']]\n    return max(names)\n"
)
CONNECT_FOUR = '''"""Connect four: take a winning column, block the opponent's, else the most central."""


def rows(observation):
    return [line for line in observation["observation_string"].split("\\n") if line.strip()]


def wins(grid, column, mark):
    """Whether dropping ``mark`` in ``column`` makes four in a row (grid rows top first)."""
    grid = [list(r) for r in grid]
    for r in range(len(grid) - 1, -1, -1):
        if grid[r][column] == ".":
            grid[r][column] = mark
            break
    else:
        return False
    height, width = len(grid), len(grid[0])
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for r in range(height):
            for c in range(width):
                cells = [(r + i * dr, c + i * dc) for i in range(4)]
                if all(0 <= y < height and 0 <= x < width and grid[y][x] == mark for y, x in cells):
                    return True
    return False


def strategy(observation):
    grid = rows(observation)
    me = "x" if observation["player"] == 0 else "o"
    them = "o" if me == "x" else "x"
    free = [a["id"] for a in observation["legal_actions"]]
    for mark in (me, them):
        for column in free:
            if wins(grid, column, mark):
                return column
    return min(free, key=lambda column: abs(column - 3))
'''
KUHN = '''def strategy(observation):
    """Bet or call with the king, pass with the jack, check-call with the queen (card from the string)."""
    card = observation["observation_string"][0]
    names = {a["name"]: a["id"] for a in observation["legal_actions"]}
    if card == "2" and "Bet" in names:
        return names["Bet"]
    if card == "0" and "Pass" in names:
        return names["Pass"]
    return observation["legal_actions"][-1]["id"]
'''
HIGHER_LOWER = {
    "bisection": example("custom_env/bisect_strategy.py"),
    "counting up": example("custom_env/count_up_strategy.py"),
    "bisection with math": "import math\n\n\ndef strategy(high, history):\n    low, top = 1, high\n"
    "    for guess, hint in history:\n        if hint == 'higher':\n            low = guess + 1\n        else:\n"
    "            top = guess - 1\n    return math.floor((low + top) / 2)\n",
    "bisection by recursion": "def narrow(low, top, history):\n    if not history:\n        return (low + top) // 2\n"
    "    (guess, hint), rest = history[0], history[1:]\n    if hint == 'higher':\n"
    "        return narrow(guess + 1, top, rest)\n    return narrow(low, guess - 1, rest)\n\n\n"
    "def strategy(high, history):\n    return narrow(1, high, history)\n",
}
MATMUL = {
    "rows": example("strategies/matmul_rows.py"),
    "textbook": MATMUL_TEXTBOOK,
    "fast baseline": MATMUL_FAST,
    "zip of the transpose": "def matmul(A, B):\n    columns = list(zip(*B))\n"
    "    return [[sum(a * b for a, b in zip(row, col)) for col in columns] for row in A]\n",
    "itertools and functools": "import functools\nimport itertools\n\n\ndef dot(row, col):\n"
    "    return functools.reduce(lambda acc, ab: acc + ab[0] * ab[1], zip(row, col), 0.0)\n\n\n"
    "def matmul(A, B):\n    columns = list(zip(*B))\n"
    "    return [list(itertools.starmap(dot, ((row, col) for col in columns))) for row in A]\n",
    "by recursion over rows": "def matmul(A, B):\n    if not A:\n        return []\n"
    "    head = [sum(a * b for a, b in zip(A[0], col)) for col in zip(*B)]\n    return [head] + matmul(A[1:], B)\n",
}


def corpus_2048(n: int = 60, seed: int = 11) -> list[Honest]:
    """The default model's training corpus (every family, the bad one too: honest, if bad), and the unusual."""
    found = [Honest(f"2048 corpus {i} ({s.family}/{s.variant})", s.source)
             for i, s in enumerate(generate_samples(n, seed))]  # fmt: skip
    bases = {"corner": example("strategies/corner_2048.py"), "heuristic baseline": HEURISTIC_2048}
    return found + family("2048", bases, "strategy", ["board"], ALL_MODULES, varied="corner")


def corpus_atari(game: str) -> list[Honest]:
    bases = {"tracker": example(f"strategies/{game}_tracker.py"), "random": example(f"strategies/{game}_random.py")}
    return family(game, bases, "strategy", ["obs"], ALL_MODULES, varied="tracker")


def corpus_openspiel(game: str) -> list[Honest]:
    common = {"first legal": FIRST_LEGAL, "random legal, by name": RANDOM_LEGAL, "last name": LAST_BY_NAME}
    if game == "tic_tac_toe":
        bases = {"heuristic": example("strategies/tictactoe_heuristic.py"), **common}
        return family(game, bases, "strategy", ["observation"], ALL_MODULES, varied="heuristic")
    if game == "connect_four":
        bases = {"win, block, centre": CONNECT_FOUR, **common}
        return family(game, bases, "strategy", ["observation"], ALL_MODULES, varied="win, block, centre")
    bases = {"card rule": KUHN, **common}  # a few unusual ones: the game differs, the checks do not
    return family(game, bases, "strategy", ["observation"], ["math", "random"], varied="card rule")


def corpus_matmul() -> list[Honest]:
    return family("matmul", MATMUL, "matmul", ["A", "B"], ["functools", "itertools", "math"], varied="rows")


def corpus_higher_lower() -> list[Honest]:
    return family("higher-lower", HIGHER_LOWER, "strategy", ["high", "history"], ["math"], varied="bisection")


CORPORA: dict[str, Callable[[], list[Honest]]] = {
    "2048": corpus_2048,
    "pong": lambda: corpus_atari("pong"),
    "breakout": lambda: corpus_atari("breakout"),
    "tic_tac_toe": lambda: corpus_openspiel("tic_tac_toe"),
    "connect_four": lambda: corpus_openspiel("connect_four"),
    "kuhn_poker": lambda: corpus_openspiel("kuhn_poker"),
    "matmul": corpus_matmul,
    "higher-lower": corpus_higher_lower,
}
