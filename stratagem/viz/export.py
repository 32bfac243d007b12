"""Recorded episodes to a file, headless: an animated GIF, an H.264 MP4, or a PNG contact sheet.

Every frame comes from ``render.render_step`` (and ``render.side_by_side``), the functions the
window draws with, on SDL's dummy video driver, so exports run on servers and in CI. The format
follows the file name: ``.gif`` (``gif.py``: streamed, the changed rectangle of each frame
with its own 256-colour palette), ``.mp4`` (H.264, yuv420p, through imageio-ffmpeg's bundled ffmpeg; streamed, so a long
episode never sits in memory), ``.png`` (key frames of each episode on one sheet).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stratagem.viz._pygame import pygame, start
from stratagem.viz.episodes import Episode, load_items
from stratagem.viz.render import BAR, SEPARATOR, panel_width, render_step, to_array
from stratagem.viz.render import side_by_side as pair_panels

FORMATS = (".gif", ".mp4", ".png")
MAX_GIF_FPS = 50  # GIF delays are in 1/100 s, and viewers stretch delays under 2/100 s to 1/10 s
SHEET_KEY_FRAMES = 12  # key frames on the sheet of a single episode; 6 per episode when there are several
SHEET_MAX_EPISODES = 20


class ReplayWarning(UserWarning):
    """Something the user should know about an export that still succeeded (Atari screens that could not be rebuilt)."""


def export(recordings: list[Path], out: Path, *, fps: int = 10, size: int | None = None,
           side_by_side: bool = False, progress: bool = True, start_step: int = 0, end_step: int | None = None,
           objects: bool = True) -> Path:  # fmt: skip
    """Write the episodes in ``recordings`` (files or directories) to ``out``; its suffix picks the format.

    ``side_by_side``: two recordings (or directories), paired by seed, drawn next to each other.
    ``size``: the width of one panel in pixels. ``start_step``/``end_step``: a slice of each episode.
    """
    out = Path(out)
    kind = _format(out, fps)
    if size is not None:
        panel_width("text", size)  # refuses a size too small before any work
    items = load_items([Path(p) for p in recordings], side_by_side=side_by_side, start=start_step, end=end_step)
    start(headless=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.stem}.partial{kind}")  # an export cut short (Ctrl-C, a crash) leaves no half file
    try:
        if kind == ".png":
            _write_sheet(items, staging, size, objects, progress)
        else:
            frames = _frames(items, size, objects)
            total = sum(_length(item) for item in items)
            with _progress(total, out, progress) as bar:
                (_write_gif if kind == ".gif" else _write_mp4)(frames, staging, fps, bar)
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)
    for episode in dict.fromkeys(e for item in items for e in item):
        if episode.note:
            warnings.warn(f"{episode.path}: {episode.note}", ReplayWarning, stacklevel=2)
    return out


def _format(out: Path, fps: int) -> str:
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot export to {out.name!r}: the file name must end in .gif, .mp4 or .png "
                         "(animated GIF, H.264 video, or a PNG sheet of key frames)")  # fmt: skip
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0:
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    if suffix == ".gif" and fps > MAX_GIF_FPS:
        raise ValueError(f"a GIF plays at most {MAX_GIF_FPS} frames/s (its delays are in 1/100 s): "
                         f"use --fps {MAX_GIF_FPS} or less, or export an .mp4")  # fmt: skip
    return suffix


def _frames(items: list[tuple[Episode, ...]], size: int | None, objects: bool) -> Iterator[np.ndarray]:
    """Every frame of every item as (height, width, 3) uint8, all the size of the first."""
    shape = None
    for item in items:
        for i in range(_length(item)):
            picture = _picture(item, i, size, objects)
            array = to_array(picture)
            shape = shape or array.shape
            yield array if array.shape == shape else _fit(array, shape)


def _picture(item: tuple[Episode, ...], i: int, size: int | None, objects: bool) -> pygame.Surface:
    panels = [render_step(e.step(min(i, len(e) - 1)), e.header, size, objects=objects) for e in item]
    return panels[0] if len(panels) == 1 else pair_panels(*panels)


def _fit(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A frame of another size (another environment in the same export) cropped or padded to ``shape``."""
    out = np.zeros(shape, dtype=np.uint8)
    out[...] = BAR
    h, w = min(shape[0], array.shape[0]), min(shape[1], array.shape[1])
    out[:h, :w] = array[:h, :w]
    return out


