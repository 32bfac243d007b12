"""Procedurally generated ``matmul(A, B)`` programs for the matmul speed task, of widely varying quality.

The task (``stratagem/envs/matmul.py``) times a pure-Python product on fresh random matrices (sides 48-96 at the
default size 96, three trials an episode) against the textbook triple loop; the score is the speedup, an episode
is won when every product is right and the speedup is above 1, a wrong product is an error. Pure Python leaves
little between the loop and the best plain forms (~1.3x), and the timing noise of one episode is about +-10-15%,
so the loop itself often wins: the families differ in speed by less than the noise of one episode, and are
ordered only on average (as GRPO sees them, over a group's episodes).

One dialect: ``n, k, m = len(A), len(B), len(B[0])``, the result ``C``, ``cols = list(zip(*B))`` for the columns
of B, ``row``/``col``/``total`` in the loops. Four families (weights in ``FAMILIES``):

- ``bad``: a wrong product. Transposed indices (``B[j][p]``), an off-by-one range, rows that alias one list
  (``[[0.0] * m] * n``), the rows of B taken for its columns, or A itself returned: an error (``wrong_answer``,
  a refused shape, an IndexError now and then), reward -2 to -4.
- ``weak``: correct and no faster than the loop. The textbook loop itself (preallocated or appended rows, ~1.0x),
  ``sum`` of a generator over the columns (~1.0x), or a fancier form that is slower: ``map`` with a lambda
  (~0.95x), ``itertools.starmap`` (~0.85x), ``math.fsum`` (~0.7x), ``functools.reduce`` (~0.57x).
- ``medium``: a little faster (~1.05-1.15x): the loop with A's row held in a local, the (i, p, j) order that
  accumulates scaled rows of B, ``sum`` of a list over the columns of B.
- ``good``: the fastest plain forms (~1.1-1.3x): an explicit loop over ``zip(row, col)`` of the transposed B,
  or one list comprehension per row of C. Far from what is possible: ``math.dist`` computes a dot product in C
  (``a.b = (|a|^2 + |b|^2 - |a-b|^2) / 2``, ~3.7x in the sandbox), which no program here uses.

Measured (40 programs of seed 0, 6 episodes each, ``Runner("matmul")``, the default rubric, on a shared 2-core
machine; mean reward / speedup / win rate): bad -2.80 / 0 / 0; weak 1.31 / 0.88 / 0.26; medium 1.78 / 1.06 / 0.71;
good 2.04 / 1.21 / 0.96. The families are ordered in speed, but a win needs only a speedup above 1 and the noise
of one episode is ~+-10-15%: the textbook loop itself (the baseline's own text) averages a speedup of ~1.02 and
wins ~60% of its episodes (139 of 226 over 8 runs), so reward separates weak from the rest less than speed does.
"""

from __future__ import annotations

import random

from stratagem.rl.corpus.common import Sample, draw, program

# Mostly correct programs at about the loop's speed; each family has a next step up: a bad product needs the
# right indices, the loop needs fewer index lookups, a comprehension a plain loop over zip, all of them math.dist.
FAMILIES: dict[str, float] = {"bad": 0.15, "weak": 0.35, "medium": 0.3, "good": 0.2}

SHAPE = "n, k, m = len(A), len(B), len(B[0])"
COLS = "cols = list(zip(*B))"
SIZES = (48, 64, 128)  # -p size=... a run may name; the programs do not depend on it
SANDBOX = 0.2  # the share sent as a code cell to the sandbox environment's matmul task (its training block's params)
SANDBOX_PARAMS = {"task": "matmul", "max_episode_steps": 1}


def generate(rng: random.Random) -> Sample:
    """One program: its family drawn by ``FAMILIES``, then the family's variant and spellings, all from ``rng``."""
    family = draw(rng, FAMILIES)
    variant, source = GENERATORS[family](rng)
    if rng.random() < SANDBOX:
        return Sample(family, variant, in_a_cell(source), task="matmul", env="sandbox", params=dict(SANDBOX_PARAMS))
    params = {"size": rng.choice(SIZES)} if rng.random() < 0.2 else {}
    return Sample(family, variant, source, task="matmul", env="matmul", params=params)


def in_a_cell(source: str) -> str:
    """The same program for the ``sandbox`` environment's matmul task: a strategy that sends it as a code cell."""
    return f'''CODE = """
{source.rstrip()}
"""


def strategy(observation):
    return {{"code": CODE}}
'''


# ---------------------------------------------------------------------------------------------
# Building blocks.


def textbook(rng: random.Random, index: str = "A[i][p] * B[p][j]", rows: str = "range(k)",
             alloc: str | None = None, cache: bool = False) -> str:  # fmt: skip
    """The triple loop over (i, j, p): into C preallocated by ``alloc`` (by default 60% of the time), or rows
    appended."""
    if cache:
        index = index.replace("A[i]", "row")
    row = "        row = A[i]\n" if cache else ""
    if alloc is None and rng.random() < 0.6:
        alloc = "[[0.0] * m for i in range(n)]"
    if alloc is not None:
        return f"""def matmul(A, B):
    {SHAPE}
    C = {alloc}
    for i in range(n):
{row}        for j in range(m):
            total = 0.0
            for p in {rows}:
                total += {index}
            C[i][j] = total
    return C
"""
    return f"""def matmul(A, B):
    {SHAPE}
    C = []
    for i in range(n):
{row}        out = []
        for j in range(m):
            total = 0.0
            for p in {rows}:
                total += {index}
            out.append(total)
        C.append(out)
    return C
"""


