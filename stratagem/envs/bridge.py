"""How strategy programs play an environment: their arguments, their moves, whole episodes.

Every ``Environment`` has these defaults; an environment overrides what it must. The sandbox
(``agents/worker.py``) plays each episode with ``play`` and the parent checks it with ``replay``,
so both sit on the hot path of evaluation: an environment whose observations are costly to
build overrides them with loops that build only the last one (2048 does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

Action = Observation = BaseModel  # core.py's classes, which subclass this mixin: named here without importing core


class ProgramBridge:
    # True for tasks that reward speed: the runner then times each call of the program from
    # outside its process, caches thrashed first, and passes ``elapsed_s`` to ``program_action``.
    timed_calls: bool = False
    # True when a step is costly (an MCTS opponent thinking): the runner then holds the game itself and
    # times each call of the program alone. Otherwise the worker plays the game, and a call's clock (the
    # gap between the worker's reports) also covers the game's own step, which must stay well under 0.1 s.
    slow_steps: bool = False

    def program_inputs(self, observation: Observation) -> tuple[Any, ...]:
        """The arguments a strategy program is called with: fresh copies, never the env's objects."""
        return (observation.model_dump(exclude={"reward", "done", "metadata"}),)

    def program_action(self, value: Any) -> Action:
        """A program's return value as an action; raises ValueError when it is not one.

        Environments with ``timed_calls`` take a second argument, ``elapsed_s``.
        """
        return self.action_type.model_validate(value)

    def play(self, seed: int, policy: Callable[..., Any], actions: list[dict[str, Any]]) -> Observation:
        """Play one episode from ``reset(seed)``, ``policy(*program_inputs)`` choosing every move.

        Each action taken is appended to ``actions`` as a dict, so the caller keeps them when the
        policy raises or a move is refused (ValueError or EnvError), which propagate.
        """
        obs = self.reset(seed=seed, episode_id=f"seed-{seed}")
        while not obs.done:
            action = self.program_action(policy(*self.program_inputs(obs)))
            obs = self.step(action)
            actions.append(action.model_dump(exclude_none=True))
        return obs

    def replay(
        self, seed: int, actions: list[Any], on_step: Callable[[Action | None, Observation], None] | None = None
    ) -> tuple[Observation, float]:
        """(final observation, total reward) after ``reset(seed)`` and ``actions`` (raw dicts).

        ``on_step`` sees the reset and each step. Raises EnvError or ValueError at the first
        action refused.
        """
        obs, total = self.reset(seed=seed, episode_id=f"seed-{seed}"), 0.0
        if on_step is not None:
            on_step(None, obs)
        for raw in actions:
            action = self.action_type.model_validate(raw)
            obs = self.step(action)
            total += obs.reward or 0.0
            if on_step is not None:
                on_step(action, obs)
        return obs, total
