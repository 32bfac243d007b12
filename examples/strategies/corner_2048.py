"""A simple 2048 strategy: keep the tiles in the bottom-left corner.

    stratagem play 2048 --strategy examples/strategies/corner_2048.py --episodes 100 --seed 0

Plays the first of left, down, right, up that moves a tile.
"""


def moved(board, direction):
    """Whether sliding the board this way (0 up, 1 right, 2 down, 3 left) moves a tile."""
    rows = [list(r) for r in board]
    if direction in (0, 2):
        rows = [list(c) for c in zip(*rows)]
    if direction in (1, 2):
        rows = [r[::-1] for r in rows]
    for r in rows:
        tiles = [v for v in r if v]
        for i in range(len(tiles) - 1):
            if tiles[i] == tiles[i + 1]:
                return True
        if tiles != r[: len(tiles)]:
            return True
    return False


def strategy(board):
    for direction in (3, 2, 1, 0):
        if moved(board, direction):
            return str(direction)
    return "0"
