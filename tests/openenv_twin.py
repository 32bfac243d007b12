"""2048 served by OpenEnv 0.3.0's own server, as OpenEnv users would write it.

Used to prove wire compatibility in both directions (our client against their server) and as
the baseline in benchmarks/bench_server.py. The rules come from our Game2048Env so that
the same seed and moves give the same game on either server.
"""

from __future__ import annotations

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
