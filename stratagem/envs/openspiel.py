"""Any OpenSpiel game by name, played from one seat with built-in opponents in the others.

OpenSpiel owns the rules; this module owns everything random, so that ``reset(seed=s)``
followed by the same moves replays the same game exactly on this machine, with or without a
server in between (the sandbox's parent relies on that: it replays a program's moves on its own
copy). Chance nodes are sampled from the episode's keyed stream (``envs/rng.py``: knowing the
seed does not tell a program the cards, nor the "random" opponent's next move); the opponents
draw from a second stream of their own, so how often the opponents choose never shifts the cards dealt, nor the
other way round. The MCTS opponent is OpenSpiel's C++ ``MCTSBot`` with a random-rollout evaluator, rebuilt at
every reset with seeds from that stream.

What the agent sees is what its seat may know: ``observation_string(player)`` (or the
information-state string, for the few games with no observation), the matching tensor, and its legal
actions with their names. On the wire OpenEnv's ``OpenSpielObservation`` fields come first
(``info_state`` is the tensor, ``legal_actions`` the ids, ``game_phase``, ``current_player_id``,
``opponent_last_action``) so OpenEnv's ``OpenSpielEnv`` client reads them unchanged; the names
follow in ``legal_action_names``. Strategy programs still get ``legal_actions`` as
``{"id", "name"}`` dicts. ``opponent_last_action`` is given in perfect-information games only: elsewhere a
move may be hidden. Simultaneous-move games are played turn-based
(``pyspiel.convert_to_turn_based``): each player's choice stays hidden from the others until all
have chosen. Refused, with the reason: mean-field games and games whose randomness is internal to
OpenSpiel (sampled stochastic: a seed of ours could not replay them), and an MCTS opponent in an
imperfect-information game (it searches the true state, so it would see the agent's hidden cards);
``envs/openspiel_games.py`` decides which games and settings are servable.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pyspiel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stratagem.envs.core import Action, Environment, EpisodeNotActive, InvalidAction, Observation, State
from stratagem.envs.openspiel_games import check_mcts_can_play, checked_settings, load_servable_game, tensor_source
from stratagem.envs.rng import WARM_UP, Seed, episode_rng, new_seed, seed_number

CHANCE, OPPONENT = "openspiel/chance", "openspiel/opponent"  # two streams: opponents never shift the cards
TERMINAL_PLAYER = int(pyspiel.PlayerId.TERMINAL)
MCTS_UCT_C, MCTS_MEMORY_MB = 2.0, 128  # OpenSpiel's example defaults
LISTED_ACTIONS = 30  # how many legal actions an error message spells out
MAX_GYM_TEXT = 20_000  # a Gymnasium observation of a game with no tensor: its (escaped) string


OPENENV_DEFAULT_GAME = "catch"  # OpenEnv's OpenSpielAction.game_name default: its typed client sends it unasked


class ActionChoice(BaseModel):
    """One legal action: its id and OpenSpiel's name for it (``state.action_to_string``)."""

    model_config = ConfigDict(extra="forbid")
    id: int
    name: str


class OpenSpielAction(Action):
    action_id: int | None = Field(default=None, ge=0, description="the id of a legal action")
    action_name: str | None = Field(default=None, min_length=1, description="or its name, e.g. 'x(1,1)'")
    game_name: str | None = Field(
        default=None,
        description="optional (OpenEnv's field): the served game's name; 'catch', OpenEnv's default, counts as unset",
    )
    game_params: dict[str, Any] | None = Field(default=None, description="optional; must match the server's")

    @model_validator(mode="after")
    def _one_action(self) -> OpenSpielAction:
        if (self.action_id is None) == (self.action_name is None):
            raise ValueError("give exactly one of action_id (an int) or action_name (a str) from legal_actions")
        return self


