"""The Gymnasium adapter: check_env on every kind of environment, in-process and over a real server."""

from __future__ import annotations

import json
import string
import warnings
from collections.abc import Iterator

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

from stratagem.envs import InvalidAction, resolve
from stratagem.envs.game2048 import Game2048Env
from stratagem.envs.openspiel import OpenSpielEnv
from stratagem.gym.env import GymEnv, gym_id, register
from stratagem.server.app import create_app
from tests.conftest import HERE, running

TOY = HERE / "toy_env" / "openenv.yaml"
CUSTOM = HERE.parent / "examples" / "custom_env" / "openenv.yaml"
# name -> (manifest, constructor params, GymEnv options); small matrices keep matmul quick.
ENVS = {
    "2048": ("2048", {}, {}),
    "matmul": ("matmul", {"size": 8}, {}),
    "toy": (str(TOY), {}, {"action_fields": ["add"]}),  # its other fields sleep, spin forever, or crash
    "custom": (str(CUSTOM), {}, {}),
}


def strict_check(env: gymnasium.Env) -> None:
    """check_env, with any warning it raises (observation outside its space, ...) an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ResourceWarning)
        warnings.filterwarnings("ignore", message=".*Not able to test alternative render modes.*")
        check_env(env)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """One real loopback server per environment."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield {name: stack.enter_context(running(create_app(env, params))) for name, (env, params, _) in ENVS.items()}


@pytest.mark.parametrize("name", list(ENVS))
def test_check_env_in_process(name: str):
    env, params, options = ENVS[name]
    gym_env = GymEnv(env, params=params, **options)
    strict_check(gym_env)
    gym_env.close()


@pytest.mark.parametrize("name", list(ENVS))
def test_check_env_over_a_server(name: str, servers: dict[str, str]):
    env, params, options = ENVS[name]
    gym_env = GymEnv(env, url=servers[name], params=params, **options)
    strict_check(gym_env)
    gym_env.close()


@pytest.mark.parametrize("name", ["2048", "custom"])
def test_check_env_on_a_server_known_only_by_its_schema(name: str, servers: dict[str, str]):
    gym_env = GymEnv(url=servers[name], transport="http")
    assert isinstance(gym_env.observation_space, spaces.Dict) and isinstance(gym_env.action_space, spaces.Dict)
    strict_check(gym_env)
    gym_env.close()


def test_registered_with_gymnasium_and_checked_through_make():
    env = gymnasium.make("stratagem/2048-v0")
    assert env.observation_space == spaces.Box(0, 2**17, (4, 4), np.int64)
    assert env.action_space == spaces.Discrete(4)
    strict_check(env.unwrapped)
    env.close()
    env = gymnasium.make("stratagem/matmul-v0", params={"size": 4})
    assert env.action_space == spaces.Box(-4.0, 4.0, (4, 4), np.float64)
    env.close()


def test_a_user_manifest_registers_by_its_name():
    env_id = register(CUSTOM)
    assert env_id == gym_id("higher-lower") == "stratagem/higher-lower-v0"
    assert register(CUSTOM) == env_id  # registering the same manifest again is harmless
    env = gymnasium.make(env_id)
    assert env.action_space == spaces.Discrete(100, start=1)
    env.close()
    clash = resolve(TOY).model_copy(update={"name": "higher-lower"})
    with pytest.raises(ValueError, match="stratagem/higher-lower-v0 is registered already"):
        register(clash)


def test_gym_seed_is_stratagems_seed_and_local_equals_remote(servers: dict[str, str]):
    local, remote, reference = GymEnv("2048"), GymEnv("2048", url=servers["2048"]), Game2048Env()
    obs, info = local.reset(seed=7)
    obs_remote, _ = remote.reset(seed=7)
    assert (obs == np.array(reference.reset(seed=7).board)).all() and (obs == obs_remote).all()
    for _ in range(40):
        action = int(np.flatnonzero(info["action_mask"])[0])
        (obs, *outcome, info), (obs_remote, *outcome_remote, _) = local.step(action), remote.step(action)
        assert (obs == obs_remote).all() and outcome == outcome_remote
        assert (obs == np.array(reference.step({"action_id": action}).board)).all()
    local.close(), remote.close()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_a_refused_action_leaves_the_episode_as_it_was(remote: bool, servers: dict[str, str]):
    url = servers["2048"] if remote else None
    seed = next(s for s in range(1000) if len(Game2048Env().reset(seed=s).legal_actions) < 4)  # a move moves nothing
    env = GymEnv("2048", url=url, invalid_action_reward=-1.0)
    obs, info = env.reset(seed=seed)
    illegal = [a for a in range(4) if not info["action_mask"][a]]
    assert illegal, f"seed {seed} starts with a board that some move leaves as it is"
    after, reward, terminated, truncated, step_info = env.step(illegal[0])
    assert (after == obs).all() and after is not obs
    assert (reward, terminated, truncated) == (-1.0, False, False)
    assert "does not move any tile" in step_info["invalid_action"]
    env.close()
    strict = GymEnv("2048", url=url, invalid_action="raise")
    strict.reset(seed=seed)
    with pytest.raises(InvalidAction, match="does not move any tile"):
        strict.step(illegal[0])
    strict.close()


