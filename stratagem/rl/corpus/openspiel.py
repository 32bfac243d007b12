"""OpenSpiel strategy programs: generic ones legal in any game, game-aware ones for a few common games.

The ``openspiel`` environment hands a program one dict per move: ``game``, ``player`` (0 moves first),
``observation_string``, ``observation_tensor`` with its ``observation_shape``, and ``legal_actions`` as
``{"id", "name"}`` dicts; it answers an id (int) or a name (str). One dialect throughout: the legal ids are
``legal = [a["id"] for a in observation["legal_actions"]]``, a preference is a constant ``ORDER`` walked with
``if a in legal``, tic_tac_toe's board is ``cells`` (the string without its newlines) read by ``completes``
over ``LINES``, connect_four's is ``rows`` read by ``wins``, and the marks are ``me`` and ``them``.

Games: tic_tac_toe most (the default game and the training target: params ``{}``, ``{"game": ...}``, and one
in ten from seat 1), then connect_four, goofspiel and kuhn_poker, and generic programs over 21 games (some
with parameters, e.g. ``hex(board_size=5)``), so a game the corpus never names still gets legal programs.
Four families (weights in ``FAMILIES``):

- ``bad``: often not a legal action. A constant id or name, a list index taken for an id, ``str`` of an id, the
  action dict itself, tic_tac_toe's n-th preferred cell unchecked or the raw string's indices (newlines
  counted); a few crash (a missing key). Mostly illegal moves (reward ~-2, crashes -4).
- ``weak``: a legal action that ignores the position: first, last, middle, random (by id or by name),
  the largest or smallest name, a fixed preference over ids. In tic_tac_toe exactly 78% wins for the first
  or last legal cell (it fills a row), 71% for the middle one, 58% for random play.
- ``medium``: one idea. tic_tac_toe: a preference order (centre, corners...), or take a win, or block one,
  then the order, random, or the order with a chance of a random move; connect_four: a centre order,
  random among the central columns, or win-then-something; kuhn_poker: bet from one card up, call from
  another; goofspiel: high bids for high point cards, or bid the point card plus an offset of 2-3.
- ``good``: win, then block (or block, then win), then the same fallbacks; goofspiel bids the point card
  (offset -1..1); kuhn_poker bets every card and calls from the queen or king. Blind to forks and, in
  connect_four, to the move that hands the opponent a win: an exact win-block-centre-corner player wins
  96.4% as tic_tac_toe's first seat against the random opponent, the best possible is 99.5%.

Measured in the real sandbox against the random opponent (400 programs, corpus seed 0; all games: 40 games
a program for tic_tac_toe, kuhn_poker and goofspiel, 20 for the others, mean reward of the default rubric and
win rate; tic_tac_toe from seat 0: 100 games a program, win rate mean and quartiles over programs):

    family   all games      tic_tac_toe, seat 0
    bad      -1.92  0.02    0.03  (0.00 0.00 0.04; 91% of its games end on an illegal move or a crash)
    weak      1.82  0.54    0.71  (0.63 0.77 0.78)
    medium    2.14  0.76    0.84  (0.79 0.87 0.91)
    good      2.36  0.91    0.92  (0.90 0.92 0.96)

connect_four against random is easy (weak 0.60-0.97, good 0.88-1.00); goofspiel weak 0.38-0.57, medium
0.60-0.88, good 0.88-0.97; kuhn_poker medium 0.25-0.50, good ~0.68. Every weak program was played to its
end in 35 games (the 21 above and chess, go(board_size=5), quoridor, phantom_ttt, dark_hex, battleship,
matrix_rps, tiny_hanabi, 2048, amazons, y(board_size=5), lines_of_action, pentago). A call takes at
most ~70 us (connect_four's ``wins``).
"""

from __future__ import annotations

import random

from stratagem.rl.corpus.common import Sample, draw, program

# Family -> sampling weight. Each family has an obvious next step up: bad programs need to return a legal id,
# weak ones to look at the position, medium ones to both win and block, good ones to look one move further.
FAMILIES: dict[str, float] = {"bad": 0.15, "weak": 0.3, "medium": 0.33, "good": 0.22}

