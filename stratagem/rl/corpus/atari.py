"""Atari strategy programs over the named objects (``obs["objects"]``): Pong and Breakout (the training targets)
most, Freeway, Space Invaders and Ms. Pac-Man less.

One dialect for every game: ``o = obs["objects"]``; paddles and the cannon move with ``track(paddle, target)``
(the move toward ``target``, the rest move inside a dead zone); state between calls lives in a module-level
``MEMORY = {}`` (the ball's last position, whose difference is its velocity; the last move; a held direction).
Pong's ``track`` answers ``"RIGHT"`` to go up (its controls are inverted), Breakout's ``"LEFT"`` to go left.
Four families, each with parameters (dead zones, aims, look-ahead, periods, distances), so quality varies within
a family as well as across them:

- ``bad``: a constant action, a random one over all actions, tracking the wrong way (Pong's ``RIGHT`` taken as
  down), Breakout never serving (no ``FIRE`` while the ball is None), Space Invaders never firing.
- ``weak``: random among sensible actions, tracking with a big dead zone or with random moves mixed in.
- ``medium``: tracking the ball with a small dead zone (Breakout serving with ``FIRE``); Freeway's ``UP``;
  Space Invaders' ``FIRE`` or sweeps; Ms. Pac-Man's random direction held for some steps.
- ``good``: aiming where the ball will meet the paddle (velocity from ``MEMORY``, walls clipped, not unfolded;
  some count the paddle's momentum in); Freeway waiting while the car in the lane ahead is near; Space
  Invaders under the invaders' block; Ms. Pac-Man changing direction at walls. The next steps up (bounces
  unfolded, the momentum modelled) are ``examples/strategies/*_tracker.py``'s, far above the corpus.

Measured in the sandbox (``/work/scratch/atari-corpus/measure.py``: the first 2-6 programs of a game and family
in ``generate_samples(2000, 0, "atari")``, 2-4 seeds, the default ``Rubric()``), mean score, then win rate
(the machine shared, so episodes/s are low):

  game (-p setting)                  bad        weak       medium     good       episodes/s (2 workers)
  pong (1000 steps, target_score=0)  -21 0.00   -14 0.00   -1.6 0.31  +0.9 0.78  1.7-2.4 (8 programs x 4 seeds)
  pong (2000 steps, target_score=0)  -21 0.00   -18 0.00   -3.3 0.21  +1.0 0.67  1.8
  pong (whole games, to 21)          -21 0.00   -20 0.00   -8.0 0.00  +2.3 0.75  0.5 (8,000-10,000 steps)
  breakout (2000 steps)              0.5        7.8        49         136        1.7
  freeway (1000 steps; a game 2048)  0          7.0        10.5       13.0       1.3 (whole: 0/13/21/27)
  space_invaders (whole games)       0          91         269        303        3.0
  ms_pacman (whole games)            62         233        459        485        3.9 (noisy: sd ~250 a game)

The references: pong_tracker.py is +1.5 after 1000 steps (wins 21-5), breakout_tracker.py ~330 after 2000.
Pong scores slowly (a point every ~40 steps when losing, every few hundred in a rally), and ``score_shaped``
clips a negative points difference to 0: in truncated or whole games alike, bad, weak and medium programs all
get reward 1.0. ``target_score=0`` makes "not behind when the episode ends" a win, which orders the families:
wins 0 / .16 / .31 / .62 after 1000 steps (in process, 8 programs x 4 seeds a family; tracker 1.0).
"""

from __future__ import annotations

import random
from typing import Any

from stratagem.rl.corpus.common import Sample, draw, program

FAMILIES: dict[str, float] = {"bad": 0.15, "weak": 0.3, "medium": 0.35, "good": 0.2}
GAMES: dict[str, float] = {"pong": 0.35, "breakout": 0.35, "freeway": 0.1, "space_invaders": 0.1, "ms_pacman": 0.1}
# The environment and -p parameters a game's prompt names, and their weights: `--env atari` alone plays Pong.
WHERE: dict[str, tuple[tuple[str, dict[str, Any], float], ...]] = {
    "pong": (("pong", {}, 0.7), ("atari", {}, 0.15), ("atari", {"game": "Pong"}, 0.15)),
    "breakout": (("breakout", {}, 0.85), ("atari", {"game": "Breakout"}, 0.15)),
    "freeway": (("atari", {"game": "Freeway"}, 1.0),),
    "space_invaders": (("atari", {"game": "SpaceInvaders"}, 1.0),),
    "ms_pacman": (("atari", {"game": "MsPacman"}, 1.0),),
}
# Short episodes for training and measuring (see above); a share of the Pong and Breakout prompts name them, as
# `stratagem train pong -p max_episode_steps=1000 -p target_score=0` does.
SHORT: dict[str, dict[str, Any]] = {"pong": {"max_episode_steps": 1000, "target_score": 0},
                                    "breakout": {"max_episode_steps": 2000}}  # fmt: skip
