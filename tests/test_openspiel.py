"""Any OpenSpiel game: one-player, chance, two- and three-player games against random and MCTS
opponents, seeds, bad input, real servers (HTTP and WebSocket), the sandbox and the CLI."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from stratagem.agents.prompts import task_prompt
from stratagem.agents.runner import Limits, Runner
from stratagem.cli import main
from stratagem.client.http import EnvClient
from stratagem.envs import EpisodeNotActive, InvalidAction, ManifestError, make, resolve
from stratagem.envs.openspiel import OpenSpielAction, OpenSpielEnv, OpenSpielObservation
from stratagem.server.app import create_app
from stratagem.server.sessions import FactoryFailed
from tests.conftest import cli_server

HEURISTIC = Path(__file__).parents[1] / "examples" / "strategies" / "tictactoe_heuristic.py"
FIRST_LEGAL = "def strategy(observation):\n    return observation['legal_actions'][0]['id']\n"
RANDOM_BY_NAME = (
    "import random\n\ndef strategy(observation):\n    return random.choice(observation['legal_actions'])['name']\n"
)
TINY_MCTS = {"opponent": "mcts", "mcts_simulations": 20}


def play(env: OpenSpielEnv, seed: int, choose=lambda obs: obs.legal_actions[0]) -> list[OpenSpielObservation]:
    """One whole episode; ``choose`` picks the agent's action id."""
    trajectory = [env.reset(seed=seed)]
    while not trajectory[-1].done:
        trajectory.append(env.step({"action_id": choose(trajectory[-1])}))
    return trajectory


def random_choice(seed: int):
    rng = random.Random(seed)
    return lambda obs: rng.choice(obs.legal_actions)


def check_the_end(obs: OpenSpielObservation, env: OpenSpielEnv) -> str:
    """The final observation is consistent: reward = the agent's return, and the outcome follows the returns."""
    mine, others = obs.returns[env.player], [r for p, r in enumerate(obs.returns) if p != env.player]
    assert obs.done and obs.reward == mine and obs.legal_actions == obs.legal_action_names == []
    assert obs.current_player_id == -4 and obs.game_phase == "terminal"
    expected = "win" if mine > max(others, default=0.0) else "draw" if mine == max(others, default=0.0) else "loss"
    assert obs.metadata == {"outcome": expected} == {"outcome": env.state.outcome}
    assert obs.won == (expected == "win")
    return expected


# --- one-player games -------------------------------------------------------------------
def follow_the_ball(obs: OpenSpielObservation) -> int:
    rows = obs.observation_string.split()
    ball, paddle = next(r.index("o") for r in rows if "o" in r), rows[-1].index("x")
    return 0 if ball < paddle else 2 if ball > paddle else 1  # LEFT, RIGHT, STAY


def test_catch_single_player_observation_and_a_won_game():
    env = make("openspiel", game="catch")
    obs = env.reset(seed=3)
    assert (obs.game, obs.player, obs.current_player_id, obs.observation_shape) == ("catch", 0, 0, [10, 5])
    assert len(obs.info_state) == 50 and obs.observation_string.count("\n") == 10 and obs.game_phase == "initial"
    assert (obs.legal_actions, obs.legal_action_names) == ([0, 1, 2], ["LEFT", "STAY", "RIGHT"])
    assert obs.observation_tensor is obs.info_state  # OpenSpiel's name, in Python
    assert obs.reward is None and obs.returns is None and not obs.won
    trajectory = play(env, seed=3, choose=follow_the_ball)
    assert all(o.reward == 0.0 for o in trajectory[1:-1])
    assert check_the_end(trajectory[-1], env) == "win" and trajectory[-1].returns == [1.0]
    assert env.state.step_count == len(trajectory) - 1 == 9


def test_catch_missed_is_a_loss():
    env = OpenSpielEnv("catch")
    ends = [check_the_end(play(env, seed)[-1], env) for seed in range(6)]  # always LEFT
    assert "loss" in ends and "win" in ends  # it catches only balls that fall on the left


