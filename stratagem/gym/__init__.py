"""Gymnasium's view of any stratagem environment, local or on a server: ``GymEnv`` and its spaces."""

from stratagem.gym.env import GymEnv

__all__ = ["GymEnv"]