SHORT_SHARE = 0.25
MEMORY = "MEMORY = {}"
RANDOM = "import random"
HEAD = 'def strategy(obs):\n    o = obs["objects"]\n'
REMEMBER = """    ball_x, ball_y = o["ball_x"], o["ball_y"]
    last = MEMORY.get("ball")
    MEMORY["ball"] = None if ball_x is None else (ball_x, ball_y)
"""
DIRECTIONS = '["UP", "RIGHT", "LEFT", "DOWN"]'
Built = tuple[str, list[str]]  # (variant, the program's top-level parts)


def generate(rng: random.Random) -> Sample:
    """One program: its family drawn by ``FAMILIES``, then its game, its parameters and its prompt's env."""
    family = draw(rng, FAMILIES)
    game = draw(rng, GAMES)
    variant, parts = BUILDERS[game][family](rng)
    places = WHERE[game]
    env, params, _ = rng.choices(places, weights=[w for *_, w in places])[0]
    if game in SHORT and rng.random() < SHORT_SHARE:
        params = {**params, **SHORT[game]}
    return Sample(family, f"{game}/{variant}", program(*parts), task="atari", env=env, params=dict(params))


def track(minus: str, plus: str, gap: int, rest: str = "NOOP") -> str:
    """The move that brings ``paddle`` toward ``target`` (``minus`` lowers the coordinate), ``rest`` near it."""
    return f"""def track(paddle, target):
    if target < paddle - {gap}:
        return "{minus}"
    if target > paddle + {gap}:
        return "{plus}"
    return "{rest}"
"""


def plus(expression: str, n: int) -> str:
    return f"{expression} + {n}" if n else expression


def constant(rng: random.Random, actions: tuple[str, ...]) -> Built:
    return "constant", [f'def strategy(obs):\n    return "{rng.choice(actions)}"\n']


def random_any(rng: random.Random) -> Built:
    return "random_any", [RANDOM, 'def strategy(obs):\n    return random.choice(obs["actions"])\n']


def random_among(rng: random.Random, actions: list[str], serve: str = "") -> Built:
    """A random action among sensible ones (a repeat weighs one more); ``serve``: lines before it."""
    pool = list(actions)
    if rng.random() < 0.4:
        pool.append(rng.choice(actions))
    rng.shuffle(pool)
    head = HEAD + serve if serve else "def strategy(obs):\n"
    return "random_moves", [RANDOM, f"{head}    return random.choice({pool})\n"]


def carry(paddle: str, px: int) -> str:
    """A good program's end: the paddle moves on for about a step after a press, so the last move counts."""
    return f"""    paddle = {paddle} + {px} * MEMORY.get("move", 0)
    move = track(paddle, target)
    MEMORY["move"] = MOVES[move]
    return move
"""


# Pong: the paddle's centre is player_y + 8, the ball's ball_y + 2; RIGHT moves up, LEFT down.
PONG_MOVES = ["RIGHT", "LEFT", "NOOP"]


def pong_idle(rng: random.Random) -> str:
    """What to do while the ball is None (between points)."""
    return rng.choice(('return "NOOP"', 'return "FIRE"', 'return track(o["player_y"] + 8, 110)'))


def pong_follow(rng: random.Random, up: str, down: str, gap: int) -> list[str]:
    aim = rng.choice((0, 2, 2, 4))
    return [track(up, down, gap), f"""{HEAD}    if o["ball_y"] is None:
        {pong_idle(rng)}
    return track(o["player_y"] + 8, {plus('o["ball_y"]', aim)})
"""]  # fmt: skip


