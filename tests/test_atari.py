"""Atari on ale-py: RAM objects against the rendered frame, determinism, bad input, the sandbox, the server."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stratagem.agents.programs import build, load
from stratagem.agents.runner import Limits, Runner
from stratagem.cli import main
from stratagem.client.http import EnvClient
from stratagem.client.wire import InvalidRequest
from stratagem.envs.atari import AtariEnv, decode_frame, encode_png
from stratagem.envs.core import EnvError, EpisodeNotActive, InvalidAction
from stratagem.envs.spec import resolve

STRATEGIES = Path(__file__).parents[1] / "examples" / "strategies"
PONG_TRACKER = (STRATEGIES / "pong_tracker.py").read_text()
BREAKOUT_TRACKER = (STRATEGIES / "breakout_tracker.py").read_text()
PONG_RANDOM = (STRATEGIES / "pong_random.py").read_text()

# Each object's sprite: its colour, the screen region to search, its full size (w, h; None: any)
# when it is to be compared, and the tolerance in pixels (sprites drawn one frame behind their
# RAM, animated ones). The decoded position must be the sprite's top-left corner.
FREEWAY_CARS = [(167, 26, 26), (180, 231, 117), (105, 105, 15), (228, 111, 111), (24, 26, 167),
                (162, 98, 33), (84, 92, 214), (184, 50, 50), (135, 183, 84), (210, 210, 64)]  # fmt: skip
SPRITES = {
    "Pong": [("player", (92, 186, 92), (34, 194), (130, 160), (4, 16), 1),
             ("enemy", (213, 130, 74), (34, 194), (0, 30), (4, 16), 1),
             ("ball", (236, 236, 236), (34, 194), (0, 160), (2, 4), 1)],
    "Breakout": [("player", (200, 72, 72), (189, 193), (8, 152), (16, 4), 1),
                 ("ball", (200, 72, 72), (93, 189), (8, 152), (2, 4), 1)],
    "Freeway": [("player", (252, 252, 84), (0, 196), (44, 52), (None, 8), 1),
                *((f"car{k}", c, (23 + 16 * k, 39 + 16 * k), (8, 160), (8, 8), 1) for k, c in enumerate(FREEWAY_CARS))],
    "SpaceInvaders": [("player", (50, 132, 50), (180, 195), (0, 160), (None, None), 1),
                      ("invaders", (134, 134, 29), (25, 180), (0, 160), (None, None), 1)],
    "MsPacman": [("player", (210, 164, 74), (0, 172), (0, 160), (None, None), 2),
                 ("blinky", (200, 72, 72), (0, 172), (0, 160), (None, None), 2),
                 ("pinky", (198, 89, 179), (0, 172), (0, 160), (None, None), 2),
                 ("inky", (84, 184, 153), (0, 172), (0, 160), (None, None), 2),
                 ("sue", (180, 122, 48), (0, 172), (0, 160), (None, None), 2)],
}  # fmt: skip


def sprite_box(frame: np.ndarray, colour, rows, cols) -> tuple[int, int, int, int] | None:
    region = frame[rows[0] : rows[1], cols[0] : cols[1]]
    mask = (region == colour).all(-1)
    if colour == (252, 252, 84):  # Freeway: the yellow median strip is not the chicken
        mask[max(0, 101 - rows[0]) : max(0, 106 - rows[0])] = False
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()) + cols[0], int(ys.min()) + rows[0], int(xs.max()) + cols[0], int(ys.max()) + rows[0]


def random_play(env: AtariEnv, steps: int, seed: int, frames: str = "raw", favour: str | None = None):
    """(observation, frame) pairs of a seeded random player (FIRE now and then, to serve; ``favour`` 2 in 3)."""
    rng, obs = random.Random(seed), env.reset(seed=seed, frames=frames)
    action = 0
    for i in range(steps):
        if i % 6 == 0:
            action = rng.randrange(len(env.action_names))
            if favour is not None and rng.random() < 2 / 3:
                action = env.action_names.index(favour)
        if i % 40 == 0 and "FIRE" in env.action_names:
            action = env.action_names.index("FIRE")
        obs = env.step({"action_id": action})
        yield obs, None if obs.frame is None else decode_frame(obs.frame)
        if obs.done:
            return


@pytest.mark.parametrize("game", sorted(SPRITES))
def test_objects_decoded_from_ram_are_where_the_frame_draws_them(game):
    env = AtariEnv(game, repeat_action_probability=0.0)
    diffs: dict[str, Counter] = {}
    drawn_but_absent = 0
    for obs, frame in random_play(env, steps=300, seed=0):
        for name, colour, rows, cols, size, _ in SPRITES[game]:
            box = sprite_box(frame, colour, rows, cols)
            if box is None:
                continue
            if obs.objects[f"{name}_x"] is None:
                drawn_but_absent += 1
                continue
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            if (size[0] and w != size[0]) or (size[1] and h != size[1]):  # clipped, merged or half-drawn
                continue
            for axis, pixel in (("x", box[0]), ("y", box[1])):
                key = f"{name}_{axis}"
                if key in obs.objects:
                    diffs.setdefault(key, Counter())[pixel - obs.objects[key]] += 1
    assert drawn_but_absent == 0, "an object said absent (None) was on screen"
    expected = {f"{name}_{axis}" for name, *_ in SPRITES[game] for axis in "xy"} & set(env.reset().objects)
    assert set(diffs) == expected
    tolerance = {f"{name}_{axis}": tol for name, *_, tol in SPRITES[game] for axis in "xy"}
    for key, counts in diffs.items():
        total = sum(counts.values())
        within = sum(n for d, n in counts.items() if abs(d) <= tolerance[key])
        assert total >= 10, f"{game} {key}: only {total} frames showed the sprite whole"
        assert counts.most_common(1)[0][0] == 0 and within >= 0.95 * total, f"{game} {key}: {counts}"


@pytest.mark.parametrize("game", ["Breakout", "Freeway", "SpaceInvaders", "MsPacman", "Pong"])
def test_decoded_counts_are_the_ales_score_and_lives(game):
    env = AtariEnv(game, repeat_action_probability=0.0)
    scored, invaders = 0, 36
    for obs, _ in random_play(env, steps=400, seed=1, frames="none", favour="UP" if game == "Freeway" else None):
        o = obs.objects
        if game == "SpaceInvaders":  # every hit scores, and leaves one invader fewer
            invaders -= obs.reward > 0
            assert o["invaders_left"] == invaders
        if game == "Pong":
            assert o["player_score"] - o["enemy_score"] == obs.score
            scored += o["enemy_score"]
        else:
            assert o["score"] == obs.score
            scored += obs.score
        if "lives" in o and not obs.done:
            assert o["lives"] == obs.lives == env.ale.lives()
    assert scored > 0, "the check never saw a score change"


def test_the_same_seed_replays_the_same_game_and_another_seed_does_not():
    env = AtariEnv("Breakout", repeat_action_probability=0.25)
    rng = random.Random(5)
    actions = [rng.choice(env.action_names) for _ in range(150)]

    def trajectory(e: AtariEnv, seed: int) -> list[tuple]:
        obs = e.reset(seed=seed)
        out = [tuple(obs.ram)]
        for name in actions:
            obs = e.step({"action": name})
            out.append((tuple(obs.ram), obs.reward, obs.lives))
            if obs.done:
                break
        return out

    first = trajectory(env, 11)
    other = trajectory(env, 12)  # an episode in between must not leak into the next
    assert trajectory(env, 11) == first
    assert trajectory(AtariEnv("Breakout"), 11) == first  # a fresh emulator too
    assert other != first  # sticky actions: the seed matters


def test_a_program_in_the_sandbox_plays_as_in_process_and_bad_moves_are_named():
    says_up = "def strategy(obs):\n    return 'UP'\n"
    limits = Limits(move_s=1.0, episode_s=30, memory_mb=256, cpu_s=30)
    with Runner("pong", params={"max_episode_steps": 250}, workers=2, limits=limits) as runner:
        tracker, rand, bad = runner.evaluate([PONG_TRACKER, PONG_RANDOM, says_up], seeds=[0, 1])
    assert [e.error for e in tracker.episodes + rand.episodes] == [None] * 4
    assert [e.moves for e in tracker.episodes] == [250, 250]
    assert {e.error for e in bad.episodes} == {"illegal_move"}
    assert "'NOOP', 'FIRE', 'RIGHT', 'LEFT'" in bad.episodes[0].message
    strategy = resolve("pong").strategy
    for episode in tracker.episodes:  # the parent's replay of the worker's game is the in-process game
        env, actions = AtariEnv("Pong", max_episode_steps=250), []
        obs = env.play(episode.seed, build(load(PONG_TRACKER, strategy), strategy), actions)
        assert episode.score == obs.score and obs.done and obs.metadata == {"truncated": True}


def test_pong_is_won_at_21_and_the_episode_ends_there():
    env = AtariEnv("Pong")
    strategy = resolve("pong").strategy
    fn = build(load(PONG_TRACKER, strategy), strategy)
    env.reset(seed=0)
    env.ale.setRAM(13, 20)  # 20-20: the next point ends the game
    env.ale.setRAM(14, 20)
    obs = env.step({"action": "NOOP"})
    while not obs.done:
        obs = env.step(env.program_action(fn(*env.program_inputs(obs))))
    o = obs.objects
    assert obs.metadata == {} and max(o["player_score"], o["enemy_score"]) == 21
    assert obs.won == (o["player_score"] == 21)
    with pytest.raises(EpisodeNotActive, match="episode is over"):
        env.step({"action": "NOOP"})


def test_a_target_score_makes_other_games_winnable():
    env = AtariEnv("Breakout", target_score=4, max_episode_steps=400)
    strategy = resolve("breakout").strategy
    obs = env.play(0, build(load(BREAKOUT_TRACKER, strategy), strategy), [])
    assert obs.score >= 4 and obs.won
    assert not AtariEnv("Breakout", max_episode_steps=400).play(0, build(load(BREAKOUT_TRACKER, strategy), strategy),
                                                                 []).won  # fmt: skip


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"game": "Pongg"}, "unknown Atari game 'Pongg'; did you mean 'Pong'"),
        ({"game": "space invader"}, "did you mean 'SpaceInvaders'"),
        ({"frameskip": 0}, "frameskip must be an integer in 1..64"),
        ({"frameskip": "4"}, "frameskip must be an integer"),
        ({"repeat_action_probability": 1.5}, "repeat_action_probability must be a number in [0, 1)"),
        ({"mode": 9}, "mode 9 does not exist for Pong; it has [0, 1]"),
        ({"difficulty": 7}, "difficulty 7 does not exist for Pong; it has [0, 1, 2, 3]"),
        ({"frames": "jpeg"}, "frames must be one of 'none', 'png', 'raw'"),
        ({"max_episode_steps": 0}, "max_episode_steps must be a positive integer"),
    ],
)
def test_bad_parameters_are_named_with_the_fix(params, needle):
    with pytest.raises(ValueError) as info:
        AtariEnv(**params)
    assert needle in str(info.value)


def test_every_spelling_of_a_game_id_works_and_the_cli_reports_a_bad_one(tmp_path, capsys):
    assert {AtariEnv(g, max_episode_steps=1).game_name for g in ("ALE/SpaceInvaders-v5", "space_invaders")} == {
        "SpaceInvaders"
    }
    program = tmp_path / "p.py"
    program.write_text(PONG_RANDOM)
    assert main(["play", "atari", "--strategy", str(program), "-p", "game=Breakot"]) == 2
    assert "did you mean 'Breakout'" in capsys.readouterr().err


def test_invalid_actions_name_the_legal_ones_and_leave_the_episode_unharmed():
    env = AtariEnv("Pong")
    with pytest.raises(EpisodeNotActive, match="call reset first"):
        env.step({"action": "NOOP"})
    env.reset(seed=0)
    before = env.state.model_copy()
    with pytest.raises(InvalidAction, match="'UP' is not an action of Pong; legal actions: 0=NOOP, 1=FIRE, 2=RIGHT"):
        env.step({"action": "UP"})
    with pytest.raises(InvalidAction, match="action_id 6 is out of range for Pong: legal action ids are 0..5"):
        env.step({"action_id": 6})
    with pytest.raises(InvalidAction, match="plays Pong, not 'breakout'"):
        env.step({"action": "FIRE", "game_name": "breakout"})
    with pytest.raises(ValueError, match="exactly one of 'action'"):
        env.step({"action": "FIRE", "action_id": 1})
    with pytest.raises(ValueError, match="expected one of 'NOOP', 'FIRE'"):
        env.program_action(2)
    assert env.state == before
    assert env.step({"action": "fire", "game_name": "ALE/Pong-v5"}).reward == 0.0  # names in any case


def test_openenvs_action_fields_screens_and_defaults():
    """OpenEnv's AtariAction sends game_name, obs_type and full_action_space with every step, defaults included."""
    env = AtariEnv("Breakout")
    obs = env.reset(seed=1)
    assert (obs.screen, obs.screen_shape, obs.frame_number, obs.legal_actions) == ([], [], 0, [0, 1, 2, 3])
    openenv_default = {"game_name": "pong", "obs_type": "rgb", "full_action_space": False}  # pong: counts as unset
    obs = env.step({"action_id": 1, **openenv_default})
    rgb = env.ale.getScreenRGB()
    assert obs.screen_shape == [210, 160, 3] and obs.screen == rgb.ravel().tolist() and obs.frame_number == 4
    obs = env.step({"action": "NOOP", "obs_type": "grayscale"})
    assert obs.screen_shape == [210, 160] and obs.screen == env.ale.getScreenGrayscale().ravel().tolist()
    assert env.step({"action": "NOOP", "obs_type": "ram"}).screen == env.ale.getRAM().tolist()
    assert env.step({"action": "NOOP"}).screen == []  # asked for one step, not the episode
    before = env.state.model_copy()
    with pytest.raises(InvalidAction, match="plays Breakout, not 'tennis'; send game_name='Breakout' or omit it"):
        env.step({"action_id": 0, "game_name": "tennis"})
    with pytest.raises(InvalidAction, match=r"minimal action set \(0=NOOP, 1=FIRE, 2=RIGHT, 3=LEFT\), not the full"):
        env.step({"action_id": 0, "full_action_space": True})
    with pytest.raises(ValueError, match="'rgb', 'grayscale' or 'ram'"):
        env.step({"action_id": 0, "obs_type": "rgba"})
    assert env.state == before
    assert env.reset(seed=1, obs_type="ram").screen_shape == [128]  # a reset field: every observation of it
    assert env.step({"action": "NOOP"}).screen_shape == [128]
    with pytest.raises(EnvError, match="obs_type must be one of 'rgb', 'grayscale', 'ram' or null"):
        env.reset(seed=1, obs_type="png")
    full = AtariEnv("Breakout", full_action_space=True, obs_type="grayscale")  # a parameter: every episode
    obs = full.reset(seed=1)
    assert obs.screen_shape == [210, 160] and len(obs.legal_actions) == 18
    assert full.step({"action_id": 17, "full_action_space": True}).reward == 0.0
    assert full.step({"action_id": 17, "full_action_space": False}).step == 2  # OpenEnv's default: unset
    again = AtariEnv("Breakout", full_action_space=True, obs_type="grayscale")
    assert again.reset(seed=1) == full.reset(seed=1)  # frame_number and the screen replay too


