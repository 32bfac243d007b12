"""A procedurally generated corpus of 2048 strategy programs of widely varying quality.

The embedded default policy is a tiny causal LM primed by SFT on these programs; GRPO then
selects among what it samples. For that the corpus must be

- *learnable*: short programs (most 8-35 lines) written in one small vocabulary of idioms
  (``slide`` a row toward index 0, ``move`` the board by transposing and reversing, a move is
  legal when ``move(board, d) != board``, ``value`` scores a board), so a tiny model can
  learn to write valid Python that passes the sandbox's checks;
- *mixed*: mostly mediocre, with a tail of bad and of fairly good programs, so that a sampled
  GRPO group has spread in reward and there is room above the corpus to climb.

Four families, each with parameters (see ``program_families`` for the weights):

- ``bad``: no legality check. A constant move, a random move, or a greedy scorer that also
  considers moves that change nothing. Their games end early on an illegal move (reward ~0).
- ``weak_legal``: a random move among the legal ones (plain, shuffled, or biased toward one
  direction). Plays to the end, scores ~1,000.
- ``fixed_order``: the first legal move in a preference order. Orders that start with two
  perpendicular moves hold the big tiles in a corner (~2,000-3,800); orders that start with
  two opposite moves shake the board (~700-1,000).
- ``greedy``: one-step lookahead. Every legal move is simulated and the board it leads to is
  scored by some of: free cells, mergeable neighbours, the biggest tile in a corner, monotone
  rows/columns, a weighted grid, the tiles' squared mass, with varying weights. A program's
  mean ranges from ~1,400 to ~8,000 (median ~3,300); 2048 is rarely or never reached, far
  below the baseline ``HEURISTIC_2048`` (~20,000).
- ``lines``: the same lookahead, but the board is scored line by line (its 4 rows and 4
  columns) on the tiles' logarithms: free cells, merges, a penalty on non-monotone lines, and
  one on the tiles' mass, each with a weight drawn over a wide range (and a power on the logs).
  Most weights play like ``greedy``; the tuned region (free cells ~1.4, merges ~2.6,
  monotonicity ~0.3-0.6 on logs to the power 1.5) wins 20-30% of games (~15,000), so GRPO has
  numbers to tune on the way from ~2% to there.

Everything is drawn from one ``random.Random(seed)``, so a corpus is a pure function of
``(n, seed)``. ``benchmarks/corpus_quality.py`` plays a corpus in the real sandbox and prints
the quality of every family.
"""

from __future__ import annotations

import itertools
import random

from stratagem.rl.corpus.common import Sample, draw, program

# Family -> sampling weight. Mostly mediocre, and each family has an obvious next step up: bad programs
# need a legality check, random ones a plan, fixed orders a better order or a lookahead, greedy ones better weights.
FAMILIES: dict[str, float] = {"bad": 0.15, "weak_legal": 0.2, "fixed_order": 0.3, "greedy": 0.23, "lines": 0.12}

# One name per helper. A name defined at the top and used 20 lines later is a long-range dependency
# a tiny model gets wrong often (a first corpus with three name pairs had ~1 program in 8 calling a
# helper it never defined); the strategies' quality, which is what GRPO selects on, lies elsewhere.
HELPER_NAMES: tuple[tuple[str, str], ...] = (("slide", "move"),)
VALUE_NAMES: tuple[str, ...] = ("value",)
LEGAL_NAMES: tuple[str, ...] = ("legal",)
# Corners as (row, column), and the two moves that push tiles toward each: (vertical, horizontal).
CORNERS: dict[tuple[int, int], tuple[int, int]] = {(3, 0): (2, 3), (3, 3): (2, 1), (0, 0): (0, 3), (0, 3): (0, 1)}
ORDERS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(4)))


def generate(rng: random.Random) -> Sample:
    """One program: its family drawn by ``FAMILIES``, then the family's parameters, all from ``rng``."""
    return GENERATORS[draw(rng, FAMILIES)](rng)


# ---------------------------------------------------------------------------------------------
# Building blocks. Every program is assembled from these few snippets, so the whole corpus
# speaks one dialect: a tiny model learns the dialect, and GRPO learns what to say in it.