def pong_bad(rng: random.Random) -> Built:
    kind = rng.choices(("constant", "random_any", "wrong_way"), weights=(0.3, 0.3, 0.4))[0]
    if kind == "constant":
        return constant(rng, ("NOOP", "FIRE", "RIGHT", "LEFT"))
    if kind == "random_any":
        return random_any(rng)
    return "wrong_way", pong_follow(rng, "LEFT", "RIGHT", rng.choice((2, 4, 8)))  # RIGHT taken as down


def pong_weak(rng: random.Random) -> Built:
    kind = rng.choices(("random_moves", "dead_zone", "noisy"), weights=(0.3, 0.35, 0.35))[0]
    if kind == "random_moves":
        return random_among(rng, PONG_MOVES)
    if kind == "dead_zone":
        return kind, pong_follow(rng, "RIGHT", "LEFT", rng.choice((14, 16, 20, 24)))
    p = rng.choice((0.3, 0.4, 0.5, 0.6))
    code = track("RIGHT", "LEFT", rng.choice((4, 6, 8)))
    return kind, [RANDOM, code, f"""{HEAD}    if o["ball_y"] is None or random.random() < {p}:
        return random.choice({PONG_MOVES})
    return track(o["player_y"] + 8, o["ball_y"] + 2)
"""]  # fmt: skip


def pong_medium(rng: random.Random) -> Built:
    return "follow", pong_follow(rng, "RIGHT", "LEFT", rng.choice((2, 3, 4, 5, 6, 8, 10)))


def pong_good(rng: random.Random) -> Built:
    """Aim where the ball will cross the paddle's column (straight on, clipped to the field), or a step or two
    ahead; the paddle's centre when the ball moves away, or its momentum counted in, sometimes."""
    gap, aim = rng.choice((3, 4, 6, 8, 10)), rng.choice((0, 2, 2, 4))
    kind = rng.choices(("lead", "ahead", "lead_carry"), weights=(0.5, 0.2, 0.3))[0]
    ahead = f"        target = target + {rng.choice(('dy', 'dy', '2 * dy'))}\n"
    if kind != "ahead":
        ahead = """        target = target + dy * (o["player_x"] - ball_x) / dx
        target = max(36, min(target, 190))
"""
    if kind != "lead_carry" and rng.random() < 0.35:
        ahead += "    else:\n        target = 110\n"
    parts, finish = [MEMORY, track("RIGHT", "LEFT", gap)], '    return track(o["player_y"] + 8, target)\n'
    if kind == "lead_carry":
        parts.insert(1, 'MOVES = {"RIGHT": -1, "NOOP": 0, "LEFT": 1}')
        finish = carry('o["player_y"] + 8', rng.choice((4, 6, 8, 12)))
    return kind, [*parts, f"""{HEAD}{REMEMBER}    if ball_x is None or last is None:
        {pong_idle(rng)}
    dx, dy = ball_x - last[0], ball_y - last[1]
    target = {plus("ball_y", aim)}
    if dx > 0:
{ahead}{finish}"""]  # fmt: skip


# Breakout: the paddle's centre is player_x + 8; FIRE serves the ball (None until then).
SERVE = '    if o["ball_x"] is None:\n        return "FIRE"\n'


def breakout_follow(rng: random.Random, left: str, right: str, gap: int, serve: bool = True) -> list[str]:
    idle = 'return "FIRE"' if serve else rng.choice(('return "NOOP"', 'return track(o["player_x"] + 8, 80)'))
    return [track(left, right, gap), f"""{HEAD}    if o["ball_x"] is None:
        {idle}
    return track(o["player_x"] + 8, {plus('o["ball_x"]', rng.choice((0, 1, 1, 3)))})
"""]  # fmt: skip


def breakout_bad(rng: random.Random) -> Built:
    kind = rng.choices(("constant", "random_any", "wrong_way", "no_serve"))[0]
    if kind == "constant":
        return constant(rng, ("NOOP", "FIRE", "FIRE", "RIGHT", "LEFT"))
    if kind == "random_any":
        return random_any(rng)
    if kind == "wrong_way":
        return kind, breakout_follow(rng, "RIGHT", "LEFT", rng.choice((2, 4, 8)))
    return kind, breakout_follow(rng, "LEFT", "RIGHT", rng.choice((2, 4, 8)), serve=False)