def test_a_reset_shows_the_first_screen_not_the_last_episodes():
    """The ALE's restoreState brings the emulator back, not its screen buffer: a reset must not show the old one."""
    env = AtariEnv("Pong", frames="raw", obs_type="grayscale")
    first = env.reset(seed=0)
    for _ in range(60):
        last = env.step({"action": "RIGHT"})
    assert last.frame != first.frame and last.screen != first.screen
    again = env.reset(seed=0)
    assert (again.frame, again.screen) == (first.frame, first.screen)


def test_our_png_is_a_real_png():
    image = pytest.importorskip("PIL.Image")
    env = AtariEnv("MsPacman")
    env.reset(seed=0)
    screen = env.ale.getScreenRGB()
    png = encode_png(screen)
    assert np.array_equal(np.asarray(image.open(io.BytesIO(png)).convert("RGB")), screen)
    assert len(png) < screen.nbytes / 10


def test_served_over_websocket_and_http_frames_only_when_asked(serve):
    local = AtariEnv("Pong", max_episode_steps=20)
    with serve("pong", params={"max_episode_steps": 20}) as url:
        with EnvClient.connect(url) as ws:
            plain = ws.reset(seed=4)
            assert plain.observation["frame"] is None and len(json.dumps(plain.observation)) < 4000
            with_png = ws.reset(seed=4, frames="png")
            local.reset(seed=4)
            assert np.array_equal(decode_frame(with_png.observation["frame"]), local.ale.getScreenRGB())
            steps = 0
            while not (result := ws.step({"action": "RIGHT"})).done:
                local.step({"action": "RIGHT"})
                steps += 1
                assert np.array_equal(decode_frame(result.observation["frame"]), local.ale.getScreenRGB())
            assert steps == 19 and result.metadata.get("truncated") is True
            with pytest.raises(InvalidRequest, match="frames must be one of"):
                ws.reset(seed=4, frames="gif")
            ws.reset(seed=4)
            with pytest.raises(InvalidAction, match="legal actions: 0=NOOP"):
                ws.step({"action": "JUMP"})
            assert ws.step({"action_id": 2}).observation["frame"] is None  # a reset without frames turns them off
        counting = (  # an illegal move unless obs["step"] counts the steps
            "MEMORY = {}\n\ndef strategy(obs):\n    if obs['step'] != MEMORY.get('next', 0):\n        return 'LOST'\n"
            "    MEMORY['next'] = obs['step'] + 1\n    return 'FIRE'\n"
        )
        with Runner("pong", params={"max_episode_steps": 20}, url=url) as runner:  # the program's view over WS
            [result] = runner.evaluate([counting], seeds=[0])
        assert [(e.error, e.moves) for e in result.episodes] == [(None, 20)]
        with EnvClient.connect(url, transport="http") as http:
            raw = http.reset(seed=4, frames="raw").observation["frame"]
            assert raw["encoding"] == "raw" and raw["shape"] == [210, 160, 3]
            assert np.array_equal(decode_frame(raw), decode_frame(with_png.observation["frame"]))
            assert http.step({"action": "NOOP"}).observation["objects"]["player_x"] == 140
            assert http.state()["game_name"] == "Pong"