def test_cliff_walking_by_name_and_win_return():
    path = ["UP"] + ["RIGHT"] * 7 + ["DOWN"]  # around the cliff: the shortest way to the goal
    for win_return, outcome in ((None, "loss"), (-99, "win")):
        env = OpenSpielEnv("cliff_walking", win_return=win_return)
        obs = env.reset(seed=0)
        for name in path:
            obs = env.step({"action_name": name})
        assert obs.done and obs.reward == -9.0 and obs.returns == [-9.0]
        assert env.state.outcome == outcome and obs.won == (outcome == "win")
    obs = env.reset(seed=0)
    obs = env.step({"action_name": "RIGHT"})  # straight into the cliff
    assert obs.done and obs.reward == -100.0 and not obs.won and obs.metadata == {"outcome": "loss"}


def test_blackjack_chance_is_seeded():
    env = OpenSpielEnv("blackjack")
    deals = [env.reset(seed=s).observation_string for s in range(12)]
    assert deals == [env.reset(seed=s).observation_string for s in range(12)]
    assert len(set(deals)) > 5
    ends = [check_the_end(play(env, s, choose=lambda o: 1)[-1], env) for s in range(30)]  # always Stand
    assert {"win", "loss"} <= set(ends)
    assert play(env, 7, random_choice(1)) == play(OpenSpielEnv("blackjack"), 7, random_choice(1))


# --- two- and three-player games ----------------------------------------------------------
@pytest.mark.parametrize("game", ["tic_tac_toe", "connect_four"])
@pytest.mark.parametrize("opponent", [{}, TINY_MCTS], ids=["random", "mcts"])
def test_two_player_games_are_reproducible_from_either_seat(game, opponent):
    for player in (0, 1):
        env = OpenSpielEnv(game, player=player, **opponent)
        first = play(env, seed=5, choose=random_choice(2))
        again = play(OpenSpielEnv(game, player=player, **opponent), seed=5, choose=random_choice(2))
        assert [o.model_dump() for o in first] == [o.model_dump() for o in again]
        assert all(o.current_player_id == player for o in first[:-1])
        moves = env._game_state.history()  # seats alternate: the opponent's moves are those of the other parity
        for k, obs in enumerate(first):  # the k-th observation comes after player + 2k moves (or the last one)
            theirs = [m for i, m in enumerate(moves[: player + 2 * k]) if i % 2 != player]
            assert obs.opponent_last_action == (theirs[-1] if theirs else None)  # perfect information: shown
        if player == 1:  # the opponent opened before the agent's first observation
            assert first[0].observation_string.count("x") == 1
        check_the_end(first[-1], env)


def test_the_seed_drives_the_random_opponent():
    env = OpenSpielEnv("tic_tac_toe", player=1)
    openings = {env.reset(seed=s).observation_string for s in range(12)}
    assert len(openings) > 3
    first = env.reset()  # no seed: one is drawn and recorded, so the episode can be replayed
    assert env.reset(seed=env.state.seed).observation_string == first.observation_string


def test_mcts_beats_what_random_beats():
    """A weak agent (always the first legal move) never beats MCTS, though it beats random play sometimes."""
    versus_random = [play(OpenSpielEnv("tic_tac_toe"), s)[-1] for s in range(20)]
    versus_mcts = [play(OpenSpielEnv("tic_tac_toe", opponent="mcts", mcts_simulations=50), s)[-1] for s in range(8)]
    assert any(o.won for o in versus_random)
    assert not any(o.won for o in versus_mcts) and sum(o.reward < 0 for o in versus_mcts) >= 6


def test_connect_four_mcts_blocks_a_column():
    """Stacking column 0 wins against random play; MCTS sees the threat and blocks it."""

    def column_0(obs: OpenSpielObservation) -> int:
        return 0 if 0 in obs.legal_actions else obs.legal_actions[0]

    assert play(OpenSpielEnv("connect_four"), seed=1, choose=column_0)[-1].won
    for seed in range(3):
        end = play(OpenSpielEnv("connect_four", opponent="mcts", mcts_simulations=100), seed, choose=column_0)[-1]
        assert not end.won and end.reward == -1.0