def breakout_weak(rng: random.Random) -> Built:
    kind = rng.choices(("random_moves", "dead_zone", "noisy"), weights=(0.3, 0.35, 0.35))[0]
    if kind == "random_moves":
        return random_among(rng, ["LEFT", "RIGHT", "NOOP"], SERVE)
    if kind == "dead_zone":
        return kind, breakout_follow(rng, "LEFT", "RIGHT", rng.choice((10, 12, 16, 20)))
    p = rng.choice((0.2, 0.3, 0.4, 0.5))
    return kind, [RANDOM, track("LEFT", "RIGHT", rng.choice((2, 4, 6))), f"""{HEAD}{SERVE}    if random.random() < {p}:
        return random.choice(["LEFT", "RIGHT", "NOOP"])
    return track(o["player_x"] + 8, o["ball_x"] + 1)
"""]  # fmt: skip


def breakout_medium(rng: random.Random) -> Built:
    if rng.random() < 0.7:
        return "follow", breakout_follow(rng, "LEFT", "RIGHT", rng.choice((2, 3, 4, 6, 8, 10)))
    return "lead", breakout_lead(rng, False)


def breakout_good(rng: random.Random) -> Built:
    return "lead_carry", breakout_lead(rng, True)


def breakout_lead(rng: random.Random, momentum: bool) -> list[str]:
    """While the ball falls, aim where it will reach the paddle's row (walls clipped, not unfolded)."""
    parts = [MEMORY, track("LEFT", "RIGHT", rng.choice((2, 4, 6, 8)))]
    finish = '    return track(o["player_x"] + 8, target)\n'
    if momentum:
        parts.insert(1, 'MOVES = {"LEFT": -1, "NOOP": 0, "RIGHT": 1}')
        finish = carry('o["player_x"] + 8', rng.choice((4, 6, 8, 10, 12)))
    return [*parts, f"""{HEAD}{REMEMBER}    if ball_x is None:
        return "FIRE"
    target = {plus("ball_x", rng.choice((0, 1, 1, 3)))}
    if last is not None and ball_y > last[1]:
        dx, dy = ball_x - last[0], ball_y - last[1]
        target = target + dx * (185 - ball_y) / dy
        target = max(8, min(target, 150))
{finish}"""]  # fmt: skip


# Freeway: UP climbs; lane k's car is at y 28 + 16k, lanes 0-4 (top) drive left, 5-9 right; the chicken's x 44.
def freeway_bad(rng: random.Random) -> Built:
    return constant(rng, ("NOOP", "DOWN")) if rng.random() < 0.6 else random_any(rng)


def freeway_weak(rng: random.Random) -> Built:
    p = rng.choice((0.4, 0.5, 0.6, 0.7, 0.8))
    return "random_up", [RANDOM, f"""def strategy(obs):
    if random.random() < {p}:
        return "UP"
    return "NOOP"
"""]  # fmt: skip


def freeway_medium(rng: random.Random) -> Built:
    if rng.random() < 0.6:
        return "up", ['def strategy(obs):\n    return "UP"\n']
    period = rng.choice((5, 8, 12, 20))
    return "up_pause", [f"""def strategy(obs):
    if obs["step"] % {period} == 0:
        return "NOOP"
    return "UP"
"""]  # fmt: skip


def freeway_good(rng: random.Random) -> Built:
    """Wait while the car in the lane ahead is near the chicken's column (on its side of the road, or both)."""
    if rng.random() < 0.6:
        near = rng.choice((4, 6, 8, 10, 12, 14))
        kind, test = "wait_side", f"(k < 5 and 36 < car < {44 + near}) or (k >= 5 and {44 - near} < car < 52)"
    else:
        near = rng.choice((4, 6, 8, 10, 12, 16))
        kind, test = "wait_near", f"abs(car - 44) < {near}"
    return kind, [f"""{HEAD}    k = (o["player_y"] - 29) // 16
    if 0 <= k < 10:
        car = o["car" + str(k) + "_x"]
        if {test}:
            return "NOOP"
    return "UP"
"""]  # fmt: skip


# Space Invaders: the cannon at player_x; FIRE shoots, LEFTFIRE and RIGHTFIRE move and shoot.
def invaders_bad(rng: random.Random) -> Built:
    if rng.random() < 0.5:
        return constant(rng, ("NOOP", "LEFT", "RIGHT"))
    return "no_fire", [RANDOM, 'def strategy(obs):\n    return random.choice(["LEFT", "RIGHT", "NOOP"])\n']


def invaders_weak(rng: random.Random) -> Built:
    return random_any(rng) if rng.random() < 0.4 else random_among(rng, ["FIRE", "LEFTFIRE", "RIGHTFIRE"])


