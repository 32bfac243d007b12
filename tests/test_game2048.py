"""2048 rules and determinism, in-process (OpenSpiel underneath)."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from stratagem.envs import EpisodeNotActive, InvalidAction, make
from stratagem.envs.game2048 import Game2048Action, Game2048Env, render_board


def play(env: Game2048Env, seed: int, policy_seed: int, max_moves: int = 10_000) -> list:
    """Play random legal moves; return the trajectory of (board, reward, done)."""
    rng = random.Random(policy_seed)
    obs = env.reset(seed=seed)
    trajectory = [(obs.board, obs.reward, obs.done)]
    while not obs.done and len(trajectory) <= max_moves:
        obs = env.step(Game2048Action(action_id=rng.choice(obs.legal_actions)))
        trajectory.append((obs.board, obs.reward, obs.done))
    return trajectory


def test_same_seed_and_moves_replay_exactly():
    a, b = play(Game2048Env(), seed=11, policy_seed=3), play(Game2048Env(), seed=11, policy_seed=3)
    assert a == b
    assert len(a) > 20


def test_different_seeds_spawn_differently():
    boards = {str(Game2048Env().reset(seed=s).board) for s in range(10)}
    assert len(boards) > 5


def test_start_position_has_two_tiles():
    obs = Game2048Env().reset(seed=0)
    tiles = [v for row in obs.board for v in row if v]
    assert len(tiles) == 2 and set(tiles) <= {2, 4}
    assert obs.game_phase == "initial" and obs.reward is None and not obs.done


def test_observation_fields_agree():
    env = Game2048Env()
    obs = env.reset(seed=4)
    for _ in range(30):
        assert obs.info_state == [float(v) for row in obs.board for v in row]
        assert obs.max_tile == max(max(row) for row in obs.board)
        assert obs.text == render_board(obs.board, obs.score)
        assert obs.current_player_id == 0 and obs.opponent_last_action is None
        obs = env.step({"action_id": obs.legal_actions[-1]})


def test_reward_is_merge_score_and_sums_to_score():
    env = Game2048Env()
    obs = env.reset(seed=5)
    total = 0.0
    while not obs.done:
        before = sum(v for row in obs.board for v in row)
        obs = env.step({"action_id": obs.legal_actions[0]})
        total += obs.reward
        # a merge of two v tiles scores 2v; the board's sum grows only by the spawned tile (2 or 4)
        grown = sum(v for row in obs.board for v in row) - before
        assert grown in (0, 2, 4)
    assert total == obs.score == env.state.score
    assert obs.legal_actions == [] and obs.game_phase == "terminal"


def test_merge_reward_on_a_known_board():
    """2+2 merge (score 4), then 4+4 merge: that step rewards 8 and the score is 12."""
    env = Game2048Env()
    env.reset(seed=0)
    state = env.game.new_initial_state()
    # chance outcome 2*cell + k places a 2 (k=0) or a 4 (k=1) at cell (row-major)
    for outcome in (0, 2):  # the two start tiles: 2 at (0,0) and 2 at (0,1)
        state.apply_action(outcome)
    state.apply_action(1)  # 'right': the 2s merge into a 4 at (0,3), scoring 4
    state.apply_action(2 * 2 + 1)  # spawn a 4 at (0,2)
    env._game_state = state
    obs = env.step({"action_id": 3})  # left: [0, 0, 4, 4] -> [8, 0, 0, 0] + a spawned tile
    assert obs.reward == 8.0
    assert obs.board[0][0] == 8 and obs.score == 12
    assert sum(v for row in obs.board for v in row) in (10, 12)  # 8 plus the new 2 or 4


def test_a_merge_with_a_just_merged_tile_is_legal():
    """OpenSpiel's LegalActions omits it (stale merge flags); the move is legal and scores."""
    env = Game2048Env()
    env.reset(seed=0)
    state = env.game.new_initial_state()
    for outcome in (0, 8):  # 2s at (0,0) and (1,0)
        state.apply_action(outcome)
    state.apply_action(0)  # up: they merge into a 4 at (0,0)
    state.apply_action(2 * 4 + 1)  # a 4 spawns at (1,0)
    assert state.legal_actions() == [1, 2]  # OpenSpiel's view
    env._game_state = state
    assert env._legal_actions() == [0, 1, 2]
    obs = env.step({"action_id": 0})
    assert obs.reward == 8.0 and obs.board[0][0] == 8


def test_a_merge_that_makes_the_target_tile_is_legal_and_wins():
    """The same stale flags, on the winning merge: it ends the game with no spawn due, and counts."""
    env = Game2048Env(max_tile=8)
    env.reset(seed=0)
    state = env.game.new_initial_state()
    for outcome in (0, 8):  # 2s at (0,0) and (1,0)
        state.apply_action(outcome)
    state.apply_action(0)  # up: a 4 at (0,0)
    state.apply_action(2 * 4 + 1)  # a 4 spawns at (1,0)
    assert 0 not in state.legal_actions()  # OpenSpiel's view
    env._game_state = state
    assert 0 in env._legal_actions()
    obs = env.step({"action_id": 0})
    assert obs.done and obs.won and obs.max_tile == 8 and obs.reward == 8.0


