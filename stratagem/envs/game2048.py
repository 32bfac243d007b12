"""2048 on OpenSpiel, wire-compatible with OpenEnv's OpenSpiel environment.

OpenSpiel owns the rules (moves, merges, scores, when the game ends); this module owns the
randomness. Tile spawns are OpenSpiel chance nodes, and we sample them from the episode's keyed
stream (``envs/rng.py``), so ``reset(seed=s)`` followed by the same moves replays the same game
exactly on this machine, with or without a server in between, while a program that knows the
seed still cannot tell where the next tile will spawn.

Actions are OpenEnv's ``OpenSpielAction`` (``{"action_id": 0..3}``, optional ``game_name`` and
``game_params``), so the public 2048 notebook's client code and OpenEnv's ``OpenSpielEnv`` (with
``game_name="2048"``) run unchanged; observations carry OpenEnv's OpenSpiel fields first, then a
``board`` that programs read.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyspiel
from pydantic import Field, field_validator

from stratagem.envs.core import Action, Environment, EpisodeNotActive, InvalidAction, Observation, State
from stratagem.envs.openspiel import sample_chance
from stratagem.envs.rng import WARM_UP, Seed, episode_rng, new_seed, seed_number

ACTION_NAMES = ("up", "right", "down", "left")
GAME_NAME = "2048"
SPAWNS = "2048/spawns"
TERMINAL_PLAYER = int(pyspiel.PlayerId.TERMINAL)


class Game2048Action(Action):
    action_id: int = Field(ge=0, le=3, description="0=up, 1=right, 2=down, 3=left")
    game_name: str | None = Field(default=None, description="optional; must be '2048' if given")
    game_params: dict[str, Any] | None = Field(default=None, description="optional; must match the server's")

    @field_validator("game_name")
    @classmethod
    def _is_2048(cls, name: str | None) -> str | None:
        if name is not None and name != GAME_NAME:
            raise ValueError(f"this environment plays '2048', not {name!r}; send game_name='2048' or omit it")
        return name


class Game2048Observation(Observation):
    info_state: list[float] = Field(description="the 16 tile values, row by row (OpenEnv's field)")
    legal_actions: list[int]
    game_phase: str = Field(description="initial, playing or terminal")
    current_player_id: int = 0
    opponent_last_action: int | None = None
    board: list[list[int]] = Field(description="4 rows of 4 tile values, 0 = empty")
    score: int
    max_tile: int
    won: bool = Field(description="the target tile is on the board (judged on the final board)")
    text: str


class Game2048State(State):
    seed: int | None = None
    score: int = 0
    max_tile: int = 0
    done: bool = False
    game_name: str = GAME_NAME
    game_params: dict[str, Any] = Field(default_factory=dict)


class Game2048Env(Environment):
    action_type = Game2048Action
    observation_type = Game2048Observation
    state_type = Game2048State
    inline_steps = True  # a move is ~20 µs of C++: cheaper than the thread hop it would need

    def __init__(self, max_tile: int = 2048, max_episode_steps: int | None = 10_000) -> None:
        if not isinstance(max_tile, int) or max_tile < 4 or max_tile & (max_tile - 1):
            raise ValueError(f"max_tile must be a power of two >= 4, got {max_tile!r}")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive integer or null, got {max_episode_steps!r}")
        self.target_tile = max_tile
        self.max_episode_steps = max_episode_steps
        self.game = pyspiel.load_game(GAME_NAME, {"max_tile": max_tile})
        self._params = {"max_tile": max_tile}
        self._game_state: pyspiel.State | None = None
        self._rng = episode_rng(WARM_UP, SPAWNS)
        self._state = Game2048State(game_params=dict(self._params))
        self._truncated = False

    def reset(self, seed: Seed | None = None, episode_id: str | None = None) -> Game2048Observation:
        seed = new_seed() if seed is None else seed
        self._rng = episode_rng(seed, SPAWNS)
        self._game_state = self.game.new_initial_state()
        self._spawn_tiles()
        self._truncated = False
        self._state = Game2048State(episode_id=episode_id or str(uuid.uuid4()), step_count=0,
                                    seed=seed_number(seed), game_params=dict(self._params))  # fmt: skip
        return self._observe(reward=None, phase="initial")

    def step(self, action: Action | dict[str, Any], timeout_s: float | None = None) -> Game2048Observation:
        reward = self._move(self._checked(action))
        return self._observe(reward=reward, phase="playing")

    def play(self, seed: Seed, policy: Any, actions: list[dict[str, Any]]) -> Game2048Observation:
        """``step``'s rules, but the program sees only the board and one observation ends the game (2x faster)."""
        self.reset(seed=seed, episode_id=f"seed-{seed}")
        gs, reward = self._game_state, None
        while not (gs.is_terminal() or self._truncated):
            action_id = self._program_move(policy(board_rows(gs.observation_tensor(0))))
            reward = self._move(action_id)
            actions.append({"action_id": action_id})
        return self._observe(reward=reward, phase="playing")

    def replay(self, seed: Seed, actions: list[Any], on_step: Any = None) -> tuple[Game2048Observation, float]:
        """The same moves as ``step``, but only the last position becomes an observation (5x faster)."""
        if on_step is not None:
            return super().replay(seed, actions, on_step)
        obs = self.reset(seed=seed, episode_id=f"seed-{seed}")
        reward = None
        for raw in actions:
            reward = self._move(self._checked(raw))
        if actions:
            obs = self._observe(reward=reward, phase="playing")
        return obs, float(obs.score)

    def _checked(self, action: Action | dict[str, Any]) -> int:
        """The action id of a valid action (the replay's ``{"action_id": n}`` dicts skip pydantic)."""
        if type(action) is dict and len(action) == 1 and type(action.get("action_id")) is int:
            if 0 <= action["action_id"] <= 3:
                return action["action_id"]
        action = self.parse_action(action)
        if action.game_params:
            wrong = {k: v for k, v in action.game_params.items() if self._params.get(k, object()) != v}
            if wrong:
                raise InvalidAction(f"game_params {wrong} differ from this environment's {self._params}")
        return action.action_id

    def _move(self, action_id: int) -> float:
        """Apply one checked action and the tile spawn after it; the merge score it made."""
        gs = self._game_state
        if gs is None:
            raise EpisodeNotActive("no episode has started: call reset first")
        if gs.is_terminal() or self._truncated:
            raise EpisodeNotActive("the episode is over: call reset to start a new one")
        legal = self._legal_actions()
        if action_id not in legal:
            names = ", ".join(f"{a} ({ACTION_NAMES[a]})" for a in legal)
            raise InvalidAction(
                f"action {action_id} ({ACTION_NAMES[action_id]}) does not move any tile; legal actions now: {names}"
            )
        before = gs.returns()[0]
        gs.apply_action(action_id)
        reward = gs.returns()[0] - before
        self._spawn_tiles()
        self._state.step_count += 1
        if self.max_episode_steps is not None and self._state.step_count >= self.max_episode_steps:
            self._truncated = not gs.is_terminal()
        return float(reward)

    @property
    def state(self) -> Game2048State:
        return self._state

    def program_inputs(self, observation: Game2048Observation) -> tuple[list[list[int]]]:
        return ([row[:] for row in observation.board],)

    def program_action(self, value: Any) -> Game2048Action:
        return Game2048Action(action_id=self._program_move(value))

    def _program_move(self, value: Any) -> int:
        """'0'..'3' or 0..3, exactly those types: a str or int subclass is not trusted."""
        if type(value) is str and len(value) == 1 and value in "0123":
            return int(value)
        if type(value) is int and 0 <= value <= 3:
            return value
        shown = repr(value)[:40] if type(value) in (str, int, float, bool, type(None)) else type(value).__name__
        raise ValueError(f"the strategy returned {shown}; expected one of '0', '1', '2', '3'")

    # Gymnasium's view (gym/env.py): the board as tile values (2**17 is the largest tile a 4x4 board holds).
    def gym_spaces(self) -> tuple[Any, Any]:
        import numpy as np
        from gymnasium import spaces

        return spaces.Box(0, 2**17, (4, 4), np.int64), spaces.Discrete(4)

    def to_gym_obs(self, observation: Game2048Observation) -> Any:
        import numpy as np

        return np.array(observation.board, dtype=np.int64)

    def from_gym_action(self, action: Any, observation: Game2048Observation) -> Game2048Action:
        return Game2048Action(action_id=int(action))

    def _legal_actions(self) -> list[int]:
        """The moves that change the board.

        OpenSpiel's ``LegalActions`` reads per-tile merge flags left over from the previous
        move, so it misses a merge with a tile that was itself just merged (a 4 made last move
        above a new 4: "up" is legal, OpenSpiel omits it). It never lists an illegal move, and
        its ``ApplyAction`` clears the flags first, so each omitted move is tried on a clone and
        kept when it changes the board.
        """
        gs = self._game_state
        legal = gs.legal_actions()
        if len(legal) < 4 and not gs.is_terminal():
            board = gs.observation_tensor(0)
            for action in range(4):
                if action not in legal:
                    trial = gs.clone()
                    trial.apply_action(action)
                    # Compare boards: a move that makes the target tile ends the game at once,
                    # with no spawn due, and it is legal all the same.
                    if trial.observation_tensor(0) != board:
                        legal.append(action)
            legal.sort()
        return legal

    def _spawn_tiles(self) -> None:
        gs = self._game_state
        while gs.is_chance_node():
            gs.apply_action(sample_chance(gs, self._rng))

    def _observe(self, reward: float | None, phase: str) -> Game2048Observation:
        gs = self._game_state
        values = gs.observation_tensor(0)
        board = board_rows(values)
        score = int(gs.returns()[0])
        max_tile = max(map(max, board))
        done = gs.is_terminal() or self._truncated
        st = self._state
        st.score, st.max_tile, st.done = score, max_tile, done
        metadata = {"truncated": True} if self._truncated else {}
        return Game2048Observation(
            info_state=values,
            legal_actions=[] if done else self._legal_actions(),
            game_phase="terminal" if done else phase,
            current_player_id=TERMINAL_PLAYER if done else 0,
            board=board,
            score=score,
            max_tile=max_tile,
            won=max_tile >= self.target_tile,
            text=render_board(board, score),
            done=done,
            reward=reward,
            metadata=metadata,
        )


def board_rows(values: list[float]) -> list[list[int]]:
    """OpenSpiel's 16 tile values as 4 fresh rows of ints, top row first."""
    tiles = list(map(int, values))
    return [tiles[0:4], tiles[4:8], tiles[8:12], tiles[12:16]]


_BOARD_FORMAT = ("%6s" * 4 + "\n") * 4 + "score %d"


def render_board(board: list[list[int]], score: int) -> str:
    """A fixed-width picture of the board (``.`` = empty), for logs, prompts and terminals."""
    return _BOARD_FORMAT % (*(v or "." for row in board for v in row), score)