class OpenSpielObservation(Observation):
    # OpenEnv's OpenSpielObservation, field for field
    info_state: list[float] = Field(
        description="what the agent's seat sees, as a flat list of floats (OpenSpiel's observation tensor, else its "
        "information-state tensor; [] if the game has neither); observation_shape is its shape"
    )
    legal_actions: list[int] = Field(description="the ids of the agent's legal actions now ([] once over)")
    game_phase: str = Field(default="playing", description="initial (at reset), playing or terminal")
    current_player_id: int = Field(
        default=0, description="whose turn it is: the agent's seat while playing, -4 (OpenSpiel's TERMINAL) once over"
    )
    opponent_last_action: int | None = Field(
        default=None,
        description="the last move of an opponent seat this episode; null before one, and always null in games of "
        "imperfect information (a move may be hidden there: observation_string says what the seat may know)",
    )
    # stratagem's
    legal_action_names: list[str] = Field(description="OpenSpiel's name of each of legal_actions, in the same order")
    game: str = Field(description="the game as loaded, e.g. 'tic_tac_toe' or 'goofspiel(num_cards=4)'")
    player: int = Field(description="the agent's seat (0 moves first)")
    observation_string: str = Field(description="what the agent's seat sees (the information state if no observation)")
    observation_shape: list[int] = Field(description="info_state's shape, e.g. [3, 3, 3]")
    returns: list[float] | None = Field(default=None, description="every seat's return, once the game is over")
    won: bool = Field(default=False, description="the game is over and the agent won it")

    @property
    def observation_tensor(self) -> list[float]:
        """``info_state`` by OpenSpiel's name (in Python only; the wire has ``info_state``)."""
        return self.info_state


class OpenSpielState(State):
    # OpenEnv's OpenSpielState fields
    game_name: str = Field(default="", description="the game as loaded (the same as game)")
    agent_player: int = Field(default=0, description="the agent's seat (the same as player)")
    opponent_policy: str = Field(default="random", description="the opponent (the same as opponent)")
    game_params: dict[str, Any] = Field(default_factory=dict)
    num_players: int = 1
    # stratagem's
    seed: int | None = None
    game: str = ""
    player: int = 0
    opponent: str = "random"
    done: bool = False
    returns: list[float] | None = None
    outcome: str | None = Field(default=None, description="win, loss or draw, once over")


def sample_chance(state: pyspiel.State, rng: random.Random) -> int:
    """One outcome of the chance node ``state``, drawn from ``rng``: one ``rng.random()`` per node."""
    outcomes = state.chance_outcomes()
    u, acc = rng.random(), 0.0
    for outcome, p in outcomes:
        acc += p
        if u < acc:
            return outcome
    return outcomes[-1][0]  # rounding left the probabilities a hair short of 1