def test_illegal_move_is_refused_and_the_game_is_unharmed():
    env = Game2048Env()
    obs = env.reset(seed=0)
    while len(obs.legal_actions) == 4:
        obs = env.step({"action_id": obs.legal_actions[0]})
    illegal = next(a for a in range(4) if a not in obs.legal_actions)
    snapshot = (obs.board, env.state.step_count, env.state.score)
    with pytest.raises(InvalidAction, match="does not move any tile; legal actions now"):
        env.step({"action_id": illegal})
    assert (env._observe(None, "playing").board, env.state.step_count, env.state.score) == snapshot


def test_action_validation():
    with pytest.raises(ValidationError, match="less than or equal to 3"):
        Game2048Action(action_id=4)
    with pytest.raises(ValidationError, match="plays '2048', not 'catch'"):
        Game2048Action(action_id=0, game_name="catch")
    with pytest.raises(ValidationError, match="Extra inputs"):
        Game2048Action(action_id=0, speed=3)
    assert Game2048Action(action_id=0, game_name="2048", game_params={}).action_id == 0
    env = Game2048Env()
    env.reset(seed=0)
    with pytest.raises(InvalidAction, match="game_params"):
        env.step({"action_id": 0, "game_params": {"max_tile": 4096}})


def test_step_before_reset_and_after_done():
    env = Game2048Env()
    with pytest.raises(EpisodeNotActive, match="call reset first"):
        env.step({"action_id": 0})
    obs = env.reset(seed=1)
    while not obs.done:
        obs = env.step({"action_id": obs.legal_actions[0]})
    with pytest.raises(EpisodeNotActive, match="episode is over"):
        env.step({"action_id": 0})


def test_win_is_judged_on_the_final_board():
    env = Game2048Env(max_tile=16)
    for seed in range(20):
        obs = env.reset(seed=seed)
        while not obs.done:
            obs = env.step({"action_id": obs.legal_actions[0]})
        assert obs.won == (obs.max_tile >= 16)
        if obs.won:
            return
    pytest.fail("no game reached 16 in 20 tries")


def test_truncation_at_max_episode_steps():
    env = Game2048Env(max_episode_steps=5)
    obs = env.reset(seed=2)
    for _ in range(5):
        obs = env.step({"action_id": obs.legal_actions[0]})
    assert obs.done and obs.metadata == {"truncated": True} and not obs.won


def test_constructor_validates_parameters():
    with pytest.raises(ValueError, match="power of two"):
        Game2048Env(max_tile=100)
    with pytest.raises(ValueError, match="max_episode_steps"):
        Game2048Env(max_episode_steps=0)


def test_make_uses_the_manifest():
    env = make("2048", max_tile=64)
    assert env.target_tile == 64 and env.max_episode_steps == 10_000
    assert env.state.game_params == {"max_tile": 64}


def test_seed_none_is_recorded_so_the_episode_can_be_replayed():
    env = Game2048Env()
    first = env.reset()
    seed = env.state.seed
    assert isinstance(seed, int)
    assert env.reset(seed=seed).board == first.board


def test_the_fast_replay_ends_where_stepping_ends_and_refuses_what_step_refuses():
    env = Game2048Env(max_episode_steps=60)
    for seed in range(4):
        obs, rng, actions = env.reset(seed=seed), random.Random(seed), []
        while not obs.done:
            actions.append({"action_id": rng.choice(obs.legal_actions)})
            obs = env.step(actions[-1])
        final, score = env.replay(seed, actions)
        assert final.model_dump() == obs.model_dump() and score == obs.score
        seen: list = []
        env.replay(seed, actions, on_step=lambda action, o, seen=seen: seen.append(o.board))
        assert len(seen) == len(actions) + 1 and seen[-1] == obs.board
        with pytest.raises(EpisodeNotActive):  # a move after the end (here: the 60-step truncation or no move left)
            env.replay(seed, [*actions, {"action_id": 0}])
    seed = next(s for s in range(100) if len(env.reset(seed=s).legal_actions) < 4)
    illegal = min(set(range(4)) - set(env.reset(seed=seed).legal_actions))
    with pytest.raises(InvalidAction, match="does not move any tile"):
        env.replay(seed, [{"action_id": illegal}])


def test_the_fast_play_makes_the_moves_the_generic_loop_makes():
    from pathlib import Path

    from stratagem.agents.programs import build, load
    from stratagem.envs.bridge import ProgramBridge
    from stratagem.envs.spec import resolve

    spec = resolve("2048").strategy
    source = (Path(__file__).parents[1] / "examples" / "strategies" / "corner_2048.py").read_text()
    program = build(load(source, spec), spec)
    env = Game2048Env(max_episode_steps=300)
    for seed in (5, 6):
        generic: list = []
        fast: list = []
        generic_final = ProgramBridge.play(env, seed, program, generic)
        fast_final = env.play(seed, program, fast)
        assert generic == fast and len(fast) > 50
        assert fast_final.model_dump() == generic_final.model_dump()
        assert env.replay(seed, fast)[0].board == fast_final.board
    kept: list = []
    with pytest.raises(InvalidAction):  # always "up": refused once up moves nothing; the moves before it kept
        env.play(5, lambda board: "0", kept)
    assert kept and all(action == {"action_id": 0} for action in kept)
