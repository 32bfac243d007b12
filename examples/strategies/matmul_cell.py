"""The code sandbox's matmul task, played by a program: each step it sends the next cell, here always its matmul.

    stratagem play sandbox -p task=matmul -p max_episode_steps=1 --strategy examples/strategies/matmul_cell.py

The cell is ordinary Python in a string; the sandbox environment runs it in its own confined process and
rewards the step with the speedup of the ``matmul`` the cell defines over the textbook triple loop.
"""

CODE = """
def matmul(A, B):
    width = len(B[0])
    product = []
    for row in A:
        total = [0.0] * width
        for a, b_row in zip(row, B):
            total = [t + a * b for t, b in zip(total, b_row)]
        product.append(total)
    return product
"""


def strategy(observation):
    return {"code": CODE}
