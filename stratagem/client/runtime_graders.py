"""OpenEnv 0.10's runtime graders, mirrored, for ``stratagem validate``.

``openenv validate`` grades a server on an episode its runtime collector played; a server we
call valid should pass the same grades, judged the same way. Grading needs only the recorded
episode, the schemas and the declared reward range, not the server, so it is kept apart from
the checks that talk to the server: ``runtime.reward_well_formed`` (every step reward a finite
number, within the declared range when one is known), ``runtime.observation_schema`` (each
observation, with reward and done, valid against ``/schema``) and ``runtime.state_contract``
(``episode_id`` as requested, ``step_count`` = steps since reset).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stratagem.client.check_results import Failed, Skipped, expect


def _numeric(value: Any) -> bool:
    """A finite JSON number (not a boolean), as OpenEnv 0.10's ``runtime.reward_well_formed`` wants."""
    return type(value) in (int, float) and math.isfinite(value)


def schema_bounds(schema: Any) -> tuple[float, float] | None:
    """``minimum``/``maximum`` of the observation schema's ``reward`` (directly or in one ``anyOf`` branch)."""
    reward = (schema or {}).get("properties", {}).get("reward") if isinstance(schema, dict) else None
    for branch in [reward, *((reward or {}).get("anyOf") or [])]:
        if isinstance(branch, dict) and _numeric(branch.get("minimum")) and _numeric(branch.get("maximum")):
            return float(branch["minimum"]), float(branch["maximum"])
    return None


def manifest_reward_range(path: str | Path) -> tuple[float, float]:
    """``validation.reward.range`` of an ``openenv.yaml`` (OpenEnv 0.10's default, [0, 1], when the block
    has none), the range ``openenv validate PACKAGE`` grades rewards against."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    validation = data.get("validation") if isinstance(data, dict) else None
    if not isinstance(validation, dict):
        raise ValueError(f"{path} has no 'validation:' block, so it declares no reward range")
    reward = validation.get("reward")
    bounds = reward.get("range", (0.0, 1.0)) if isinstance(reward, dict) else (0.0, 1.0)
    if not (
        isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(map(_numeric, bounds)) and bounds[0] < bounds[1]
    ):
        raise ValueError(f"{path}: validation.reward.range must be [low, high] with low < high, got {bounds!r}")
    return float(bounds[0]), float(bounds[1])


@dataclass
class Episode:
    """One WebSocket episode as OpenEnv 0.10's runtime collector records it."""

    episode_id: str  # the id the reset asked for
    reset: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)  # states[i]: after i steps


# A known cause, named in the report: OpenEnv's own OpenSpiel server counts its opponent's plies.
OPPONENT_PLIES = (
    "the server counts more than this client's steps, e.g. an opponent's moves, as OpenEnv's OpenSpiel server does"
)


def mirrors(grader: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Mark a check as OpenEnv 0.10's runtime grader ``grader``: its failures say that grader fails too, so
    that a failing server (OpenEnv's own included) reads as a finding about the server, not as a crash here."""

    def wrap(check: Callable[..., str]) -> Callable[..., str]:
        @functools.wraps(check)
        def checked(*args: Any) -> str:
            try:
                return check(*args)
            except Failed as exc:
                raise Failed(f"{exc} [OpenEnv 0.10's {grader} fails this server too]") from None

        return checked

    return wrap


@mirrors("runtime.reward_well_formed")
def grade_rewards(episode: Episode, reward_range: tuple[float, float] | None, range_source: str | None) -> str:
    """OpenEnv 0.10's ``runtime.reward_well_formed``: reset reward null or a number, every step's a finite
    number, within the declared range when one is known."""
    low, high = reward_range or (-math.inf, math.inf)
    reset = episode.reset.get("reward")
    expect(reset is None or (_numeric(reset) and low <= reset <= high), f"reset reward {reset!r} out of range")
    for index, data in enumerate(episode.steps, 1):
        reward = data.get("reward")
        expect(_numeric(reward), f"step {index}: reward {reward!r} is not a finite number")
        expect(low <= reward <= high, f"step {index}: reward {reward} outside the range [{low:g}, {high:g}]")
    rewards = [data["reward"] for data in episode.steps]
    seen = f"{len(rewards)} step rewards numeric, {min(rewards):g}..{max(rewards):g}"
    if reward_range is None:
        return seen + " (no range declared: --reward-range or --manifest to check one)"
    return seen + f", within [{low:g}, {high:g}] ({range_source})"


@mirrors("runtime.observation_schema")
def grade_observation_schema(episode: Episode, schemas: dict[str, Any]) -> str:
    """OpenEnv 0.10's ``runtime.observation_schema``: each observation, with reward and done, is valid
    against ``/schema``'s ``observation`` (``reset_observation`` for the reset, when given)."""
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        raise Skipped("needs the jsonschema package (pip install jsonschema)") from None
    if not schemas:
        raise Skipped("no schema to check against (see 'GET /schema')")
    step = Draft202012Validator(schemas["observation"])
    reset_schema = schemas.get("reset_observation")
    reset = Draft202012Validator(reset_schema) if reset_schema else step
    for where, validator, data in [("reset", reset, episode.reset)] + [
        (f"step {i}", step, data) for i, data in enumerate(episode.steps, 1)
    ]:
        instance = {**data["observation"], "reward": data.get("reward"), "done": data["done"]}
        error = next(iter(validator.iter_errors(instance)), None)
        if error is not None:
            at = "/".join(str(p) for p in error.absolute_path) or "the observation"
            raise Failed(f"{where}: {at}: {error.message}"[:300])
    which = "reset_observation and observation" if reset is not step else "observation"
    return f"{len(episode.steps) + 1} observations valid against /schema {which}"


@mirrors("runtime.state_contract")
def grade_state_contract(episode: Episode) -> str:
    """OpenEnv 0.10's ``runtime.state_contract``: after the reset and every step, ``state`` has the
    ``episode_id`` the reset asked for and ``step_count`` = the steps since the reset."""
    problems = []
    ids = {state.get("episode_id") for state in episode.states}
    if ids != {episode.episode_id}:
        seen = ", ".join(sorted(repr(i)[:40] for i in ids))
        problems.append(
            f"episode_id is {seen}, not the {episode.episode_id!r} the reset asked for (the server ignores "
            "a requested episode_id)"
        )
    for steps, state in enumerate(episode.states):
        count = state.get("step_count")
        if type(count) is not int:
            problems.append(f"step_count {count!r} after {steps} step(s) is not an integer")
            break
        if count != steps:
            cause = OPPONENT_PLIES if count > steps else "the server counts fewer than this client's steps"
            problems.append(f"step_count is {count} after {steps} step(s) ({cause})")
            break
    if problems:
        raise Failed("; ".join(problems))
    return f"episode_id as requested, step_count 0..{len(episode.steps)} over {len(episode.states)} states"