def invaders_medium(rng: random.Random) -> Built:
    if rng.random() < 0.3:
        return "fire", ['def strategy(obs):\n    return "FIRE"\n']
    period = rng.choice((20, 30, 40, 60, 80, 120))
    first, second = rng.choice((("RIGHTFIRE", "LEFTFIRE"), ("LEFTFIRE", "RIGHTFIRE")))
    return "sweep", [f"""def strategy(obs):
    if obs["step"] // {period} % 2 == 0:
        return "{first}"
    return "{second}"
"""]  # fmt: skip


def invaders_good(rng: random.Random) -> Built:
    """Stay under a column of the invaders' block (its x plus an offset), firing."""
    offset, gap = rng.choice((10, 20, 30, 40, 50)), rng.choice((2, 2, 3))
    return "under_block", [track("LEFTFIRE", "RIGHTFIRE", gap, "FIRE"),
                           f'{HEAD}    return track(o["player_x"], o["invaders_x"] + {offset})\n']  # fmt: skip


# Ms. Pac-Man: four ghosts (blinky, pinky, inky, sue) at <name>_x, <name>_y; UP, RIGHT, LEFT, DOWN.
HOLD = f"""    if obs["step"] % {{period}} == 0 or "move" not in MEMORY:
        MEMORY["move"] = random.choice({DIRECTIONS})
    return MEMORY["move"]
"""


def pacman_bad(rng: random.Random) -> Built:
    return constant(rng, ("NOOP", "UP", "RIGHT", "LEFT", "DOWN"))


def pacman_weak(rng: random.Random) -> Built:
    if rng.random() < 0.5:
        return random_any(rng)
    return "random_moves", [RANDOM, f"def strategy(obs):\n    return random.choice({DIRECTIONS})\n"]


def pacman_medium(rng: random.Random) -> Built:
    if rng.random() < 0.6:
        return "hold", [RANDOM, MEMORY, "def strategy(obs):\n" + HOLD.format(period=rng.choice((4, 8, 12, 16, 24, 40)))]
    return "flee", pacman_program(rng, stuck=False, flee=True)


def pacman_good(rng: random.Random) -> Built:
    flee = rng.random() < 0.5
    return "unstuck_flee" if flee else "unstuck", pacman_program(rng, stuck=True, flee=flee)


def pacman_program(rng: random.Random, stuck: bool, flee: bool) -> list[str]:
    """Away from the nearest ghost when it is close (``flee``); else a random direction held for some steps, or
    until the position stops changing (``stuck``: a wall)."""
    parts, body = [RANDOM, MEMORY], '    x, y = o["player_x"], o["player_y"]\n'
    if stuck:
        body += '    stuck = MEMORY.get("at") == (x, y)\n    MEMORY["at"] = (x, y)\n'
    if flee:
        parts.append('GHOSTS = ["blinky", "pinky", "inky", "sue"]')
        body += f"""    near = min(GHOSTS, key=lambda g: abs(o[g + "_x"] - x) + abs(o[g + "_y"] - y))
    dx, dy = o[near + "_x"] - x, o[near + "_y"] - y
    if abs(dx) + abs(dy) < {rng.choice((16, 24, 32, 40, 48))}:
        if abs(dx) > abs(dy):
            return "LEFT" if dx > 0 else "RIGHT"
        return "UP" if dy > 0 else "DOWN"
"""
    hold = HOLD.format(period=rng.choice((16, 24, 32, 64) if stuck else (8, 12, 16, 24)))
    if stuck:
        hold = hold.replace("    if ", "    if stuck or ", 1)
    return [*parts, HEAD + body + hold]


BUILDERS = {
    "pong": {"bad": pong_bad, "weak": pong_weak, "medium": pong_medium, "good": pong_good},
    "breakout": {"bad": breakout_bad, "weak": breakout_weak, "medium": breakout_medium, "good": breakout_good},
    "freeway": {"bad": freeway_bad, "weak": freeway_weak, "medium": freeway_medium, "good": freeway_good},
    "space_invaders": {"bad": invaders_bad, "weak": invaders_weak, "medium": invaders_medium, "good": invaders_good},
    "ms_pacman": {"bad": pacman_bad, "weak": pacman_weak, "medium": pacman_medium, "good": pacman_good},
}