class OpenSpielEnv(Environment):
    """One seat of an OpenSpiel game; every other seat is played by the ``opponent`` bot."""

    action_type = OpenSpielAction
    observation_type = OpenSpielObservation
    state_type = OpenSpielState

    def __init__(self, game: str = "tic_tac_toe", opponent: str = "random", mcts_simulations: int = 1000,
                 player: int = 0, win_return: float | None = None) -> None:  # fmt: skip
        self.name = checked_settings(game, opponent, mcts_simulations, win_return)
        self.game, self.params = load_servable_game(self.name)
        players = self.game.num_players()
        if type(player) is not int or not 0 <= player < players:
            raise ValueError(f"player must be a seat of {self.name!r}: an integer in 0..{players - 1}, got {player!r}")
        if opponent == "mcts" and players > 1:
            check_mcts_can_play(self.game, self.name)
        self.opponent, self.mcts_simulations, self.player = opponent, mcts_simulations, player
        self.slow_steps = opponent == "mcts" and players > 1  # the opponent thinks inside step: time calls alone
        self.win_return = None if win_return is None else float(win_return)
        self._use_observation = self.game.get_type().provides_observation_string
        self._tensor, self._shape = tensor_source(self.game)
        self._chance_rng, self._opponent_rng = episode_rng(WARM_UP, CHANCE), episode_rng(WARM_UP, OPPONENT)
        self._bot: Any = None
        self._perfect_information = self.game.get_type().information == pyspiel.GameType.Information.PERFECT_INFORMATION
        self._opponent_last: int | None = None
        self._state = self._fresh_state(seed=None, episode_id=None)
        self._game_state: pyspiel.State | None = self.game.new_initial_state()
        try:  # up to the agent's first move: some games lack what playing needs (crossword: no legal_actions)
            self._advance()
            self._observe(reward=None, phase="initial")
        except pyspiel.SpielError as exc:
            raise ValueError(f"{self.name!r} cannot be played here: OpenSpiel says {str(exc).strip()!r}") from None
        self._game_state = None
        self._state = self._fresh_state(seed=None, episode_id=None)

    # --- the episode -----------------------------------------------------------------
    def reset(self, seed: Seed | None = None, episode_id: str | None = None) -> OpenSpielObservation:
        seed = new_seed() if seed is None else seed
        self._chance_rng, self._opponent_rng = episode_rng(seed, CHANCE), episode_rng(seed, OPPONENT)
        if self.opponent == "mcts" and self.game.num_players() > 1:
            evaluator = pyspiel.RandomRolloutEvaluator(1, self._opponent_rng.randrange(2**31))
            self._bot = pyspiel.MCTSBot(self.game, evaluator, MCTS_UCT_C, self.mcts_simulations, MCTS_MEMORY_MB,
                                        True, self._opponent_rng.randrange(2**31), False)  # fmt: skip
        self._game_state = self.game.new_initial_state()
        self._state = self._fresh_state(seed_number(seed), episode_id or str(uuid.uuid4()))
        self._opponent_last = None
        self._advance()
        return self._observe(reward=None, phase="initial")

    def step(self, action: Action | dict[str, Any], timeout_s: float | None = None) -> OpenSpielObservation:
        gs = self._game_state
        if gs is None:
            raise EpisodeNotActive("no episode has started: call reset first")
        if gs.is_terminal():
            raise EpisodeNotActive("the episode is over: call reset to start a new one")
        gs.apply_action(self._checked(action))
        self._state.step_count += 1
        self._advance()
        return self._observe(reward=gs.returns()[self.player] if gs.is_terminal() else 0.0, phase="playing")

    @property
    def state(self) -> OpenSpielState:
        return self._state

    def _fresh_state(self, seed: int | None, episode_id: str | None) -> OpenSpielState:
        return OpenSpielState(episode_id=episode_id, seed=seed, game_name=self.name, agent_player=self.player,
                              opponent_policy=self.opponent, game_params=dict(self.params),
                              num_players=self.game.num_players(), game=self.name, player=self.player,
                              opponent=self.opponent)  # fmt: skip

    def _advance(self) -> None:
        """Chance and the other seats move until it is the agent's turn or the game is over."""
        gs = self._game_state
        while not gs.is_terminal():
            if gs.is_chance_node():
                gs.apply_action(sample_chance(gs, self._chance_rng))
            elif gs.current_player() == self.player:
                return
            else:
                move = self._bot.step(gs) if self._bot is not None else self._opponent_rng.choice(gs.legal_actions())
                gs.apply_action(move)
                self._opponent_last = move

    def _checked(self, action: Action | dict[str, Any]) -> int:
        """The id of a legal action; InvalidAction names the legal ones when it is not."""
        action = self.parse_action(action)
        if action.game_name not in (None, OPENENV_DEFAULT_GAME, self.name, self.name.partition("(")[0]):
            raise InvalidAction(f"this server plays {self.name!r}, not {action.game_name!r}; send "
                                f"game_name={self.name.partition('(')[0]!r} or omit it")  # fmt: skip
        if action.game_params:
            wrong = {k: v for k, v in action.game_params.items() if self.params.get(k, object()) != v}
            if wrong:
                raise InvalidAction(f"game_params {wrong} differ from this game's {self.params}")
        legal = self._legal_actions()
        if action.action_name is not None:
            ids = [choice.id for choice in legal if choice.name == action.action_name]
            if len(ids) == 1:
                return ids[0]
            why = "names several legal actions: send action_id" if ids else "is not the name of a legal action now"
            raise InvalidAction(f"{action.action_name!r} {why}; {_listing(legal)}")
        if action.action_id not in {choice.id for choice in legal}:
            raise InvalidAction(f"action {action.action_id} is not legal now; {_listing(legal)}")
        return action.action_id

    def _legal_actions(self) -> list[ActionChoice]:
        gs, player = self._game_state, self.player
        return [ActionChoice(id=a, name=gs.action_to_string(player, a)) for a in gs.legal_actions(player)]

    def _observe(self, reward: float | None, phase: str) -> OpenSpielObservation:
        gs, st, player = self._game_state, self._state, self.player
        done = gs.is_terminal()
        text = gs.observation_string(player) if self._use_observation else gs.information_state_string(player)
        tensor = getattr(gs, self._tensor)(player) if self._tensor else []
        legal = [] if done else gs.legal_actions(player)
        metadata: dict[str, Any] = {}
        if done:
            st.done, st.returns, st.outcome = True, gs.returns(), self._outcome(gs.returns())
            metadata["outcome"] = st.outcome
        return OpenSpielObservation(
            info_state=tensor,
            legal_actions=legal,
            game_phase="terminal" if done else phase,
            current_player_id=TERMINAL_PLAYER if done else gs.current_player(),
            opponent_last_action=self._opponent_last if self._perfect_information else None,
            legal_action_names=[gs.action_to_string(player, a) for a in legal],
            game=self.name,
            player=player,
            observation_string=text,
            observation_shape=list(self._shape),
            returns=st.returns if done else None,
            won=st.outcome == "win",
            done=done,
            reward=reward,
            metadata=metadata,
        )

    def _outcome(self, returns: list[float]) -> str:
        """win, loss or draw, from the returns.

        With ``win_return``: a win is a return at least that high, anything else a loss. Otherwise a
        win is a return above every other seat's (above 0 when playing alone), a draw a tie.
        """
        mine = returns[self.player]
        if self.win_return is not None:
            return "win" if mine >= self.win_return else "loss"
        best_other = max((r for seat, r in enumerate(returns) if seat != self.player), default=0.0)
        return "win" if mine > best_other else "draw" if mine == best_other else "loss"

    # --- strategy programs -----------------------------------------------------------
    def program_inputs(self, observation: OpenSpielObservation) -> tuple[dict[str, Any]]:
        """The programs' view, as before the wire took OpenEnv's shape: ``legal_actions`` as ``{id, name}`` dicts,
        the tensor as ``observation_tensor``."""
        legal = zip(observation.legal_actions, observation.legal_action_names, strict=True)
        return ({"game": observation.game, "player": observation.player,
                 "observation_string": observation.observation_string,
                 "observation_tensor": list(observation.info_state),
                 "observation_shape": list(observation.observation_shape),
                 "legal_actions": [{"id": i, "name": n} for i, n in legal]},)  # fmt: skip

    def program_action(self, value: Any) -> OpenSpielAction:
        """An action id (exactly an int) or name (exactly a str); subclasses are not trusted."""
        if type(value) is int and value >= 0:
            return OpenSpielAction(action_id=value)
        if type(value) is str and value:
            return OpenSpielAction(action_name=value)
        shown = repr(value)[:40] if type(value) in (str, int, float, bool, type(None)) else type(value).__name__
        raise ValueError(f"the strategy returned {shown}; expected the 'id' (int) or 'name' (str) of one of "
                         "observation['legal_actions']")  # fmt: skip

    # --- Gymnasium (gym/env.py; info["action_mask"] marks the legal ids) ---------------------
    def gym_spaces(self) -> tuple[Any, Any]:
        """The seat's tensor in the game's shape, as OpenSpiel's RL environment hands it to agents.

        OpenSpiel does not bound its tensors (most are 0/1 planes, some hold counts or chips),
        so the Box is every finite float32. The few games with no tensor show their string.
        """
        import numpy as np
        from gymnasium import spaces

        from stratagem.envs.gym_text import text_space

        f32 = np.finfo(np.float32)
        observation = spaces.Box(f32.min, f32.max, tuple(self._shape), np.float32) if self._tensor else \
            text_space(MAX_GYM_TEXT)  # fmt: skip
        return observation, spaces.Discrete(self.game.num_distinct_actions())

    def to_gym_obs(self, observation: OpenSpielObservation) -> Any:
        import numpy as np

        from stratagem.envs.gym_text import printable

        if self._tensor:
            return np.array(observation.info_state, dtype=np.float32).reshape(self._shape)
        return printable(observation.observation_string, MAX_GYM_TEXT)

    def from_gym_action(self, action: Any, observation: OpenSpielObservation) -> OpenSpielAction:
        return OpenSpielAction(action_id=int(action))


def _listing(legal: list[ActionChoice]) -> str:
    shown = ", ".join(f"{c.id} ({c.name})" for c in legal[:LISTED_ACTIONS])
    more = f" and {len(legal) - LISTED_ACTIONS} more" if len(legal) > LISTED_ACTIONS else ""
    return f"legal actions now (id (name)): {shown}{more}" if legal else "no action is legal now"
