"""How an Atari environment looks to Gymnasium (the hooks ``stratagem/gym/env.py`` looks up).

The spaces follow ale-py's own ``AtariEnv``: ``obs_type="ram"`` is a ``Box(0, 255, (128,),
uint8)``, ``obs_type="rgb"`` a ``Box(0, 255, (210, 160, 3), uint8)``, and the action a
``Discrete`` over the game's action set (minimal, or all 18 with ``full_action_space``), the
index being ``action_id``. Here the observation is a ``Dict`` holding the RAM, the screen as
``rgb`` when the environment was made with frames (``frames="png"`` or ``"raw"``), and the lives
left; the score so far is ``info["score"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from stratagem.envs.atari.frames import decode_frame
from stratagem.envs.atari.models import AtariAction, AtariObservation

MAX_LIVES = 255  # the ALE reads lives from a RAM byte


class AtariGymHooks:
    """Mixed into ``AtariEnv``; reads only its constructor's settings (``frames``, the action set)."""

    ale: Any
    frames: str
    action_names: list[str]

    def gym_spaces(self) -> tuple[spaces.Dict, spaces.Discrete]:
        ram = spaces.Box(0, 255, (self.ale.getRAMSize(),), np.uint8)
        observation = {"ram": ram, "lives": spaces.Box(0, MAX_LIVES, (), np.int64)}
        if self.frames != "none":
            height, width = self.ale.getScreenDims()
            observation["rgb"] = spaces.Box(0, 255, (height, width, 3), np.uint8)
        return spaces.Dict(observation), spaces.Discrete(len(self.action_names))

    def to_gym_obs(self, observation: AtariObservation) -> dict[str, Any]:
        gym_obs = {
            "ram": np.array(observation.ram, dtype=np.uint8),
            "lives": np.array(observation.lives, dtype=np.int64),
        }
        if self.frames != "none":
            if observation.frame is None:
                raise ValueError(
                    f"this environment was made with frames={self.frames!r}, so its observation_space has the "
                    "screen, but the episode was reset with frames='none': drop that reset option, or make the "
                    "environment with frames='none'"
                )
            gym_obs["rgb"] = decode_frame(observation.frame)
        return gym_obs

    def from_gym_action(self, action: Any, observation: AtariObservation) -> AtariAction:
        return AtariAction(action_id=int(action))
