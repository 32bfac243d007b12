"""What OpenEnv's clients see: their typed clients play whole episodes against our servers, and every frame
keeps the rules of OpenEnv 0.10's runtime graders.

The typed clients (``tests/openenv_typed.py``) are written to the contract of OpenEnv's OpenSpielEnv,
AtariEnv and CodingEnv, which are not on PyPI. Each one here records the raw frames it parses, and the
frames are held to ``openenv validate``'s runtime rules: a numeric, finite step reward within the
manifest's declared range; ``observation`` plus ``reward`` and ``done`` valid against ``/schema``'s
observation (``reset_observation`` for a reset); the state's ``episode_id`` the one the reset asked for and
its ``step_count`` the steps since. The same clients also run under openenv-core 0.3.0 (a second
environment, ``STRATAGEM_OPENENV_LEGACY_PYTHON``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pyspiel
import pytest
from openenv.core.generic_client import GenericEnvClient

from stratagem.envs import registry
from stratagem.server.app import create_app
from tests.conftest import HERE, running
from tests.openenv_typed import (
    AtariAction,
    AtariClient,
    CodeAction,
    CodingClient,
    OpenSpielAction,
    OpenSpielClient,
)

LEGACY_PYTHON = Path(
    os.environ.get("STRATAGEM_OPENENV_LEGACY_PYTHON", HERE.parent / ".ci/.venv-openenv-0.3.0/bin/python")
)


def declared_range(name: str) -> tuple[float, float]:
    return registry()[name].validation.reward.range


def recording(client_class: type) -> type:
    """``client_class`` keeping every frame's raw ``data`` it parses, in ``frames``."""

    class Recording(client_class):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.frames: list[dict[str, Any]] = []

        def _parse_result(self, payload: dict[str, Any]) -> Any:
            self.frames.append(json.loads(json.dumps(payload)))
            return super()._parse_result(payload)

    return Recording


class Graded:
    """One episode's frames and states, held to the rules of OpenEnv 0.10's runtime graders."""

    def __init__(self, url: str, reward_range: tuple[float, float]) -> None:
        schema = httpx.get(url + "/schema").json()
        self.step_schema = jsonschema.Draft202012Validator(schema["observation"])
        self.reset_schema = jsonschema.Draft202012Validator(schema.get("reset_observation", schema["observation"]))
        self.low, self.high = reward_range
        self.rewards: list[float] = []

    def frame(self, data: dict[str, Any], reset: bool) -> None:
        assert {"observation", "reward", "done"} <= set(data) and isinstance(data["done"], bool)
        assert isinstance(data["observation"], dict) and isinstance(data["observation"]["metadata"], dict)
        assert data["observation"]["metadata"].items() <= (data.get("metadata") or {}).items()  # nested and top
        reward = data["reward"]
        if not reset:  # runtime.reward_well_formed: every step reward a finite number in the declared range
            assert type(reward) in (int, float) and math.isfinite(reward), reward
            assert self.low <= reward <= self.high, (reward, self.low, self.high)
            self.rewards.append(reward)
        instance = {**data["observation"], "reward": reward, "done": data["done"]}  # runtime.observation_schema
        (self.reset_schema if reset else self.step_schema).validate(instance)

    def state(self, state: Any, episode_id: str, steps: int) -> None:  # runtime.state_contract
        assert (state.episode_id, state.step_count) == (episode_id, steps)


def play(client: Any, graded: Graded, episode_id: str, choose: Any, seed: int = 1, limit: int = 10_000,
         **reset: Any) -> list[Any]:  # fmt: skip
    """Reset, then ``choose(observation)`` until done or ``limit`` steps; every frame and state graded."""
    result = client.reset(seed=seed, episode_id=episode_id, **reset)
    graded.frame(client.frames[-1], reset=True)
    graded.state(client.state(), episode_id, 0)
    results = [result]
    while not result.done and len(results) <= limit:
        result = client.step(choose(result.observation))
        graded.frame(client.frames[-1], reset=False)
        graded.state(client.state(), episode_id, len(results))
        results.append(result)
    return results


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    apps = {"2048": ("2048", {}), "ttt": ("openspiel", {"game": "tic_tac_toe"}),
            "kuhn": ("openspiel", {"game": "kuhn_poker"}), "pong": ("pong", {}),
            "sandbox": ("sandbox", {"timeout_s": 5.0, "memory_mb": 256, "cpu_s": 60.0})}  # fmt: skip
    with ExitStack() as stack:
        yield {key: stack.enter_context(running(create_app(name, params))) for key, (name, params) in apps.items()}


