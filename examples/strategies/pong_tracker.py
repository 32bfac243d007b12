"""Atari Pong: meet the ball where it will cross your paddle's column, hitting it a little off-centre.

    stratagem play pong --strategy examples/strategies/pong_tracker.py --episodes 20 --seed 0

The ball's velocity is the difference of its last two positions (kept in MEMORY between calls);
its path to the paddle is unfolded over bounces off the top and bottom walls. The paddle has
momentum: a press moves it about 10 px at once and 12 px more on the next step, so the move
chosen is the one whose resulting rest position is nearest the target, counting the previous
move's carry-over. Aiming 3 px below the centre angles the returns, which the computer misses.
"""

MEMORY = {}
TOP, BOTTOM = 34, 190  # the ball's top edge stays within these rows
MOVES = {"RIGHT": -1, "NOOP": 0, "LEFT": 1}  # in Pong, RIGHT moves the paddle up, LEFT down
CARRY, PRESS = 14, 20  # px the previous move still adds; px a move adds, now and next step
AIM = 3


def crossing_y(x, y, dx, dy, at_x):
    """The ball's y when it reaches column ``at_x``, bounces unfolded; None when moving away."""
    if dx <= 0:
        return None
    y = y + dy * (at_x - x) / dx
    span = BOTTOM - TOP
    y = (y - TOP) % (2 * span)
    if y > span:
        y = 2 * span - y
    return TOP + y


def strategy(obs):
    o = obs["objects"]
    paddle = o["player_y"] + 8
    ball_x, ball_y = o["ball_x"], o["ball_y"]
    previous = MEMORY.get("ball")
    MEMORY["ball"] = None if ball_y is None else (ball_x, ball_y)
    target = (TOP + BOTTOM) // 2
    if ball_y is not None:
        target = ball_y + 2
        if previous is not None:
            hit = crossing_y(ball_x, ball_y, ball_x - previous[0], ball_y - previous[1], o["player_x"] - 2)
            if hit is not None:
                target = hit + 2 + AIM
    last = MEMORY.get("move", 0)
    best = min(MOVES, key=lambda name: abs(paddle + CARRY * last + PRESS * MOVES[name] - target))
    MEMORY["move"] = MOVES[best]
    return best