def test_the_manifests_max_episode_steps_truncates_and_options_reach_reset():
    env = GymEnv(TOY, params={"target": 1000}, action_fields=["add"])  # the manifest says 100 steps
    obs, _ = env.reset(seed=0, options={"start": 5})
    assert int(obs["count"]) == 5
    for step in range(1, 101):
        obs, _, terminated, truncated, _ = env.step({"add": 1})
        assert not terminated and truncated == (step == 100)
    assert int(obs["count"]) == 105
    with pytest.raises(ResetNeeded):
        env.step({"add": 1})
    with pytest.raises(ValueError, match=r"unknown reset option\(s\) \['begin'\]; ToyEnv.reset accepts: \['start'\]"):
        env.reset(options={"begin": 1})
    env.close()


def test_matmul_the_padded_product_is_a_right_answer():
    env = GymEnv("matmul", params={"size": 6, "trials": 2})
    obs, _ = env.reset(seed=1)
    n, k, m = obs["shape"].tolist()
    assert obs["A"].shape == (6, 6) and obs["A"][:n, :k].all() and not obs["A"][n:].any() and not obs["B"][:, m:].any()
    obs, reward, terminated, _, info = env.step(obs["A"] @ obs["B"])
    assert (reward, terminated) == (0.0, False)
    obs, reward, terminated, _, info = env.step(obs["A"] @ obs["B"])
    assert terminated and reward > 0  # the speedup over the textbook loop, won only above 1
    assert info["won"] == (reward > 1) and info["outcome"] == ("win" if info["won"] else "loss")
    obs, _ = env.reset(seed=1)
    _, reward, terminated, _, info = env.step(np.zeros((6, 6)))
    assert terminated and not info["won"] and reward == 0.0 and info["outcome"] == "wrong_answer"
    assert info["message"].startswith("wrong product: C[0][0] = 0.0, expected ")
    env.close()


