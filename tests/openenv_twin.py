"""2048 served by OpenEnv's own server, as OpenEnv users would write it.

The same code runs on OpenEnv 0.10 (the ``openenv`` package, in the test environment) and on
0.3.0 (``openenv-core``, in the second environment .ci/run builds): ``create_app`` and the
base models are the same in both. Used to prove wire compatibility (our client and
``stratagem validate`` against their server) and as the baseline in
benchmarks/bench_server.py. The rules come from our Game2048Env so that the same seed and
moves give the same game on either server.

    python -m tests.openenv_twin PORT      # serve it with uvicorn on 127.0.0.1:PORT
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openenv.core.env_server import Action, Environment, Observation, State, create_app

from stratagem.envs.game2048 import Game2048Action, Game2048Env


class OpenSpielAction(Action):
    action_id: int
    game_name: str = "2048"
    game_params: dict[str, Any] = {}


class OpenSpielObservation(Observation):
    info_state: list[float]
    legal_actions: list[int]
    game_phase: str = "playing"
    current_player_id: int = 0
    opponent_last_action: int | None = None
    board: list[list[int]] = []
    score: int = 0
    max_tile: int = 0
    won: bool = False
    text: str = ""


class OpenEnv2048(Environment):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self) -> None:
        super().__init__()
        self.game = Game2048Env()

    def _convert(self, obs: Any) -> OpenSpielObservation:
        return OpenSpielObservation(**obs.model_dump(exclude={"metadata"}))

    def reset(self, seed: int | None = None, episode_id: str | None = None, **kwargs: Any) -> OpenSpielObservation:
        return self._convert(self.game.reset(seed=seed, episode_id=episode_id))

    def step(self, action: OpenSpielAction, timeout_s: float | None = None, **kwargs: Any) -> OpenSpielObservation:
        return self._convert(self.game.step(Game2048Action(action_id=action.action_id)))

    @property
    def state(self) -> State:
        return State(**self.game.state.model_dump())


def make_app(max_concurrent_envs: int = 64):
    return create_app(
        OpenEnv2048,
        OpenSpielAction,
        OpenSpielObservation,
        env_name="openenv_2048",
        max_concurrent_envs=max_concurrent_envs,
    )


def openenv_version() -> str:
    """The version of the OpenEnv this process imports: ``openenv`` (0.10) and ``openenv-core`` (0.3.0)
    install the same modules, and the legacy environment sees both distributions."""
    from importlib.metadata import PackageNotFoundError, distribution

    import openenv

    module = Path(openenv.__file__).resolve()
    for name in ("openenv-core", "openenv"):
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if module.is_relative_to(Path(dist.locate_file("")).resolve()):
            return dist.version
    return "unknown"


if __name__ == "__main__":
    import sys

    import uvicorn

    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