TTT, C4, KUHN, GOOF = "tic_tac_toe", "connect_four", "kuhn_poker", "goofspiel"
OTHER = "other"  # a game the game-aware programs never name: generic programs only
# Which game a family's program is for. tic_tac_toe (the training target) most, then generic programs over
# a spread of games; medium and good programs only for the games they know.
GAMES: dict[str, dict[str, float]] = {
    "bad": {TTT: 0.5, OTHER: 0.5},
    "weak": {TTT: 0.35, C4: 0.1, KUHN: 0.05, GOOF: 0.05, OTHER: 0.45},
    "medium": {TTT: 0.6, C4: 0.2, KUHN: 0.1, GOOF: 0.1},
    "good": {TTT: 0.6, C4: 0.25, KUHN: 0.05, GOOF: 0.1},
}
# The generic programs' games (all fast against the random opponent), some with parameters.
OTHER_GAMES: tuple[str, ...] = (
    "connect_four", "kuhn_poker", "goofspiel", "leduc_poker", "breakthrough", "nim", "liars_dice", "othello", "hex",
    "first_sealed_auction", "pig", "dots_and_boxes", "catch", "oware", "checkers", "blackjack", "mancala", "clobber",
    "hex(board_size=5)", "goofspiel(num_cards=6)", "breakthrough(rows=6,columns=6)",
)  # fmt: skip
# Games where a fixed id or a list index is often illegal: the bad family's constant and index bugs go there.
BOARD_GAMES: tuple[str, ...] = (
    "goofspiel", "nim", "othello", "hex", "breakthrough", "checkers", "dots_and_boxes", "oware",
    "clobber", "hex(board_size=5)",
)  # fmt: skip

LEGAL = '    legal = [a["id"] for a in observation["legal_actions"]]\n'
NAMES = '    names = [a["name"] for a in observation["legal_actions"]]\n'
MARKS = """    me = "x" if observation["player"] == 0 else "o"
    them = "o" if me == "x" else "x"
"""
CELLS = '    cells = "".join(observation["observation_string"].split())\n'
ROWS = '    rows = observation["observation_string"].split()\n'
LINES = "LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]"
COMPLETES = """def completes(cells, mark):
    for line in LINES:
        marks = [cells[i] for i in line]
        if marks.count(mark) == 2 and marks.count(".") == 1:
            return line[marks.index(".")]
    return None
"""
WINS = """def wins(rows, col, mark):
    grid = [list(r) for r in rows]
    free = [r for r in range(6) if grid[r][col] == "."]
    if not free:
        return False
    row = free[-1]
    grid[row][col] = mark
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        count = 1
        for step in (1, -1):
            r, c = row + step * dr, col + step * dc
            while 0 <= r < 6 and 0 <= c < 7 and grid[r][c] == mark:
                count += 1
                r, c = r + step * dr, c + step * dc
        if count >= 4:
            return True
    return False
"""
POINT = """    for line in observation["observation_string"].split("\\n"):
        if line.startswith("Current point card"):
            point = int(line.split(":")[1])
"""


def generate(rng: random.Random) -> Sample:
    """One program: its family drawn by ``FAMILIES``, then its game, then the family's parameters, all from ``rng``."""
    family = draw(rng, FAMILIES)
    game = draw(rng, GAMES[family])
    if game == OTHER:
        game = rng.choice(BOARD_GAMES if family == "bad" else OTHER_GAMES)
    variant, source = GENERATORS[family](rng, game)
    return Sample(family, variant, source, task="openspiel", env="openspiel", params=params_for(rng, game))


def params_for(rng: random.Random, game: str) -> dict[str, object]:
    """The -p parameters the prompt names: tic_tac_toe is also the default game, and seat 1 sometimes."""
    if game == TTT:
        roll = rng.random()
        return {} if roll < 0.5 else {"game": game} if roll < 0.9 else {"game": game, "player": 1}
    if game == C4 and rng.random() < 0.1:
        return {"game": game, "player": 1}
    return {"game": game}


def strategy(*body: str) -> str:
    return "def strategy(observation):\n" + "".join(body)


def ordered(name: str) -> str:
    """The first of the constant ``name`` that is legal."""
    return f"""    for a in {name}:
        if a in legal:
            return a
    return legal[0]
"""


# ---------------------------------------------------------------------------------------------
# Families.