def test_openspielenv_plays_2048_to_the_end(servers):
    client = recording(OpenSpielClient)(base_url=servers["2048"]).sync()
    graded = Graded(servers["2048"], declared_range("2048"))
    with client:
        act = lambda obs: OpenSpielAction(action_id=obs.legal_actions[0], game_name="2048")  # noqa: E731
        results = play(client, graded, "ep-2048", act)
        with pytest.raises(RuntimeError, match=r"plays '2048', not 'catch'; send game_name='2048'.*VALIDATION_ERROR"):
            client.step(OpenSpielAction(action_id=0))  # OpenSpielAction's default game_name is 'catch'
    first, last = results[0].observation, results[-1].observation
    assert len(first.info_state) == 16 and first.game_phase == "initial" and first.legal_actions
    assert last.done and last.game_phase == "terminal" and last.legal_actions == [] and last.current_player_id == -4
    assert sum(graded.rewards) == client.frames[-1]["observation"]["score"] > 0  # merge scores sum to the score


def test_openspielenv_plays_tic_tac_toe_with_openenvs_fields(servers):
    url = servers["ttt"]
    client = recording(OpenSpielClient)(base_url=url).sync()
    graded = Graded(url, declared_range("openspiel"))
    with client:
        for seed in range(3):
            act = lambda obs: OpenSpielAction(action_id=obs.legal_actions[-1], game_name="tic_tac_toe")  # noqa: E731
            results = play(client, graded, f"ttt-{seed}", act, seed=seed)
            observations = [r.observation for r in results]
            assert [o.game_phase for o in observations] == ["initial"] + ["playing"] * (len(results) - 2) + ["terminal"]
            assert all(len(o.info_state) == 27 for o in observations)  # empty/x/o planes, as `openenv collect` reads
            assert observations[1].opponent_last_action in range(9) and observations[0].opponent_last_action is None
            assert observations[-1].metadata["outcome"] in ("win", "draw", "loss")  # read from inside observation
            state = client.state()
            assert (state.game_name, state.agent_player, state.opponent_policy, state.num_players) == \
                ("tic_tac_toe", 0, "random", 2)  # fmt: skip
        raw = client.frames[0]["observation"]
        assert raw["legal_action_names"] == [f"x({r},{c})" for r in range(3) for c in range(3)]
        assert list(raw)[:6] == ["metadata", "info_state", "legal_actions", "game_phase", "current_player_id",
                                 "opponent_last_action"]  # OpenEnv's fields first  # fmt: skip
        with pytest.raises(RuntimeError, match=r"plays 'tic_tac_toe', not 'chess'.*EXECUTION_ERROR"):
            client.reset(seed=0)
            client.step(OpenSpielAction(action_id=4, game_name="chess"))
        assert client.step(OpenSpielAction(action_id=4)).observation.game_phase == "playing"  # 'catch': unset


def test_openspielenv_plays_kuhn_poker_without_seeing_hidden_moves(servers):
    url = servers["kuhn"]
    game = pyspiel.load_game("kuhn_poker")
    client = recording(OpenSpielClient)(base_url=url).sync()
    graded = Graded(url, (game.min_utility(), game.max_utility()))
    with client:
        for seed in range(6):
            act = lambda obs: OpenSpielAction(action_id=obs.legal_actions[0], game_name="kuhn_poker")  # noqa: E731
            results = play(client, graded, f"kuhn-{seed}", act, seed=seed)
            assert all(r.observation.opponent_last_action is None for r in results)  # imperfect information
            assert all(r.observation.legal_actions == [0, 1] for r in results[:-1])
    assert any(r != 0 for r in graded.rewards)


def test_atarienv_gets_the_screen_it_asks_for_and_refuses_mismatches(servers):
    url = servers["pong"]
    client = recording(AtariClient)(base_url=url).sync()
    graded = Graded(url, declared_range("pong"))
    with client:
        results = play(client, graded, "pong-1", lambda obs: AtariAction(action_id=0), limit=3)
        assert results[0].observation.screen == [] and results[0].observation.screen_shape == []  # none asked
        step = results[1].observation  # AtariAction's default obs_type is "rgb": the client asks with each step
        assert step.screen_shape == [210, 160, 3] and len(step.screen) == 210 * 160 * 3
        assert step.legal_actions == list(range(6)) and step.lives == 0 and step.frame_number == 4
        ram = client.step(AtariAction(action_id=0, obs_type="ram")).observation
        assert ram.screen_shape == [128] and ram.screen == client.frames[-1]["observation"]["ram"]
        gray = client.reset(seed=2, obs_type="grayscale").observation  # a reset field: the whole episode
        assert gray.screen_shape == [210, 160] and len(gray.screen) == 210 * 160
        for action, message in [
            (AtariAction(action_id=0, game_name="breakout"), "plays Pong, not 'breakout'"),
            (AtariAction(action_id=0, full_action_space=True), "minimal action set"),
            (AtariAction(action_id=6), "action_id 6 is out of range"),
        ]:
            with pytest.raises(RuntimeError, match=f"{message}.*EXECUTION_ERROR"):
                client.step(action)
        assert client.step(AtariAction(action_id=1, game_name="Pong")).observation.screen_shape == [210, 160, 3]
    with httpx.Client(base_url=url) as http:  # over HTTP a mismatch is a 422, and no screen comes unasked
        sid = http.post("/reset", json={"seed": 0}).headers["X-Session-Id"]
        bad = http.post(
            "/step", json={"action": {"action_id": 0, "game_name": "tennis"}}, headers={"X-Session-Id": sid}
        )
        assert bad.status_code == 422 and "plays Pong, not 'tennis'" in bad.text
        plain = http.post("/step", json={"action": {"action": "NOOP"}}, headers={"X-Session-Id": sid}).json()
        assert plain["observation"]["screen"] == [] and len(json.dumps(plain)) < 5_000