def _write_gif(frames: Iterator[np.ndarray], out: Path, fps: float, bar: Any) -> None:
    from stratagem.viz.gif import GifStream

    gif = None
    try:
        for array in frames:
            if gif is None:
                gif = GifStream(out, array.shape[1], array.shape[0], fps)
            gif.write(array)
            bar.update(1)
    finally:
        if gif is not None:
            gif.close()


def _write_mp4(frames: Iterator[np.ndarray], out: Path, fps: float, bar: Any) -> None:
    import imageio_ffmpeg

    writer = None
    try:
        for array in frames:
            if writer is None:
                writer = imageio_ffmpeg.write_frames(str(out), (array.shape[1], array.shape[0]), fps=fps,
                                                     codec="libx264", pix_fmt_out="yuv420p", quality=7,
                                                     macro_block_size=2, ffmpeg_log_level="error")  # fmt: skip
                writer.send(None)
            writer.send(np.ascontiguousarray(array).tobytes())
            bar.update(1)
    finally:
        if writer is not None:
            writer.close()


def _write_sheet(items: list[tuple[Episode, ...]], out: Path, size: int | None, objects: bool,
                 progress: bool) -> None:  # fmt: skip
    """Key frames (first, last, evenly between) in a grid: one row per episode, or rows of 4 for one episode."""
    import imageio.v3 as iio

    if len(items) > SHEET_MAX_EPISODES:
        raise ValueError(f"a contact sheet shows up to {SHEET_MAX_EPISODES} episodes and these recordings hold "
                         f"{len(items)}: pass fewer, or export a .gif or .mp4")  # fmt: skip
    per_item = SHEET_KEY_FRAMES if len(items) == 1 else 6
    columns = 4 if len(items) == 1 else per_item
    picks = [(item, i) for item in items for i in key_frames(_length(item), per_item)]
    cells: list[pygame.Surface] = []
    with _progress(len(picks), out, progress) as bar:
        for item, i in picks:
            cells.append(_picture(item, i, size, objects))
            bar.update(1)
    cell_w, cell_h = max(c.get_width() for c in cells), max(c.get_height() for c in cells)
    if len(items) == 1:
        places = [(n % columns, n // columns) for n in range(len(cells))]
    else:
        places = [(c, r) for r, item in enumerate(items) for c in range(len(key_frames(_length(item), per_item)))]
    rows = places[-1][1] + 1
    sheet = pygame.Surface((columns * cell_w + (columns + 1) * SEPARATOR, rows * cell_h + (rows + 1) * SEPARATOR))
    sheet.fill(BAR)
    for cell, (c, r) in zip(cells, places, strict=True):
        sheet.blit(cell, (SEPARATOR + c * (cell_w + SEPARATOR), SEPARATOR + r * (cell_h + SEPARATOR)))
    iio.imwrite(out, to_array(sheet))


def _length(item: tuple[Episode, ...]) -> int:
    """Frames in an item: the longer episode's steps (the shorter holds its last step)."""
    return max(len(e) for e in item)


def key_frames(length: int, count: int) -> list[int]:
    """Up to ``count`` step indices spread evenly over ``length`` steps, always the first and the last."""
    if length <= count:
        return list(range(length))
    return sorted({round(j * (length - 1) / (count - 1)) for j in range(count)})


def _progress(total: int, out: Path, shown: bool) -> Any:
    from stratagem.viz.progress import terminal_bar

    return terminal_bar(total, f"export {out.name}", "frame", shown)