def bad(rng: random.Random, game: str) -> tuple[str, str]:
    """An answer that is often not a legal action: a constant, a list index, a str of an id, the dict itself."""
    kinds = {"constant": 3, "index": 3, "str_id": 2, "dict": 2, "crash": 1}
    if game == TTT:
        kinds.update(unchecked=2, raw_string=2)
    kind = draw(rng, kinds)
    if kind == "constant":
        value = rng.choice(("4", '"x(1,1)"', "0")) if game == TTT else str(rng.randrange(4))
        return kind, strategy(f"    return {value}\n")
    if kind == "index":
        pick = rng.choice(("random.randrange(len(legal))", "len(legal) - 1", "len(legal) // 2"))
        head = ["import random"] if "random" in pick else []
        return kind, program(*head, strategy(LEGAL, f"    return {pick}\n"))
    if kind == "str_id":
        pick = rng.choice(("legal[0]", "legal[-1]", "random.choice(legal)"))
        head = ["import random"] if "random" in pick else []
        return kind, program(*head, strategy(LEGAL, f"    return str({pick})\n"))
    if kind == "dict":
        pick = rng.choice(('observation["legal_actions"][0]', 'random.choice(observation["legal_actions"])'))
        head = ["import random"] if "random" in pick else []
        return kind, program(*head, strategy(f"    return {pick}\n"))
    if kind == "crash":
        key = rng.choice(('"action"', '"legal"', "0"))
        return kind, strategy(f'    return observation["legal_actions"][0][{key}]\n')
    order = draw_order(rng, TTT)
    if kind == "unchecked":  # the n-th preferred cell, taken or not
        body = CELLS + MARKS + "    return ORDER[cells.count(me)]\n"
        return kind, program(f"ORDER = {order}", strategy(body))
    # the cells of the raw string, newlines included: indices past the first row are shifted
    body = f"""    cells = observation["observation_string"]
    free = [i for i, c in enumerate(cells) if c == "."]
    for a in {order}:
        if a in free:
            return a
    return free[0]
"""
    return kind, strategy(body)


def weak(rng: random.Random, game: str) -> tuple[str, str]:
    """A legal action chosen without looking at the position: first, last, middle, random, by name."""
    kind = rng.choice(("first", "last", "middle", "random", "random_name", "max_name", "min_name", "prefer_ids"))
    if kind == "first":
        return kind, strategy('    return observation["legal_actions"][0]["id"]\n')
    if kind == "last":
        return kind, strategy(LEGAL, "    return legal[-1]\n")
    if kind == "middle":
        return kind, strategy(LEGAL, "    return legal[len(legal) // 2]\n")
    if kind == "random":
        return kind, program("import random", strategy(LEGAL, "    return random.choice(legal)\n"))
    if kind == "random_name":
        return kind, program("import random", strategy(NAMES, "    return random.choice(names)\n"))
    if kind in ("max_name", "min_name"):
        return kind, strategy(NAMES, f"    return {kind[:3]}(names)\n")
    # a fixed preference over ids, unrelated to the game's sense
    size = {TTT: 9, C4: 7, KUHN: 2, GOOF: 13}.get(game, 12)
    order = rng.sample(range(size), k=min(size, rng.choice((3, 5, 9))))
    return kind, program(f"ORDER = {order}", strategy(LEGAL, ordered("ORDER")))


def medium(rng: random.Random, game: str) -> tuple[str, str]:
    """One idea about the game: a preference order, or take a win (or block one) when there is one."""
    if game in (TTT, C4):
        kinds = ("prefer", "win_then", "block_then") if game == TTT else ("prefer", "centre", "win_then")
        kind = rng.choices(kinds, (4, 4, 2))[0]
        if kind == "centre":
            low = rng.choice((1, 2, 2, 3))
            body = f"""    centre = [c for c in legal if {low} <= c <= {6 - low}]
    return random.choice(centre or legal)
"""
            return f"centre{low}", program("import random", strategy(LEGAL, body))
        rest, imports, constants, tail = then(rng, game, allow_random=kind != "prefer")
        if kind == "prefer":
            return f"{kind}_{rest}", program(*imports, *constants, strategy(LEGAL, tail))
        mark = "them" if kind == "block_then" else "me"
        if game == TTT:
            rule = f"""    cell = completes(cells, {mark})
    if cell is not None:
        return cell
"""
            source = program(*imports, LINES, *constants, COMPLETES, strategy(CELLS, MARKS, LEGAL, rule, tail))
        else:
            rule = f"""    for col in legal:
        if wins(rows, col, {mark}):
            return col
"""
            source = program(*imports, *constants, WINS, strategy(ROWS, MARKS, LEGAL, rule, tail))
        return f"{kind}_{rest}", source
    if game == KUHN:
        return kuhn(rng, good=False)
    return goofspiel(rng, good=False)


