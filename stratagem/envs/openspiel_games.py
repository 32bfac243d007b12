"""Which OpenSpiel games, and which opponent settings, the ``openspiel`` environment can serve.

This is kept apart from playing because it is asked on its own and must answer before any episode exists: the
constructor refuses a bad setting before loading a game, and the corpus tests vet every game a sample names without
building an environment. Every refusal is a ValueError that says why and what to do instead (a close game name, the
game's parameters, the other opponent), since a user typing a game name on the command line sees only that message.
OpenSpiel registers games it cannot replay from our seed (sampled stochastic) or that are not games between players
(mean-field), and some whose type claims a tensor the implementation lacks: the checks here find those out.
"""

from __future__ import annotations

import difflib
from typing import Any

import pyspiel

OPPONENTS = ("random", "mcts")
MAX_MCTS_SIMULATIONS = 100_000  # a bound on one opponent move's work: a server thread is not a batch job


def load_servable_game(name: str) -> tuple[pyspiel.Game, dict[str, Any]]:
    """The game to play (simultaneous moves made turn-based) and its parameters; ValueError says why not."""
    short = name.partition("(")[0].strip()
    registered = pyspiel.registered_names()
    if short not in registered:
        close = difflib.get_close_matches(short, registered, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}?" if close else "no registered name is close"
        raise ValueError(f"unknown OpenSpiel game {name!r}: {hint} (pyspiel.registered_names() lists all "
                         f"{len(registered)}; parameters go in brackets, e.g. 'goofspiel(num_cards=4)')")  # fmt: skip
    try:
        game = pyspiel.load_game(name)
    except Exception as exc:  # SpielError mostly, but a C++ std::out_of_range arrives as IndexError
        why = str(exc).strip() if isinstance(exc, pyspiel.SpielError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"OpenSpiel cannot load {name!r}: {why}{_default_params(short)}") from None
    kind = game.get_type()
    if kind.dynamics == pyspiel.GameType.Dynamics.MEAN_FIELD:
        raise ValueError(f"{name!r} is a mean-field game (a population, not players taking turns); "
                         "this environment plays games between players")  # fmt: skip
    if kind.chance_mode == pyspiel.GameType.ChanceMode.SAMPLED_STOCHASTIC:
        raise ValueError(f"{name!r} draws its randomness inside OpenSpiel (sampled stochastic), so reset(seed=...) "
                         "could not replay it; choose a game with explicit chance nodes or none")  # fmt: skip
    params = game.get_parameters()
    if kind.dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS:
        game = pyspiel.convert_to_turn_based(game)
    return game, params


def checked_settings(game: Any, opponent: Any, mcts_simulations: Any, win_return: Any) -> str:
    """The game's name, once every setting that needs no game loaded is known to be sound."""
    if not isinstance(game, str) or not game.strip():
        raise ValueError(f"game must be an OpenSpiel game name such as 'tic_tac_toe', got {game!r}")
    if opponent not in OPPONENTS:
        raise ValueError(f"opponent must be one of {list(OPPONENTS)}, got {opponent!r}")
    if type(mcts_simulations) is not int or not 1 <= mcts_simulations <= MAX_MCTS_SIMULATIONS:
        raise ValueError(f"mcts_simulations must be an integer in 1..{MAX_MCTS_SIMULATIONS}, got {mcts_simulations!r}")
    if win_return is not None and (isinstance(win_return, bool) or not isinstance(win_return, (int, float))):
        raise ValueError(f"win_return must be a number or null, got {win_return!r}")
    return game.strip()


def check_mcts_can_play(game: pyspiel.Game, name: str) -> None:
    """Refuses games where an MCTS opponent would cheat (hidden information) or search blind (rewards en route)."""
    kind = game.get_type()
    if kind.information != pyspiel.GameType.Information.PERFECT_INFORMATION:
        raise ValueError(f"opponent='mcts' needs a perfect-information game: MCTS searches the true state, so in "
                         f"{name!r} it would see what the agent hides; use opponent='random'")  # fmt: skip
    if kind.reward_model != pyspiel.GameType.RewardModel.TERMINAL:
        raise ValueError(f"opponent='mcts' needs a game scored only at the end, and {name!r} pays rewards along "
                         "the way; use opponent='random'")  # fmt: skip


def tensor_source(game: pyspiel.Game) -> tuple[str | None, list[int]]:
    """Which state method gives the agent's tensor, and its shape; (None, []) for games with neither.

    A game's type may claim a tensor its implementation lacks, so the shape is asked for, not trusted.
    """
    kind = game.get_type()
    for method, provided in (("observation_tensor", kind.provides_observation_tensor),
                             ("information_state_tensor", kind.provides_information_state_tensor)):  # fmt: skip
        if provided:
            try:
                return method, list(getattr(game, f"{method}_shape")())
            except pyspiel.SpielError:
                continue
    return None, []


def _default_params(short: str) -> str:
    try:
        return f"; {short}'s parameters and their defaults: {pyspiel.load_game(short).get_parameters()}"
    except Exception:  # the game needs parameters even to load
        return ""
