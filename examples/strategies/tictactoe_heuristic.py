"""A simple tic-tac-toe strategy: win if you can, block if you must, else centre, corner, side.

    stratagem play openspiel -p game=tic_tac_toe --strategy examples/strategies/tictactoe_heuristic.py
    stratagem play openspiel -p game=tic_tac_toe -p opponent=mcts --strategy examples/strategies/tictactoe_heuristic.py

Reads the board from OpenSpiel's observation string (three lines of '.', 'x', 'o'); player 0
is 'x'. Returns the id of a legal action: the cell's index, 3 * row + column.
"""

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
PREFERENCE = [4, 0, 2, 6, 8, 1, 3, 5, 7]


def completing(cells, mark, free):
    """A free cell that gives ``mark`` three in a line, or None."""
    for line in LINES:
        marks = [cells[i] for i in line]
        if marks.count(mark) == 2 and marks.count(".") == 1:
            cell = line[marks.index(".")]
            if cell in free:
                return cell
    return None


def strategy(observation):
    cells = "".join(observation["observation_string"].split())
    me = "x" if observation["player"] == 0 else "o"
    them = "o" if me == "x" else "x"
    free = [action["id"] for action in observation["legal_actions"]]
    for mark in (me, them):
        cell = completing(cells, mark, free)
        if cell is not None:
            return cell
    for cell in PREFERENCE:
        if cell in free:
            return cell
    return free[0]
