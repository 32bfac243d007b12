"""A pure-Python matrix product for the matmul speed task: accumulate scaled rows of B.

    stratagem play matmul --strategy examples/strategies/matmul_rows.py --episodes 5

C[i] = sum over p of A[i][p] * B[p]: one list comprehension per (i, p) instead of an index
lookup per multiply-add.
"""


def matmul(A, B):
    width = len(B[0])
    product = []
    for row in A:
        total = [0.0] * width
        for a, b_row in zip(row, B):
            total = [t + a * b for t, b in zip(total, b_row)]
        product.append(total)
    return product
