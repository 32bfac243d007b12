"""OpenEnv's typed clients (OpenSpielEnv, AtariEnv, CodingEnv), rewritten from their contract.

Those clients live in OpenEnv's repository (``envs/*_env``), not on PyPI, so the tests cannot install
them. These classes are written to the same contract, from the models and parsers of OpenEnv's
``openspiel_env``, ``atari_env`` and ``coding_env`` (huggingface/OpenEnv, 2026-06): the same field
names, types and defaults on OpenEnv's own ``Action``/``Observation``/``State`` bases (``extra``
forbidden), the same step payloads (every action field, defaults included), and the same reading of a
reply: OpenSpielEnv and AtariEnv pick their fields out of ``observation`` with defaults and take
``metadata`` only from inside it; CodingEnv builds its observation from the whole ``observation`` object
(``CodeObservation(**observation)``), so any key its model lacks fails. They run on OpenEnv 0.10
(``openenv``) and on openenv-core 0.3.0 alike: both install the same modules.

``validate_package`` runs ``openenv validate PACKAGE``'s own runner and graders (0.10), runtime level
included, with a provider that needs no Docker (0.10 ships only Docker's, which this machine lacks).
"""

from __future__ import annotations

import hashlib
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient
from openenv.core.env_server.types import Action, Observation, State
from pydantic import Field


# --- OpenSpielEnv (envs/openspiel_env) ------------------------------------------------------------
class OpenSpielAction(Action):
    action_id: int
    game_name: str = "catch"
    game_params: dict[str, Any] = Field(default_factory=dict)


class OpenSpielObservation(Observation):
    info_state: list[float]
    legal_actions: list[int]
    game_phase: str = "playing"
    current_player_id: int = 0
    opponent_last_action: int | None = None


class OpenSpielState(State):
    game_name: str = "catch"
    agent_player: int = 0
    opponent_policy: str = "random"
    game_params: dict[str, Any] = Field(default_factory=dict)
    num_players: int = 1


class OpenSpielClient(EnvClient[OpenSpielAction, OpenSpielObservation, OpenSpielState]):
    def _step_payload(self, action: OpenSpielAction) -> dict[str, Any]:
        return {"action_id": action.action_id, "game_name": action.game_name, "game_params": action.game_params}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[OpenSpielObservation]:
        seen = payload.get("observation", {})
        observation = OpenSpielObservation(
            info_state=seen.get("info_state", []),
            legal_actions=seen.get("legal_actions", []),
            game_phase=seen.get("game_phase", "playing"),
            current_player_id=seen.get("current_player_id", 0),
            opponent_last_action=seen.get("opponent_last_action"),
            done=payload.get("done", False),
            reward=payload.get("reward"),
            metadata=seen.get("metadata", {}),
        )
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> OpenSpielState:
        return OpenSpielState(
            episode_id=payload.get("episode_id"),
            step_count=payload.get("step_count", 0),
            game_name=payload.get("game_name", "unknown"),
            agent_player=payload.get("agent_player", 0),
            opponent_policy=payload.get("opponent_policy", "random"),
            game_params=payload.get("game_params", {}),
            num_players=payload.get("num_players", 1),
        )


# --- AtariEnv (envs/atari_env) --------------------------------------------------------------------
class AtariAction(Action):
    action_id: int
    game_name: str = "pong"
    obs_type: Literal["rgb", "grayscale", "ram"] = "rgb"
    full_action_space: bool = False


class AtariObservation(Observation):
    screen: list[int]
    screen_shape: list[int]
    legal_actions: list[int]
    lives: int = 0
    episode_frame_number: int = 0
    frame_number: int = 0


class AtariState(State):
    game_name: str = "pong"
    obs_type: Literal["rgb", "grayscale", "ram"] = "rgb"
    full_action_space: bool = False
    mode: int | None = None
    difficulty: int | None = None
    repeat_action_probability: float = 0.0
    frameskip: int = 4


