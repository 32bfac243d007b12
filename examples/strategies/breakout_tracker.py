"""Atari Breakout: serve, then be where the falling ball will reach the paddle's row.

    stratagem play breakout --strategy examples/strategies/breakout_tracker.py --episodes 20 --seed 0

The ball's velocity is the difference of its last two positions (kept in MEMORY between calls);
while it falls, its landing column is unfolded over bounces off the side walls. The paddle has
momentum: a press moves it about 12 px at once and 11 px more on the next step, so the move
chosen is the one whose resulting position is nearest the target, counting the previous move's
carry-over.
"""

MEMORY = {}
LEFT_WALL, RIGHT_WALL = 8, 150  # the ball's left edge stays within these columns
PADDLE_ROW = 185  # the ball's top edge when it meets the paddle
MOVES = {"LEFT": -1, "NOOP": 0, "RIGHT": 1}
CARRY, PRESS = 8, 12


def landing_x(x, y, dx, dy):
    """The ball's x when it reaches the paddle's row, bounces off the side walls unfolded."""
    x = x + dx * (PADDLE_ROW - y) / dy
    span = RIGHT_WALL - LEFT_WALL
    x = (x - LEFT_WALL) % (2 * span)
    if x > span:
        x = 2 * span - x
    return LEFT_WALL + x


def strategy(obs):
    o = obs["objects"]
    ball_x, ball_y = o["ball_x"], o["ball_y"]
    previous = MEMORY.get("ball")
    MEMORY["ball"] = None if ball_x is None else (ball_x, ball_y)
    if ball_x is None:  # no ball in play: serve
        MEMORY["move"] = 0
        return "FIRE"
    target = ball_x + 1
    if previous is not None and previous[1] < ball_y < PADDLE_ROW:
        target = landing_x(ball_x, ball_y, ball_x - previous[0], ball_y - previous[1]) + 1
    paddle = o["player_x"] + 8
    last = MEMORY.get("move", 0)
    best = min(MOVES, key=lambda name: abs(paddle + CARRY * last + PRESS * MOVES[name] - target))
    MEMORY["move"] = MOVES[best]
    return best
