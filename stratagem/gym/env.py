"""Every stratagem environment as a ``gymnasium.Env``, in this process or on a server.

    import gymnasium, stratagem.gym.env
    env = gymnasium.make("stratagem/2048-v0")                  # every registered environment
    env = GymEnv("2048", url="http://127.0.0.1:8000")          # the same game on a server
    env = GymEnv("./examples/custom_env/openenv.yaml")         # a user's manifest
    env = GymEnv(url="http://127.0.0.1:8000")                  # any server: spaces from its /schema

How an environment looks to Gymnasium is its own business, through three optional methods
(duck-typed, so the environment modules need not import gymnasium):

- ``gym_spaces(self) -> (observation_space, action_space)``
- ``to_gym_obs(self, observation) -> element of observation_space``
- ``from_gym_action(self, action, observation) -> Action | dict``; environments with
  ``timed_calls`` also get ``elapsed_s``, the seconds the agent took since it was handed
  ``observation`` (as ``program_action`` does for programs).

They must depend only on the constructor's parameters, never on a running episode: for a
remote environment they run on a local instance that never plays (``observation`` is the one
the agent acted on). An environment without them gets spaces derived from its JSON schemas
(``gym_spaces.py``). Conventions on top: ``reset(seed=s)`` plays stratagem's seed ``s`` (the
game ``stratagem play --seed s`` plays); ``options`` become keyword arguments of the
environment's ``reset``; an action the environment refuses (illegal move, bad value) leaves
the episode as it was and is reported in ``info["invalid_action"]`` with
``invalid_action_reward`` (or raised, with ``invalid_action="raise"``); ``info`` carries the
observation's ``won`` and ``score`` and, when the observation lists ``legal_actions`` (ids, or
objects with an ``id``) and the action space is ``Discrete``, an ``action_mask``; the
manifest's ``max_episode_steps`` truncates.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from pathlib import Path
from typing import Any

import gymnasium
import httpx
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from stratagem.client.http import EnvClient, LocalEnvClient
from stratagem.client.wire import http_url
from stratagem.envs.core import Environment, InvalidAction, Observation, StepResult
from stratagem.envs.spec import MANIFEST_DIR, EnvSpec, registry, resolve
from stratagem.gym.spaces import action_codec, observation_codec

NAMESPACE = "stratagem"
INVALID_ACTION_MODES = ("skip", "raise")


class HookCodec:
    """Spaces and conversions from the environment's own ``gym_spaces`` hooks."""

    def __init__(self, env: Environment) -> None:
        self.env, self.timed = env, bool(getattr(env, "timed_calls", False))
        self.observation_space, self.action_space = env.gym_spaces()  # type: ignore[attr-defined]

    def model(self, observation: dict[str, Any]) -> Observation:
        return self.env.observation_type.model_validate(observation)

    def encode(self, observation: dict[str, Any]) -> Any:
        return self.env.to_gym_obs(self.model(observation))  # type: ignore[attr-defined]

    def decode(self, action: Any, observation: dict[str, Any], elapsed_s: float) -> Any:
        timing = {"elapsed_s": elapsed_s} if self.timed else {}
        return self.env.from_gym_action(action, self.model(observation), **timing)  # type: ignore[attr-defined]

    def info(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """The step's metadata as ``info``; the environment may leave keys out (``gym_info``: the sandbox's time)."""
        hook = getattr(self.env, "gym_info", None)
        return hook(metadata) if hook is not None else metadata


class SchemaCodec:
    """Spaces and conversions derived from the action and observation JSON schemas."""

    def __init__(
        self, observation_schema: dict[str, Any], action_schema: dict[str, Any], fields: list[str] | None, timed: bool
    ) -> None:
        if timed:  # the adapter times the agent (as the runner times programs); the agent does not report it
            action_schema = {
                **action_schema,
                "properties": {k: v for k, v in action_schema.get("properties", {}).items() if k != "elapsed_s"},
                "required": [k for k in action_schema.get("required", []) if k != "elapsed_s"],
            }
        self.obs, self.act = observation_codec(observation_schema), action_codec(action_schema, fields)
        self.timed = timed
        self.observation_space, self.action_space = self.obs.space, self.act.space

    def encode(self, observation: dict[str, Any]) -> Any:
        return self.obs.encode(observation)

    def decode(self, action: Any, observation: dict[str, Any], elapsed_s: float) -> Any:
        decoded = self.act.decode(action)
        return {**decoded, "elapsed_s": elapsed_s} if self.timed else decoded

    def info(self, metadata: dict[str, Any]) -> dict[str, Any]:
        return metadata


class GymEnv(gymnasium.Env):
    """A stratagem environment (a registered name, a manifest, an ``EnvSpec``, and/or a server URL).

    ``params`` are the constructor's: they build the local environment, or, with ``url``, must be
    those the server runs with, since the spaces may depend on them (matmul's ``size``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        env: str | Path | EnvSpec | None = None,
        *,
        url: str | None = None,
        params: dict[str, Any] | None = None,
        transport: str = "ws",
        action_fields: list[str] | None = None,
        invalid_action: str = "skip",
        invalid_action_reward: float = 0.0,
        render_mode: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        if env is None and url is None:
            raise ValueError("give the environment (a registered name or an openenv.yaml path), its url, or both")
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(f"invalid_action must be one of {INVALID_ACTION_MODES}, got {invalid_action!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.env_spec = resolve(env) if isinstance(env, (str, Path)) else env
        self.params = dict(params or {})
        self.client: EnvClient | None = None
        self._hooks_env: Environment | None = None  # a local instance kept only for its hooks (remote play)
        self.render_mode, self.invalid_action = render_mode, invalid_action
        self.invalid_action_reward = invalid_action_reward
        self.max_episode_steps = self.env_spec.max_episode_steps if self.env_spec else None
        if url is None:
            local = self.env_spec.make(**self.params)
            self.client = LocalEnvClient(local)
        else:
            self.client = EnvClient.connect(url, transport=transport, timeout_s=timeout_s)
            local = None
        try:
            self.codec = self._codec(local, url, action_fields, timeout_s)
        except BaseException:
            self.close()
            raise
        self.observation_space, self.action_space = self.codec.observation_space, self.codec.action_space
        self._last: StepResult | None = None
        self._steps, self._handed_at = 0, 0.0

    def _codec(self, local: Environment | None, url: str | None, fields: list[str] | None, timeout_s: float) -> Any:
        cls = type(local) if local is not None else (self.env_spec.env_class() if self.env_spec else None)
        if cls is not None and hasattr(cls, "gym_spaces"):
            if fields is not None:
                raise ValueError(f"{cls.__name__} defines its own gym_spaces; action_fields applies only without one")
            if local is None:
                local = self._hooks_env = self.env_spec.make(**self.params)
            return HookCodec(local)
        if cls is not None:
            obs_schema, act_schema = cls.observation_type.model_json_schema(), cls.action_type.model_json_schema()
            return SchemaCodec(obs_schema, act_schema, fields, bool(getattr(cls, "timed_calls", False)))
        schema = httpx.get(http_url(url) + "/schema", timeout=timeout_s).raise_for_status().json()
        return SchemaCodec(schema["observation"], schema["action"], fields, timed=False)

    # --- the Gymnasium API ---------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        game_seed = seed if seed is not None else int(self.np_random.integers(2**31))
        options = dict(options or {})
        if isinstance(self.client, LocalEnvClient):
            _check_reset_options(self.client.env, options)
        self._last = self.client.reset(seed=game_seed, **options)
        self._steps = 0
        return self._observe(self._last, {})

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        last = self._last
        if last is None or last.done or self._truncated():
            raise ResetNeeded("the episode is over (or never started): call reset() first")
        elapsed_s = max(time.perf_counter() - self._handed_at, 1e-9)
        self._steps += 1
        try:
            result = self.client.step(self._decode(action, last, elapsed_s))
        except InvalidAction as exc:  # also a server's 422: the episode is unharmed
            if self.invalid_action == "raise":
                raise
            obs, info = self._observe(last, {"invalid_action": str(exc)})
            return obs, float(self.invalid_action_reward), False, self._truncated(), info
        self._last = result
        obs, info = self._observe(result, {})
        env_truncated = bool(result.metadata.get("truncated"))
        terminated = result.done and not env_truncated
        return obs, float(result.reward or 0.0), terminated, env_truncated or self._truncated(), info

    def render(self) -> str | None:
        if self.render_mode is None or self._last is None:
            return None
        observation = self._last.observation
        text = observation.get("text")
        return text if isinstance(text, str) else json.dumps(observation, sort_keys=True)

    def close(self) -> None:
        for closable in (getattr(self, "client", None), getattr(self, "_hooks_env", None)):
            if closable is not None:
                closable.close()
        self.client = self._hooks_env = None  # type: ignore[assignment]
        super().close()

    # --- helpers -----------------------------------------------------------------------------
    def _decode(self, action: Any, last: StepResult, elapsed_s: float) -> Any:
        """The environment's action for a gym action; one that does not fit is an InvalidAction."""
        try:
            return self.codec.decode(action, last.observation, elapsed_s)
        except (ValueError, TypeError, KeyError, IndexError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidAction(f"the action {action!r} does not fit {self.action_space}: {exc}") from None

    def _truncated(self) -> bool:
        return self.max_episode_steps is not None and self._steps >= self.max_episode_steps

    def _observe(self, result: StepResult, info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """A fresh gym observation and info: users keep both, so nothing is shared between calls."""
        observation = result.observation
        metadata = self.codec.info({k: v for k, v in result.metadata.items() if k != "session_id"})
        info = {**copy.deepcopy(metadata), **info}
        for key in ("won", "score"):
            if key in observation:
                info[key] = observation[key]
        legal = observation.get("legal_actions")
        if isinstance(self.action_space, spaces.Discrete) and isinstance(legal, list):
            mask = np.zeros(self.action_space.n, dtype=np.int8)
            start = int(self.action_space.start)
            ids = [a.get("id") if isinstance(a, dict) else a for a in legal]  # ids, or OpenSpiel's {"id", "name"}
            mask[[a - start for a in ids if type(a) is int and start <= a < start + self.action_space.n]] = 1
            info["action_mask"] = mask
        self._handed_at = time.perf_counter()
        return self.codec.encode(observation), info


def _check_reset_options(env: Environment, options: dict[str, Any]) -> None:
    """Options are the environment's reset keywords: refuse unknown ones by name, not with a TypeError."""
    try:
        inspect.signature(env.reset).bind(seed=0, **options)
    except TypeError:
        accepted = [p for p in inspect.signature(env.reset).parameters if p not in ("seed", "episode_id")]
        raise ValueError(
            f"unknown reset option(s) {sorted(options)}; {type(env).__name__}.reset accepts: {accepted or 'none'}"
        ) from None


# --- registration with Gymnasium -----------------------------------------------------------
def gym_id(name: str) -> str:
    return f"{NAMESPACE}/{name}-v0"


def register(env: str | Path | EnvSpec, **kwargs: Any) -> str:
    """Register a manifest (or a registered name) with Gymnasium; the id for ``gymnasium.make``.

    ``kwargs`` are defaults for ``GymEnv`` (``url``, ``params``, ...), overridable in ``make``.
    """
    spec = resolve(env) if isinstance(env, (str, Path)) else env
    env_id = gym_id(spec.name)
    builtin = spec.source is not None and spec.source.parent.parent == MANIFEST_DIR.resolve()  # manifests/<name>/
    target = spec.name if builtin else (str(spec.source) if spec.source else spec)
    if env_id in gymnasium.registry:
        if gymnasium.registry[env_id].kwargs.get("env") == target:
            return env_id
        raise ValueError(f"{env_id} is registered already, for {gymnasium.registry[env_id].kwargs.get('env')}")
    gymnasium.register(env_id, entry_point=f"{__name__}:GymEnv", kwargs={"env": target, **kwargs})
    return env_id


def register_builtin() -> list[str]:
    """Every environment in stratagem's registry, as ``stratagem/<name>-v0``."""
    return [register(spec) for spec in registry().values()]


register_builtin()
