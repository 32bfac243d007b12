"""Every replay panel says which program it is and how it scored, large enough to read at the size written:
side by side (two real programs on one seed) and in a run's ``best_episode.gif`` (240 pixels wide)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stratagem.rl.rundir import BEST_EPISODE_GIF, GIF_WIDTH, RunDir
from stratagem.viz.episodes import load_items
from stratagem.viz.export import export
from stratagem.viz.recording import read_recording
from stratagem.viz.render import LABEL, SEPARATOR, label_height, panel_label, panel_size, status_height, to_array
from stratagem.viz.viewer import Viewer
from tests.test_viewer import ALWAYS_LEFT, EXAMPLES, record

MIN_GLYPH_PX = 10  # the label's letters and digits, measured in the picture written: at least this tall


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """The corner heuristic's long game and a one-move program's short one, on the same seed, as `play` records."""
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    root = tmp_path_factory.mktemp("labels")
    corner, short = record(root, "2048", [(EXAMPLES / "corner_2048.py").read_text(), ALWAYS_LEFT], [3])
    return corner, short


def label_ink(frame: np.ndarray, x0: int, width: int) -> np.ndarray:
    """The label strip of the panel at ``x0``: True where text is drawn (bright on the dark strip)."""
    strip = frame[: label_height(width), x0 : x0 + width, :3].astype(int)
    return strip.mean(axis=-1) > 128


def glyph_height(ink: np.ndarray) -> int:
    rows = np.flatnonzero(ink.any(axis=1))
    return int(rows[-1] - rows[0] + 1) if len(rows) else 0


def check_label(frame: np.ndarray, x0: int, width: int) -> np.ndarray:
    strip = frame[: label_height(width), x0 : x0 + width, :3].astype(int)
    ink = label_ink(frame, x0, width)
    assert (np.abs(strip[~ink] - LABEL).max(axis=-1) < 100).mean() > 0.9, "the strip is not the label's background"
    assert glyph_height(ink) >= MIN_GLYPH_PX, f"label text {glyph_height(ink)} px tall at {width} px wide"
    columns = np.flatnonzero(ink.any(axis=0))
    assert columns[0] >= 2 and columns[-1] <= width - 3, "the label runs off its panel"
    left, right = ink[:, : width // 3].sum(), ink[:, -width // 3 :].sum()
    assert left > 30 and right > 30, "the program's hash on the left and its score on the right"
    return ink


def test_the_recordings_name_the_program_and_its_score(pair):
    for path in pair:
        recording = read_recording(path)
        assert path.name.startswith(recording.header["program"]) and len(recording.header["program"]) == 12
        assert isinstance(recording.end["score"], (int, float))
    [(left, right)] = load_items(list(pair), side_by_side=True)
    for episode in (left, right):
        program, score = panel_label(episode.step(0), episode.header)
        assert program == episode.header["program"]
        assert score == f"score {int(episode.recording.end['score']):,}"  # the final score, from the first step on


def test_side_by_side_panels_are_labelled_legibly_at_240_px(pair, tmp_path):
    out = export(list(pair), tmp_path / "vs.gif", size=GIF_WIDTH, side_by_side=True, progress=False, end_step=20)
    width, _ = panel_size("2048", GIF_WIDTH)
    with Image.open(out) as gif:
        frames = []
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.array(gif.convert("RGB")))
    assert frames[0].shape[1] == 2 * width + SEPARATOR
    for frame in (frames[0], frames[-1]):
        left, right = check_label(frame, 0, width), check_label(frame, width + SEPARATOR, width)
        assert (left != right).any(), "both panels carry the same label"
    # The label names the program and its result: the same on every frame of the episode.
    top = label_height(width)
    assert np.array_equal(frames[0][:top], frames[-1][:top])
    # The window shows the same labels (the GIF's are these, through a 256-colour palette).
    viewer = Viewer(load_items(list(pair), side_by_side=True), size=GIF_WIDTH)
    window = to_array(viewer.frame())
    assert (check_label(window, 0, width) != check_label(window, width + SEPARATOR, width)).any()
    assert np.abs(window[:top].astype(int) - frames[0][:top]).max() <= 16


def test_the_sheet_of_a_pair_labels_every_panel(pair, tmp_path):
    out = export(list(pair), tmp_path / "vs.png", size=GIF_WIDTH, side_by_side=True, progress=False)
    sheet = np.array(Image.open(out).convert("RGB"))
    width, _ = panel_size("2048", GIF_WIDTH)
    first = sheet[SEPARATOR:, SEPARATOR:]  # the first key frame: the pair, side by side
    left, right = check_label(first, 0, width), check_label(first, width + SEPARATOR, width)
    assert (left != right).any()


def test_best_episode_gif_is_labelled_legibly(pair, tmp_path):
    run = RunDir(tmp_path / "run")
    run.replays.mkdir(parents=True, exist_ok=True)
    shutil.copy(pair[0], run.replays / pair[0].name)
    gif_path = run.export_best_episode(max_frames=8)
    assert gif_path == run.path / BEST_EPISODE_GIF
    with Image.open(gif_path) as gif:
        assert gif.size[0] == GIF_WIDTH
        gif.seek(gif.n_frames - 1)
        frame = np.array(gif.convert("RGB"))
    check_label(frame, 0, GIF_WIDTH)
    # The status bar's lines ("2048 · seed 3 · step N/M", "reward ... score ..."): no longer 5-pixel capitals.
    bar = frame[-status_height(GIF_WIDTH) :].astype(int).mean(axis=-1) > 128
    rows = np.flatnonzero(bar.any(axis=1))
    bands = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
    assert len(bands) == 2 and max(len(band) for band in bands) >= MIN_GLYPH_PX, [len(b) for b in bands]