def test_codingenv_runs_cells_and_the_rest_travels_in_metadata(servers):
    url = servers["sandbox"]
    client = recording(CodingClient)(base_url=url).sync()
    graded = Graded(url, declared_range("sandbox"))
    cells = iter(["x = 6 * 7", "print(x)\nx", "1 / 0"])
    with client:
        results = play(client, graded, "cells", lambda obs: CodeAction(code=next(cells)), limit=2)
        last = client.step(CodeAction(code=next(cells)))
        assert client.state().last_exit_code == 1
    assert [r.reward for r in results] == [None, 0.0, 0.0] and last.reward == 0.0  # numbers, even with no task
    assert (results[2].observation.stdout, results[2].observation.exit_code) == ("42\n", 0)
    assert last.observation.exit_code == 1 and "ZeroDivisionError" in last.observation.stderr
    meta = client.frames[2]["observation"]["metadata"]
    assert meta["result"] == "42" and meta["steps_left"] == 48 and meta["state_lost"] is False
    assert set(meta) == {"result", "duration_s", "state_lost", "steps_left", "task", "task_outcome"}
    assert client.frames[2]["metadata"] == meta  # stratagem's client reads the top-level copy


def test_generic_client_sends_a_pydantic_openenv_action_with_its_metadata(servers):
    with GenericEnvClient(base_url=servers["2048"]).sync() as env:
        first = env.reset(seed=3)
        action = OpenSpielAction(action_id=first.observation["legal_actions"][0], game_name="2048")
        assert action.model_dump()["metadata"] == {}  # OpenEnv's Action base has metadata: it is sent
        result = env.step(action)
        assert result.observation["metadata"] == {} and isinstance(result.reward, float)
        assert env.state()["step_count"] == 1


LEGACY_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from openenv.core.generic_client import GenericEnvClient
from tests.openenv_typed import AtariAction, AtariClient, CodeAction, CodingClient, OpenSpielAction, OpenSpielClient
urls = json.loads(sys.argv[2])
out = {}
with OpenSpielClient(base_url=urls["ttt"]).sync() as env:
    r = env.reset(seed=4, episode_id="old-ttt")
    while not r.done:
        r = env.step(OpenSpielAction(action_id=r.observation.legal_actions[0], game_name="tic_tac_toe"))
    out["ttt"] = [r.reward, r.observation.metadata["outcome"], env.state().episode_id]
with AtariClient(base_url=urls["pong"]).sync() as env:
    env.reset(seed=1)
    out["pong"] = env.step(AtariAction(action_id=0, obs_type="ram")).observation.screen_shape
with CodingClient(base_url=urls["sandbox"]).sync() as env:
    env.reset()
    env.step(CodeAction(code="y = 5"))
    out["sandbox"] = env.step(CodeAction(code="print(y * 2)")).observation.stdout
with GenericEnvClient(base_url=urls["2048"]).sync() as env:
    r = env.reset(seed=3)
    r = env.step(OpenSpielAction(action_id=r.observation["legal_actions"][0], game_name="2048"))
    out["2048"] = [sorted(r.observation)[:3], r.reward is not None]
print(json.dumps(out))
"""


@pytest.mark.skipif(not LEGACY_PYTHON.exists(), reason=f"no openenv-core 0.3.0 environment at {LEGACY_PYTHON} "
                    "(.ci/run builds it; or set STRATAGEM_OPENENV_LEGACY_PYTHON)")  # fmt: skip
def test_the_same_clients_on_openenv_core_0_3_0(servers):
    run = subprocess.run([str(LEGACY_PYTHON), "-c", LEGACY_SCRIPT, str(HERE.parent), json.dumps(servers)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ttt"][1] in ("win", "draw", "loss") and out["ttt"][2] == "old-ttt"
    assert out["pong"] == [128] and out["sandbox"] == "10\n"
    assert out["2048"] == [["board", "current_player_id", "game_phase"], True]
    version = "import importlib.metadata as m; print(m.version('openenv-core'))"
    assert subprocess.run([str(LEGACY_PYTHON), "-c", version], capture_output=True, text=True).stdout == "0.3.0\n"
