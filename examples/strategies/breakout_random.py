"""Atari Breakout, the random baseline: any legal action, uniformly.

stratagem play breakout --strategy examples/strategies/breakout_random.py --episodes 20 --seed 0
"""

import random


def strategy(obs):
    return random.choice(obs["actions"])
