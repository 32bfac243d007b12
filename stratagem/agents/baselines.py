"""Baseline strategies, written as plain programs so they take the same path as an LLM's.

``RANDOM_2048`` picks a random direction (some of its moves are illegal, which is the point:
it shows what a careless program scores). ``HEURISTIC_2048`` simulates each move in pure
Python, keeps only moves that change the board, and scores the result by empty cells,
monotone rows/columns and the largest tile sitting in a corner.

For the matmul task, ``MATMUL_TEXTBOOK`` is the triple loop the environment times as its
baseline (speedup about 1), and ``MATMUL_FAST`` the usual pure-Python rewrite: transpose B
once, then one ``sum`` over a ``zip`` per entry (about 1.2x on CPython 3.11).
"""

from stratagem.envs.matmul import TEXTBOOK_MATMUL

MATMUL_TEXTBOOK = TEXTBOOK_MATMUL

MATMUL_FAST = """def matmul(A, B):
    columns = list(zip(*B))
    return [[sum([a * b for a, b in zip(row, column)]) for column in columns] for row in A]
"""

RANDOM_2048 = """import random

def strategy(board):
    return random.choice("0123")
"""

HEURISTIC_2048 = '''import math


def slide_row_left(row):
    tiles = [v for v in row if v]
    merged = []
    skip = False
    for i, v in enumerate(tiles):
        if skip:
            skip = False
            continue
        if i + 1 < len(tiles) and tiles[i + 1] == v:
            merged.append(2 * v)
            skip = True
        else:
            merged.append(v)
    return merged + [0] * (4 - len(merged))


def move(board, direction):
    """0 up, 1 right, 2 down, 3 left."""
    if direction in (0, 2):
        cols = [[board[r][c] for r in range(4)] for c in range(4)]
        cols = [slide_row_left(col if direction == 0 else col[::-1]) for col in cols]
        cols = [col if direction == 0 else col[::-1] for col in cols]
        return [[cols[c][r] for c in range(4)] for r in range(4)]
    rows = [slide_row_left(row if direction == 3 else row[::-1]) for row in board]
    return [row if direction == 3 else row[::-1] for row in rows]


def monotonicity(lines):
    total = 0
    for line in lines:
        up = sum(max(0, line[i + 1] - line[i]) for i in range(3))
        down = sum(max(0, line[i] - line[i + 1]) for i in range(3))
        total -= min(up, down)
    return total


def score(board):
    logs = [[math.log2(v) if v else 0.0 for v in row] for row in board]
    cols = [[logs[r][c] for r in range(4)] for c in range(4)]
    empty = sum(row.count(0) for row in board)
    merges = sum(1 for line in logs + cols for i in range(3) if line[i] and line[i] == line[i + 1])
    biggest = max(max(row) for row in logs)
    corner = biggest if biggest in (logs[0][0], logs[0][3], logs[3][0], logs[3][3]) else 0.0
    return 2.7 * empty + 1.0 * merges + 1.5 * (monotonicity(logs) + monotonicity(cols)) + corner


def strategy(board):
    best, best_score = None, None
    for direction in (2, 3, 1, 0):
        after = move(board, direction)
        if after == board:
            continue
        value = score(after)
        if best_score is None or value > best_score:
            best, best_score = direction, value
    return str(best if best is not None else 0)
'''
