"""A tiny user environment: add to a counter until it reaches the target.

``crash`` is a bug in the environment (a 500, never a dead server); ``sleep`` blocks in
time.sleep (the thread path's deadline must fire); ``SpinEnv`` runs inline on the event loop
and ``spin`` loops in Python forever (the watchdog must fire).
"""

from __future__ import annotations

import time
import uuid

from pydantic import Field

from stratagem.envs.core import Action, Environment, EpisodeNotActive, InvalidAction, Observation, State


class ToyAction(Action):
    add: int = Field(default=1, ge=0, le=10)
    sleep: float = Field(default=0.0, ge=0)
    spin: bool = False
    crash: bool = False


class ToyObservation(Observation):
    count: int
    target: int


class ToyEnv(Environment):
    action_type = ToyAction
    observation_type = ToyObservation

    def __init__(self, target: int = 3, max_episode_steps: int | None = None) -> None:
        if target < 1:
            raise ValueError("target must be >= 1")
        self.target = target
        self._state = State()
        self.count: int | None = None

    def reset(self, seed: int | None = None, episode_id: str | None = None, start: int = 0) -> ToyObservation:
        self.count = start
        self._state = State(episode_id=episode_id or uuid.uuid4().hex, step_count=0)
        return ToyObservation(count=self.count, target=self.target)

    def step(self, action: ToyAction, timeout_s: float | None = None) -> ToyObservation:
        if self.count is None:
            raise EpisodeNotActive("call reset first")
        if self.count >= self.target:
            raise EpisodeNotActive("episode over")
        if action.add == 0:
            raise InvalidAction("adding 0 is not a move")
        if action.crash:
            raise ZeroDivisionError("a bug in the environment")
        if action.sleep:
            time.sleep(action.sleep)
        while action.spin:
            pass
        self.count += action.add
        self._state.step_count += 1
        done = self.count >= self.target
        return ToyObservation(count=self.count, target=self.target, reward=float(action.add), done=done)

    @property
    def state(self) -> State:
        return self._state


class SpinEnv(ToyEnv):
    inline_steps = True
