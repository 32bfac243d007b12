"""Exports, headless: GIF, MP4 (H.264) and PNG sheets of real recordings, read back and checked."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

from stratagem.cli import main
from stratagem.viz.export import ReplayWarning, export, key_frames
from stratagem.viz.recording import read_recording
from stratagem.viz.render import SEPARATOR, board_geometry, panel_size, tile_colour
from tests.test_viewer import ALWAYS_LEFT, EXAMPLES, record

WIDTH = 200


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    """Two real programs on one seed (the heuristic's long game, a one-move program's short one), and Pong."""
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    root = tmp_path_factory.mktemp("recordings")
    corner, short = record(root / "2048", "2048", [(EXAMPLES / "corner_2048.py").read_text(), ALWAYS_LEFT], [3])
    tracker = (EXAMPLES / "pong_tracker.py").read_text()
    pong = record(root / "pong", "pong", [tracker], [1], {"max_episode_steps": 12})[0]
    return {"corner": corner, "short": short, "pong": pong}


def boards(path: Path) -> list[list[list[int]]]:
    return [s["observation"]["board"] for s in read_recording(path).steps]


def test_gif_holds_one_frame_per_step_of_the_slice(recordings, tmp_path):
    out = export([recordings["corner"]], tmp_path / "slice.gif", fps=20, size=WIDTH, progress=False,
                 start_step=5, end_step=24)  # fmt: skip
    frames = iio.imread(out, index=None)
    width, height = panel_size("2048", WIDTH)
    assert frames.shape == (20, height, width, 3)
    _, tiles = board_geometry(WIDTH)
    for k in (0, 19):  # the first and the last frame show steps 5 and 24, tile by tile
        board = boards(recordings["corner"])[5 + k]
        for rect, value in zip(tiles, [v for row in board for v in row], strict=True):
            pixel = frames[k][rect.y + rect.height // 10, rect.centerx][:3].astype(int)
            assert np.abs(pixel - tile_colour(value)).max() <= 4  # GIF: a 256-colour palette per frame


def test_mp4_is_h264_with_one_frame_per_step(recordings, tmp_path):
    out = export([recordings["corner"]], tmp_path / "game.mp4", fps=25, size=WIDTH, progress=False, end_step=29)
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = [np.frombuffer(f, dtype=np.uint8) for f in reader]
    assert meta["codec"] == "h264" and meta["fps"] == 25 and meta["size"] == panel_size("2048", WIDTH)
    assert len(frames) == 30
    width, height = panel_size("2048", WIDTH)
    last = frames[-1].reshape(height, width, 3).astype(int)
    _, tiles = board_geometry(WIDTH)
    for rect, value in zip(tiles, [v for row in boards(recordings["corner"])[29] for v in row], strict=True):
        assert np.abs(last[rect.y + rect.height // 10, rect.centerx] - tile_colour(value)).max() < 12  # lossy


def test_png_sheet_shows_key_frames(recordings, tmp_path):
    out = export([recordings["corner"]], tmp_path / "sheet.png", size=WIDTH, progress=False)
    sheet = iio.imread(out)
    width, height = panel_size("2048", WIDTH)
    assert sheet.shape[:2] == (3 * height + 4 * SEPARATOR, 4 * width + 5 * SEPARATOR)  # 12 key frames, rows of 4
    steps = len(read_recording(recordings["corner"]).steps)
    picks = key_frames(steps, 12)
    assert picks[0] == 0 and picks[-1] == steps - 1 and len(picks) == 12
    last = sheet[2 * (height + SEPARATOR) + SEPARATOR :, 3 * (width + SEPARATOR) + SEPARATOR :][:height, :width]
    _, tiles = board_geometry(WIDTH)
    for rect, value in zip(tiles, [v for row in boards(recordings["corner"])[-1] for v in row], strict=True):
        assert tuple(last[rect.y + rect.height // 10, rect.centerx][:3]) == tile_colour(value)
    assert key_frames(5, 12) == [0, 1, 2, 3, 4]


def test_side_by_side_gif_runs_to_the_longer_episode(recordings, tmp_path):
    short = len(read_recording(recordings["short"]).steps)
    out = export([recordings["corner"], recordings["short"]], tmp_path / "vs.gif", size=WIDTH, side_by_side=True,
                 progress=False, end_step=39)  # fmt: skip
    frames = iio.imread(out, index=None)
    width, height = panel_size("2048", WIDTH)
    assert short < 40 and frames.shape == (40, height, 2 * width + SEPARATOR, 3)
    _, tiles = board_geometry(WIDTH)
    for rect, value in zip(tiles, [v for row in boards(recordings["short"])[-1] for v in row], strict=True):
        pixel = frames[-1][rect.y + rect.height // 10, width + SEPARATOR + rect.centerx][:3].astype(int)
        assert np.abs(pixel - tile_colour(value)).max() <= 4  # the short game's last board, held


def test_atari_exports_and_warns_when_screens_cannot_be_rebuilt(recordings, tmp_path, capsys):
    lines = gzip.decompress(recordings["pong"].read_bytes()).decode().splitlines()
    row = json.loads(lines[4])  # step 3
    row["observation"]["ram"][7] ^= 1
    lines[4] = json.dumps(row)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    with pytest.warns(ReplayWarning, match="at step 3"):
        out = export([tampered], tmp_path / "pong.gif", progress=False)
    assert iio.imread(out, index=None).shape[:3] == (13, *panel_size("atari", 320)[::-1])
    assert main(["replay", str(tampered), "--export", str(tmp_path / "again.gif")]) == 0
    err = capsys.readouterr().err
    assert "stratagem replay: warning:" in err and "differ from the recording at step 3" in err


def test_the_command_exports_quietly_into_a_log(recordings, tmp_path, capsys):
    """Not a terminal (a log, a pipe): no progress bar, the one line saying what was written
    (test_first_hour.py checks the bar on a terminal)."""
    out = tmp_path / "cli" / "replay.mp4"
    code = main(["replay", str(recordings["short"]), "--export", str(out), "--fps", "5", "--size", "240"])
    captured = capsys.readouterr()
    assert code == 0 and out.exists() and f"wrote {out}" in captured.out
    assert "frame" not in captured.err
    assert imageio_ffmpeg.count_frames_and_secs(str(out))[0] == len(read_recording(recordings["short"]).steps)


@pytest.mark.parametrize(
    ("name", "kwargs", "needle"),
    [
        ("out.avi", {}, "must end in .gif, .mp4 or .png"),
        ("out", {}, "must end in .gif, .mp4 or .png"),
        ("out.gif", {"fps": 60}, "a GIF plays at most 50 frames/s"),
        ("out.gif", {"fps": 0}, "fps must be a number > 0"),
        ("out.gif", {"size": 50}, "too small"),
        ("out.gif", {"start_step": 5, "end_step": 2}, "--end 2 is before --start 5"),
    ],
)
def test_bad_export_arguments_are_refused_clearly(recordings, tmp_path, name, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        export([recordings["corner"]], tmp_path / name, progress=False, **kwargs)
    assert not (tmp_path / name).exists()


def test_the_gif_stream_keeps_every_frame_even_unchanged_ones(tmp_path):
    from stratagem.viz.gif import GifStream

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
    a = colours[rng.integers(0, 6, size=(30, 40))]
    b = a.copy()
    b[10:14, 5:9] = colours[0] ^ 0x80  # a small change: only its box is written, the rest stays
    gif = GifStream(tmp_path / "s.gif", 40, 30, fps=25)
    for frame in (a, a, b):
        gif.write(frame)
    with pytest.raises(ValueError, match="this GIF's frames are"):
        gif.write(a[:10])
    gif.close()
    frames = iio.imread(tmp_path / "s.gif", index=None)[..., :3]
    assert frames.shape == (3, 30, 40, 3) and gif.delay == 4
    assert np.array_equal(frames[0], a) and np.array_equal(frames[1], a) and np.array_equal(frames[2], b)
