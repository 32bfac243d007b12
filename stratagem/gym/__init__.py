"""Gymnasium's view of any stratagem environment, local or on a server: ``GymEnv`` and its spaces.

Importing it registers ``stratagem/<name>-v0`` with Gymnasium for every built-in environment.
"""

from stratagem.gym.env import GymEnv, register

__all__ = ["GymEnv", "register"]
