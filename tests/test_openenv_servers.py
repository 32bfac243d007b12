"""Our clients and ``stratagem validate`` against real OpenEnv 0.10 servers.

Four servers, each built with 0.10's own ``create_app``: the ``openenv init`` template
(generated here, offline, into a temporary folder), 2048 (tests/openenv_twin.py), and an echo
and an OpenSpiel server written after OpenEnv's ``envs/echo_env`` and ``envs/openspiel_env``
(those are not on PyPI: OpenEnv publishes them as Hugging Face Spaces). On each: our client
plays over WebSocket (sync and async) and refuses to play over OpenEnv's stateless HTTP, and
``stratagem validate`` passes, except where 0.10's own runtime graders, run here on the same
server, fail it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stratagem.client.http import AsyncEnvClient, EnvClient
from stratagem.client.wire import StatelessServer
from stratagem.envs import InvalidAction
from tests.conftest import running

Action = dict[str, Any]


def first_legal(observation: dict[str, Any], step: int) -> Action:
    return {"action_id": observation["legal_actions"][0]}


def echo_call(observation: dict[str, Any], step: int) -> Action:
    return {"type": "call_tool", "tool_name": "echo_message", "arguments": {"message": f"hi {step}"}}


def template_message(observation: dict[str, Any], step: int) -> Action:
    return {"message": "x" * step}


# --- the servers ----------------------------------------------------------------------------


def template_app(folder: Path) -> Any:
    """``openenv init tmplenv`` as a user runs it (in-process, through its Typer app), then its app."""
    from openenv.cli.__main__ import app as openenv_cli
    from typer.testing import CliRunner

    result = CliRunner().invoke(openenv_cli, ["init", "tmplenv", "-o", str(folder)], env={"UV_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    assert (folder / "tmplenv" / "server" / "app.py").exists() and (folder / "tmplenv" / "openenv.yaml").exists()
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("tmplenv.server.app").app
    finally:
        sys.path.remove(str(folder))


def echo_app() -> Any:
    """OpenEnv's echo_env: a pure MCP environment, played with ``call_tool`` actions."""
    from fastmcp import FastMCP
    from openenv.core.env_server.http_server import create_app
    from openenv.core.env_server.mcp_environment import MCPEnvironment
    from openenv.core.env_server.mcp_types import CallToolAction, CallToolObservation
    from openenv.core.env_server.types import Observation, State

    class EchoEnvironment(MCPEnvironment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            mcp = FastMCP("echo_env")

            @mcp.tool
            def echo_message(message: str) -> str:
                """Echo back the provided message."""
                return message

            @mcp.tool
            def echo_with_length(message: str) -> dict:
                """Echo back the message with its length."""
                return {"message": message, "length": len(message)}

            super().__init__(mcp)
            self._state = State(episode_id="", step_count=0)

        def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> Observation:
            self._state = State(episode_id=episode_id or "generated", step_count=0)
            return Observation(done=False, reward=0.0, metadata={"status": "ready", "message": "Echo ready!"})

        def _step_impl(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Observation:
            return Observation(done=False, reward=0.0, metadata={"error": f"Unknown action {type(action).__name__}"})

        def step(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Observation:
            self._state.step_count += 1
            return super().step(action, timeout_s=timeout_s, **kwargs)

        async def step_async(self, action: Any, timeout_s: float | None = None, **kwargs: Any) -> Observation:
            self._state.step_count += 1
            return await super().step_async(action, timeout_s=timeout_s, **kwargs)

        @property
        def state(self) -> State:
            return self._state

    return create_app(EchoEnvironment, CallToolAction, CallToolObservation, env_name="echo_env", max_concurrent_envs=8)


def openspiel_app(game: str = "tic_tac_toe") -> Any:
    """OpenEnv's openspiel_env (as OPENSPIEL_GAME=tic_tac_toe OPENSPIEL_OPPONENT_POLICY=first serve it): the
    opponent's plies count in ``step_count`` and ``reset`` takes no arguments, so a requested episode_id
    is dropped; both break 0.10's ``runtime.state_contract``."""
    from open_spiel.python import rl_environment
    from openenv.core.env_server.http_server import create_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import State

    from tests.openenv_typed import OpenSpielAction, OpenSpielObservation  # the same wire models as the client's

    class OpenSpielState(State):
        game_name: str = "catch"
        agent_player: int = 0
        opponent_policy: str = "first"
        num_players: int = 1

    class OpenSpielEnvironment(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self) -> None:
            super().__init__()
            self.game = rl_environment.Environment(game)
            self._state = OpenSpielState(game_name=game, num_players=self.game.num_players)
            self.last_opponent_action: int | None = None

        def reset(self) -> OpenSpielObservation:
            import uuid

            self._state.episode_id, self._state.step_count = str(uuid.uuid4()), 0
            self.last_opponent_action = None
            return self.observe(self.opponents(self.game.reset()))

        def step(self, action: OpenSpielAction) -> OpenSpielObservation:
            time_step = self.game.step([action.action_id])
            self._state.step_count += 1
            return self.observe(self.opponents(time_step))

        def opponents(self, time_step: Any) -> Any:
            while not time_step.last() and time_step.observations["current_player"] != 0:
                player = time_step.observations["current_player"]
                self.last_opponent_action = time_step.observations["legal_actions"][player][0]
                time_step = self.game.step([self.last_opponent_action])
                self._state.step_count += 1  # OpenEnv's server counts the opponent's plies too
            return time_step

        def observe(self, time_step: Any) -> OpenSpielObservation:
            phase = "terminal" if time_step.last() else "initial" if time_step.first() else "playing"
            return OpenSpielObservation(
                info_state=list(time_step.observations["info_state"][0]),
                legal_actions=time_step.observations["legal_actions"][0],
                game_phase=phase,
                current_player_id=time_step.observations["current_player"],
                opponent_last_action=self.last_opponent_action,
                done=time_step.last(),
                reward=None if time_step.rewards is None else float(time_step.rewards[0]),
            )

        @property
        def state(self) -> OpenSpielState:
            return self._state

    return create_app(
        OpenSpielEnvironment, OpenSpielAction, OpenSpielObservation, env_name="openspiel_env", max_concurrent_envs=8
    )


def twin_app(folder: Path) -> Any:
    from tests.openenv_twin import make_app

    return make_app()


@dataclass
class Case:
    build: Callable[[Path], Any]
    policy: Callable[[dict[str, Any], int], Action]  # our clients' moves: (observation, step number) -> action
    max_steps: int
    reward_range: tuple[float, float]
    # Rows of `stratagem validate` that fail on this server: exactly those that 0.10's own graders fail.
    fails: set[str] = field(default_factory=set)

    def validate_action(self) -> Action | None:
        """What ``stratagem validate --action`` plays every step (None: the first legal action)."""
        return None if self.policy is first_legal else self.policy({}, 1)


CASES = {
    "template": Case(template_app, template_message, 6, (0.0, 1.0)),
    "2048": Case(twin_app, first_legal, 10_000, (0.0, 1e5)),
    "echo": Case(lambda _: echo_app(), echo_call, 4, (0.0, 1.0), {"rewards", "observation schema"}),
    "openspiel": Case(lambda _: openspiel_app(), first_legal, 9, (-1.0, 1.0), {"state contract"}),
}


@pytest.fixture(scope="module", autouse=True)
def openenv_010() -> None:
    from tests.openenv_twin import openenv_version

    if not (version := openenv_version()).startswith("0.10"):
        pytest.skip(f"needs OpenEnv 0.10 (the dev extra's openenv==0.10.0), found {version}")


@pytest.fixture(scope="module", params=list(CASES))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    case = CASES[request.param]
    with running(case.build(tmp_path_factory.mktemp(request.param))) as url:
        yield request.param, case, url


# --- our clients ----------------------------------------------------------------------------


def play(env: EnvClient, case: Case) -> tuple[list, dict[str, Any]]:
    """An episode (or its first ``max_steps`` steps) as (observation, reward, done, metadata); the state after."""
    r = env.reset(seed=7, episode_id="ep-7")
    trace = [(r.observation, r.reward, r.done, r.metadata)]
    while not r.done and len(trace) <= case.max_steps:
        r = env.step(case.policy(r.observation, len(trace)))
        trace.append((r.observation, r.reward, r.done, r.metadata))
    return trace, env.state()


async def play_async(env: AsyncEnvClient, case: Case) -> tuple[list, dict[str, Any]]:
    r = await env.reset(seed=7, episode_id="ep-7")
    trace = [(r.observation, r.reward, r.done, r.metadata)]
    while not r.done and len(trace) <= case.max_steps:
        r = await env.step(case.policy(r.observation, len(trace)))
        trace.append((r.observation, r.reward, r.done, r.metadata))
    return trace, await env.state()


def test_our_clients_play_over_websocket_and_refuse_stateless_http(server):
    name, case, url = server
    with EnvClient.connect(url) as env:
        trace, state = play(env, case)

    async def async_clients() -> tuple[list, dict[str, Any]]:
        async with await AsyncEnvClient.connect(url) as env:
            played = await play_async(env, case)
        async with await AsyncEnvClient.connect(url, transport="http") as env:
            assert (await env.reset(seed=7)).observation == trace[0][0]  # one request: fine
            with pytest.raises(StatelessServer, match="stateless.*Use the WebSocket transport"):
                await env.step(case.policy(trace[0][0], 1))
            with pytest.raises(StatelessServer):
                await env.state()
        return played

    async_trace, async_state = asyncio.run(async_clients())
    assert async_trace == trace and async_state["step_count"] == state["step_count"]  # the same episode
    with EnvClient.connect(url, transport="http") as env:
        first = env.reset(seed=7)  # a reset works (it is one request) and tolerates "metadata": null
        assert isinstance(first.metadata, dict) and first.observation == trace[0][0]
        with pytest.raises(StatelessServer, match="X-Session-Id"):
            env.step(case.policy(first.observation, 1))

    steps = len(trace) - 1
    if name == "openspiel":  # a whole game; the server drops our episode_id and counts its opponent's plies
        assert trace[-1][2] and state["step_count"] > steps and state["episode_id"] != "ep-7"
    else:
        assert state["step_count"] == steps and state["episode_id"] == "ep-7"
    if name == "2048":
        from tests.test_client import play as play_board

        boards = [(obs["board"], reward, done) for obs, reward, done, _ in trace]
        assert boards == play_board(EnvClient.local("2048"), seed=7)  # the same game as ours, seed for seed
    if name == "template":  # metadata: null on reset; nested in the observation and at the top on steps
        assert trace[0][3] == {} and trace[2][1] == pytest.approx(0.2)
        assert trace[2][3] == trace[2][0]["metadata"] == {"original_message": "xx", "step": 2}
    if name == "echo":
        assert trace[1][0]["result"]["data"] == "hi 1" and trace[0][3]["status"] == "ready"
        with EnvClient.connect(url) as env:
            env.reset()
            with pytest.raises(InvalidAction, match="tool_name: Input should be a valid string"):
                env.step({"type": "call_tool", "tool_name": 3})  # 0.10 sends "Invalid message" and a list


# --- stratagem validate, and 0.10's own graders on the same server ---------------------------


def validate(url: str, case: Case, capsys: pytest.CaptureFixture) -> tuple[int, dict[str, tuple[str, str]]]:
    """``stratagem validate URL ...`` as a user runs it; its table as {check: (outcome, detail)}."""
    from stratagem.cli import main

    args = ["validate", url, "--max-steps", str(case.max_steps), "--reward-range", *map(str, case.reward_range)]
    action = case.validate_action()
    code = main([*args, "--action", json.dumps(action)] if action else args)
    rows = re.findall(r"^(\S.*?)\s{2,}(PASS|FAIL|SKIP)\s{2,}(.*)$", capsys.readouterr().out, re.MULTILINE)
    return code, {check: (outcome, detail) for check, outcome, detail in rows}


def openenv_graders(url: str, case: Case, tmp_path: Path) -> dict[str, str]:
    """0.10's runtime collector and its three wire graders (``openenv validate --level runtime`` without
    Docker), on a plan of the moves our validator plays."""
    from openenv.validation.graders import Subject
    from openenv.validation.graders.runtime import ObservationSchemaGrader, RewardWellFormedGrader, StateContractGrader
    from openenv.validation.manifest import NormalizedManifestV2
    from openenv.validation.runtime.collector import collect_runtime_evidence
    from openenv.validation.runtime.contracts import RuntimePlan

    with EnvClient.connect(url) as env:  # the moves the validator plays from seed 7 (a plan holds 100 at most)
        r, actions = env.reset(seed=7), []
        while not r.done and len(actions) < min(case.max_steps, 100):
            actions.append(case.validate_action() or first_legal(r.observation, 0))
            r = env.step(actions[-1])
    plan = RuntimePlan.model_validate(
        {"plan_schema_version": "1", "reset": {"episode_id": "plan-episode", "seed": 7}, "actions": actions}
    )
    manifest = NormalizedManifestV2.model_validate(
        {"manifest_schema_version": "2", "name": "subject", "signature": "openenv.yaml",
         "reward": {"range": list(case.reward_range), "floor_margin": 0.1},
         "resources": {"cpu": 1, "memory_mb": 512, "disk_mb": 512, "episode_timeout_s": 60},
         "capabilities": {"verifier": {"kind": "reward_channel"}}, "types": {"tags": ["game"]}, "execution": {}}
    )  # fmt: skip
    evidence = collect_runtime_evidence(url, plan, episode_timeout_s=60)
    assert not evidence.failure_reason, evidence.failure_reason
    subject = Subject(root=tmp_path, manifest=manifest, image_ref=None, running=None, outputs_dir=tmp_path)
    subject = dataclasses.replace(subject, runtime_evidence=evidence)
    graders = {"rewards": RewardWellFormedGrader(), "observation schema": ObservationSchemaGrader(),
               "state contract": StateContractGrader()}  # fmt: skip
    return {row: grader.run(subject).status.value.upper() for row, grader in graders.items()}


@pytest.mark.filterwarnings(
    "ignore:connect\\(\\) must be used as a context manager:DeprecationWarning"
)  # 0.10's collector
def test_validate_passes_where_openenv_graders_pass(server, capsys, tmp_path):
    name, case, url = server
    code, rows = validate(url, case, capsys)
    expected = {row: "PASS" for row in rows} | {"HTTP session": "SKIP"} | dict.fromkeys(case.fails, "FAIL")
    assert {row: outcome for row, (outcome, _) in rows.items()} == expected, rows
    assert code == (1 if case.fails else 0)
    assert len(rows) == 15 and "stateless" in rows["POST /reset"][1] and "reset_observation" in rows["GET /schema"][1]
    graders = {
        "rewards": "reward_well_formed",
        "observation schema": "observation_schema",
        "state contract": "state_contract",
    }
    for row in case.fails:  # a finding about the server, said as such
        assert rows[row][1].endswith(f"[OpenEnv 0.10's runtime.{graders[row]} fails this server too]"), rows[row]
    if name == "openspiel":
        detail = rows["state contract"][1]
        assert "not the 'stratagem-validate-" in detail and "an opponent's moves" in detail, detail
    theirs = openenv_graders(url, case, tmp_path)
    assert theirs == {row: rows[row][0] for row in theirs}, (theirs, rows)