def comprehension(dot: str, imports: tuple[str, ...] = (), rows: str = "A", cols: str = "cols") -> str:
    """C as one comprehension: ``dot`` (in ``row`` and ``col``) for each column of B, for each row of A."""
    col_line = f"    {COLS}\n" if cols == "cols" else ""
    return program(
        *imports,
        f"""def matmul(A, B):
{col_line}    return [[{dot} for col in {cols}] for row in {rows}]
""",
    )


def cols_source(rng: random.Random) -> str:
    """The columns of B: tuples from zip (the usual), or copied into lists (a little slower)."""
    return COLS if rng.random() < 0.75 else "cols = [list(col) for col in zip(*B)]"


# ---------------------------------------------------------------------------------------------
# Families: each returns (variant, source).


def bad(rng: random.Random) -> tuple[str, str]:
    """A wrong product: the environment ends the episode with an error, whatever the speed."""
    kind = rng.choice(("transposed", "off_by_one", "aliased", "rows_of_b", "returns_a"))
    if kind == "transposed":
        index = rng.choice(("A[i][p] * B[j][p]", "A[p][i] * B[p][j]", "A[i][p] * B[p][i]"))
        return kind, textbook(rng, index=index)
    if kind == "off_by_one":
        return kind, textbook(rng, rows=rng.choice(("range(k - 1)", "range(1, k)", "range(m)", "range(n)")))
    if kind == "aliased":  # every row of C is the same list: the last row's values everywhere
        return kind, textbook(rng, alloc="[[0.0] * m] * n")
    if kind == "rows_of_b":  # B's rows taken for its columns: an n x k answer
        dot = rng.choice(("sum(a * b for a, b in zip(row, col))", "sum([a * b for a, b in zip(row, col)])"))
        return kind, comprehension(dot, cols="B")
    body = rng.choice(("return A", "return [row[:] for row in A]", f"{SHAPE}\n    return [row[:m] for row in A]"))
    return kind, program(f"def matmul(A, B):\n    {body}")


def weak(rng: random.Random) -> tuple[str, str]:
    """Correct, and no faster than the textbook loop: the loop itself, or a slower fancy form."""
    kinds = ("textbook", "sum_generator", "map_lambda", "starmap", "fsum", "reduce")
    kind = rng.choices(kinds, weights=(0.4, 0.2, 0.1, 0.1, 0.1, 0.1))[0]
    if kind == "textbook":
        return kind, textbook(rng)
    if kind == "sum_generator":  # a generator feeds sum more slowly than a list: about the loop's speed
        return kind, comprehension("sum(a * b for a, b in zip(row, col))")
    if kind == "map_lambda":
        return kind, comprehension("sum(map(lambda a, b: a * b, row, col))")
    if kind == "starmap":
        return kind, comprehension("sum(itertools.starmap(lambda a, b: a * b, zip(row, col)))", ("import itertools",))
    if kind == "fsum":
        inner = rng.choice(("[a * b for a, b in zip(row, col)]", "a * b for a, b in zip(row, col)"))
        return kind, comprehension(f"math.fsum({inner})", ("import math",))
    return kind, program(
        "import functools",
        """def dot(row, col):
    return functools.reduce(lambda total, ab: total + ab[0] * ab[1], zip(row, col), 0.0)
""",
        comprehension("dot(row, col)"),
    )


def medium(rng: random.Random) -> tuple[str, str]:
    """A little faster than the loop: fewer index lookups, or sum over zip of the transposed B."""
    kind = rng.choices(("row_cache", "scaled_rows", "sum_list"), weights=(0.3, 0.35, 0.35))[0]
    if kind == "row_cache":
        return kind, textbook(rng, cache=True)
    if kind == "scaled_rows":  # C[i] += A[i][p] * B[p], one row of B at a time
        if rng.random() < 0.5:
            inner = """        for a, b_row in zip(row, B):
            for j in range(m):
                out[j] += a * b_row[j]
"""
        else:
            inner = """        for a, b_row in zip(row, B):
            out = [total + a * b for total, b in zip(out, b_row)]
"""
        return (
            kind,
            f"""def matmul(A, B):
    m = len(B[0])
    C = []
    for row in A:
        out = [0.0] * m
{inner}        C.append(out)
    return C
""",
        )
    dot = "sum([a * b for a, b in zip(row, col)])"
    if rng.random() < 0.5:
        return kind, comprehension(dot)
    return (
        kind,
        f"""def matmul(A, B):
    {cols_source(rng)}
    return [[{dot} for col in cols] for row in A]
""",
    )


def good(rng: random.Random) -> tuple[str, str]:
    """The fastest plain forms: a loop over zip(row, col) of the transposed B, or one comprehension per row."""
    if rng.random() < 0.6:
        add = rng.random() < 0.4  # the bound method held in a local: about as fast
        return (
            "zip_loop",
            f"""def matmul(A, B):
    {cols_source(rng)}
    C = []
    for row in A:
        out = []
{"        add = out.append" + chr(10) if add else ""}        for col in cols:
            total = 0.0
            for a, b in zip(row, col):
                total += a * b
            {"add" if add else "out.append"}(total)
        C.append(out)
    return C
""",
        )
    return (
        "row_comprehension",
        f"""def matmul(A, B):
    {cols_source(rng)}
    C = []
    for row in A:
        C.append([sum([a * b for a, b in zip(row, col)]) for col in cols])
    return C
""",
    )


GENERATORS = {"bad": bad, "weak": weak, "medium": medium, "good": good}
