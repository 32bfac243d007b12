"""Baseline strategies, written as plain programs so they take the same path as an LLM's.

``RANDOM_2048`` picks a random direction (some of its moves are illegal, which is the point:
it shows what a careless program scores). ``HEURISTIC_2048`` is strong and fast: every row
and column has its slides and a score (free cells, merges, monotonicity) in tables built when
the program loads (~0.15 s), a board scores the sum of its 8 lines, and when the board is
crowded it looks one tile spawn ahead. On seeds 0-19 it reaches 2048 in 16 games of 20 (mean
score ~20,000) at ~15 us a move in CPython, which makes it the benchmark's program too: a
slow strategy would hide the sandbox's costs behind its own.

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

HEURISTIC_2048 = '''"""2048: table-driven moves and scores, with a one-spawn lookahead when the board is crowded.

Every line (a row or a column, as a 4-tuple) has its slides and heuristic score computed
once, into tables filled at import for every line of tiles up to 2048 and on demand for
anything else. A board's score is the sum of its 8 lines' scores (free cells, possible
merges, monotonicity, a small penalty on tile mass). A move is judged by the score of the
board it leads to, or, when few cells are free, by the expected best score one move after
a 2 lands on a free cell. Only moves that change the board are ever returned.
"""
import math

EMPTY_W = 1.393
MERGE_W = 2.574
MONO_W = 0.602
MONO_P = 1.5
SUM_W = 0.154
DEEP_EMPTY = 3  # look one spawn ahead when at most this many cells are free
TOP_K = 4  # moves searched when fewer than DEEP_EMPTY cells are free
TOP_K_EDGE = 2  # moves searched when exactly DEEP_EMPTY cells are free
LOSS = -1e9
TILES = (0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
H = {}
INFO = {}


def slide(row):
    """The line after sliding toward index 0, each tile merging at most once."""
    tiles = [v for v in row if v]
    out = []
    i = 0
    while i < len(tiles):
        if i + 1 < len(tiles) and tiles[i + 1] == tiles[i]:
            out.append(2 * tiles[i])
            i += 2
        else:
            out.append(tiles[i])
            i += 1
    return tuple(out + [0] * (4 - len(out)))


def score(row):
    """Heuristic score of one line: free cells, merges, monotonicity, tile mass."""
    logs = [math.log2(v) if v else 0.0 for v in row]
    tiles = [v for v in row if v]
    merges = 0
    for i in range(len(tiles) - 1):
        if tiles[i] == tiles[i + 1]:
            merges += 1
    up = 0.0
    down = 0.0
    for i in range(3):
        x = logs[i] ** MONO_P
        y = logs[i + 1] ** MONO_P
        if x > y:
            down += x - y
        else:
            up += y - x
    return EMPTY_W * row.count(0) + MERGE_W * merges - MONO_W * min(up, down) - SUM_W * sum(logs)


def learn(row):
    """Record a line in INFO: (left slide, right slide, whether each moves it, the slides'
    scores, per cell the line with a 2 there or None, and the (cell, line with a 2) pairs
    for the free cells). Unpacked below as la, ra, xa, ya, sla, sra, pa, qa for line a."""
    if row not in H:
        H[row] = score(row)
    left = slide(row)
    right = slide(row[::-1])[::-1]
    for x in (left, right):
        if x not in H:
            H[x] = score(x)
    spawns = tuple(row[:j] + (2,) + row[j + 1:] if row[j] == 0 else None for j in range(4))
    free = tuple((j, spawns[j]) for j in range(4) if row[j] == 0)
    INFO[row] = (left, right, left != row, right != row, H[left], H[right], spawns, free)


def learn_all():
    for a in TILES:
        for b in TILES:
            for c in TILES:
                for d in TILES:
                    learn((a, b, c, d))
    return len(INFO)


LEARNED = learn_all()


def learn_around(rows):
    """Record every line of this board, of each board a spawn makes from it, and of the
    boards one move from those (only needed for tiles beyond 2048)."""
    boards = [rows]
    for i in range(4):
        for j in range(4):
            if rows[i][j] == 0:
                spawned = list(rows)
                spawned[i] = rows[i][:j] + (2,) + rows[i][j + 1:]
                boards.append(tuple(spawned))
    for board in boards:
        for group in (board, tuple(zip(*board))):
            for x in group:
                if x not in INFO:
                    learn(x)
            for k in (0, 1):
                moved = tuple(INFO[x][k] for x in group)
                for x in moved + tuple(zip(*moved)):
                    if x not in INFO:
                        learn(x)


def chance(a, b, c, d):
    """Mean over free cells of the best score one move after a 2 lands there.

    Scores are symmetric in rows and columns, so a..d may be either. A 2 in line i, cell j
    changes only line i for left/right and only cross line j for up/down: every other
    line's slide and score is looked up once for the whole node.
    """
    rows = (a, b, c, d)
    e, f, g, h = tuple(zip(a, b, c, d))
    try:
        la, ra, xa, ya, sla, sra, pa, qa = INFO[a]
        lb, rb, xb, yb, slb, srb, pb, qb = INFO[b]
        lc, rc, xc, yc, slc, src, pc, qc = INFO[c]
        ld, rd, xd, yd, sld, srd, pd, qd = INFO[d]
        le, re, xe, ye, sle, sre, pe, qe = INFO[e]
        lf, rf, xf, yf, slf, srf, pf, qf = INFO[f]
        lg, rg, xg, yg, slg, srg, pg, qg = INFO[g]
        lh, rh, xh, yh, slh, srh, ph, qh = INFO[h]
        PL = [la, lb, lc, ld]
        PR = [ra, rb, rc, rd]
        PU = [le, lf, lg, lh]
        PD = [re, rf, rg, rh]
        # for a 2 in line i: whether the move still shifts another line (oL...), and the
        # summed scores of the other lines after the move (bL...)
        n = xa + xb + xc + xd
        oL = (n - xa, n - xb, n - xc, n - xd)
        n = ya + yb + yc + yd
        oR = (n - ya, n - yb, n - yc, n - yd)
        n = xe + xf + xg + xh
        oU = (n - xe, n - xf, n - xg, n - xh)
        n = ye + yf + yg + yh
        oD = (n - ye, n - yf, n - yg, n - yh)
        v = sla + slb + slc + sld
        bL = (v - sla, v - slb, v - slc, v - sld)
        v = sra + srb + src + srd
        bR = (v - sra, v - srb, v - src, v - srd)
        v = sle + slf + slg + slh
        bU = (v - sle, v - slf, v - slg, v - slh)
        v = sre + srf + srg + srh
        bD = (v - sre, v - srf, v - srg, v - srh)
        across = (pe, pf, pg, ph)
        total = 0.0
        count = 0
        for i, spawns in ((0, qa), (1, qb), (2, qc), (3, qd)):
            for j, s in spawns:
                count += 1
                best = LOSS
                ls, rs = INFO[s][:2]
                if oL[i] or ls != s:
                    q = PL[:]
                    q[i] = ls
                    w, x, y, z = zip(*q)
                    best = bL[i] + H[ls] + H[w] + H[x] + H[y] + H[z]
                if oR[i] or rs != s:
                    q = PR[:]
                    q[i] = rs
                    w, x, y, z = zip(*q)
                    v = bR[i] + H[rs] + H[w] + H[x] + H[y] + H[z]
                    if v > best:
                        best = v
                t = across[j][i]
                ls, rs = INFO[t][:2]
                if oU[j] or ls != t:
                    q = PU[:]
                    q[j] = ls
                    w, x, y, z = zip(*q)
                    v = bU[j] + H[ls] + H[w] + H[x] + H[y] + H[z]
                    if v > best:
                        best = v
                if oD[j] or rs != t:
                    q = PD[:]
                    q[j] = rs
                    w, x, y, z = zip(*q)
                    v = bD[j] + H[rs] + H[w] + H[x] + H[y] + H[z]
                    if v > best:
                        best = v
                total += best
    except KeyError:
        learn_around(rows)
        return chance(a, b, c, d)
    if count == 0:
        return LOSS
    return total / count


def strategy(board):
    a, b, c, d = rows = (tuple(board[0]), tuple(board[1]), tuple(board[2]), tuple(board[3]))
    e, f, g, h = tuple(zip(a, b, c, d))
    try:
        la, ra, xa, ya, sla, sra, pa, qa = INFO[a]
        lb, rb, xb, yb, slb, srb, pb, qb = INFO[b]
        lc, rc, xc, yc, slc, src, pc, qc = INFO[c]
        ld, rd, xd, yd, sld, srd, pd, qd = INFO[d]
        le, re, xe, ye, sle, sre, pe, qe = INFO[e]
        lf, rf, xf, yf, slf, srf, pf, qf = INFO[f]
        lg, rg, xg, yg, slg, srg, pg, qg = INFO[g]
        lh, rh, xh, yh, slh, srh, ph, qh = INFO[h]
        options = []
        if ye or yf or yg or yh:
            w, x, y, z = zip(re, rf, rg, rh)
            options.append((sre + srf + srg + srh + H[w] + H[x] + H[y] + H[z], "2", (re, rf, rg, rh)))
        if xa or xb or xc or xd:
            w, x, y, z = zip(la, lb, lc, ld)
            options.append((sla + slb + slc + sld + H[w] + H[x] + H[y] + H[z], "3", (la, lb, lc, ld)))
        if ya or yb or yc or yd:
            w, x, y, z = zip(ra, rb, rc, rd)
            options.append((sra + srb + src + srd + H[w] + H[x] + H[y] + H[z], "1", (ra, rb, rc, rd)))
        if xe or xf or xg or xh:
            w, x, y, z = zip(le, lf, lg, lh)
            options.append((sle + slf + slg + slh + H[w] + H[x] + H[y] + H[z], "0", (le, lf, lg, lh)))
    except KeyError:
        learn_around(rows)
        return strategy(board)
    if not options:
        return "0"
    best = options[0]
    free = len(qa) + len(qb) + len(qc) + len(qd)
    if len(options) == 1 or free > DEEP_EMPTY:
        for item in options:
            if item[0] > best[0]:
                best = item
        return best[1]
    k = TOP_K_EDGE if free == DEEP_EMPTY else TOP_K
    if k < len(options):
        options.sort(key=lambda item: -item[0])
        options = options[:k]
    top = LOSS - 1.0
    for item in options:
        v = chance(*item[2])
        if v > top:
            top = v
            best = item
    return best[1]
'''