def test_simultaneous_games_play_turn_based_and_hide_the_other_choice():
    env = OpenSpielEnv("goofspiel(num_cards=4)", player=1)
    obs = env.reset(seed=1)
    assert "P0 hand: 1 2 3 4" in obs.observation_string  # player 0 has bid, but the bid is not shown
    seen: dict[str, set] = {}  # point card -> what seat 1 sees, over openings where seat 0 bid differently
    bids = set()
    for seed in range(16):
        obs = env.reset(seed=seed)
        card, bid = env._game_state.history()[:2]
        seen.setdefault(card, set()).add((obs.observation_string, tuple(obs.observation_tensor)))
        bids.add((card, bid))
    assert all(len(views) == 1 for views in seen.values()) and len(bids) > len(seen)
    assert all(name.startswith("[P1]Bid") for name in obs.legal_action_names)
    assert obs.opponent_last_action is None  # seat 0's bid is hidden: imperfect information shows no opponent move
    trajectory = play(env, seed=1, choose=random_choice(0))
    assert len(trajectory) == 4 and env.state.game_params["num_cards"] == 4  # 3 bids: the last card is forced
    check_the_end(trajectory[-1], env)


def test_three_players_against_two_random_opponents():
    env = OpenSpielEnv("kuhn_poker(players=3)", player=2)
    finals = [play(env, s, random_choice(s))[-1] for s in range(12)]
    ends = [check_the_end(obs, env) for obs in finals[-1:]] + [obs.metadata["outcome"] for obs in finals]
    assert "win" in ends and "loss" in ends and all(len(obs.returns) == 3 for obs in finals)


# --- bad actions and bad parameters -------------------------------------------------------
def test_illegal_actions_are_refused_and_the_game_is_unharmed():
    env = OpenSpielEnv("tic_tac_toe", player=1)
    obs = env.reset(seed=0)
    taken = next(i for i, c in enumerate("".join(obs.observation_string.split())) if c == "x")
    snapshot = (obs.model_dump(), env.state.step_count)
    with pytest.raises(InvalidAction, match=rf"action {taken} is not legal now; legal actions now .*o\(") as info:
        env.step({"action_id": taken})
    assert f"{taken} (" not in str(info.value)
    with pytest.raises(InvalidAction, match="'x\\(1,1\\)' is not the name of a legal action now"):
        env.step({"action_name": "x(1,1)"})  # the agent plays 'o' from seat 1
    with pytest.raises(InvalidAction, match="plays 'tic_tac_toe', not 'chess'; send game_name='tic_tac_toe' or omit"):
        env.step({"action_id": obs.legal_actions[0], "game_name": "chess"})
    with pytest.raises(InvalidAction, match="game_params"):
        env.step({"action_id": obs.legal_actions[0], "game_params": {"rows": 4}})
    assert (env._observe(None, "initial").model_dump(), env.state.step_count) == snapshot
    ok = env.step({"action_name": obs.legal_action_names[-1], "game_name": "tic_tac_toe", "game_params": {}})
    assert env.state.step_count == 1 and ok.observation_string != obs.observation_string
    # OpenEnv's OpenSpielAction sends game_name='catch' unless told otherwise: its default counts as unset
    assert env.step({"action_id": ok.legal_actions[0], "game_name": "catch", "metadata": {}}).game_phase != "initial"


def test_action_shape_is_validated():
    for bad in ({}, {"action_id": 1, "action_name": "x(0,1)"}):
        with pytest.raises(ValidationError, match="exactly one of action_id"):
            OpenSpielAction.model_validate(bad)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        OpenSpielAction(action_id=-1)
    with pytest.raises(ValidationError, match="Extra inputs"):
        OpenSpielAction(action_id=1, speed=3)