def slide_source(rng: random.Random, slide: str) -> str:
    """Slide one row toward index 0, merging each pair of equal tiles once (two spellings)."""
    if rng.random() < 0.75:
        return f"""def {slide}(row):
    tiles = [v for v in row if v]
    out = []
    while tiles:
        v = tiles.pop(0)
        if tiles and tiles[0] == v:
            v += tiles.pop(0)
        out.append(v)
    return out + [0] * (4 - len(out))
"""
    return f"""def {slide}(row):
    tiles = [v for v in row if v]
    out = []
    i = 0
    while i < len(tiles):
        if i + 1 < len(tiles) and tiles[i] == tiles[i + 1]:
            out.append(2 * tiles[i])
            i += 2
        else:
            out.append(tiles[i])
            i += 1
    return out + [0] * (4 - len(out))
"""


def move_source(slide: str, move: str) -> str:
    """The board after a move: up/down work on columns (transpose), right/down slide reversed rows."""
    return f"""def {move}(board, d):
    rows = [list(r) for r in zip(*board)] if d % 2 == 0 else [list(r) for r in board]
    if d in (1, 2):
        rows = [{slide}(r[::-1])[::-1] for r in rows]
    else:
        rows = [{slide}(r) for r in rows]
    return [list(r) for r in zip(*rows)] if d % 2 == 0 else rows
"""


def helpers(rng: random.Random) -> tuple[str, str]:
    """(source of the slide and move helpers, the move helper's name)."""
    slide, move = rng.choice(HELPER_NAMES)
    return slide_source(rng, slide) + "\n" + move_source(slide, move), move


def answer(rng: random.Random, expression: str) -> str:
    """A return statement for a direction held as an int: the contract takes the int or its str."""
    if rng.random() < 0.6:
        return f"return {expression}"
    return f'return "{expression}"' if expression.isdigit() else f"return str({expression})"


def draw_order(rng: random.Random) -> tuple[int, ...]:
    """A preference order: mostly a corner order (two perpendicular moves first), else any of the 24."""
    if rng.random() < 0.6:
        vertical, horizontal = rng.choice(list(CORNERS.values()))
        first = [vertical, horizontal] if rng.random() < 0.5 else [horizontal, vertical]
        rest = [d for d in range(4) if d not in first]
        rng.shuffle(rest)
        return (*first, *rest)
    return rng.choice(ORDERS)


# ---------------------------------------------------------------------------------------------
# Families.


def bad(rng: random.Random) -> Sample:
    """No legality check: the first move that changes nothing ends the game with a penalty."""
    kind = rng.choices(("constant", "random_any", "unchecked_greedy"), weights=(0.25, 0.4, 0.35))[0]
    if kind == "constant":
        d = rng.randrange(4)
        body = rng.choice((f'return "{d}"', f"return {d}", f"d = {d}\n    return str(d)"))
        return Sample("bad", kind, program(f"def strategy(board):\n    {body}"))
    if kind == "random_any":
        pool = rng.choice(('"0123"', '"0123"', '"3322"', '"0011"', '"2233"'))
        body = rng.choice(
            (f"return random.choice({pool})", "return random.randint(0, 3)", "return str(random.randrange(4))")
        )
        return Sample("bad", kind, program("import random", f"def strategy(board):\n    {body}"))
    # A greedy scorer over all four moves: a move that changes nothing scores like any other board.
    code, move = helpers(rng)
    constants, value, value_name = value_source(rng)
    strategy = f"""def strategy(board):
    {answer(rng, f"max(range(4), key=lambda d: {value_name}({move}(board, d)))")}
"""
    return Sample("bad", kind, program(*constants, code, value, strategy))


def weak_legal(rng: random.Random) -> Sample:
    """A random move among those that change the board: legal to the end, but no plan."""
    code, move = helpers(rng)
    legal = rng.choice(LEGAL_NAMES)
    kind = rng.choices(("choice", "shuffle", "biased"), weights=(0.45, 0.25, 0.3))[0]
    if kind == "shuffle":
        strategy = f"""def strategy(board):
    order = [0, 1, 2, 3]
    random.shuffle(order)
    for d in order:
        if {move}(board, d) != board:
            {answer(rng, "d")}
    return 0
"""
    else:
        strategy = f"""def strategy(board):
    {legal} = [d for d in range(4) if {move}(board, d) != board]
    if not {legal}:
        return 0
"""
        if kind == "biased":
            favourite, chance = rng.randrange(4), rng.choice((0.3, 0.5, 0.7))
            strategy += f"""    if {favourite} in {legal} and random.random() < {chance}:
        {answer(rng, str(favourite))}
"""
        strategy += f"    {answer(rng, f'random.choice({legal})')}\n"
    return Sample("weak_legal", kind, program("import random", code, strategy))


