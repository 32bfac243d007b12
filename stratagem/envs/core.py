"""The environment core: one base class and four small data types.

Shaped like Gymnasium's ``Env`` and OpenEnv's ``Environment`` so both audiences read it at
a glance: ``reset`` starts an episode, ``step`` advances it, ``state`` describes it. The
models are pydantic v2 so the server validates client input with the same classes the
environment uses, and the JSON schemas served at ``/schema`` come from them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from stratagem.envs.bridge import ProgramBridge


class Action(BaseModel):
    """What an agent sends. Unknown fields are an error, never silently dropped.

    ``metadata`` is OpenEnv's (its ``Action`` base has it, so every OpenEnv action's ``model_dump()``
    carries it); environments ignore it, and a dump leaves it out while it is empty, so recorded and
    replayed actions read as before (``{"action_id": 3}``).
    """

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form; the environment ignores it")

    @model_serializer(mode="wrap")
    def _without_empty_metadata(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = dump(self)
        if not self.metadata:
            data.pop("metadata", None)
        return data


class Observation(BaseModel):
    """What an agent sees. On the wire ``reward`` and ``done`` travel at the top level, and ``metadata`` both
    inside the observation and at the top level (``server/protocol.py``)."""

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


class Environment(ProgramBridge):
    """Subclass this, set the three model classes, implement ``reset``/``step``/``state``.

    One instance plays one episode at a time; the server makes one per session. Set
    ``inline_steps = True`` only when ``reset``/``step`` are short, bounded computations: the
    server then runs them on its event loop, saving a thread hop per call. How strategy
    programs play it (their arguments, their return value as an action) is ``ProgramBridge``'s.
    """

    inline_steps: bool = False

    action_type: type[Action] = Action
    observation_type: type[Observation] = Observation
    state_type: type[State] = State

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
        raise NotImplementedError

    def step(self, action: Action, timeout_s: float | None = None, **kwargs: Any) -> Observation:
        raise NotImplementedError

    def parse_action(self, action: Action | dict[str, Any]) -> Any:
        """``action`` as an ``action_type``: Python callers may pass a dict; a bad one raises pydantic's error."""
        if isinstance(action, self.action_type):
            return action
        return self.action_type.model_validate(action.model_dump() if isinstance(action, Action) else action)

    @property
    def state(self) -> State:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; the default has none."""
