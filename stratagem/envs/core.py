"""The environment core: one base class and four small data types.

Shaped like Gymnasium's ``Env`` and OpenEnv's ``Environment`` so both audiences read it at
a glance: ``reset`` starts an episode, ``step`` advances it, ``state`` describes it. The
models are pydantic v2 so the server validates client input with the same classes the
environment uses, and the JSON schemas served at ``/schema`` come from them too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Action(BaseModel):
    """What an agent sends. Unknown fields are an error, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Observation(BaseModel):
    """What an agent sees. ``reward``, ``done`` and ``metadata`` travel at the top level."""

    model_config = ConfigDict(extra="forbid")

    done: bool = False
    reward: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class State(BaseModel):
    """Episode bookkeeping; environments add their own fields."""

    model_config = ConfigDict(extra="allow")

    episode_id: str | None = None
    step_count: int = Field(default=0, ge=0)


class EnvError(Exception):
    """A mistake by the caller that leaves the episode as it was."""


class InvalidAction(EnvError):
    """The action is well-formed but not allowed here (HTTP 422, WS EXECUTION_ERROR)."""


class EpisodeNotActive(EnvError):
    """``step`` before ``reset`` or after the episode ended (HTTP 409)."""


ObsT = TypeVar("ObsT")


@dataclass
class StepResult(Generic[ObsT]):
    """What a client gets back from ``reset`` and ``step``, local or remote."""

    observation: ObsT
    reward: float | None = None
    done: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


class Environment:
    """Subclass this, set the three model classes, implement ``reset``/``step``/``state``.

    One instance plays one episode at a time; the server makes one per session. Set
    ``inline_steps = True`` only when ``reset``/``step`` are short, bounded computations: the
    server then runs them on its event loop, saving a thread hop per call.
    """

    inline_steps: bool = False
    # True for tasks that reward speed: the runner then times each call of the program from
    # outside its process, caches thrashed first, and passes ``elapsed_s`` to ``program_action``.
    timed_calls: bool = False

    action_type: type[Action] = Action
    observation_type: type[Observation] = Observation
    state_type: type[State] = State

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        raise NotImplementedError

    def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        raise NotImplementedError

    @property
    def state(self) -> State:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; the default has none."""

    # The bridge to strategy programs (the manifest's ``strategy`` block names the function).
    def program_inputs(self, observation: Observation) -> tuple[Any, ...]:
        """The arguments a strategy program is called with: fresh copies, never the env's objects."""
        return (observation.model_dump(exclude={"reward", "done", "metadata"}),)

    def replay(self, seed: int, actions: list[Any], on_step: Callable[[Action | None, Observation], None] | None = None
               ) -> tuple[Observation, float]:  # fmt: skip
        """(final observation, total reward) after ``reset(seed)`` and ``actions`` (raw dicts).

        ``on_step`` sees the reset and each step. Raises EnvError or ValueError at the first
        action refused. The sandbox's parent replays every episode a program played, so an
        environment whose observations are costly may override this with a loop that builds
        only the last one when ``on_step`` is None.
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

    def program_action(self, value: Any) -> Action:
        """A program's return value as an action; raises ValueError when it is not one.

        Environments with ``timed_calls`` take a second argument, ``elapsed_s``.
        """
        return self.action_type.model_validate(value)