def test_custom_env_bisection_wins_through_gym():
    env = GymEnv(CUSTOM, render_mode="ansi")
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        terminated = False
        while not terminated:
            obs, reward, terminated, truncated, info = env.step((int(obs["low"]) + int(obs["high"])) // 2)
            assert not truncated
        assert info["won"] and obs["low"] == obs["high"] and reward >= 1.0
    assert "found it" in env.render()
    env.close()


def test_spaces_derived_from_schemas():
    toy = GymEnv(TOY)  # no field is required: all are offered (hence action_fields for check_env)
    assert set(toy.action_space.spaces) == {"add", "sleep", "spin", "crash"}
    assert toy.action_space["add"] == spaces.Discrete(11) and toy.action_space["spin"] == spaces.Discrete(2)
    assert toy.observation_space["count"].dtype == np.int64
    toy.close()
    with pytest.raises(ValueError, match=r"action_fields \['ad'\] are not fields of the action; it has: \['add'"):
        GymEnv(TOY, action_fields=["ad"])
    with pytest.raises(ValueError, match="defines its own gym_spaces; action_fields applies only without one"):
        GymEnv("2048", action_fields=["action_id"])
    with pytest.raises(ValueError, match="give the environment"):
        GymEnv()


def test_an_action_outside_the_space_is_refused_not_crashed():
    env = GymEnv(TOY, action_fields=["add"])
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step({"add": "lots"})
    assert reward == 0.0 and not terminated and "does not fit" in info["invalid_action"]
    _, _, _, _, info = env.step({"add": 0})
    assert info["invalid_action"] == "adding 0 is not a move"
    env.close()


def test_render_ansi_shows_the_board():
    env = GymEnv("2048", render_mode="ansi")
    env.reset(seed=1)
    assert "score 0" in env.render()
    with pytest.raises(ValueError, match="render_mode must be one of"):
        GymEnv("2048", render_mode="human")
    env.close()


def test_a_manifest_directory_is_accepted():
    env = GymEnv(CUSTOM.parent)  # a directory holding openenv.yaml, as everywhere else
    assert env.env_spec.name == "higher-lower"
    env.close()


# --- Atari, OpenSpiel and the code sandbox: spaces from their own hooks ------------------------
HOOKED = {  # name -> (manifest, constructor params)
    "pong": ("pong", {"frames": "png"}),
    "breakout-full-raw": ("breakout", {"full_action_space": True, "frames": "raw"}),
    "tic_tac_toe": ("openspiel", {"game": "tic_tac_toe"}),
    "catch": ("openspiel", {"game": "catch"}),
    "phantom_ttt_ir": ("openspiel", {"game": "phantom_ttt_ir"}),  # no tensor: its string, as Text
    "sandbox": ("sandbox", {"timeout_s": 1.0}),
}
CELLS = [  # code -> what the gym observation shows
    ("print('h\u00e9llo \u2660', '\\x1b[1m')", {"stdout": "h\\xe9llo \\u2660 \\x1b[1m\n", "exit_code": 0}),
    ("x = 6 * 7\nx", {"result": "42", "stdout": "", "exit_code": 0}),
    ("None", {"result": ""}),
    ("1 / 0", {"exit_code": 1, "result": ""}),
    ("print('\u00e9' * 50_000)", {"exit_code": 0}),  # capped by the sandbox, then escaped: still in the space
    ("while True:\n    pass", {"exit_code": 124, "state_lost": 1}),
    ("x", {"exit_code": 1, "state_lost": 0}),  # a fresh process: x is gone
]


@pytest.fixture(scope="module")
def hooked_servers() -> Iterator[dict[str, str]]:
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield {name: stack.enter_context(running(create_app(env, params))) for name, (env, params) in HOOKED.items()}


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
@pytest.mark.parametrize("name", list(HOOKED))
def test_check_env_on_atari_openspiel_and_the_sandbox(name: str, remote: bool, hooked_servers: dict[str, str]):
    env, params = HOOKED[name]
    gym_env = GymEnv(env, params=params, url=hooked_servers[name] if remote else None)
    strict_check(gym_env)
    gym_env.close()


def test_atari_spaces_and_play_are_ale_pys_own():
    """With sticky actions off, the same seed and actions give ale-py's RAM, screen, reward and lives."""
    params = {"full_action_space": True, "frames": "raw", "repeat_action_probability": 0.0}
    ours = GymEnv("breakout", params=params)
    theirs = {kind: gymnasium.make("ALE/Breakout-v5", obs_type=kind, full_action_space=True,
                                   repeat_action_probability=0.0) for kind in ("ram", "rgb")}  # fmt: skip
    assert ours.action_space == theirs["ram"].action_space == spaces.Discrete(18)
    assert ours.observation_space["ram"] == theirs["ram"].observation_space == spaces.Box(0, 255, (128,), np.uint8)
    assert ours.observation_space["rgb"] == theirs["rgb"].observation_space
    obs, info = ours.reset(seed=3)
    assert info["action_mask"].tolist() == [1] * 18
    for kind, env in theirs.items():
        assert (obs[kind] == env.reset(seed=3)[0]).all()
    rng = np.random.default_rng(0)
    for _ in range(60):
        action = int(rng.integers(18))
        obs, reward, *_ = ours.step(action)
        for kind, env in theirs.items():
            their_obs, their_reward, _, _, their_info = env.step(action)
            assert (obs[kind] == their_obs).all() and reward == their_reward and obs["lives"] == their_info["lives"]
    assert obs["rgb"].any() and obs in ours.observation_space
    for env in (ours, *theirs.values()):
        env.close()
    minimal = GymEnv("pong")  # frames: none in the manifest, so no screen
    assert set(minimal.observation_space.spaces) == {"ram", "lives"} and minimal.action_space == spaces.Discrete(6)
    minimal.close()


def test_atari_frames_over_a_server_equal_local_ones(hooked_servers: dict[str, str]):
    local, remote = GymEnv("pong", params={"frames": "png"}), GymEnv("pong", params={"frames": "png"},
                                                                    url=hooked_servers["pong"])  # fmt: skip
    (obs, _), (obs_remote, _) = local.reset(seed=5), remote.reset(seed=5)
    local.action_space.seed(1)
    for _ in range(30):
        assert obs in local.observation_space
        assert all((obs[key] == obs_remote[key]).all() for key in ("ram", "rgb", "lives"))
        action = local.action_space.sample()
        (obs, *outcome, _), (obs_remote, *outcome_remote, _) = local.step(action), remote.step(action)
        assert outcome == outcome_remote
    with pytest.raises(ValueError, match="was reset with frames='none': drop that reset option"):
        local.reset(seed=5, options={"frames": "none"})
    local.close(), remote.close()


@pytest.mark.parametrize("game", ["tic_tac_toe", "catch", "leduc_poker", "goofspiel(num_cards=4)", "phantom_ttt_ir"])
def test_openspiel_masked_random_play_stays_in_the_spaces(game: str):
    env, reference = GymEnv("openspiel", params={"game": game}), OpenSpielEnv(game)
    space = env.observation_space
    assert env.action_space == spaces.Discrete(reference.game.num_distinct_actions())
    env.action_space.seed(0)
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        expected = reference.reset(seed=seed)
        terminated = False
        while not terminated:
            assert obs in space and info["action_mask"].dtype == np.int8
            assert np.flatnonzero(info["action_mask"]).tolist() == expected.legal_actions
            if isinstance(space, spaces.Box):
                assert (obs.ravel() == np.array(expected.info_state, dtype=np.float32)).all()
            else:
                assert obs == expected.observation_string
            action = int(env.action_space.sample(mask=info["action_mask"]))
            obs, reward, terminated, truncated, info = env.step(action)
            expected = reference.step({"action_id": action})
            assert "invalid_action" not in info and not truncated and reward == (expected.reward or 0.0)
        assert obs in space and not info["action_mask"].any() and info["won"] == expected.won
    env.close()


def test_openspiel_an_illegal_id_is_refused_and_the_mask_says_which():
    env = GymEnv("openspiel", params={"game": "tic_tac_toe", "player": 1})
    obs, info = env.reset(seed=0)
    taken = int(np.flatnonzero(info["action_mask"] == 0)[0])  # the opponent's opening square
    after, reward, terminated, _, step_info = env.step(taken)
    assert (after == obs).all() and (reward, terminated) == (0.0, False)
    assert f"action {taken} is not legal now" in step_info["invalid_action"]
    _, _, _, _, step_info = env.step(-1)
    assert "does not fit Discrete(9)" in step_info["invalid_action"]
    env.close()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_sandbox_cells_as_gym_steps(remote: bool, hooked_servers: dict[str, str]):
    env = GymEnv("sandbox", params={"timeout_s": 1.0}, url=hooked_servers["sandbox"] if remote else None)
    assert env.action_space == spaces.Text(max_length=100_000, min_length=0, charset=string.printable)
    obs, _ = env.reset(seed=0)
    assert obs in env.observation_space and int(obs["steps_left"]) == 50 and obs["task"] == ""
    for step, (code, expected) in enumerate(CELLS, start=1):
        obs, reward, terminated, truncated, info = env.step(code)
        assert obs in env.observation_space and int(obs["steps_left"]) == 50 - step
        assert {key: obs[key] for key in expected} == expected, (code, obs)
        assert (reward, terminated, truncated) == (0.0, False, False) and "invalid_action" not in info
    assert "ZeroDivisionError" in env.step("1 / 0")[0]["stderr"]
    assert "\\xe9" * 100 in env.step("print('\u00e9' * 100)")[0]["stdout"]
    _, _, _, _, info = env.step(5)
    assert "does not fit Text" in info["invalid_action"]
    env.close()


def test_sandbox_task_prompt_and_outcome():
    env = GymEnv("sandbox", params={"task": "matmul", "task_params": {"size": 4, "trials": 1}})
    obs, _ = env.reset(seed=0)
    assert "Define matmul(A, B)" in obs["task"] and obs["task_outcome"] == ""
    code = "def matmul(A, B):\n    return [[sum(a * b for a, b in zip(r, c)) for c in zip(*B)] for r in A]\n"
    obs, reward, *_ = env.step(code)
    outcome = json.loads(obs["task_outcome"])
    assert obs in env.observation_space and reward > 0 and "score" not in outcome
    assert outcome["function"] == "matmul" and outcome["won"] == (reward > 1) and outcome["error"] is None
    obs, reward, *_ = env.step("def matmul(A, B):\n    return 'no'\n")
    assert reward == 0.0 and json.loads(obs["task_outcome"])["error"] == "illegal_move"
    env.close()