class AtariClient(EnvClient[AtariAction, AtariObservation, AtariState]):
    def _step_payload(self, action: AtariAction) -> dict[str, Any]:
        return {"action_id": action.action_id, "game_name": action.game_name, "obs_type": action.obs_type,
                "full_action_space": action.full_action_space}  # fmt: skip

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[AtariObservation]:
        seen = payload.get("observation", {})
        observation = AtariObservation(
            screen=seen.get("screen", []),
            screen_shape=seen.get("screen_shape", []),
            legal_actions=seen.get("legal_actions", []),
            lives=seen.get("lives", 0),
            episode_frame_number=seen.get("episode_frame_number", 0),
            frame_number=seen.get("frame_number", 0),
            done=payload.get("done", False),
            reward=payload.get("reward"),
            metadata=seen.get("metadata", {}),
        )
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> AtariState:
        return AtariState(
            episode_id=payload.get("episode_id"),
            step_count=payload.get("step_count", 0),
            game_name=payload.get("game_name", "unknown"),
            obs_type=payload.get("obs_type", "rgb"),
            full_action_space=payload.get("full_action_space", False),
            mode=payload.get("mode"),
            difficulty=payload.get("difficulty"),
            repeat_action_probability=payload.get("repeat_action_probability", 0.0),
            frameskip=payload.get("frameskip", 4),
        )


# --- CodingEnv (envs/coding_env) ------------------------------------------------------------------
class CodeAction(Action):
    code: str


class CodeObservation(Observation):
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


class CodeState(State):
    last_exit_code: int = 0


class CodingClient(EnvClient[CodeAction, CodeObservation, CodeState]):
    def _step_payload(self, action: CodeAction) -> dict[str, Any]:
        return {"code": action.code}

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[CodeObservation]:
        observation = CodeObservation(**payload["observation"])  # every key must be one the model has
        return StepResult(observation=observation, reward=payload.get("reward"), done=bool(payload.get("done", False)))

    def _parse_state(self, payload: dict[str, Any]) -> CodeState:
        return CodeState(
            episode_id=payload.get("episode_id"),
            step_count=payload.get("step_count", 0),
            last_exit_code=payload.get("last_exit_code", 0),
        )


# --- openenv validate PACKAGE, without Docker ------------------------------------------------------
def validate_package(package: Path, level: str = "runtime", env: Any = None) -> Any:
    """OpenEnv 0.10's report for ``package`` (``openenv.validation.runner.run_validation``).

    The runtime level needs a provider: this one follows the package's Dockerfile instead of building it. It
    checks that the image would run ``stratagem serve /env/openenv.yaml`` on 0.0.0.0:8000, sets the image's
    ``ENV`` variables through ``env`` (pytest's ``monkeypatch``), and serves the manifest in this process.
    Everything after that is OpenEnv's: its collector plays ``validation/runtime.json`` over ``/ws`` and its
    graders judge the frames.
    """
    from openenv.validation.providers import ExecResult
    from openenv.validation.runner import run_validation
    from openenv.validation.types import Level, ProviderCapability

    from stratagem.envs import load_spec
    from stratagem.server.app import create_app
    from tests.conftest import running

    serve = '["stratagem", "serve", "/env/openenv.yaml", "--host", "0.0.0.0", "--port", "8000"]'

    class Subject:
        def __init__(self, url: str, stack: ExitStack) -> None:
            self.base_url, self._stack = url, stack

        def inspect(self) -> dict[str, Any]:
            return {"provider": "in-process"}

        def logs(self, max_bytes: int = 65536) -> str:
            return ""

        def exec(self, argv: list[str], timeout_s: float) -> Any:
            return ExecResult(exit_code=127, stdout="", stderr="no exec in-process", duration_s=0.0)

        def stop(self) -> None:
            self._stack.close()

    class InProcess:
        name = "stratagem-in-process"
        capabilities = frozenset({ProviderCapability.IMAGE_BUILD})
        supported_network_modes = frozenset({"public"})

        def build(self, root: Path, execution: Any) -> str:
            text = (Path(root) / execution.context / execution.dockerfile).read_text()
            assert "COPY . /env" in text and f"CMD {serve}" in text, text
            for name, value in re.findall(r"^ENV (\w+)=(\S+)$", text, re.M):
                env.setenv(name, value)
            self.manifest = Path(root) / "openenv.yaml"
            return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

        def start(self, spec: Any) -> Subject:
            stack = ExitStack()
            return Subject(stack.enter_context(running(create_app(load_spec(self.manifest)))), stack)

    return run_validation(Path(package), max_level=Level[level.upper()], provider=InProcess())
