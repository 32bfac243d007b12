"""The replay viewer, headless: pixels of known positions, real recordings of 2048, Pong and
tic-tac-toe, Atari screens rebuilt from the seed and checked, bad files, and every key of the window."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from stratagem.agents.runner import Limits, Runner
from stratagem.cli import main
from stratagem.viz._pygame import pygame, start
from stratagem.viz.episodes import MOVES_2048, Episode, load_items
from stratagem.viz.recording import RecordingError, read_recording
from stratagem.viz.render import (
    BAR_TEXT,
    DARK_TEXT,
    NOTE,
    atari_screen_rect,
    board_geometry,
    panel_size,
    render_step,
    status_height,
    tile_colour,
    tile_text_colour,
    to_array,
)
from stratagem.viz.viewer import END_HOLD_S, Viewer

EXAMPLES = Path(__file__).parent.parent / "examples" / "strategies"
ALWAYS_LEFT = "def strategy(board):\n    return '3'\n"  # stops at its first illegal move: a short episode
HEADER = {"format": "stratagem-replay", "version": 1, "env": "2048", "seed": 7, "program": "abc123def456"}


def record(directory: Path, env: str, programs: list[str], seeds: list[int], params: dict | None = None) -> list[Path]:
    """Play real programs in the sandbox with ``--record``; the recordings, one per program and seed."""
    limits = Limits(move_s=2.0, episode_s=30.0, cpu_s=60.0)
    with Runner(env, params or {}, workers=1, limits=limits) as runner:
        results = runner.evaluate(programs, seeds, record=directory)
    return [directory / f"{r.sha}-seed{s}.jsonl.gz" for r in results for s in seeds]


@pytest.fixture(scope="module", autouse=True)
def headless():
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    start(headless=True)


@pytest.fixture(scope="module")
def games(tmp_path_factory) -> dict[str, Path]:
    """One real recording per kind of picture, and Pong twice: without frames, and with them."""
    root = tmp_path_factory.mktemp("recordings")
    corner = (EXAMPLES / "corner_2048.py").read_text()
    tracker, tictactoe = (EXAMPLES / "pong_tracker.py").read_text(), (EXAMPLES / "tictactoe_heuristic.py").read_text()
    found = dict(zip(["2048-3", "2048-4"], record(root / "2048", "2048", [corner], [3, 4]), strict=True))
    found["pong"] = record(root / "pong", "pong", [tracker], [5], {"max_episode_steps": 40})[0]
    found["pong-png"] = record(root / "png", "pong", [tracker], [5], {"max_episode_steps": 40, "frames": "png"})[0]
    found["ttt"] = record(root / "ttt", "openspiel", [tictactoe], [0])[0]
    found["dir"] = root / "2048"
    return found


def step_of(board: list[list[int]], score: int = 0, number: int = 1, action: int | None = 3) -> dict:
    return {"step": number, "action": None if action is None else {"action_id": action}, "reward": 4.0,
            "done": False, "observation": {"board": board, "score": score}, "total": float(score), "last": 9,
            "action_label": None if action is None else MOVES_2048[action]}  # fmt: skip


def pixels(surface: pygame.Surface) -> np.ndarray:
    return to_array(surface)


# --- pictures of known positions ---------------------------------------------------
def test_2048_tiles_have_the_games_colours_and_their_numbers():
    board = [[0, 2, 4, 8], [16, 32, 64, 128], [256, 512, 1024, 2048], [4096, 0, 2, 4]]
    width = 400
    image = pixels(render_step(step_of(board, score=20_000), HEADER, width))
    assert image.shape == (panel_size("2048", width)[1], width, 3)
    _, tiles = board_geometry(width)
    for rect, value in zip(tiles, [v for row in board for v in row], strict=True):
        top = image[rect.y + rect.height // 10, rect.centerx]  # above the number
        assert tuple(top) == tile_colour(value), value
        middle = image[rect.y + rect.height // 3 : rect.bottom - rect.height // 3, rect.x : rect.right]
        ink = np.all(middle == tile_text_colour(value), axis=-1).sum()
        if value:
            assert ink > 20, f"no number drawn on the {value} tile"
        else:
            assert tuple(image[rect.centery, rect.centerx]) == tile_colour(0) and ink == 0
    assert tile_colour(2) != tile_colour(4) != tile_colour(2048) != tile_colour(4096)


def test_the_status_bar_and_the_header_show_the_step():
    board = [[2, 0, 0, 0]] + [[0] * 4] * 3
    base = pixels(render_step(step_of(board, score=8), HEADER, 300))
    other_seed = pixels(render_step(step_of(board, score=8), {**HEADER, "seed": 8}, 300))
    later = pixels(render_step(step_of(board, score=8, number=2), HEADER, 300))
    bar = base.shape[0] - status_height(300)
    assert (base[bar:].mean(axis=-1) > 150).sum() > 200 and (base[bar:] == BAR_TEXT).all(axis=-1).any()  # text
    assert (base[bar:] != other_seed[bar:]).any() and (base[:bar] == other_seed[:bar]).all()  # seed: bar only
    head = board_geometry(300)[0].top
    assert (base[:head] != later[:head]).any()  # the move counter
    moved = pixels(render_step(step_of(board, score=8, action=0), HEADER, 300))
    assert (base[:head] != moved[:head]).any()  # the action taken
    with pytest.raises(ValueError, match="too small"):
        render_step(step_of(board), HEADER, 40)


def test_every_other_environment_falls_back_to_its_text():
    step = {"step": 0, "action": None, "reward": None, "done": False, "observation": {"count": 2, "target": 3}}
    image = pixels(render_step(step, {**HEADER, "env": "toy"}))
    assert np.all(image == DARK_TEXT, axis=-1).sum() > 100
    with_text = {**step, "observation": {"text": "hello", "count": 2}}
    assert (pixels(render_step(with_text, HEADER)) != image).any()


# --- real recordings -----------------------------------------------------------------
def test_a_real_2048_recording_draws_every_step(games):
    [(episode,)] = load_items([games["2048-3"]])
    recording = read_recording(games["2048-3"])
    assert len(episode) == len(recording.steps) and episode.kind == "2048"
    last = episode.step(len(episode) - 1)
    assert last["end"] == recording.end and last["total"] == recording.end["score"]
    assert episode.step(1)["action_label"] == MOVES_2048[recording.steps[1]["action"]["action_id"]]
    sizes = {render_step(episode.step(i), episode.header).get_size() for i in range(0, len(episode), 7)}
    assert sizes == {panel_size("2048", 400)}
    items = load_items([games["dir"]])  # a directory: its episodes in seed order
    assert [item[0].seed for item in items] == [3, 4]


def test_atari_screens_are_rebuilt_from_the_seed_and_match_recorded_frames(games):
    [(plain,)] = load_items([games["pong"]])
    [(framed,)] = load_items([games["pong-png"]])
    assert plain.screens is not None and not plain.screens.recorded and framed.screens.recorded
    for i in range(len(plain)):
        rebuilt, recorded = plain.step(i)["screen"], framed.step(i)["screen"]
        assert rebuilt is not None and np.array_equal(rebuilt, recorded), f"step {i}"
    assert plain.screens.diverged_at is None and plain.note is None
    step = plain.step(len(plain) - 1)
    image = pixels(render_step(step, plain.header, 320, objects=False))
    area = atari_screen_rect(320)
    sx, sy = area.width / 160, area.height / 210

    def at(x: float, y: float) -> tuple[int, int]:  # a screen pixel's centre on the panel: (row, column)
        return area.y + int((y + 0.5) * sy), area.x + int((x + 0.5) * sx)

    for x, y in ((10, 60), (80, 120), (150, 190), (3, 200)):
        assert tuple(image[at(x, y)]) == tuple(step["screen"][y, x])
    marked = pixels(render_step(step, plain.header, 320, objects=True))
    objects = step["observation"]["objects"]
    row, col = at(objects["player_x"], objects["player_y"])
    assert (marked[row - 4 : row + 20, col - 4 : col + 12] != image[row - 4 : row + 20, col - 4 : col + 12]).any()


def test_atari_screens_stop_where_the_recording_disagrees(games, tmp_path):
    lines = gzip.decompress(games["pong"].read_bytes()).decode().splitlines()
    row = json.loads(lines[6])  # step 5
    row["observation"]["ram"][0] ^= 0xFF
    lines[6] = json.dumps(row)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    [(episode,)] = load_items([tampered])
    assert episode.step(4)["screen"] is not None
    step = episode.step(9)
    assert step["screen"] is None and episode.screens.diverged_at == 5
    assert "differ from the recording at step 5" in episode.note
    image = pixels(render_step(step, episode.header, 320))
    assert np.all(image == NOTE, axis=-1).sum() > 20  # the note is on the picture

    header = json.loads(lines[0])
    tampered.write_text("\n".join([json.dumps({**header, "env": "pongg"}), *lines[1:]]) + "\n")
    [(unknown,)] = load_items([tampered])
    assert unknown.step(0)["screen"] is None and "unknown environment 'pongg'" in unknown.note

    framed = gzip.decompress(games["pong-png"].read_bytes()).decode().splitlines()
    row = json.loads(framed[3])  # step 2
    row["observation"]["frame"]["data"] = row["observation"]["frame"]["data"][:40]
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("\n".join([*framed[:3], json.dumps(row), *framed[4:]]) + "\n")
    [(broken,)] = load_items([damaged])
    assert broken.step(1)["screen"] is not None
    with pytest.raises(RecordingError, match=r"damaged.jsonl, step 2: its frame cannot be decoded"):
        broken.step(2)


def test_openspiel_games_are_drawn_from_their_observation_string(games):
    [(episode,)] = load_items([games["ttt"]])
    assert episode.kind == "openspiel"
    recording = read_recording(games["ttt"])
    opening = recording.steps[0]["observation"]
    names = dict(zip(opening["legal_actions"], opening["legal_action_names"], strict=True))
    assert episode.step(1)["action_label"] == names[recording.steps[1]["action"]["action_id"]]
    first, last = (pixels(render_step(episode.step(i), episode.header)) for i in (0, len(episode) - 1))
    marks = [np.all(image == DARK_TEXT, axis=-1).sum() for image in (first, last)]
    assert 0 < marks[0] < marks[1]  # dots at the start, x's and o's at the end


def test_a_cut_off_recording_replays_to_its_last_whole_step_and_bad_ones_name_the_line(games, tmp_path, capsys):
    data = gzip.decompress(games["2048-3"].read_bytes())
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: len(data) // 2])
    [(episode,)] = load_items([cut])
    assert 0 < len(episode) < len(read_recording(games["2048-3"]).steps)
    assert episode.step(len(episode) - 1)["end"] == {"cut": True}
    lines = data.decode().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:2], "{oops", *lines[3:]]) + "\n")
    with pytest.raises(RecordingError, match=r"bad.jsonl, line 3: not JSON"):
        load_items([bad])
    assert main(["replay", str(bad), "--export", str(tmp_path / "x.gif")]) == 2
    assert "bad.jsonl, line 3: not JSON" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no recordings"):
        load_items([tmp_path / "empty"])
    with pytest.raises(ValueError, match="--start 9999 is past the end"):
        Episode(read_recording(games["2048-3"]), start=9999)


# --- the window ------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def press(viewer: Viewer, clock: FakeClock, key: int | None = None, seconds: float = 0.0) -> None:
    """Post one key (or none), let ``seconds`` pass, and run the real loop for one frame."""
    if key is not None:
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
    clock.now += seconds
    viewer.run(max_frames=1, clock=_ticking(clock, seconds), refresh_hz=0)


def _ticking(clock: FakeClock, seconds: float):
    """The loop reads the clock once on entry and once per frame: the second read sees ``seconds`` more."""
    reads = iter([clock.now - seconds, clock.now])
    return lambda: next(reads, clock.now)


def test_every_key_of_the_window(games):
    viewer = Viewer(load_items([games["dir"]]), fps=10, size=200)
    clock = FakeClock()
    length = viewer.length
    press(viewer, clock)
    assert (viewer.item, viewer.index, viewer.paused) == (0, 0, False)
    shown = pygame.display.get_surface()
    assert shown.get_size() == panel_size("2048", 200)
    assert np.array_equal(pixels(shown), pixels(viewer.frame()))  # the window shows the render, as is

    press(viewer, clock, seconds=0.5)  # playing at 10 steps/s: half a second is 5 steps
    assert viewer.index == 5
    press(viewer, clock, pygame.K_SPACE, seconds=0.5)
    assert viewer.paused and viewer.index == 5  # paused before time moved on
    press(viewer, clock, seconds=3.0)
    assert viewer.index == 5
    press(viewer, clock, pygame.K_RIGHT)
    assert viewer.index == 6
    press(viewer, clock, pygame.K_LEFT)
    press(viewer, clock, pygame.K_LEFT)
    assert viewer.index == 4
    assert np.array_equal(pixels(pygame.display.get_surface()), pixels(render_step(
        viewer.items[0][0].step(4), viewer.items[0][0].header, 200)))  # fmt: skip
    press(viewer, clock, pygame.K_UP)
    assert viewer.speed == 20
    press(viewer, clock, pygame.K_DOWN)
    press(viewer, clock, pygame.K_DOWN)
    assert viewer.speed == 5
    press(viewer, clock, pygame.K_END)
    assert viewer.index == length - 1
    press(viewer, clock, pygame.K_HOME)
    assert viewer.index == 0
    press(viewer, clock, pygame.K_n)
    assert (viewer.item, viewer.index) == (1, 0) and viewer.items[1][0].seed == 4
    press(viewer, clock, pygame.K_n)
    assert viewer.item == 1  # no episode after the last
    press(viewer, clock, pygame.K_p)
    assert viewer.item == 0
    press(viewer, clock, pygame.K_o)
    assert viewer.objects is False

    press(viewer, clock, pygame.K_END)
    press(viewer, clock, pygame.K_SPACE)  # play on from the last step: it holds, then the next episode starts
    assert not viewer.paused and viewer.index == 0  # space at the end restarts the episode
    press(viewer, clock, pygame.K_END)
    viewer.paused = False
    press(viewer, clock, seconds=END_HOLD_S / 2)
    assert viewer.item == 0
    press(viewer, clock, seconds=END_HOLD_S)
    assert (viewer.item, viewer.index) == (1, 0)

    press(viewer, clock, pygame.K_q)
    assert not viewer.running
    viewer.run(max_frames=50, clock=clock, refresh_hz=0)  # returns at once: quit stays quit
    closed = Viewer(load_items([games["2048-3"]]))
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    closed.run(max_frames=50, clock=clock, refresh_hz=0)
    assert not closed.running


def test_side_by_side_pairs_two_programs_on_one_seed(games, tmp_path):
    [short] = record(tmp_path, "2048", [ALWAYS_LEFT], [3])
    [(left, right)] = load_items([games["2048-3"], short], side_by_side=True)
    viewer = Viewer([(left, right)], size=200)
    assert viewer.length == max(len(left), len(right)) > len(right)
    viewer.seek(viewer.length - 1)
    frame = pixels(viewer.frame())
    width = panel_size("2048", 200)[0]
    assert frame.shape[1] == 2 * width + 8
    held = pixels(render_step(right.step(len(right) - 1), right.header, 200))
    assert np.array_equal(frame[:, width + 8 :], held)  # the shorter episode holds its last step
    with pytest.raises(ValueError, match="same seed"):
        load_items([games["2048-3"], games["2048-4"]], side_by_side=True)
    with pytest.raises(ValueError, match="one environment"):
        load_items([games["2048-3"], games["ttt"]], side_by_side=True)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "the following arguments are required: PATH"),
        (["a.jsonl", "b.jsonl"], "add --side-by-side"),
        (["a.jsonl", "--side-by-side"], "--side-by-side needs two recordings"),
        (["a.jsonl", "--fps", "0"], "must be > 0"),
        (["a.jsonl", "--export", "out.avi"], "must end in .gif, .mp4 or .png"),
        (["missing.jsonl", "--export", "out.gif"], "missing.jsonl: no such recording"),
    ],
)
def test_bad_replay_flags_fail_with_a_clear_message(capsys, args, needle):
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["replay", *args]))
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_no_display_asks_for_an_export(games, monkeypatch, capsys):
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    assert main(["replay", str(games["2048-3"])]) == 2
    assert "no display" in capsys.readouterr().err
