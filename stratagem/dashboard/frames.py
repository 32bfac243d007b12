"""Recorded steps as PNG, drawn by ``viz.render``: the pygame window's and the exporters' own drawing.

The page shows these images and draws nothing of a game itself, so a replay in the browser is
pixel for pixel what ``stratagem replay`` shows. pygame's font and surface code is not made for
threads, and the server answers requests on a pool of them, so drawing holds one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from stratagem.viz._pygame import start
from stratagem.viz.episodes import Episode
from stratagem.viz.render import MIN_WIDTH, render_step, side_by_side, to_png

MAX_WIDTH = 1200  # pixels per panel: more is only a slower, bigger PNG for a browser to shrink
_DRAWING = threading.Lock()


class BadFrame(ValueError):
    """A frame that cannot exist (a step past the episode's end, a size out of range); the message says which."""


def frame_png(episodes: Sequence[Episode], index: int, size: int | None = None) -> bytes:
    """Step ``index`` of one episode, or of two side by side (the shorter one holds its last step), as a PNG."""
    length = max(len(episode) for episode in episodes)
    if not 0 <= index < length:
        raise BadFrame(f"step {index} is not in this episode: its steps are 0..{length - 1}")
    if size is not None and not MIN_WIDTH <= size <= MAX_WIDTH:
        raise BadFrame(f"size {size} is out of range: a panel is {MIN_WIDTH}..{MAX_WIDTH} pixels wide")
    with _DRAWING:
        start(headless=True)
        pictures = [render_step(e.step(min(index, len(e) - 1)), e.header, size) for e in episodes]
        return to_png(pictures[0] if len(pictures) == 1 else side_by_side(*pictures))