def test_step_before_reset_and_after_the_end():
    env = OpenSpielEnv("catch")
    with pytest.raises(EpisodeNotActive, match="call reset first"):
        env.step({"action_id": 1})
    play(env, seed=0)
    with pytest.raises(EpisodeNotActive, match="episode is over"):
        env.step({"action_id": 1})


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"game": "tic_tac_tow"}, "unknown OpenSpiel game 'tic_tac_tow': did you mean 'tic_tac_toe'"),
        ({"game": "conect_four"}, "did you mean 'connect_four'"),
        ({"game": "connect_four(foo=1)"}, "Unknown parameter 'foo'"),
        ({"game": "connect_four(rows=5"}, "cannot load 'connect_four(rows=5'"),
        ({"game": ""}, "game must be an OpenSpiel game name"),
        ({"game": "mfg_crowd_modelling"}, "mean-field game"),
        ({"game": "stones_and_gems"}, "randomness inside OpenSpiel"),
        ({"game": "crossword"}, "cannot be played here"),
        ({"game": "leduc_poker", "opponent": "mcts"}, "needs a perfect-information game"),
        ({"game": "goofspiel(num_cards=4)", "opponent": "mcts"}, "needs a perfect-information game"),
        ({"opponent": "alphazero"}, "opponent must be one of ['random', 'mcts']"),
        ({"mcts_simulations": 0}, "mcts_simulations must be an integer in 1..100000"),
        ({"player": 2}, "player must be a seat of 'tic_tac_toe': an integer in 0..1"),
    ],
)
def test_bad_parameters_say_what_to_fix(params, needle):
    with pytest.raises(ValueError) as info:
        make("openspiel", **params)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"game": ["chess"]}, "game must be an OpenSpiel game name"),
        ({"game": 2048}, "game must be an OpenSpiel game name"),
        ({"mcts_simulations": True}, "mcts_simulations must be an integer"),
        ({"mcts_simulations": 2.5}, "mcts_simulations must be an integer"),
        ({"player": "1"}, "player must be a seat"),
        ({"win_return": "high"}, "win_return must be a number or null"),
    ],
)
def test_mistyped_parameters_are_refused_by_the_class_too(params, needle):
    """The manifest checks types against the annotations; the class does not rely on it."""
    with pytest.raises(ValueError, match=re.escape(needle)):
        OpenSpielEnv(**params)


def test_unknown_parameter_names_and_the_manifest():
    with pytest.raises(ManifestError, match=r"unknown parameter\(s\) \['games'\]"):
        make("openspiel", games="chess")
    spec = resolve("openspiel")
    assert spec.params["game"] == "tic_tac_toe" and spec.strategy.args == ["observation"]
    prompt = task_prompt(spec)
    assert "def strategy(observation)" in prompt and "legal_actions" in prompt and "OpenSpiel" in prompt


# --- served over real loopback servers ----------------------------------------------------
@pytest.mark.parametrize("transport", ["ws", "http"])
def test_served_games_match_in_process(serve, transport):
    params = {"game": "tic_tac_toe", **TINY_MCTS, "player": 1}
    local = OpenSpielEnv(**params)
    with serve("openspiel", params) as url, EnvClient.connect(url, transport=transport) as client:
        result, expected = client.reset(seed=4), local.reset(seed=4)
        assert result.observation == expected.model_dump(exclude={"reward", "done"})  # metadata nested too
        with pytest.raises(InvalidAction, match="is not the name of a legal action now"):
            client.step({"action_name": "x(0,0)"})
        with pytest.raises(InvalidAction, match="exactly one of action_id"):
            client.step({})
        while not result.done:
            name = result.observation["legal_action_names"][-1]
            result, expected = client.step({"action_name": name}), local.step({"action_name": name})
            assert result.observation["observation_string"] == expected.observation_string
            assert (result.reward, result.done) == (expected.reward, expected.done)
        assert result.metadata["outcome"] == local.state.outcome
        state = client.state()
        assert state["outcome"] == local.state.outcome and state["seed"] == 4 and state["game"] == "tic_tac_toe"
        assert (state["game_name"], state["agent_player"], state["opponent_policy"], state["num_players"]) == \
            ("tic_tac_toe", 1, "mcts", 2)  # OpenEnv's OpenSpielState fields  # fmt: skip


def test_validate_passes_untouched_on_a_served_game(serve, capsys):
    """Without --action, `stratagem validate` plays the first of legal_actions (ids, as OpenEnv's)."""
    with serve("openspiel", {"game": "tic_tac_toe", "player": 1}) as url:
        code = main(["validate", url])
    out = capsys.readouterr().out
    assert code == 0 and re.search(r"\n\d+ passed, 0 failed, 0 skipped", out), out
    assert re.search(r"WS episode\s+PASS\s+\d+ steps, done=True", out), out