def good(rng: random.Random, game: str) -> tuple[str, str]:
    """Win, then block, then a preference: sound, but blind to forks (and to the move after next)."""
    if game in (TTT, C4):
        kind = rng.choices(("win_block", "block_win"), (8, 2))[0]
        marks = "(me, them)" if kind == "win_block" else "(them, me)"
        rest, imports, constants, tail = then(rng, game, allow_random=True)
        if game == TTT:
            rule = f"""    for mark in {marks}:
        cell = completes(cells, mark)
        if cell is not None:
            return cell
"""
            source = program(*imports, LINES, *constants, COMPLETES, strategy(CELLS, MARKS, LEGAL, rule, tail))
        else:
            rule = f"""    for mark in {marks}:
        for col in legal:
            if wins(rows, col, mark):
                return col
"""
            source = program(*imports, *constants, WINS, strategy(ROWS, MARKS, LEGAL, rule, tail))
        return f"{kind}_{rest}", source
    if game == KUHN:
        return kuhn(rng, good=True)
    return goofspiel(rng, good=True)


def draw_order(rng: random.Random, game: str) -> list[int]:
    """A preference over cells (tic_tac_toe) or columns (connect_four): mostly centre first, else any order."""
    if game == TTT:
        corners, sides = rng.sample((0, 2, 6, 8), 4), rng.sample((1, 3, 5, 7), 4)
        orders = ([4, *corners, *sides], [*corners, 4, *sides], [4, *sides, *corners], rng.sample(range(9), 9))
        return rng.choices(orders, (5, 2, 1.5, 1.5))[0]
    order = [3]
    for pair in ((2, 4), (1, 5), (0, 6)):
        order += rng.sample(pair, 2)
    return order if rng.random() < 0.65 else rng.sample(range(7), 7)


def then(rng: random.Random, game: str, allow_random: bool) -> tuple[str, list[str], list[str], str]:
    """What a program does when no rule fires: (its name, imports, constants, the strategy's last lines).

    The first legal action of a preference order, a random legal action, or the order with some chance of a
    random action in its place.
    """
    kind = rng.choices(("order", "random", "mixed"), (5, 2 if allow_random else 0, 3))[0]
    if kind == "random":
        return kind, ["import random"], [], "    return random.choice(legal)\n"
    constants = [f"ORDER = {draw_order(rng, game)}"]
    if kind == "order":
        return kind, [], constants, ordered("ORDER")
    chance = rng.choice((0.1, 0.3, 0.5, 0.7))
    tail = f"""    if random.random() < {chance}:
        return random.choice(legal)
""" + ordered("ORDER")
    return kind, ["import random"], constants, tail


def kuhn(rng: random.Random, good: bool) -> tuple[str, str]:
    """Bet from a card up (the string's first character: 0 jack, 1 queen, 2 king), call from another."""
    bet = 0 if good else rng.choice((1, 2, 3))  # against a random caller a bluff wins half the time
    call = rng.choice((1, 2)) if good else rng.choice((0, 1, 2))
    body = f"""    card = int(observation["observation_string"][0])
    facing = "2" in observation["observation_string"][1:]
    if facing:
        return "Bet" if card >= {call} else "Pass"
    return "Bet" if card >= {bet} else "Pass"
"""
    return f"bet{bet}_call{call}", strategy(body)


def goofspiel(rng: random.Random, good: bool) -> tuple[str, str]:
    """Bid near the point card (ids are bids minus one), or high for high cards and low for the rest."""
    kind = "match" if good else rng.choice(("match", "high_low", "high_low"))
    if kind == "match":
        offset = rng.choice((-1, 0, 1)) if good else rng.choice((-3, -2, 2, 3))
        target = "point - 1" if offset == 0 else f"point - 1 + {offset}" if offset > 0 else f"point - 1 - {-offset}"
        return f"match{offset:+d}", strategy(
            LEGAL, POINT, f"    return min(legal, key=lambda a: abs(a - ({target})))\n"
        )
    threshold = rng.choice((4, 5, 7, 9, 11, 12))
    body = f"""    if point >= {threshold}:
        return legal[-1]
    return legal[0]
"""
    return f"high_low{threshold}", strategy(LEGAL, POINT, body)


GENERATORS = {"bad": bad, "weak": weak, "medium": medium, "good": good}
