"""The replay window: recorded episodes played back with pause, stepping, speed and episode keys.

Each displayed frame is ``render.render_step`` of the current step (two of them side by side when
comparing programs), blitted as is: the window shows exactly what an export would contain, and
the playback state (pause, speed) lives in the window's title. Keys:

    space  pause / play            left / right  one step back / forward (pauses)
    up / down  double / halve the speed   home / end  first / last step
    n / p  next / previous episode        o  Atari objects on / off      q or Esc  quit

``Viewer.run`` takes ``max_frames`` and a ``clock`` so tests drive the real loop with posted key
events and a clock of their own, on SDL's dummy video driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from stratagem.viz._pygame import has_display, pygame, start
from stratagem.viz.episodes import Episode, load_items
from stratagem.viz.render import render_step
from stratagem.viz.render import side_by_side as pair_panels

MIN_SPEED, MAX_SPEED = 0.25, 960.0  # steps per second
END_HOLD_S = 1.0  # how long the last step of an episode stays up before the next episode starts


class Viewer:
    """Playback state and the loop; ``items`` are one episode each, or two to compare side by side."""

    def __init__(self, items: list[tuple[Episode, ...]], *, fps: float = 10, size: int | None = None,
                 objects: bool = True) -> None:  # fmt: skip
        if not items:
            raise ValueError("nothing to replay")
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.items, self.size, self.objects = items, size, objects
        self.item, self.index = 0, 0
        self.speed = min(MAX_SPEED, max(MIN_SPEED, float(fps)))
        self.paused, self.running = False, True
        self._carry = self._held = 0.0

    # --- state ---------------------------------------------------------------------
    @property
    def length(self) -> int:
        """Steps in the current item: the longer episode when two are compared."""
        return max(len(e) for e in self.items[self.item])

    def frame(self) -> pygame.Surface:
        """The current picture, from the same render functions the exporters use."""
        panels = [render_step(e.step(min(self.index, len(e) - 1)), e.header, self.size, objects=self.objects)
                  for e in self.items[self.item]]  # fmt: skip
        return panels[0] if len(panels) == 1 else pair_panels(*panels)

    def caption(self) -> str:
        episode = self.items[self.item][0]
        name = episode.path.name if episode.path else "episode"
        state = "paused" if self.paused else f"{self.speed:g} steps/s"
        return (f"stratagem replay: {name} ({self.item + 1}/{len(self.items)})  step {self.index}/"
                f"{self.length - 1}  {state}")  # fmt: skip

    def goto_item(self, item: int) -> None:
        self.item = max(0, min(len(self.items) - 1, item))
        self.index, self._carry, self._held = 0, 0.0, 0.0

    def seek(self, index: int) -> None:
        self.index = max(0, min(self.length - 1, index))
        self._held = 0.0

    def handle(self, event: pygame.event.Event) -> None:
        """One input event's effect on the playback state."""
        if event.type == pygame.QUIT:
            self.running = False
        if event.type != pygame.KEYDOWN:
            return
        key = event.key
        if key in (pygame.K_q, pygame.K_ESCAPE):
            self.running = False
        elif key == pygame.K_SPACE:
            self.paused = not self.paused
            if not self.paused and self.index == self.length - 1:
                self.seek(0)  # play again from the start
        elif key in (pygame.K_RIGHT, pygame.K_LEFT):
            self.paused = True
            self.seek(self.index + (1 if key == pygame.K_RIGHT else -1))
        elif key == pygame.K_UP:
            self.speed = min(MAX_SPEED, self.speed * 2)
        elif key == pygame.K_DOWN:
            self.speed = max(MIN_SPEED, self.speed / 2)
        elif key == pygame.K_HOME:
            self.seek(0)
        elif key == pygame.K_END:
            self.seek(self.length - 1)
        elif key in (pygame.K_n, pygame.K_p):
            self.goto_item(self.item + (1 if key == pygame.K_n else -1))
        elif key == pygame.K_o:
            self.objects = not self.objects

    def advance(self, seconds: float) -> None:
        """Move playback on by ``seconds`` of wall time at the current speed."""
        if self.paused:
            return
        if self.index < self.length - 1:
            self._carry += seconds * self.speed
            steps = int(self._carry)
            self._carry -= steps
            self.seek(self.index + steps)
            return
        self._held += seconds  # at the last step: hold it a moment, then the next episode, or stop
        if self._held >= END_HOLD_S:
            if self.item < len(self.items) - 1:
                self.goto_item(self.item + 1)
            else:
                self.paused = True

    # --- the loop ------------------------------------------------------------------
    def run(self, max_frames: int | None = None, clock: Callable[[], float] = time.monotonic,
            refresh_hz: int = 60) -> None:  # fmt: skip
        """Show the window until q/Esc/close (or ``max_frames`` frames: tests); ``refresh_hz=0`` never sleeps."""
        pygame.key.set_repeat(300, 40)
        ticker = pygame.time.Clock()
        window, frames, last = None, 0, clock()
        while self.running and (max_frames is None or frames < max_frames):
            for event in pygame.event.get():
                self.handle(event)
            now = clock()
            self.advance(now - last)
            last = now
            picture = self.frame()
            if window is None or window.get_size() != picture.get_size():
                window = pygame.display.set_mode(picture.get_size())
            window.blit(picture, (0, 0))
            pygame.display.set_caption(self.caption())
            pygame.display.flip()
            frames += 1
            if refresh_hz:
                ticker.tick(refresh_hz)


def view(paths: list[Path], *, fps: float = 10, size: int | None = None, side_by_side: bool = False,
         objects: bool = True, start_step: int = 0, end_step: int | None = None) -> None:  # fmt: skip
    """Open the window on recordings (files or directories); returns when the user quits."""
    if not has_display():
        raise ValueError("no display to open a window on ($DISPLAY is not set): export instead, e.g. "
                         "stratagem replay PATH --export replay.gif (or set SDL_VIDEODRIVER)")  # fmt: skip
    items = load_items(paths, side_by_side=side_by_side, start=start_step, end=end_step)
    viewer = Viewer(items, fps=fps, size=size, objects=objects)
    start(headless=False)
    try:
        viewer.run()
    finally:
        pygame.display.quit()