def test_a_server_with_bad_parameters_fails_at_start():
    with pytest.raises(FactoryFailed, match="did you mean 'tic_tac_toe'"):
        create_app("openspiel", {"game": "tic_tac_tow"})


# --- strategy programs in the sandbox -----------------------------------------------------
def test_programs_play_in_the_sandbox_and_the_heuristic_wins_most():
    limits = Limits(move_s=1.0, episode_s=20, memory_mb=256, cpu_s=30)
    with Runner("openspiel", {"game": "tic_tac_toe"}, workers=2, limits=limits) as runner:
        bad = "def strategy(observation):\n    return 4.0\n"
        heuristic, by_name, first, illegal = runner.evaluate(
            [HEURISTIC.read_text(), RANDOM_BY_NAME, FIRST_LEGAL, bad], seeds=range(12)
        )
    assert heuristic.error is None and all(e.error is None for e in heuristic.episodes)
    assert heuristic.win_rate >= 0.75 and heuristic.win_rate > by_name.win_rate
    assert all(e.error is None for e in by_name.episodes + first.episodes)
    assert all(e.moves >= 3 and e.score in (-1.0, 0.0, 1.0) for e in heuristic.episodes + by_name.episodes)
    assert [e.error for e in illegal.episodes] == ["illegal_move"] * 12
    assert "expected the 'id' (int) or 'name' (str)" in illegal.episodes[0].message


def test_play_on_a_server_gives_the_in_process_result(serve, capsys):
    args = ["play", "openspiel", "-p", "game=tic_tac_toe", "-p", "opponent=mcts", "-p", "mcts_simulations=20",
            "--strategy", str(HEURISTIC), "--episodes", "4", "--workers", "2", "--json"]  # fmt: skip
    assert main(args) == 0
    local = json.loads(capsys.readouterr().out)
    with serve("openspiel", {"game": "tic_tac_toe", **TINY_MCTS}) as url:
        assert main([*args, "--url", url]) == 0
    remote = json.loads(capsys.readouterr().out)
    keys = ("episodes", "wins", "mean_score", "moves", "errors")
    assert {k: remote[k] for k in keys} == {k: local[k] for k in keys} and local["errors"] == {}


# --- the CLI ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "2048", "--game", "chess"], "--game is for environments with a 'game' parameter"),
        (["serve", "openspiel", "--game", "chess", "-p", "game=go"], "give the game once"),
        (["serve", "openspiel", "--game", "chesss"], "did you mean 'chess'"),
    ],
)
def test_serve_game_flag_errors(capsys, args, needle):
    assert main(args) == 2
    assert needle in capsys.readouterr().err


def test_serve_game_flag_end_to_end(tmp_path):
    """`stratagem serve openspiel --game catch`, then `stratagem validate` with an always-legal action."""
    with cli_server(tmp_path / "server.log", "openspiel", "--game", "catch") as (url, _):
        assert httpx.post(url + "/reset", json={"seed": 1}).json()["observation"]["game"] == "catch"
        validate = [sys.executable, "-m", "stratagem.cli", "validate", url, "--action", '{"action_name": "STAY"}']
        result = subprocess.run(validate, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and re.search(r"\n\d+ passed, 0 failed", result.stdout), result.stdout


# --- what programs see: the shape from before the wire took OpenEnv's ------------------------------
def test_programs_get_legal_actions_as_id_name_dicts():
    env = OpenSpielEnv("tic_tac_toe")
    obs = env.reset(seed=2)
    (view,) = env.program_inputs(obs)
    assert set(view) == {"game", "player", "observation_string", "observation_tensor", "observation_shape",
                         "legal_actions"}  # fmt: skip
    assert view["legal_actions"][4] == {"id": 4, "name": "x(1,1)"} and view["observation_tensor"] == obs.info_state
    view["legal_actions"].clear()
    view["observation_tensor"].append(9.0)
    assert len(obs.legal_actions) == 9 and len(obs.info_state) == 27  # copies: a program cannot touch the env's