def fixed_order(rng: random.Random) -> Sample:
    """The first legal move in a fixed preference order; its quality is the order's."""
    code, move = helpers(rng)
    order = draw_order(rng)
    kind = rng.choices(("inline", "constant", "legal_list"), weights=(0.4, 0.35, 0.25))[0]
    constants = ()
    if kind == "legal_list":
        legal = rng.choice(LEGAL_NAMES)
        constants = (f"ORDER = {list(order)}",)
        strategy = f"""def strategy(board):
    {legal} = [d for d in range(4) if {move}(board, d) != board]
    for d in ORDER:
        if d in {legal}:
            {answer(rng, "d")}
    return 0
"""
    else:
        if kind == "constant":
            constants = (f"ORDER = {order}",)
        strategy = f"""def strategy(board):
    for d in {"ORDER" if kind == "constant" else order}:
        if {move}(board, d) != board:
            {answer(rng, "d")}
    return 0
"""
    return Sample("fixed_order", kind, program(*constants, code, strategy))


def greedy(rng: random.Random) -> Sample:
    """One-step lookahead: the legal move whose resulting board scores highest."""
    code, move = helpers(rng)
    constants, value, value_name = value_source(rng)
    kind = rng.choices(("max_key", "loop"), weights=(0.55, 0.45))[0]
    # Ties are frequent (free cells are small integers) and go to the first move tried.
    order = draw_order(rng) if rng.random() < 0.5 else (0, 1, 2, 3)
    moves = "range(4)" if order == (0, 1, 2, 3) else str(order)
    if kind == "max_key":
        legal = rng.choice(LEGAL_NAMES)
        strategy = f"""def strategy(board):
    {legal} = [d for d in {moves} if {move}(board, d) != board]
    if not {legal}:
        return 0
    {answer(rng, f"max({legal}, key=lambda d: {value_name}({move}(board, d)))")}
"""
    else:
        strategy = f"""def strategy(board):
    best, best_value = 0, None
    for d in {moves}:
        after = {move}(board, d)
        if after != board:
            v = {value_name}(after)
            if best_value is None or v > best_value:
                best, best_value = d, v
    {answer(rng, "best")}
"""
    return Sample("greedy", kind, program(*constants, code, value, strategy))


# ---------------------------------------------------------------------------------------------
# Board scores for the greedy programs (and the unchecked greedy of the bad family).

# Each count term: the lines that compute it into a variable of the term's name, and the weights tried.
COUNT_TERMS: dict[str, tuple[str, tuple[int, ...]]] = {
    "empty": ("    empty = sum(row.count(0) for row in b)\n", (1, 2, 3, 4)),
    "pairs": (
        """    pairs = 0
    for r in b + [list(c) for c in zip(*b)]:
        for x, y in zip(r, r[1:]):
            if x and x == y:
                pairs += 1
""",
        (1, 2, 3),
    ),
    "corner": ("    corner = b[{row}][{col}] == max(map(max, b))\n", (2, 5, 10)),
    "mono": (
        """    mono = sum(1 for r in b if r == sorted(r{rows}))
    mono += sum(1 for c in zip(*b) if list(c) == sorted(c{cols}))
""",
        (1, 2, 3),
    ),
}
# Tile-valued terms (their scale is the tiles', so free cells get a larger weight beside them).
GRADIENTS: tuple[str, ...] = ("(i + 1) * (4 - j)", "(i + 1) * (j + 1)", "(4 - i) * (4 - j)", "(4 - i) * (j + 1)")
SNAKE = "W = [[1, 2, 3, 4], [8, 7, 6, 5], [9, 10, 11, 12], [16, 15, 14, 13]]"


