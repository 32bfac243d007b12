"""Atari Pong, the random baseline: any legal action, uniformly.

stratagem play pong --strategy examples/strategies/pong_random.py --episodes 20 --seed 0
"""

import random


def strategy(obs):
    return random.choice(obs["actions"])