def value_source(rng: random.Random) -> tuple[tuple[str, ...], str, str]:
    """(constants it needs, source of a board-scoring function, its name): a few terms with drawn weights.

    Count terms (free cells, merge pairs, corner, monotone lines) are small integers; tile
    terms (a weighted grid, the squared tile mass) grow with the tiles. The strongest mixes
    (free cells with pairs, or with monotone lines) average ~6,000; single terms far less.
    """
    name = rng.choice(VALUE_NAMES)
    constants: tuple[str, ...] = ()
    if rng.random() < 0.7:
        terms = ["empty", *rng.sample(["pairs", "corner", "mono"], k=rng.choice((0, 1, 1, 2)))]
        if rng.random() < 0.15:  # sometimes no free-cell term at all
            terms = terms[1:] or ["pairs"]
        row, col = rng.choice(list(CORNERS))
        rows = ", reverse=True" if col == 0 else ""  # big tiles first in a row when the corner is on the left
        cols = ", reverse=True" if row == 0 else ""
        body = ""
        weighted = []
        for term in terms:
            lines, weights = COUNT_TERMS[term]
            body += lines.format(row=row, col=col, rows=rows, cols=cols)
            weight = rng.choice(weights)
            weighted.append(term if weight == 1 else f"{weight} * {term}")
        body += f"    return {' + '.join(weighted)}\n"
    else:
        kind = rng.choice(("gradient", "snake", "mass"))
        if kind == "gradient":
            body = f"    grid = sum({rng.choice(GRADIENTS)} * b[i][j] for i in range(4) for j in range(4))\n"
            total = "grid"
        elif kind == "snake":
            constants = (SNAKE,)
            body = "    grid = sum(W[i][j] * b[i][j] for i in range(4) for j in range(4))\n"
            total = "grid"
        else:
            body = "    mass = sum(v * v for row in b for v in row)\n"
            total = "mass"
        weight = rng.choice((0, 10, 20, 50))
        if weight:
            body += "    empty = sum(row.count(0) for row in b)\n"
            total += f" + {weight} * empty"
        body += f"    return {total}\n"
    return constants, f"def {name}(b):\n{body}", name


def lines(rng: random.Random) -> Sample:
    """One-step lookahead on a board scored line by line over the tiles' logarithms, with drawn weights."""
    code, move = helpers(rng)
    weights = {"EMPTY_W": rng.choice((0.5, 1.0, 1.4, 2.0, 2.7, 3.5)),
               "MERGE_W": rng.choice((0.5, 1.0, 1.5, 2.0, 2.6, 3.5)), "MONO_W": rng.choice((0.0, 0.3, 0.6, 1.0, 1.5)),
               "SUM_W": rng.choice((0.0, 0.05, 0.15, 0.3)), "POWER": rng.choice((1, 1, 1.5, 2))}  # fmt: skip
    logs = "math.log2(v)" if weights["POWER"] == 1 else "math.log2(v) ** POWER"
    constants = "\n".join(f"{name} = {value}" for name, value in weights.items() if name != "POWER" or value != 1)
    score = f"""def line(r):
    logs = [{logs} if v else 0 for v in r]
    merges = sum(1 for a, b in zip(r, r[1:]) if a and a == b)
    up = sum(max(b - a, 0) for a, b in zip(logs, logs[1:]))
    down = sum(max(a - b, 0) for a, b in zip(logs, logs[1:]))
    return EMPTY_W * r.count(0) + MERGE_W * merges - MONO_W * min(up, down) - SUM_W * sum(logs)


def value(b):
    return sum(line(r) for r in b) + sum(line(list(c)) for c in zip(*b))
"""
    strategy = f"""def strategy(board):
    best, best_value = 0, None
    for d in range(4):
        after = {move}(board, d)
        if after != board:
            v = value(after)
            if best_value is None or v > best_value:
                best, best_value = d, v
    {answer(rng, "best")}
"""
    kind = "power" if weights["POWER"] != 1 else "plain"
    return Sample("lines", kind, program("import math", constants, code, score, strategy))


GENERATORS = {"bad": bad, "weak_legal": weak_legal, "fixed_order": fixed_order, "greedy": greedy, "lines": lines}
